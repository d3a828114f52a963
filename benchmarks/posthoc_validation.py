"""Validation accuracy of trained runs under choices made after training: test-time views and BatchNorm
statistics. Chosen here, on the validation subset, never on the test subset.

- Views (the settings tta_flip, tta_crop and tta_zoom_out): each image as it is, mirrored, its centre crop (a
  fraction of each side, resized back to the input size with the training's bilinear kernel) and the image
  zoomed out (shrunk, the border filled by reflection), mirrored too; a view set is scored by the mean of its
  views' probabilities of dog, as evaluation and prediction score it. Candidate sets no setting names yet are
  scored beside them: a second centre crop, the images moved by 8 px, the four corner crops with the centre
  one, and two zoomed-out views at once.
- BatchNorm statistics: as training left them (moving averages of augmented, MixUp-blended batches under the
  raw weights, while the checkpoint holds the weights' moving average), or recomputed for the checkpoint's
  own weights over the clean training images.

    python benchmarks/posthoc_validation.py [--as-trained-only] WORKDIR/runs/RUN [WORKDIR/runs/RUN ...]

Prints one JSON object per run and BatchNorm choice, then one with the means over runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
from collections.abc import Callable
from pathlib import Path

import numpy as np
from validation_scores import validation_arrays

from catsdogs.images import resize_bilinear
from catsdogs.model import load_keras_model
from catsdogs.runtime import tensorflow
from catsdogs.views import centre_crop, mean_over_views, test_time_views, views_averaged, zoomed_out

# Each view set the settings tta_flip, tta_crop and tta_zoom_out can name, as those settings. The zoomed-out
# ones take the far end of the training's RandomZoom (a fifth each way) as the crops take the near end.
VIEW_SETS = {"plain": (False, 0.0, 0.0), "flip": (True, 0.0, 0.0), "flip+crop0.9": (True, 0.9, 0.0),
             "flip+crop0.8": (True, 0.8, 0.0), "flip+crop0.7": (True, 0.7, 0.0),
             "flip+crop0.8+zoomout0.89": (True, 0.8, 0.89), "flip+crop0.8+zoomout0.83": (True, 0.8, 0.83)}
# Candidates no setting names yet, each a function of a batch to its views: are they worth a setting?
CANDIDATE_SETS: dict[str, Callable[[np.ndarray], list[np.ndarray]]] = {
    "flip+crop0.8+crop0.9": lambda images: [*test_time_views(images, True, 0.8), *test_time_views(
        centre_crop(images, 0.9), True)],
    "flip+shift8": lambda images: [view for shifted in shifts(images, 8) for view in test_time_views(shifted, True)],
    "flip+crop0.8+shift8": lambda images: [*test_time_views(images, True, 0.8), *(
        view for shifted in shifts(images, 8)[1:] for view in test_time_views(shifted, True))],
    "flip+five-crops0.8": lambda images: [*test_time_views(images, True), *(
        view for crop in corner_crops(images, 0.8) for view in test_time_views(crop, True))],
    "flip+crop0.8+zoomout0.89+0.83": lambda images: [*test_time_views(images, True, 0.8), *(
        view for fraction in (0.89, 0.83) for view in test_time_views(zoomed_out(images, fraction), True))],
    "flip+crop0.8+crop0.9+zoomout0.89": lambda images: [*test_time_views(images, True, 0.8), *test_time_views(
        centre_crop(images, 0.9), True), *test_time_views(zoomed_out(images, 0.89), True)],
}


def shifts(images: np.ndarray, pixels: int) -> list[np.ndarray]:
    """The images, then moved PIXELS both ways along each axis, the edge reflected into the gap (as RandomZoom
    fills)."""
    padded = np.pad(images, ((0, 0), (pixels, pixels), (pixels, pixels), (0, 0)), mode="reflect")
    size, p = images.shape[1], pixels
    return [images, *(padded[:, p + dy:p + dy + size, p + dx:p + dx + size]
                      for dy, dx in ((-p, 0), (p, 0), (0, -p), (0, p)))]


def corner_crops(images: np.ndarray, fraction: float) -> list[np.ndarray]:
    """The centre crop and the four corner crops of FRACTION of each side, each resized back like centre_crop."""
    size = images.shape[1]
    side = round(size * fraction)
    corners = [(0, 0), (0, size - side), (size - side, 0), (size - side, size - side)]
    return [centre_crop(images, fraction),
            *(np.round(resize_bilinear(images[:, y:y + side, x:x + side], size)) for y, x in corners)]


def dog_probabilities(model, images: np.ndarray) -> dict[str, np.ndarray]:
    """Each view set's probabilities of dog, averaged over its views by views_averaged, as every predictor does."""
    seen: dict[str, np.ndarray] = {}  # each distinct view run once: the plain and mirrored images recur across sets

    def run(view: np.ndarray) -> np.ndarray:
        key = hashlib.sha256(view.tobytes()).hexdigest()
        if key not in seen:
            seen[key] = model.predict(view, batch_size=100, verbose=0)
        return seen[key]

    averaged = {name: views_averaged(run, images, *views) for name, views in VIEW_SETS.items()}
    for name, views_of in CANDIDATE_SETS.items():
        averaged[name] = mean_over_views(run, views_of(np.asarray(images)))
    return averaged


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
    for name in [*VIEW_SETS, *CANDIDATE_SETS]:
        row[name] = float(np.mean((dog[name] > 0.5) == labels))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (WORKDIR/runs/KEY) with best.keras")
    parser.add_argument("--as-trained-only", action="store_true", help="skip the recomputed BatchNorm statistics")
    args = parser.parse_args()
    tensorflow()
    for recalibrate in (False,) if args.as_trained_only else (False, True):
        rows = [scores(run, recalibrate) for run in args.runs]
        for row in rows:
            print(json.dumps(row))
        print(json.dumps({"runs": len(rows), "batchnorm": rows[0]["batchnorm"],
                          **{name: round(statistics.mean(r[name] for r in rows), 4)
                             for name in [*VIEW_SETS, *CANDIDATE_SETS]}}))


if __name__ == "__main__":
    main()
