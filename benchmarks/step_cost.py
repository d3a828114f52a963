"""Where a fast epoch's time goes: the input pipeline, the pixels, or a cost every step pays whatever its size.

In one fresh process, the fast model (`auto` precision, batch 32) trains whole epochs of 2,000 images (63 steps,
`model.fit` as a run calls it) at each size, fed two ways: by catsdogs' own input pipeline
(`catsdogs.datasets.load_split` over 2,000 random uint8 images of fast's image_size, shuffled, cast, blended by
fast's MixUp) and by one batch of it repeated (no pipeline work). Then the same pipeline iterated alone, and the
smallest size again with the optimizer's extras off (no weight averaging; Adam without weight decay): what is
left at a size where the convolutions cost almost nothing is the cost of running the network's ops at all;
and that size once more in batches of 64 (half the steps), to tell a cost paid per step from one paid per image.
Prints one JSON object: seconds an epoch (median of ROUNDS) for each, and the per-step cost at the smallest size.

    python benchmarks/step_cost.py [--sizes 32 96 144] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json

from timing import run_fresh

ONE = """
import json, statistics, sys, time
from catsdogs.runtime import resolve_precision, tensorflow
tf = tensorflow()
import keras
from catsdogs.model import TRAINING_RESIZE, build_for
from catsdogs.settings import Settings
from timing import fast_training_pipeline
sizes, rounds = [int(s) for s in sys.argv[1].split(",")], int(sys.argv[2])
count = 2000
fast, pipeline, steps = fast_training_pipeline(count)
batch = int(fast.batch_size)
one_batch = tf.data.Dataset.from_tensors(next(iter(pipeline))).repeat(steps).prefetch(2)  # as the pipeline
precision = resolve_precision("auto")

def epoch_s(model, data):
    start = time.perf_counter()
    model.fit(data, epochs=1, verbose=0)
    return time.perf_counter() - start

def median_epoch_s(model, *feeds):
    # the median seconds of an epoch fed by each of FEEDS, taken in turn within each round (the machine's drift
    # then falls on all alike), after an untimed epoch of each (tracing, warm-up)
    for data in feeds:
        epoch_s(model, data)
    times = [[epoch_s(model, data) for data in feeds] for _ in range(rounds)]
    return [round(statistics.median(column), 2) for column in zip(*times)]

def fast_model(**changes):
    keras.utils.set_random_seed(0)
    return build_for(Settings(variant="fast", whiten_stem=False, **changes), precision, steps_per_epoch=steps)

out = {"precision": precision, "steps_per_epoch": steps, "epoch_s": {}}
model = fast_model()
for size in sizes:
    model.get_layer(TRAINING_RESIZE).size.assign(size)
    out["epoch_s"][size] = dict(zip(("pipeline", "one_batch"), median_epoch_s(model, pipeline, one_batch)))
start = time.perf_counter()
sum(1 for _ in pipeline)
out["pipeline_alone_epoch_s"] = round(time.perf_counter() - start, 2)
bare = fast_model(ema=0.0, optimizer="adam", weight_decay=0.0)
bare.get_layer(TRAINING_RESIZE).size.assign(min(sizes))
out["smallest_one_batch_no_ema_adam_epoch_s"] = median_epoch_s(bare, one_batch)[0]
# the same images in half the steps: a cost paid per step halves, one paid per image stays
images, labels = next(iter(one_batch))
doubled = tf.data.Dataset.from_tensors((tf.concat([images, images], 0), tf.concat([labels, labels], 0)))
model.get_layer(TRAINING_RESIZE).size.assign(min(sizes))
out["smallest_batch64_epoch_s"] = median_epoch_s(model, doubled.repeat(-(-count // (2 * batch))).prefetch(2))[0]
out["smallest_step_ms"] = round(1000 * out["epoch_s"][min(sizes)]["one_batch"] / steps, 1)
print(json.dumps(out))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 96, 144], help="training sizes, in px")
    parser.add_argument("--rounds", type=int, default=3, help="timed epochs per measure; the median is printed")
    args = parser.parse_args()
    done = run_fresh(ONE, ",".join(map(str, args.sizes)), str(args.rounds))
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    print(json.dumps(json.loads(done.stdout.strip().splitlines()[-1])))


if __name__ == "__main__":
    main()
