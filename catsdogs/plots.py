"""The pictures a user looks at: training curves and grids of augmented samples (small PNGs)."""

from __future__ import annotations

import base64
import io
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display needed, none opened
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from PIL import Image  # noqa: E402

from catsdogs import store  # noqa: E402
from catsdogs.datasets import DatasetArrays  # noqa: E402
from catsdogs.model import build_augmentation  # noqa: E402

DPI = 80
MAX_PNG_BYTES = 90_000  # a PNG embeds comfortably in a Prefect artifact up to about 100 KB


def plot_history(history: list[dict[str, float]], path: Path, title: str = "") -> Path:
    """Training and validation accuracy and loss per epoch, side by side."""
    epochs = [row["epoch"] for row in history]
    figure, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=DPI)
    for axis, metric in ((acc_ax, "accuracy"), (loss_ax, "loss")):
        axis.plot(epochs, [row[metric] for row in history], "o-", markersize=3, label=f"training {metric}")
        axis.plot(epochs, [row[f"val_{metric}"] for row in history], "s-", markersize=3,
                  label=f"validation {metric}")
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        axis.set_title(f"{title} {metric}".strip())
        axis.grid(alpha=0.3)
        axis.legend()
    best = min(history, key=lambda row: (row["val_loss"], row["epoch"]))
    loss_ax.axvline(best["epoch"], color="grey", linestyle=":", label="best checkpoint")
    figure.tight_layout()
    return _save(figure, path)


def plot_augmentations(arrays: DatasetArrays, path: Path, seed: int = 0, image_index: int = 0,
                       translate: float = 0.0) -> Path:
    """A 3x3 grid of one training image passed through the augmented variant's random layers."""
    image = np.load(arrays.images("train"), mmap_mode="r")[image_index].astype("float32")
    augmentation = build_augmentation(seed, translate)
    figure, axes = plt.subplots(3, 3, figsize=(5, 5), dpi=DPI)
    for axis in axes.flat:
        augmented = np.asarray(augmentation(image[None], training=True))[0]
        axis.imshow(np.clip(augmented, 0, 255).astype("uint8"))
        axis.axis("off")
    figure.suptitle("augmented samples of one training image")
    figure.tight_layout()
    return _save(figure, path)


def plot_mixup(arrays: DatasetArrays, path: Path, alpha: float, seed: int = 0, translate: float = 0.0) -> Path:
    """A 3x3 grid of what training actually sees with MixUp: blended pairs through the random layers, each
    titled with its blended label (the share of dog)."""
    images, labels = mixup_samples(arrays, alpha, seed)
    augmented = np.asarray(build_augmentation(seed, translate)(images, training=True))
    figure, axes = plt.subplots(3, 3, figsize=(5, 5.4), dpi=DPI)
    for axis, image, label in zip(axes.flat, augmented, labels, strict=False):
        axis.imshow(np.clip(image, 0, 255).astype("uint8"))
        axis.set_title(f"dog {label:.2f}" if label >= 0.5 else f"cat {1 - label:.2f}", fontsize=9)
        axis.axis("off")
    for axis in axes.flat[len(augmented):]:
        axis.axis("off")
    figure.suptitle(f"training inputs: MixUp (alpha {alpha:g}) blends, augmented")
    figure.tight_layout()
    return _save(figure, path)


def mixup_samples(arrays: DatasetArrays, alpha: float, seed: int = 0, count: int = 9) -> tuple[np.ndarray, np.ndarray]:
    """The first COUNT training images and labels as training gets them with MixUp of ALPHA (and SEED)."""
    from catsdogs.datasets import load_split

    images, labels = next(iter(load_split(arrays, "train", count, shuffle_seed=seed, mixup=alpha)))
    return np.asarray(images), np.asarray(labels).reshape(-1)


