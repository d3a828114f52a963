"""A registration's LiteRT export, two ways side by side: Keras' own (`model.export(format="litert")`, which
writes a SavedModel and converts it) against catsdogs.registry.litert_flatbuffer (the traced inference, its
weights frozen in, converted directly), on each variant's network at its image size (its weights as built,
with batch normalisation's moving statistics set at random, where a wrong fold would show).

    python benchmarks/litert_export.py [--variants baseline fast xception efficientnet] [--rounds 2]

For each variant, alternating the two ways ROUNDS times: the median seconds of each, their ratio, the largest
difference between the two exports' answers and Keras' own on the same random images, and the files' sizes.
Prints one JSON line per variant.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from catsdogs.lite import LitePredictor
from catsdogs.model import build_network
from catsdogs.registry import litert_flatbuffer
from catsdogs.runtime import tensorflow
from catsdogs.settings import Settings


def move_statistics(model) -> None:
    rng = np.random.default_rng(0)
    for weight in model.weights:
        if weight.path.endswith("/moving_mean"):
            weight.assign(rng.uniform(-0.2, 0.2, weight.shape).astype("float32"))
        elif weight.path.endswith("/moving_variance"):
            weight.assign(rng.uniform(0.5, 1.5, weight.shape).astype("float32"))


def compare(variant: str, rounds: int, folder: Path) -> dict[str, object]:
    model = build_network(Settings(variant=variant, backbone_weights="random"), "float32")
    move_statistics(model)
    ways = {"keras": lambda out: model.export(str(out), format="litert", verbose=False),
            "frozen": lambda out: out.write_bytes(litert_flatbuffer(model))}
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, export in ways.items():
            started = time.perf_counter()
            export(folder / f"{name}.tflite")
            seconds[name].append(time.perf_counter() - started)
    size = model.input_shape[1]
    images = np.random.default_rng(0).uniform(0, 255, (8, size, size, 3)).astype("float32")
    expected = model.predict(images, verbose=0)[:, 0]
    answers = {name: LitePredictor(folder / f"{name}.tflite", size).predict_batch(images) for name in ways}
    median = {name: statistics.median(times) for name, times in seconds.items()}
    return {"variant": variant, "image_size": size, "seconds": seconds,
            "median_s": {name: round(value, 3) for name, value in median.items()},
            "keras_over_frozen": round(median["keras"] / median["frozen"], 2),
            "largest_difference_from_keras_predict": {
                name: float(np.abs(answer - expected).max()) for name, answer in answers.items()},
            "bytes": {name: (folder / f"{name}.tflite").stat().st_size for name in ways}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=["baseline", "fast", "xception", "efficientnet"])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    tensorflow()
    with tempfile.TemporaryDirectory() as folder:
        for variant in args.variants:
            print(json.dumps(compare(variant, args.rounds, Path(folder))), flush=True)


if __name__ == "__main__":
    main()
