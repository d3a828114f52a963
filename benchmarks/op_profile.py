"""Which TensorFlow ops a fast epoch spends its time in: TensorFlow's own profiler, summed by op.

In one fresh process, the fast model (`auto` precision, batch 32, no stem whitening) trains whole epochs of 2,000
images (63 steps, `model.fit` as a run calls it) over catsdogs' own input pipeline (`load_split`: 2,000 random
uint8 images of fast's image_size, shuffled, cast, blended by fast's MixUp) at each size: one untimed epoch
(tracing), one timed, then one under `tf.profiler`. The profile's op events (TensorFlow's executor threads) are
summed by op type (oneDNN's `_MklNative` prefix dropped), by part of the step (the augmentation, the network's
forward pass, its gradients, and the rest: the optimizer, the weight average, the metrics) and by the layers they
belong to, forward and gradients together (the input's resize and augmentation, the stem, each residual block
with its width, the head), beside each part's share of the forward pass's multiply-adds (its convolutions, at the
full image size: the shares hold at any size). Op seconds may add up to more than the epoch's wall time: ops run
on several threads at once. Prints one JSON object per size.

    python benchmarks/op_profile.py [--sizes 96 144] [--top 12]
"""

from __future__ import annotations

import argparse
import json

from timing import run_fresh

ONE = """
import collections, glob, json, re, sys, tempfile, time
from pathlib import Path
from catsdogs.runtime import resolve_precision, tensorflow
tf = tensorflow()
import keras
from tensorflow.tsl.profiler.protobuf import xplane_pb2
from catsdogs.model import STEM, TRAINING_RESIZE, XCEPTION_WIDTHS, build_for
from catsdogs.settings import Settings
from timing import fast_training_pipeline
size, top = int(sys.argv[1]), int(sys.argv[2])
_, pipeline, steps = fast_training_pipeline()
precision = resolve_precision("auto")
keras.utils.set_random_seed(0)
model = build_for(Settings(variant="fast", whiten_stem=False), precision, steps_per_epoch=steps)
logdir = Path(tempfile.mkdtemp()) / "profile"
model.get_layer(TRAINING_RESIZE).size.assign(size)
model.fit(pipeline, epochs=1, verbose=0)
start = time.perf_counter()
model.fit(pipeline, epochs=1, verbose=0)
epoch_s = time.perf_counter() - start
tf.profiler.experimental.start(str(logdir))
model.fit(pipeline, epochs=1, verbose=0)
tf.profiler.experimental.stop()
# Each layer's part of the network, in the order of model.layers: the blocks end at their residual additions.
layer_parts, blocks_done = {}, -1
for layer in model.layers:
    blocks_done += layer.name == STEM
    if blocks_done < 0:
        layer_parts[layer.name] = "input (resize, augmentation, rescaling)"
    elif blocks_done < len(XCEPTION_WIDTHS):
        layer_parts[layer.name] = "stem" if layer.name == STEM else (
            f"block {blocks_done + 1} ({XCEPTION_WIDTHS[blocks_done]} wide)")
        blocks_done += layer.name.startswith("add")
    else:
        layer_parts[layer.name] = "head (normalisation, pooling, dropout, dense)"


# The part of the network an op belongs to. TensorFlow scopes a layer's ops in the layer's name with a counter
# appended ("conv2d_1" for the layer conv2d, "conv2d_1_2" for conv2d_1), inside the model's scope: the scope
# "conv2d_1" is the layer conv2d's, not conv2d_1's (a bare name is taken only where no layer's name and counter fit).
def layer_part(name):
    scopes = name.split("/")
    for outer, scope in zip(scopes, scopes[1:]):
        if re.fullmatch(re.escape(model.name) + r"(_[0-9]+)?", outer):
            owners = [layer for layer in layer_parts if re.fullmatch(re.escape(layer) + r"_[0-9]+", scope)] or [
                layer for layer in layer_parts if layer == scope]
            return layer_parts[owners[0]] if owners else "the model's own ops"
    return "outside the network (optimizer, average, metrics)"


# The forward pass's multiply-adds of a layer at the model's image size (its static shapes), convolutions only:
# the arithmetic each part of the network has to do, beside the time it takes.
def multiply_adds(layer):
    if not isinstance(layer, keras.layers.Conv2D | keras.layers.SeparableConv2D):
        return 0
    height, width, filters = layer.output.shape[1:]
    channels, taps = layer.input.shape[-1], layer.kernel_size[0] * layer.kernel_size[1]
    if isinstance(layer, keras.layers.SeparableConv2D):
        return height * width * channels * layer.depth_multiplier * (taps + filters)
    return height * width * taps * channels * filters


arithmetic = collections.Counter()
for layer in model.layers:
    arithmetic[layer_parts[layer.name]] += multiply_adds(layer)


space = xplane_pb2.XSpace()
space.ParseFromString(Path(sorted(glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True))[-1]).read_bytes())
by_op, by_part, by_layers = collections.Counter(), collections.Counter(), collections.Counter()
for plane in space.planes:
    for line in plane.lines:
        if not line.name.startswith("tf_Compute"):
            continue
        for event in line.events:
            name = plane.event_metadata[event.metadata_id].name  # an op's: "scope/.../op_name:OpType"
            if "/" not in name or ":" not in name.rsplit("/", 1)[1]:  # the executor's own spans, around the ops
                continue
            seconds = event.duration_ps / 1e12
            by_op[name.rsplit(":", 1)[1].removeprefix("_MklNative").removeprefix("_Mkl")] += seconds
            part = ("augmentation" if "data_augmentation" in name else
                    "gradients" if "gradient_tape/" in name else
                    "forward" if model.name in name else "optimizer, average, metrics")
            by_part[part] += seconds
            by_layers[layer_part(name)] += seconds
total = sum(by_op.values())
print(json.dumps({"size": size, "precision": precision, "epoch_s": round(epoch_s, 2), "op_s": round(total, 2),
                  "by_part": {k: round(v / total, 3) for k, v in by_part.most_common()},
                  "by_op": {k: round(v / total, 3) for k, v in by_op.most_common(top)},
                  "by_layers": {k: round(v / total, 3) for k, v in by_layers.most_common()},
                  "multiply_adds_per_image_at_full_size": sum(arithmetic.values()),
                  "multiply_adds_by_layers": {k: round(v / sum(arithmetic.values()), 3)
                                              for k, v in arithmetic.most_common() if v}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[96, 144], help="training sizes, in px")
    parser.add_argument("--top", type=int, default=12, help="how many op types to list, by time")
    args = parser.parse_args()
    for size in args.sizes:
        done = run_fresh(ONE, str(size), str(args.top))
        if done.returncode != 0:
            raise SystemExit(done.stderr[-2000:])
        print(json.dumps(json.loads(done.stdout.strip().splitlines()[-1])))


if __name__ == "__main__":
    main()
