"""What a fast run's epochs cost, and what validate_last and one_warp save, measured side by side.

In a fresh process per augmentation (the reference's two warps and one warp, alternating for ROUNDS rounds),
the fast model (`auto` precision, batch 32, random 0-255 images in memory) times training steps at each size
progressive resizing passes through, and a validation pass (inference at image_size, 1,000 images as in the
reference split). From the median rates it adds up one run of the fast schedule (`training_sizes`): the
training epochs of 2,000 images, plus a validation pass for every epoch, or for the last VALIDATE_LAST only.
Prints one JSON line per process, then the run's estimated seconds of epochs for each combination and their
ratios to the old defaults (validation every epoch, two warps). A real run adds data steps, evaluation and registration.

    python benchmarks/fast_epoch_cost.py [--steps 10] [--rounds 2] [--epochs 70] [--validate-last 15] [--precision auto]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from timing import run_fresh

ONE = """
import json, sys, time
import numpy as np
from catsdogs.runtime import resolve_precision, tensorflow
tf = tensorflow()
import keras
from catsdogs.model import TRAINING_RESIZE, build_for
from catsdogs.settings import Settings
from timing import images_per_s, random_batch
one_warp, steps, precision, sizes = sys.argv[1] == "1", int(sys.argv[2]), resolve_precision(sys.argv[3]), \
    [int(s) for s in sys.argv[4].split(",")]
keras.utils.set_random_seed(0)
settings = Settings(variant="fast", whiten_stem=False, one_warp=one_warp)
full = int(settings.image_size)
model = build_for(settings, precision, steps_per_epoch=100)
images, labels = random_batch(full)
rates = {}
for size in sizes:
    model.get_layer(TRAINING_RESIZE).size.assign(size)
    rates[size] = images_per_s(lambda: model.train_on_batch(images, labels), steps, warmup=2)
validation = np.repeat(images, 1000 // 32 + 1, axis=0)[:1000]
model.evaluate(validation[:64], labels[:1].repeat(64, axis=0), batch_size=32, verbose=0)  # warm-up
start = time.perf_counter()
model.evaluate(validation, np.zeros((1000, 1), "float32"), batch_size=32, verbose=0)
print(json.dumps({"one_warp": one_warp, "precision": precision, "train_images_per_s": rates,
                  "validation_pass_s": time.perf_counter() - start}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per size")
    parser.add_argument("--epochs", type=int, default=70)
    parser.add_argument("--validate-last", type=int, default=15)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; medians are used")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from catsdogs.model import training_sizes
    from catsdogs.settings import Settings

    fast = Settings(variant="fast")
    schedule = training_sizes(int(fast.resize_from), int(fast.image_size), args.epochs)  # type: ignore[arg-type]
    measured = sorted(set(schedule[:: max(1, len(schedule) // 8)]) | {schedule[0], schedule[-1]})
    rounds: dict[bool, list[dict]] = {False: [], True: []}
    for round_ in range(args.rounds):
        for one_warp in (False, True) if round_ % 2 == 0 else (True, False):
            done = run_fresh(ONE, "1" if one_warp else "0", str(args.steps), args.precision,
                             ",".join(map(str, measured)))
            if done.returncode != 0:
                sys.exit(done.stderr[-2000:])
            rounds[one_warp].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps({"round": round_ + 1, **rounds[one_warp][-1]}), flush=True)
    results = {one_warp: {"train_images_per_s": {size: statistics.median(r["train_images_per_s"][size] for r in found)
                                                 for size in found[0]["train_images_per_s"]},
                          "validation_pass_s": statistics.median(r["validation_pass_s"] for r in found)}
               for one_warp, found in rounds.items()}

    def rate(found: dict, size: int) -> float:  # linear between the measured sizes
        points = sorted((int(s), r) for s, r in found["train_images_per_s"].items())
        below = max((p for p in points if p[0] <= size), default=points[0])
        above = min((p for p in points if p[0] >= size), default=points[-1])
        if above[0] == below[0]:
            return below[1]
        return below[1] + (above[1] - below[1]) * (size - below[0]) / (above[0] - below[0])

    train_images = 2 * (fast.train_range[1] - fast.train_range[0] + 1)
    seconds = {}
    for one_warp, found in results.items():
        training = sum(train_images / rate(found, size) for size in schedule)
        for last in (0, args.validate_last):
            validated = len(schedule) if not last else min(last, len(schedule))
            when = f"last {last}" if last else "every epoch"
            name = f"{'one warp' if one_warp else 'two warps'}, validate {when}"
            seconds[name] = round(training + validated * found["validation_pass_s"], 1)
    before = seconds["two warps, validate every epoch"]
    print(json.dumps({"epochs": args.epochs, "seconds_of_epochs": seconds,
                      "relative_to_two_warps_every_epoch": {k: round(v / before, 3) for k, v in seconds.items()}}))


if __name__ == "__main__":
    main()
