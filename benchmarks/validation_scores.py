"""Validation scores of trained runs' best checkpoints: what a recipe is chosen on (never the test subset).

For each run folder: its best epoch and that epoch's validation loss (from the history; label-smoothed where
the recipe smooths), and the best checkpoint's accuracy on the validation images without and with flip
averaging, and over the run's own test-time views. With its views, too: the confusion (rows true cat, dog), the
mean probability of dog (0.5 on these balanced images for a model without a lean to either class), and what
moving the decision by one logit shift would gain: fitted (lowest cross-entropy) on a random half of the
images and scored on the other half, averaged over 20 random halvings each way. The images come from the run's
workdir: the decoded dataset it was evaluated on. Prints one JSON object per run, then one with the means.

    python benchmarks/validation_scores.py WORKDIR/runs/RUN [WORKDIR/runs/RUN ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np

from catsdogs import store
from catsdogs.datasets import DatasetArrays, load_arrays
from catsdogs.model import load_keras_model
from catsdogs.runtime import tensorflow
from catsdogs.train import best_row, binary_crossentropy, predict_probabilities, read_history
from catsdogs.views import views_name, views_of


def validation_arrays(run_dir: Path, image_size: int) -> DatasetArrays:
    """The dataset the run trained on, as its marker's lineage names it; for a run made before markers
    recorded lineage, the finished dataset of its workdir at its image size with the test images its
    evaluation scored (so the same subsets, hence the same validation images)."""
    workdir = run_dir.parents[1]
    if datasets := store.read_lineage(run_dir).get("inputs", {}).get("datasets"):
        return load_arrays(workdir / datasets.removeprefix("WORKDIR/"))
    evaluated = {row["file"] for path in run_dir.glob("evaluation*/test-predictions.json")
                 for row in json.loads(path.read_text())}
    if not evaluated:
        raise SystemExit(f"{run_dir}: not evaluated yet (an unfinished run?); finish its run first")
    for marker in sorted((workdir / "datasets").glob(f"*/{store.MARKER}")):
        arrays = load_arrays(marker.parent)
        if arrays.image_size == image_size and set(arrays.files("test")) == evaluated:
            return arrays
    raise SystemExit(f"{run_dir}: no finished {image_size}-px dataset in {workdir / 'datasets'} holds the test "
                     "images its evaluation scored; run its training flow again to rebuild it")


def scores(run_dir: Path) -> dict[str, object]:

    settings = json.loads((run_dir / "settings.json").read_text())
    arrays = validation_arrays(run_dir, settings["image_size"])
    images = np.load(arrays.images("validation")).astype("float32")
    labels = np.load(arrays.labels("validation"))
    model = load_keras_model(run_dir / "best.keras")
    best = best_row(read_history(run_dir / "history.json"))
    dog = predict_probabilities(model, images, *views_of(settings))
    return {
        "run": run_dir.name, "seed": settings["seed"], "mixup": settings.get("mixup"), "ema": settings.get("ema"),
        "views": views_name("views", *views_of(settings)), "best_epoch": int(best["epoch"]),
        "val_loss": round(best["val_loss"], 4),
        "val_accuracy": float(np.mean((predict_probabilities(model, images) > 0.5) == labels)),
        "val_accuracy_flips": float(np.mean((predict_probabilities(model, images, tta_flip=True) > 0.5) == labels)),
        "val_accuracy_views": float(np.mean((dog > 0.5) == labels)),
        "confusion_views": [[int(np.sum((labels == t) & ((dog > 0.5) == p))) for p in (0, 1)] for t in (0, 1)],
        "mean_dog_probability": round(float(np.mean(dog)), 4), "shift_gain_held_out": round(shift_gain(dog, labels), 4),
    }


SHIFTS = np.linspace(-1.5, 1.5, 601)  # candidate logit shifts, 0.005 apart


def shift_gain(dog: np.ndarray, labels: np.ndarray, halvings: int = 20) -> float:
    """Mean accuracy gained on one half of the images by the logit shift of lowest cross-entropy on the other."""
    logits = np.log(np.clip(dog, 1e-7, 1 - 1e-7) / np.clip(1 - dog, 1e-7, 1 - 1e-7))
    rng, gains = np.random.default_rng(0), []
    for _ in range(halvings):
        order = rng.permutation(len(labels))
        for fit, score in ((order[::2], order[1::2]), (order[1::2], order[::2])):
            shifted = 1 / (1 + np.exp(-(logits[fit][None, :] + SHIFTS[:, None])))
            shift = SHIFTS[np.argmin([binary_crossentropy(labels[fit], row) for row in shifted])]
            gains.append(np.mean((logits[score] + shift > 0) == labels[score]) -
                         np.mean((logits[score] > 0) == labels[score]))
    return float(np.mean(gains))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (WORKDIR/runs/KEY) with best.keras")
    args = parser.parse_args()
    tensorflow()
    rows = [scores(run) for run in args.runs]
    for row in rows:
        print(json.dumps(row))
    averaged = ("val_loss", "val_accuracy", "val_accuracy_flips", "val_accuracy_views", "mean_dog_probability",
                "shift_gain_held_out")
    print(json.dumps({"runs": len(rows), **{f"mean_{name}": round(statistics.mean(r[name] for r in rows), 4)
                                           for name in averaged}}))


if __name__ == "__main__":
    main()
