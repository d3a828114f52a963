"""What a training run and its evaluation leave: records the registry, the tasks and the plots read without
importing the training code (catsdogs.train makes them)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from catsdogs import store

PREDICTIONS = "test-predictions.json"  # an evaluation's file of per-image results


class TrainedModel(BaseModel):
    """A finished training run: its best checkpoint, its history and the settings it was trained with."""

    run_dir: Path
    variant: str
    epochs: int  # planned, fine-tuning included
    best_epoch: int
    best_val_loss: float
    summary: str
    epochs_run: int | None = None  # fewer than planned when early stopping ended the run
    precision: str = "float32"  # the policy it trained in (auto resolved)

    @property
    def model_path(self) -> Path:
        return self.run_dir / "best.keras"

    @property
    def history_path(self) -> Path:
        return self.run_dir / "history.json"

    def history(self) -> list[dict[str, float]]:
        return read_history(self.history_path)


class Metrics(BaseModel):
    """The best checkpoint's results on the test subset."""

    variant: str
    test_accuracy: float
    test_loss: float
    test_images: int
    best_epoch: int
    epochs: int
    model_path: Path
    confusion: list[list[int]]  # rows: true cat, true dog; columns: predicted cat, predicted dog
    tta_flip: bool = False  # each image's score averaged with its mirror image's
    tta_crop: float = 0.0  # ... and with its centre crop of this fraction (0: none)
    tta_zoom_out: float = 0.0  # ... and with the image shrunk to this fraction, its border reflected (0: none)
    predictions_path: Path  # per test image: file, true label, probability of dog


def load_trained(run_dir: Path) -> TrainedModel:
    """The training run recorded in the complete RUN_DIR, wherever the workdir is now."""
    return TrainedModel.model_validate(store.read_marker(run_dir) | {"run_dir": Path(run_dir)})


def load_metrics(folder: Path, model_path: Path | None = None) -> Metrics:
    """The evaluation recorded in the complete FOLDER, of MODEL_PATH (by default its run's best checkpoint,
    the folder being inside the run's)."""
    folder = Path(folder)
    return Metrics.model_validate(store.read_marker(folder) | {
        "model_path": model_path or folder.parent / "best.keras", "predictions_path": folder / PREDICTIONS})


def read_history(path: Path) -> list[dict[str, float]]:
    """One row per finished epoch: epoch, loss, accuracy, val_loss, val_accuracy (where validated), seconds."""
    return json.loads(Path(path).read_text()) if Path(path).exists() else []


def validated(history: list[dict[str, float]]) -> list[dict[str, float]]:
    """The rows of epochs that were validated (with validate_last, the earlier ones were not)."""
    return [row for row in history if "val_loss" in row]


def best_row(history: list[dict[str, float]]) -> dict[str, float]:
    """The epoch ModelCheckpoint(save_best_only, monitor="val_loss") kept: the first lowest val_loss."""
    return min(validated(history), key=lambda row: (row["val_loss"], row["epoch"]))
