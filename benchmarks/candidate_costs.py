"""What candidates for fast and best would cost per image, before any run: the first block's width, RandAugment,
a frozen stem, the batch size, blocks that convolve once.

In one process, on random 0-255 images in memory (batch 32 unless said, `auto` precision), at each SIZE:
- the fast model's training step (resize, augmentation, network, AdamW) with the book's blocks (two
  convolutions each, as best's; fast's first two convolve once) and the stem and first block of xception's
  network at each of WIDTHS channels (32 is the variants' own), in images/s;
- Keras' RandAugment layer alone (2 operations, factor 0.5), in images/s: what it would add to each step if
  the augmentation included it;
- with --frozen-stem: the width-32 step with the stem not trained (its whitening kept, as airbench does);
- with --batch-sizes: the width-32 step at each of those batch sizes;
- with --single-conv-blocks: the width-32 step with that many blocks, from the first, convolving once.
Prints one JSON line per measurement, then each one's cost per image relative to the width-32 training step at
batch 32 at that size (above 1: it takes longer). ROUNDS alternate the order; medians are used.

    python benchmarks/candidate_costs.py [--sizes 96 144] [--widths 16 32 48] [--frozen-stem] [--batch-sizes 64]
        [--single-conv-blocks 1 2]
        [--steps 12] [--rounds 2]
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
from pathlib import Path

from timing import BATCH, images_per_s, random_batch, training_images_per_s


def training_rate(width: int, sizes: list[int], steps: int, precision: str, batch: int = BATCH,
                  frozen_stem: bool = False, single_conv_blocks: int = 0) -> dict[int, float]:
    """The fast model's training rate at each size, its stem and first block WIDTH channels wide, in batches of
    BATCH; its stem not trained where FROZEN_STEM; its first SINGLE_CONV_BLOCKS blocks convolving once."""
    import keras

    from catsdogs import model
    from catsdogs.settings import Settings

    original = model.xception_network
    widths = (width, *model.XCEPTION_WIDTHS[1:])
    model.xception_network = functools.partial(original, widths=widths)
    try:
        keras.utils.set_random_seed(0)
        settings = Settings(variant="fast", whiten_stem=False, batch_size=batch, single_conv_blocks=single_conv_blocks)
        network = model.build_network(settings, precision)
        network.get_layer(model.STEM).trainable = not frozen_stem
        network = model.compile_model(network, settings, precision, 100)
    finally:
        model.xception_network = original
    rates = {}
    for size in sizes:
        network.get_layer(model.TRAINING_RESIZE).size.assign(size)
        rates[size] = training_images_per_s(network, network.input_shape[1], steps, batch)
    return rates


def randaugment_rate(sizes: list[int], steps: int) -> dict[int, float]:
    import keras

    from catsdogs.runtime import tensorflow

    tf = tensorflow()
    layer = keras.layers.RandAugment(value_range=(0, 255), num_ops=2, factor=0.5, seed=0)
    augment = tf.function(lambda x: layer(x, training=True))
    rates = {}
    for size in sizes:
        images = tf.constant(random_batch(size)[0])
        rates[size] = images_per_s(lambda images=images: augment(images), steps)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[96, 144])
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 32, 48])
    parser.add_argument("--frozen-stem", action="store_true", help="also the width-32 step with the stem frozen")
    parser.add_argument("--batch-sizes", type=int, nargs="*", default=[], help="also the width-32 step at these")
    parser.add_argument("--single-conv-blocks", type=int, nargs="*", default=[],
                        help="also the width-32 step with this many blocks, from the first, convolving once")
    parser.add_argument("--steps", type=int, default=12, help="timed steps per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; medians are used")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from catsdogs.runtime import resolve_precision

    precision = resolve_precision("auto")
    candidates = {f"width {w}": functools.partial(training_rate, w) for w in dict.fromkeys([32, *args.widths])}
    candidates["randaugment alone"] = lambda sizes, steps, _: randaugment_rate(sizes, steps)
    if args.frozen_stem:
        candidates["frozen stem"] = functools.partial(training_rate, 32, frozen_stem=True)
    for batch in args.batch_sizes:
        candidates[f"batch {batch}"] = functools.partial(training_rate, 32, batch=batch)
    for blocks in args.single_conv_blocks:
        candidates[f"{blocks} single-conv blocks"] = functools.partial(training_rate, 32, single_conv_blocks=blocks)
    names = list(candidates)
    measured: dict[str, list[dict[int, float]]] = {name: [] for name in names}
    for round_ in range(args.rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:
            rates = candidates[name](args.sizes, args.steps, precision)
            measured[name].append(rates)
            print(json.dumps({"what": name, "round": round_, "precision": precision,
                              "images_per_s": {s: round(r, 1) for s, r in rates.items()}}), flush=True)
    medians = {name: {s: statistics.median(r[s] for r in runs) for s in args.sizes} for name, runs in measured.items()}
    reference = medians["width 32"]
    print(json.dumps({"median_images_per_s": {n: {s: round(r, 1) for s, r in m.items()} for n, m in medians.items()},
                      "cost_relative_to_width_32_step": {
                          n: {s: round(reference[s] / r, 2) for s, r in m.items()} for n, m in medians.items()}}))


if __name__ == "__main__":
    main()
