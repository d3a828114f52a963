"""How far averaging finished runs goes: each run's accuracy and the ensemble's, on validation and test.

Each run's best checkpoint gives each image's probability of dog over its own test-time views (as its
evaluation does); the ensemble averages those probabilities over the runs and thresholds at 0.5. Runs of
different image sizes mix (each reads its own dataset; images are matched by file name). A measure of what an
ensemble, or a model distilled from one, could at most be expected to reach from these runs: nothing here
chooses a recipe, so the test column is reported beside validation. Prints one JSON object per run, then the
ensemble's.

    python benchmarks/ensemble_accuracy.py WORKDIR/runs/RUN WORKDIR/runs/RUN [...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from validation_scores import validation_arrays

from catsdogs.model import load_keras_model
from catsdogs.runtime import tensorflow
from catsdogs.train import predict_probabilities

SPLITS = ("validation", "test")


def run_probabilities(run_dir: Path, settings: dict) -> dict[str, dict[str, tuple[float, int]]]:
    """For each split: file name -> (probability of dog over the run's views, label)."""
    arrays = validation_arrays(run_dir, settings["image_size"])
    model = load_keras_model(run_dir / "best.keras")
    out: dict[str, dict[str, tuple[float, int]]] = {}
    for split in SPLITS:
        images = np.load(arrays.images(split)).astype("float32")
        dog = predict_probabilities(model, images, bool(settings.get("tta_flip")),
                                    float(settings.get("tta_crop") or 0))
        out[split] = {Path(f).name: (float(p), int(label))
                      for f, p, label in zip(arrays.files(split), dog, np.load(arrays.labels(split)), strict=True)}
    return out


def accuracy(rows: dict[str, tuple[float, int]]) -> float:
    return float(np.mean([(p > 0.5) == label for p, label in rows.values()]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (WORKDIR/runs/KEY), two or more")
    args = parser.parse_args()
    if len(args.runs) < 2:
        parser.error("an ensemble needs two runs or more")
    tensorflow()
    each = {}
    for run_dir in args.runs:
        settings = json.loads((run_dir / "settings.json").read_text())
        each[run_dir] = run_probabilities(run_dir, settings)
        print(json.dumps({"run": str(run_dir), "variant": settings["variant"], "seed": settings["seed"]}
                         | {f"{split}_accuracy": accuracy(each[run_dir][split]) for split in SPLITS}), flush=True)
    summary: dict[str, object] = {"ensemble_of": len(args.runs)}
    first = each[args.runs[0]]
    for split in SPLITS:
        files = set.intersection(*(set(probs[split]) for probs in each.values()))
        if len(files) != len(first[split]):
            raise SystemExit(f"the runs' {split} images differ: they must come from the same subsets")
        averaged = {f: (float(np.mean([probs[split][f][0] for probs in each.values()])), first[split][f][1])
                    for f in files}
        summary[f"{split}_accuracy"] = accuracy(averaged)
        summary[f"{split}_images"] = len(files)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
