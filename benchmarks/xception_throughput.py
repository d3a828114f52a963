"""Training speed of xception shapes on this machine: why the variant has the shape it has.

Each shape trains on random 0-255 images held in memory (batch 32, the reference augmentation inside the
model, as the issue measured), in a fresh process, for a few timed steps after two warm-up steps. Side by
side: the book's mini-Xception (separable convolutions, stride-1 stem, 180 px) and catsdogs' xception
(plain convolutions, stride-2 stem) at several input sizes, and the patch_stem setting's 4x4 stride-4 stem.
Prints one JSON line per shape, then one object with each shape's images/s relative to the book's.

    python benchmarks/xception_throughput.py [--steps 20] [--precision mixed_bfloat16] [--shapes NAME ...]
        [--keras-batch-norm]
"""

from __future__ import annotations

import argparse
import json
import sys

from timing import run_fresh

SHAPES = {
    # name: (separable, stem strides, image size, patch stem)
    "book-separable-180": (True, 1, 180, False),
    "plain-stride2-180": (False, 2, 180, False),
    "plain-stride2-160": (False, 2, 160, False),
    "plain-stride2-128": (False, 2, 128, False),
    "separable-stride2-180": (True, 2, 180, False),
    "separable-stride2-160": (True, 2, 160, False),
    "separable-stride2-144": (True, 2, 144, False),  # fast's last size
    "separable-patch4-144": (True, 4, 144, True),  # the patch_stem setting
    "separable-stride2-96": (True, 2, 96, False),  # fast's first size
    "separable-patch4-96": (True, 4, 96, True),
}
# Each shape trains with catsdogs' BatchNormalization (fused in training); --keras-batch-norm: Keras' own layer.

ONE_SHAPE = """
import json, sys
from catsdogs.runtime import tensorflow
tensorflow()
import keras
from catsdogs.model import build_augmentation, xception_network
from timing import training_images_per_s
separable, strides, size, steps, precision, patch, fused = (
    sys.argv[1] == "1", int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6] == "1",
    sys.argv[7] == "1")
keras.utils.set_random_seed(0)
inputs = keras.Input(shape=(size, size, 3))
x = keras.layers.Rescaling(1 / 255, dtype=precision)(build_augmentation(0)(inputs))
x = xception_network(x, separable=separable, stem_strides=strides, precision=precision, patch_stem=patch,
                     fused=fused)
outputs = keras.layers.Dense(1, activation="sigmoid", dtype="float32")(keras.layers.Dropout(0.5)(x))
model = keras.Model(inputs, outputs)
model.compile(optimizer="adam", loss="binary_crossentropy")
rate = training_images_per_s(model, size, steps, warmup=2)
print(json.dumps({"images_per_s": round(rate, 2), "params": model.count_params()}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed training steps of 32 images per shape")
    parser.add_argument("--precision", default="mixed_bfloat16", help="Keras dtype policy of every shape")
    parser.add_argument("--shapes", nargs="*", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--keras-batch-norm", action="store_true",
                        help="Keras' BatchNormalization instead of catsdogs' fused one, as before 2026-12-06")
    args = parser.parse_args()
    results = {}
    for name in args.shapes:
        separable, strides, size, patch = SHAPES[name]
        out = run_fresh(ONE_SHAPE, "1" if separable else "0", str(strides), str(size), str(args.steps),
                        args.precision, "1" if patch else "0", "0" if args.keras_batch_norm else "1")
        if out.returncode != 0:
            sys.exit(out.stderr[-2000:])
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
        print(json.dumps({"shape": name, "precision": args.precision, "keras_batch_norm": args.keras_batch_norm,
                          **results[name]}), flush=True)
    book = results.get("book-separable-180", {}).get("images_per_s")
    print(json.dumps({"precision": args.precision, "images_per_s": {n: r["images_per_s"] for n, r in results.items()},
                      "relative_to_book": {n: round(r["images_per_s"] / book, 2) for n, r in results.items()}
                      if book else None}))


if __name__ == "__main__":
    main()
