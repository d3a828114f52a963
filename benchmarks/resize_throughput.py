"""Training speed at the sizes progressive resizing uses: does the in-model resize cost anything?

For each size, two models train on random 0-255 images held in memory (batch 32, the fast variant's network and
augmentation, `auto` precision): the fast variant itself, fed 180 px images that its TrainingResize layer
shrinks to the size (dynamic shapes: one graph for every size), and the same network built for that size, fed
images of that size (static shapes). Each in a fresh process, a few timed steps after warm-up steps. Prints one
JSON line per (size, model), then the images/s of each against the static model at 180 px.

    python benchmarks/resize_throughput.py [--sizes 112 144 180] [--steps 12] [--precision auto]
"""

from __future__ import annotations

import argparse
import json
import sys

from timing import run_fresh

ONE = """
import json, sys
from catsdogs.runtime import resolve_precision, tensorflow
tf = tensorflow()
import keras
from catsdogs.model import TRAINING_RESIZE, build_for
from catsdogs.settings import Settings
from timing import training_images_per_s
size, dynamic, steps, precision = int(sys.argv[1]), sys.argv[2] == "1", int(sys.argv[3]), sys.argv[4]
precision = resolve_precision(precision)
keras.utils.set_random_seed(0)
fed = 180 if dynamic else size
settings = Settings(variant="fast", image_size=fed, resize_from=min(112, fed) if dynamic else 0, whiten_stem=False)
model = build_for(settings, precision, steps_per_epoch=100)
if dynamic:
    model.get_layer(TRAINING_RESIZE).size.assign(size)
print(json.dumps({"size": size, "model": "in-model resize from 180" if dynamic else "built for the size",
                  "precision": precision, "images_per_s": round(training_images_per_s(model, fed, steps), 1)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[112, 144, 180])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    rows = []
    for size in args.sizes:
        for dynamic in (False, True):
            done = run_fresh(ONE, str(size), "1" if dynamic else "0", str(args.steps), args.precision)
            if done.returncode != 0:
                print(done.stderr[-2000:], file=sys.stderr)
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            print(json.dumps(row), flush=True)
            rows.append(row)
    reference = next((r["images_per_s"] for r in rows if r["size"] == 180 and r["model"] == "built for the size"),
                     None)
    if reference:
        print(json.dumps({f"{r['size']} px, {r['model']}": round(r["images_per_s"] / reference, 2) for r in rows}))


if __name__ == "__main__":
    main()
