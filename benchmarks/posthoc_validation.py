"""Validation accuracy of trained runs under choices made after training: test-time views and BatchNorm
statistics. Chosen here, on the validation subset, never on the test subset.

- Views (the settings tta_flip and tta_crop): each image as it is, mirrored, and its centre crop (a fraction of
  each side, resized back to the input size with the training's bilinear kernel), mirrored too; a view set is
  scored by the mean of its views' probabilities of dog, as evaluation and prediction score it.
- BatchNorm statistics: as training left them (moving averages of augmented, MixUp-blended batches under the
  raw weights, while the checkpoint holds the weights' moving average), or recomputed for the checkpoint's
  own weights over the clean training images.

    python benchmarks/posthoc_validation.py WORKDIR/runs/RUN [WORKDIR/runs/RUN ...]

Prints one JSON object per run and BatchNorm choice, then one with the means over runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
from pathlib import Path

import numpy as np
from validation_scores import validation_arrays

from catsdogs.model import load_keras_model
from catsdogs.runtime import tensorflow
from catsdogs.views import views_averaged

# Each view set as the settings tta_flip and tta_crop name it.
VIEW_SETS = {"plain": (False, 0.0), "flip": (True, 0.0), "flip+crop0.9": (True, 0.9), "flip+crop0.8": (True, 0.8),
             "flip+crop0.7": (True, 0.7)}


def dog_probabilities(model, images: np.ndarray) -> dict[str, np.ndarray]:
    """Each view set's probabilities of dog, averaged over its views by views_averaged, as every predictor does."""
    seen: dict[str, np.ndarray] = {}  # each distinct view run once: the plain and mirrored images recur across sets

    def run(view: np.ndarray) -> np.ndarray:
        key = hashlib.sha256(view.tobytes()).hexdigest()
        if key not in seen:
            seen[key] = model.predict(view, batch_size=100, verbose=0)
        return seen[key]

    return {name: views_averaged(run, images, flip, crop) for name, (flip, crop) in VIEW_SETS.items()}


def recalibrate_batchnorm(model, images: np.ndarray, batch_size: int = 50) -> None:
    """Replace every BatchNorm layer's moving statistics by their mean over IMAGES under the model's weights
    (the augmentation layers left out, so the images are seen clean)."""
    import keras

    layers = model.layers
    first = next(i for i, layer in enumerate(layers) if layer.name.startswith("rescaling"))
    body = keras.Model(layers[first].input, model.output)
    norms = [layer for layer in body.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms:
        layer.moving_mean.assign(np.zeros(layer.moving_mean.shape))
        layer.moving_variance.assign(np.zeros(layer.moving_variance.shape))
    for step, start in enumerate(range(0, len(images), batch_size)):
        for layer in norms:  # a running mean: batch k weighs 1/(k+1)
            layer.momentum = step / (step + 1)
        body(images[start:start + batch_size].astype(np.float32), training=True)
    for layer in norms:
        layer.momentum = 0.99


def scores(run_dir: Path, recalibrate: bool) -> dict[str, object]:

    settings = json.loads((run_dir / "settings.json").read_text())
    arrays = validation_arrays(run_dir, settings["image_size"])
    images = np.load(arrays.images("validation"))
    labels = np.load(arrays.labels("validation"))
    model = load_keras_model(run_dir / "best.keras")
    if recalibrate:
        recalibrate_batchnorm(model, np.load(arrays.images("train")))
    dog = dog_probabilities(model, images)
    row: dict[str, object] = {"run": run_dir.name, "seed": settings["seed"], "batchnorm":
                              "recomputed" if recalibrate else "as trained"}
    for name in VIEW_SETS:
        row[name] = float(np.mean((dog[name] > 0.5) == labels))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (WORKDIR/runs/KEY) with best.keras")
    args = parser.parse_args()
    tensorflow()
    for recalibrate in (False, True):
        rows = [scores(run, recalibrate) for run in args.runs]
        for row in rows:
            print(json.dumps(row))
        print(json.dumps({"runs": len(rows), "batchnorm": rows[0]["batchnorm"],
                          **{name: round(statistics.mean(r[name] for r in rows), 4) for name in VIEW_SETS}}))


if __name__ == "__main__":
    main()
