"""What a training step of xception's body costs by the form of its 3x3 convolutions, and per step or per image.

Issue 23 asks for channel counts and layer shapes that suit the CPU. In one fresh process, the body of the
xception network (its stem, five blocks of two 3x3 convolutions with batch normalisation, pooled residuals)
trains whole epochs of 2,016 random images (`model.fit`, one batch held in memory, `auto` precision, AdamW)
with its 3x3 convolutions in four forms: Keras' SeparableConv2D (the network's), a DepthwiseConv2D then a
1x1 Conv2D (the same arithmetic in two layers), a grouped Conv2D (one group a channel) then a 1x1, and a full
Conv2D (7x the weights). The forms are timed in turn within each round, so the machine's drift falls on all
alike. Then, at the smallest size, the separable body again in batches of 16, 32 and 128: a cost paid per
step shrinks with fewer, larger batches; one paid per image does not. Prints one JSON object (seconds an
epoch, medians of ROUNDS).

    python benchmarks/conv_forms.py [--sizes 32 96] [--rounds 3]   # about 9 minutes on 2 cores: grouped
                                                                    # convolutions take a minute an epoch at 96 px
    python benchmarks/conv_forms.py --sizes 96 144 --forms separable depthwise+1x1 --no-batches
"""

from __future__ import annotations

import argparse
import json

from timing import run_fresh

ONE = """
import json, statistics, sys, time
import numpy as np
from catsdogs.runtime import resolve_precision, tensorflow
tf = tensorflow()
import keras
from keras import layers
from catsdogs.model import XCEPTION_WIDTHS, custom_layers
sizes, rounds, forms = [int(s) for s in sys.argv[1].split(",")], int(sys.argv[2]), sys.argv[3].split(",")
batches = sys.argv[4] == "1"
precision, images = resolve_precision("auto"), 2016
BN = custom_layers()["BatchNormalization"]

def conv3(form, width, channels):
    if form == "separable":
        return [layers.SeparableConv2D(width, 3, padding="same", use_bias=False, dtype=precision)]
    if form == "depthwise+1x1":
        return [layers.DepthwiseConv2D(3, padding="same", use_bias=False, dtype=precision),
                layers.Conv2D(width, 1, use_bias=False, dtype=precision)]
    if form == "grouped+1x1":
        return [layers.Conv2D(channels, 3, padding="same", groups=channels, use_bias=False, dtype=precision),
                layers.Conv2D(width, 1, use_bias=False, dtype=precision)]
    return [layers.Conv2D(width, 3, padding="same", use_bias=False, dtype=precision)]

def body(form, size):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 3))
    x = layers.Conv2D(XCEPTION_WIDTHS[0], 5, strides=2, padding="same", use_bias=False, dtype=precision)(
        layers.Rescaling(1 / 255, dtype=precision)(inputs))
    channels = XCEPTION_WIDTHS[0]
    for width in XCEPTION_WIDTHS:
        residual = x
        for _ in range(2):
            x = layers.Activation("relu", dtype=precision)(BN(dtype=precision)(x))
            for layer in conv3(form, width, channels):
                x = layer(x)
            channels = width
        x = layers.MaxPooling2D(3, strides=2, padding="same", dtype=precision)(x)
        x = layers.add([x, layers.Conv2D(width, 1, strides=2, padding="same", use_bias=False,
                                         dtype=precision)(residual)], dtype=precision)
    x = layers.GlobalAveragePooling2D(dtype=precision)(layers.Activation("relu", dtype=precision)(
        BN(dtype=precision)(x)))
    model = keras.Model(inputs, layers.Dense(1, activation="sigmoid", dtype="float32")(x))
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss="binary_crossentropy")
    return model

def feed(size, batch):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (batch, size, size, 3)).astype("float32")
    y = rng.integers(0, 2, batch).astype("float32")
    return tf.data.Dataset.from_tensors((x, y)).repeat(images // batch).prefetch(2)

def medians(pairs):
    # each (model, data) trained an untimed epoch first (tracing), then ROUNDS epochs in turn with the others
    def epoch_s(model, data):
        start = time.perf_counter()
        model.fit(data, epochs=1, verbose=0)
        return time.perf_counter() - start
    for model, data in pairs.values():
        epoch_s(model, data)
    times = {name: [] for name in pairs}
    for _ in range(rounds):
        for name, (model, data) in pairs.items():
            times[name].append(epoch_s(model, data))
    return {name: round(statistics.median(t), 2) for name, t in times.items()}

out = {"precision": precision, "images_per_epoch": images, "epoch_s": {}}
for size in sizes:
    out["epoch_s"][size] = medians({form: (body(form, size), feed(size, 32)) for form in forms})
smallest = min(sizes)
if batches:
    out["separable_by_batch_epoch_s"] = {smallest: medians(
        {batch: (body("separable", smallest), feed(smallest, batch)) for batch in (16, 32, 128)})}
print(json.dumps(out))
"""


FORMS = ["separable", "depthwise+1x1", "grouped+1x1", "full"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 96], help="training sizes, in px")
    parser.add_argument("--rounds", type=int, default=3, help="timed epochs per measure; the median is printed")
    parser.add_argument("--forms", nargs="+", choices=FORMS, default=FORMS, help="the forms to time (default: all)")
    parser.add_argument("--no-batches", action="store_true", help="leave out the batch sizes at the smallest size")
    args = parser.parse_args()
    done = run_fresh(ONE, ",".join(map(str, args.sizes)), str(args.rounds), ",".join(args.forms),
                     "0" if args.no_batches else "1")
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    print(json.dumps(json.loads(done.stdout.strip().splitlines()[-1])))


if __name__ == "__main__":
    main()
