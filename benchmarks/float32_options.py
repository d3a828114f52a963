"""Float32 training speed of the fast network under each CPU option, side by side (issue 23, part 4).

On a CPU without BF16 `auto` precision is float32. This asks whether anything makes float32 training faster:
oneDNN against TensorFlow's own Eigen kernels, the thread settings and XLA (`jit_compile`), two one-thread
trainings at once against one on every core (`one-thread-twice`: do the cores add up?); and, where the
CPU has BF16 units, the same for bfloat16 (`--options onednn bfloat16 bfloat16-inter-op-1`). `--isa AVX2`
caps oneDNN's instruction set (`ONEDNN_MAX_CPU_ISA`) so that an AVX-512 machine runs the float32 kernels an
AVX2-only one runs; TensorFlow's other kernels are built for AVX in the pip wheel on every x86 machine, so the
cap is what differs.

Each option trains the fast network (xception's, stride-2 stem) at SIZE px on random 0-255 images in memory,
batch 32, in a fresh process: two warm-up steps, then STEPS timed ones (`one-thread-twice`: both copies warmed
up before either is timed). The options run in an alternating
order for ROUNDS rounds; the median of the rounds is reported. Keras refuses XLA for a model holding its
RandomZoom layer, so XLA is measured on the network without augmentation, beside the same network without XLA.
Prints one JSON line per measurement, then one object with each option's images/s relative to `onednn`.

    python benchmarks/float32_options.py [--isa AVX2] [--sizes 128 180] [--steps 15] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile

from timing import run_fresh_together

# option: (environment, intra-op threads or 0 for the cores, inter-op threads or 0, augment (or "one-warp"), jit,
# precision)
OPTIONS = {
    "onednn": ({}, 0, 0, True, False, "float32"),  # what `auto` runs on a CPU without BF16
    "eigen": ({"TF_ENABLE_ONEDNN_OPTS": "0"}, 0, 0, True, False, "float32"),
    "inter-op-1": ({}, 0, 1, True, False, "float32"),
    "one-thread": ({}, 1, 1, True, False, "float32"),
    "one-thread-twice": ({}, 1, 1, True, False, "float32"),  # two such trainings at once (TWICE): their sum
    "no-augmentation": ({}, 0, 0, False, False, "float32"),
    "no-augmentation-xla": ({}, 0, 0, False, True, "float32"),
    "one-warp": ({}, 0, 0, "one-warp", False, "float32"),  # rotation and zoom in one affine warp
    # Only where the CPU has BF16 units: under an --isa cap without them TensorFlow still hands bfloat16
    # convolutions to oneDNN (it sees AVX-512), which then has no kernel for them, so these fail there.
    "bfloat16": ({}, 0, 0, True, False, "mixed_bfloat16"),
    "bfloat16-inter-op-1": ({}, 0, 1, True, False, "mixed_bfloat16"),
}
DEFAULT_OPTIONS = [name for name in OPTIONS if not name.startswith("bfloat16")]
# Options run as two processes at once, each on one thread, their images/s summed: whether the cores a virtual
# machine reports add up to more than one training's worth (two processes beside each other, not one split).
TWICE = {"one-thread-twice"}

ONE_OPTION = """
import json, sys
import tensorflow as tf
intra, inter, augment, jit, precision, size, steps = (int(sys.argv[1]), int(sys.argv[2]), sys.argv[3],
                                                      sys.argv[4] == "1", sys.argv[5], int(sys.argv[6]),
                                                      int(sys.argv[7]))
if intra:
    tf.config.threading.set_intra_op_parallelism_threads(intra)
if inter:
    tf.config.threading.set_inter_op_parallelism_threads(inter)
