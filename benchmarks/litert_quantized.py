"""LiteRT exports of trained runs side by side: float32 against int8 weights (dynamic-range quantization).

For each run folder: its best checkpoint exported both ways, then each export's speed over the test-time views
the run's settings name (images/s of a whole batch of 32, in process, alternating, median of REPEATS) and its
validation accuracy, with how often the two agree. Chosen on the validation subset, never on the test subset.

    python benchmarks/litert_quantized.py WORKDIR/runs/RUN [WORKDIR/runs/RUN ...] [--repeats 5]

Prints one JSON object per run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from validation_scores import validation_arrays

from catsdogs.lite import LitePredictor
from catsdogs.model import build_network, load_keras_model
from catsdogs.runtime import tensorflow
from catsdogs.settings import Settings


def export(run_dir: Path, settings: Settings, out: Path, quantized: bool) -> Path:
    import tensorflow as tf

    model = load_keras_model(run_dir / "best.keras")
    float32 = build_network(settings, "float32")
    float32.set_weights(model.get_weights())
    options = {"optimizations": [tf.lite.Optimize.DEFAULT]} if quantized else {}
    float32.export(str(out), format="litert", verbose=False, **options)
    return out


def images_per_s(predictor: LitePredictor, batch: np.ndarray) -> float:
    started = time.perf_counter()
    predictor.predict_batch(batch)
    return len(batch) / (time.perf_counter() - started)


def compare(run_dir: Path, repeats: int, folder: Path) -> dict[str, object]:
    saved = json.loads((run_dir / "settings.json").read_text())
    settings = Settings(**{k: v for k, v in saved.items() if k not in ("workdir", "data_url_secret")})
    arrays = validation_arrays(run_dir, settings.image_size)
    images = np.load(arrays.images("validation"))
    labels = np.load(arrays.labels("validation"))
    found: dict[str, object] = {"run": run_dir.name, "seed": settings.seed, "tta_flip": settings.tta_flip,
                                "tta_crop": settings.tta_crop}
    predictors, dog = {}, {}
    for name, quantized in (("float32", False), ("int8_weights", True)):
        path = export(run_dir, settings, folder / f"{run_dir.name}-{name}.tflite", quantized)
        predictors[name] = LitePredictor(path, settings.image_size, bool(settings.tta_flip),
                                         float(settings.tta_crop or 0.0))
        dog[name] = np.concatenate([predictors[name].predict_batch(images[i:i + 32])
                                    for i in range(0, len(images), 32)])
        found[f"{name}_mb"] = round(path.stat().st_size / 2**20, 2)
        found[f"{name}_val_accuracy"] = float(np.mean((dog[name] > 0.5) == labels))
    batch = images[:32]
    speeds: dict[str, list[float]] = {name: [] for name in predictors}
    for name in predictors:
        images_per_s(predictors[name], batch)  # warm-up: sized and allocated once
    for _ in range(repeats):
        for name, predictor in predictors.items():
            speeds[name].append(images_per_s(predictor, batch))
    for name, values in speeds.items():
        found[f"{name}_images_per_s"] = round(statistics.median(values), 1)
    found["speedup"] = round(found["int8_weights_images_per_s"] / found["float32_images_per_s"], 2)
    found["answers_agree"] = float(np.mean((dog["float32"] > 0.5) == (dog["int8_weights"] > 0.5)))
    found["max_probability_difference"] = round(float(np.max(np.abs(dog["float32"] - dog["int8_weights"]))), 4)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (WORKDIR/runs/KEY) with best.keras")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    tensorflow()
    with tempfile.TemporaryDirectory() as folder:
        for run in args.runs:
            print(json.dumps(compare(run, args.repeats, Path(folder))), flush=True)


if __name__ == "__main__":
    main()
