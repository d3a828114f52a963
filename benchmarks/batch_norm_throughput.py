"""Training speed of the from-scratch networks with catsdogs' fused batch normalisation against Keras' own layer.

Keras 3's BatchNormalization trains through a dozen TensorFlow ops in float32, whatever the policy; catsdogs'
BatchNormalization (catsdogs.model) through TensorFlow's one fused kernel each way (the same statistics). For
each variant and size, the real model (catsdogs.model.build_for: its augmentation, optimizer and weight
average) trains on random 0-255 images held in memory, batch 32, in a fresh process per model, both kinds one
after the other, in alternating rounds (--rounds), timed steps after warm-up steps; the medians over the rounds
are compared, since a shared virtual machine's speed drifts within minutes. With --arrays, each process instead
runs catsdogs' own training (train_model: the input pipeline, MixUp, the callbacks) for --epochs epochs on a
dataset step's folder built at that size, and counts the middle epochs (the first traces, the last validates).
Prints one JSON line per model, then the fused layer's speed-up per case (the ratio of the medians); --precision
(default auto) picks the policy.

    python benchmarks/batch_norm_throughput.py [--cases xception:180 fast:96 fast:144] [--steps 40] [--rounds 2]
    python benchmarks/batch_norm_throughput.py --cases fast:144 --arrays WORKDIR/datasets/KEY [--epochs 4] [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

from timing import run_fresh

ONE = """
import functools, json, statistics, sys, tempfile
from pathlib import Path
import numpy as np
from catsdogs.runtime import resolve_precision, tensorflow
tensorflow()
import keras
from catsdogs import model as catsdogs_model
from catsdogs.settings import Settings
from timing import training_images_per_s
variant, size, fused, steps = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", int(sys.argv[4])
precision, arrays_folder, epochs = resolve_precision(sys.argv[5]), sys.argv[6], int(sys.argv[7])
catsdogs_model.xception_network = functools.partial(catsdogs_model.xception_network, fused=fused)
row = {"variant": variant, "size": size, "batch_norm": "fused" if fused else "keras", "precision": precision}
keras.utils.set_random_seed(0)
if arrays_folder:
    from catsdogs.datasets import load_arrays
    from catsdogs.train import train_model
    arrays = load_arrays(Path(arrays_folder))
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(variant=variant, image_size=size, epochs=epochs, resize_from=0, validate_last=1,
                            precision=precision, workdir=folder)
        seconds = [r["seconds"] for r in train_model(settings, arrays, Path(folder) / "run").history()][1:-1]
    train_images = np.load(arrays.images("train"), mmap_mode="r").shape[0]
    print(json.dumps(row | {"epoch_s": seconds, "images_per_s": round(train_images / statistics.median(seconds), 1)}))
    sys.exit()
settings = Settings(variant=variant, image_size=size, resize_from=0, whiten_stem=False)
model = catsdogs_model.build_for(settings, precision, steps_per_epoch=100)
print(json.dumps(row | {"images_per_s": round(training_images_per_s(model, size, steps), 1)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=["xception:180", "fast:96", "fast:144"],
                        help="VARIANT:SIZE, each a from-scratch variant at one image size")
    parser.add_argument("--steps", type=int, default=40, help="timed training steps per model, in memory")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of every model; medians are compared")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--arrays", default="", help="a dataset step's folder (WORKDIR/datasets/KEY) at the cases' "
                        "size: time catsdogs' own training on it instead")
    parser.add_argument("--epochs", type=int, default=4, help="with --arrays: epochs per model (at least 3)")
    args = parser.parse_args()
    speeds: dict[str, dict[str, list[float]]] = {}
    for _ in range(args.rounds):
        for case in args.cases:
            variant, size = case.split(":")
            for fused in (False, True):
                done = run_fresh(ONE, variant, size, "1" if fused else "0", str(args.steps), args.precision,
                                 args.arrays, str(args.epochs))
                if done.returncode != 0:
                    print(done.stderr[-2000:], file=sys.stderr)
                    continue
                row = json.loads(done.stdout.strip().splitlines()[-1])
                print(json.dumps(row), flush=True)
                speeds.setdefault(case, {}).setdefault(row["batch_norm"], []).append(row["images_per_s"])
    medians = {case: {kind: statistics.median(values) for kind, values in kinds.items()}
               for case, kinds in speeds.items()}
    print(json.dumps({"median_images_per_s": medians,
                      "fused_speedup": {case: round(s["fused"] / s["keras"], 2) for case, s in medians.items()
                                        if {"fused", "keras"} <= set(s)}}))


if __name__ == "__main__":
    main()