def png_data_uri(path: Path) -> str:
    """A PNG as a data: URI, which Prefect's UI renders inside a markdown artifact."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def _save(figure: plt.Figure, path: Path) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    data = buffer.getvalue()
    if len(data) > MAX_PNG_BYTES:  # photos compress poorly: a 256-colour palette keeps them small
        with Image.open(io.BytesIO(data)) as image:
            buffer = io.BytesIO()
            image.convert("RGB").quantize(colors=256).save(buffer, format="PNG", optimize=True)
            data = buffer.getvalue()
    store.write_bytes_atomic(path, data)
    return Path(path)


def plot_confusion(confusion: list[list[int]], path: Path) -> Path:
    """The test set's confusion matrix: rows the true class, columns the predicted one."""
    figure, axis = plt.subplots(figsize=(3.6, 3.2), dpi=DPI)
    axis.imshow(np.array(confusion), cmap="Blues")
    for true in range(2):
        for predicted in range(2):
            axis.text(predicted, true, str(confusion[true][predicted]), ha="center", va="center", fontsize=14)
    axis.set_xticks([0, 1], ["cat", "dog"])
    axis.set_yticks([0, 1], ["cat", "dog"])
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    figure.tight_layout()
    return _save(figure, path)


def plot_accuracy_over_time(cards: list[Any], path: Path) -> Path:
    """Test accuracy of every registered model by the date it was made, one line per variant."""
    figure, axis = plt.subplots(figsize=(8, 3.6), dpi=DPI)
    for variant in sorted({card.variant for card in cards}):
        mine = sorted((card for card in cards if card.variant == variant), key=lambda card: card.created_at)
        axis.plot([datetime.fromisoformat(card.created_at) for card in mine],
                  [card.test_accuracy for card in mine], "o-", markersize=4, label=variant)
    axis.set_ylabel("test accuracy")
    axis.set_title("registered models: test accuracy over time")
    axis.grid(alpha=0.3)
    if cards:
        axis.legend()
    figure.autofmt_xdate()
    figure.tight_layout()
    return _save(figure, path)


def plot_gallery(items: list[tuple[Path, str]], path: Path, columns: int = 4, thumb: int = 96) -> Path:
    """Thumbnails with a caption each (true label and predicted probability, say)."""
    rows = max(1, -(-len(items) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 1.6, rows * 1.8), dpi=DPI, squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, (image_path, caption) in zip(axes.flat, items, strict=False):
        with Image.open(image_path) as image:
            image = image.convert("RGB")
            image.thumbnail((thumb, thumb))
            axis.imshow(np.asarray(image))
        axis.set_title(caption, fontsize=7)
    figure.tight_layout()
    return _save(figure, path)


def plot_sweep_curves(runs: list[tuple[str, str, list[dict[str, float]]]], path: Path) -> Path:
    """Validation accuracy and loss per epoch of every run of a sweep, overlaid: one colour per configuration
    (RUNS holds configuration, run label, history), one line per seed."""
    figure, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=DPI)
    configurations = list(dict.fromkeys(configuration for configuration, _, _ in runs))
    colours = plt.get_cmap("tab10")
    for configuration, label, history in runs:
        if not history:
            continue
        colour = colours(configurations.index(configuration) % 10)
        epochs = [row["epoch"] for row in history]
        for axis, metric in ((acc_ax, "val_accuracy"), (loss_ax, "val_loss")):
            # the first run of a configuration names it in the legend; its other seeds share the colour
            first = label == next(lab for conf, lab, _ in runs if conf == configuration)
            axis.plot(epochs, [row[metric] for row in history], ".-", color=colour, alpha=0.8, linewidth=1.2,
                      markersize=3, label=configuration if first else None)
    last = max((len(history) for _, _, history in runs), default=1)
    for axis, title in ((acc_ax, "validation accuracy"), (loss_ax, "validation loss")):
        axis.set_xlim(0.5, last + 0.5)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_title(title)
        axis.grid(alpha=0.3)
    if any(history for _, _, history in runs):
        acc_ax.legend(fontsize=8)
    figure.tight_layout()
    return _save(figure, path)
