"""Validation accuracy of trained runs fed their images at other sizes than the one they trained at.

FixRes (Touvron et al., 2019) found that a network trained on random crops sees objects larger in training than
in testing, and scores higher tested at a larger size than it trained at. catsdogs' from-scratch networks end
in global average pooling, so their weights run at any size: each run's weights are put in its network built
for each size, and its validation images (decoded from its own subsets at that size, as its dataset step
decodes them) are scored over the view sets the settings tta_flip, tta_crop and tta_zoom_out can name. Chosen on the
validation subset, never on the test subset.

    python benchmarks/inference_sizes.py [--sizes 128 144 160 176 192] WORKDIR/runs/RUN [WORKDIR/runs/RUN ...]

Prints one JSON object per run and size: accuracy and cross-entropy per view set.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from posthoc_validation import VIEW_SETS

from catsdogs import store
from catsdogs.data import CLASS_NAMES
from catsdogs.model import build_network, load_keras_model
from catsdogs.runtime import tensorflow
from catsdogs.settings import Settings
from catsdogs.train import binary_crossentropy
from catsdogs.views import views_averaged


def subsets_of(run_dir: Path) -> Path:
    """The subsets folder the run's dataset was decoded from, as the markers' lineage names it."""
    workdir = run_dir.parents[1]
    datasets = store.read_lineage(run_dir).get("inputs", {}).get("datasets")
    if not datasets:
        raise SystemExit(f"{run_dir}: its marker names no dataset (made before markers recorded lineage)")
    subsets = store.read_lineage(workdir / datasets.removeprefix("WORKDIR/"))["inputs"]["subsets"]
    return workdir / subsets.removeprefix("WORKDIR/")


def validation_at(subsets: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The validation images at SIZE, decoded and rounded as catsdogs.datasets does, and their labels."""
    tf = tensorflow()
    import keras

    dataset = keras.utils.image_dataset_from_directory(
        subsets / "validation", label_mode="binary", class_names=list(CLASS_NAMES), image_size=(size, size),
        batch_size=100, shuffle=False, verbose=False)
    batches = [(tf.round(images).numpy(), labels.numpy()[:, 0]) for images, labels in dataset]
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def scores(run_dir: Path, sizes: list[int]) -> list[dict[str, object]]:
    raw = json.loads((run_dir / "settings.json").read_text())
    trained = load_keras_model(run_dir / "best.keras")
    subsets, rows = subsets_of(run_dir), []
    for size in sizes:
        images, labels = validation_at(subsets, size)
        model = build_network(Settings(**{**raw, "image_size": size}), "float32")
        model.set_weights(trained.get_weights())
        row: dict[str, object] = {"run": run_dir.name, "seed": raw["seed"], "trained_at": raw["image_size"],
                                  "size": size}
        def run(view: np.ndarray, model=model) -> np.ndarray:
            return model.predict(view, batch_size=100, verbose=0)

        for name, views in VIEW_SETS.items():
            dog = views_averaged(run, images, *views)
            row[name] = round(float(np.mean((dog > 0.5) == labels)), 4)
            row[f"{name}_loss"] = round(float(binary_crossentropy(labels, dog)), 4)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (WORKDIR/runs/KEY) with best.keras")
    parser.add_argument("--sizes", nargs="+", type=int, default=[128, 144, 160, 176, 192])
    args = parser.parse_args()
    tensorflow()
    for run in args.runs:
        for row in scores(run, args.sizes):
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