import keras
from catsdogs.model import build_augmentation, xception_network
from timing import training_images_per_s
keras.utils.set_random_seed(0)
inputs = keras.Input(shape=(size, size, 3))
x = build_augmentation(0, one_warp=sys.argv[3] == "one-warp")(inputs) if sys.argv[3] != "0" else inputs
x = xception_network(keras.layers.Rescaling(1 / 255, dtype=precision)(x), precision=precision)
outputs = keras.layers.Dense(1, activation="sigmoid", dtype="float32")(keras.layers.Dropout(0.5)(x))
model = keras.Model(inputs, outputs)
model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss="binary_crossentropy", jit_compile=jit)
training_images_per_s(model, size, 2, warmup=0)  # the warm-up: tracing
import os, pathlib, time
if barrier := os.environ.get("BENCHMARK_BARRIER"):  # copies at once: every one warmed up before any is timed
    pathlib.Path(barrier, str(os.getpid())).touch()
    while len(os.listdir(barrier)) < int(os.environ["BENCHMARK_COPIES"]):
        time.sleep(0.01)
rate = training_images_per_s(model, size, steps, warmup=0)
print(json.dumps({"images_per_s": round(rate, 2), "jit": bool(model.jit_compile), "timed_until": time.time(),
                  "timed_s": 32 * steps / rate}))
"""


def measure(option: str, isa: str | None, size: int, steps: int) -> dict:
    env_extra, intra, inter, augment, jit, precision = OPTIONS[option]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "1", **env_extra}
    if isa:
        env["ONEDNN_MAX_CPU_ISA"] = isa
    augmentation = augment if isinstance(augment, str) else "1" if augment else "0"
    copies = 2 if option in TWICE else 1
    with tempfile.TemporaryDirectory() as barrier:
        if copies > 1:
            env |= {"BENCHMARK_BARRIER": barrier, "BENCHMARK_COPIES": str(copies)}
        runs = run_fresh_together(ONE_OPTION, str(intra), str(inter), augmentation, "1" if jit else "0", precision,
                                  str(size), str(steps), env=env, copies=copies)
    failed = next((run for run in runs if run.returncode), None)
    if failed:  # an option this CPU cannot run is a result too: say why, go on with the others
        errors = [line for line in failed.stderr.splitlines() if "Error" in line or "message:" in line]
        return {"images_per_s": None, "failed": (errors or failed.stderr.splitlines() or ["no output"])[-1][:300]}
    each = [json.loads(run.stdout.strip().splitlines()[-1]) for run in runs]
    if copies == 1:
        return {"images_per_s": each[0]["images_per_s"], "jit": each[0]["jit"]}
    # the summed rate counts only where the timed steps ran at the same time: say how much of them did
    starts, ends = [r["timed_until"] - r["timed_s"] for r in each], [r["timed_until"] for r in each]
    together = max(0.0, min(ends) - max(starts)) / (max(ends) - min(starts))
    return {"images_per_s": round(sum(r["images_per_s"] for r in each), 2), "jit": each[0]["jit"],
            "each": [r["images_per_s"] for r in each], "timed_together": round(together, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--isa", default=None, help="cap oneDNN's instruction set, e.g. AVX2 (default: the CPU's)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 180])
    parser.add_argument("--steps", type=int, default=15, help="timed training steps of 32 images")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; the median is reported")
    parser.add_argument("--options", nargs="+", default=DEFAULT_OPTIONS, choices=list(OPTIONS))
    args = parser.parse_args()
    speeds: dict[int, dict[str, list[float]]] = {size: {o: [] for o in args.options} for size in args.sizes}
    for round_ in range(args.rounds):
        for size in args.sizes:
            for option in args.options if round_ % 2 == 0 else args.options[::-1]:
                result = measure(option, args.isa, size, args.steps)
                speeds[size][option].append(result["images_per_s"])
                print(json.dumps({"round": round_ + 1, "size": size, "option": option, "isa": args.isa or "native",
                                  **result}), flush=True)
    median = {size: {o: statistics.median(v) if None not in v else None for o, v in by.items()}
              for size, by in speeds.items()}
    print(json.dumps({"isa": args.isa or "native", "images_per_s": median,
                      "relative_to_onednn": {size: {o: round(v / by["onednn"], 2) for o, v in by.items() if v}
                                             for size, by in median.items() if by.get("onednn")}}))


if __name__ == "__main__":
    main()
