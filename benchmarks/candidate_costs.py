"""What two candidates for fast and best would cost per image, before any run: the first block's width, and RandAugment.

In one process, on random 0-255 images in memory (batch 32, `auto` precision), at each SIZE:
- the fast model's training step (resize, augmentation, network, AdamW) with the stem and first block of
  xception's network at each of WIDTHS channels (32 is the variants' own), in images/s;
- Keras' RandAugment layer alone (2 operations, factor 0.5), in images/s: what it would add to each step if
  the augmentation included it.
Prints one JSON line per measurement, then each one's cost relative to the width-32 training step at that size
(above 1: it takes longer). ROUNDS alternate the order; medians are used.

    python benchmarks/candidate_costs.py [--sizes 96 144] [--widths 16 32 48] [--steps 12] [--rounds 2]
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

BATCH = 32


def images_per_s(step, steps: int) -> float:
    for _ in range(3):  # tracing and warm-up
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return BATCH * steps / (time.perf_counter() - start)


def training_rate(width: int, sizes: list[int], steps: int, precision: str) -> dict[int, float]:
    """The fast model's training rate at each size, its stem and first block WIDTH channels wide."""
    import keras

    from catsdogs import model
    from catsdogs.settings import Settings

    original = model.xception_network
    widths = (width, *model.XCEPTION_WIDTHS[1:])
    model.xception_network = functools.partial(original, widths=widths)
    try:
        keras.utils.set_random_seed(0)
        network = model.build_for(Settings(variant="fast", whiten_stem=False), precision, steps_per_epoch=100)
    finally:
        model.xception_network = original
    full = network.input_shape[1]
    images = np.random.default_rng(0).integers(0, 256, (BATCH, full, full, 3)).astype("float32")
    labels = np.random.default_rng(1).integers(0, 2, (BATCH, 1)).astype("float32")
    rates = {}
    for size in sizes:
        network.get_layer(model.TRAINING_RESIZE).size.assign(size)
        rates[size] = images_per_s(lambda: network.train_on_batch(images, labels), steps)
    return rates


def randaugment_rate(sizes: list[int], steps: int) -> dict[int, float]:
    import keras

    from catsdogs.runtime import tensorflow

    tf = tensorflow()
    layer = keras.layers.RandAugment(value_range=(0, 255), num_ops=2, factor=0.5, seed=0)
    augment = tf.function(lambda x: layer(x, training=True))
    rates = {}
    for size in sizes:
        images = tf.constant(np.random.default_rng(0).integers(0, 256, (BATCH, size, size, 3)).astype("float32"))
        rates[size] = images_per_s(lambda images=images: augment(images), steps)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[96, 144])
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 32, 48])
    parser.add_argument("--steps", type=int, default=12, help="timed steps per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; medians are used")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from catsdogs.runtime import resolve_precision

    precision = resolve_precision("auto")
    names = [f"width {w}" for w in args.widths] + ["randaugment alone"]
    measured: dict[str, list[dict[int, float]]] = {name: [] for name in names}
    for round_ in range(args.rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:
            rates = (randaugment_rate(args.sizes, args.steps) if name == "randaugment alone" else
                     training_rate(int(name.split()[1]), args.sizes, args.steps, precision))
            measured[name].append(rates)
            print(json.dumps({"what": name, "round": round_, "precision": precision,
                              "images_per_s": {s: round(r, 1) for s, r in rates.items()}}), flush=True)
    medians = {name: {s: statistics.median(r[s] for r in runs) for s in args.sizes} for name, runs in measured.items()}
    reference = medians["width 32"] if "width 32" in medians else None
    print(json.dumps({"median_images_per_s": {n: {s: round(r, 1) for s, r in m.items()} for n, m in medians.items()},
                      "cost_relative_to_width_32_step": reference and {
                          n: {s: round(reference[s] / r, 2) for s, r in m.items()} for n, m in medians.items()}}))


if __name__ == "__main__":
    main()
