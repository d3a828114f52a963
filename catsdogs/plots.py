"""The pictures a user looks at: training curves and grids of augmented samples (small PNGs)."""

from __future__ import annotations

import base64
import io
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display needed, none opened
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from PIL import Image  # noqa: E402

from catsdogs import store  # noqa: E402
from catsdogs.datasets import DatasetArrays  # noqa: E402
from catsdogs.images import thumbnail  # noqa: E402
from catsdogs.model import build_augmentation  # noqa: E402
from catsdogs.results import best_row, validated  # noqa: E402

DPI = 80
MAX_PNG_BYTES = 90_000  # a PNG embeds comfortably in a Prefect artifact up to about 100 KB


def plot_history(history: list[dict[str, float]], path: Path, title: str = "") -> Path:
    """Training and validation accuracy and loss per epoch, side by side."""
    epochs = [row["epoch"] for row in history]
    checked = validated(history)  # with validate_last, only the last epochs have validation scores
    figure, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=DPI)
    for axis, metric in ((acc_ax, "accuracy"), (loss_ax, "loss")):
        axis.plot(epochs, [row[metric] for row in history], "o-", markersize=3, label=f"training {metric}")
        axis.plot([row["epoch"] for row in checked], [row[f"val_{metric}"] for row in checked], "s-", markersize=3,
                  label=f"validation {metric}")
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        axis.set_title(f"{title} {metric}".strip())
        axis.grid(alpha=0.3)
        axis.legend()
    best = best_row(history)
    loss_ax.axvline(best["epoch"], color="grey", linestyle=":", label="best checkpoint")
    figure.tight_layout()
    return _save(figure, path)


def plot_augmentations(arrays: DatasetArrays, path: Path, augmentation: Any = None, image_index: int = 0) -> Path:
    """A 3x3 grid of one training image passed through AUGMENTATION (a run's, model.augmentation_for; by default
    the augmented variant's random layers)."""
    image = np.load(arrays.images("train"), mmap_mode="r")[image_index].astype("float32")
    augmentation = augmentation if augmentation is not None else build_augmentation(0)
    figure, axes = plt.subplots(3, 3, figsize=(5, 5), dpi=DPI)
    for axis in axes.flat:
        augmented = np.asarray(augmentation(image[None], training=True))[0]
        axis.imshow(np.clip(augmented, 0, 255).astype("uint8"))
        axis.axis("off")
    figure.suptitle("augmented samples of one training image")
    figure.tight_layout()
    return _save(figure, path)


def plot_blends(arrays: DatasetArrays, path: Path, mixup: float, seed: int = 0, augmentation: Any = None,
                cutmix: float = 0.0) -> Path:
    """A 3x3 grid of what training actually sees with MixUp (of alpha MIXUP) and/or CutMix (of CUTMIX): blended
    pairs through AUGMENTATION (a run's random layers; by default the augmented variant's), each titled with its
    blended label (the share of dog)."""
    images, labels = blend_samples(arrays, mixup, seed, cutmix=cutmix)
    augmentation = augmentation if augmentation is not None else build_augmentation(seed)
    augmented = np.asarray(augmentation(images, training=True))
    figure, axes = plt.subplots(3, 3, figsize=(5, 5.4), dpi=DPI)
    for axis, image, label in zip(axes.flat, augmented, labels, strict=False):
        axis.imshow(np.clip(image, 0, 255).astype("uint8"))
        axis.set_title(f"dog {label:.2f}" if label >= 0.5 else f"cat {1 - label:.2f}", fontsize=9)
        axis.axis("off")
    for axis in axes.flat[len(augmented):]:
        axis.axis("off")
    figure.suptitle(f"training inputs: {blends_name(mixup, cutmix)} blends, augmented")
    figure.tight_layout()
    return _save(figure, path)


def blends_name(mixup: float, cutmix: float) -> str:
    """"MixUp (alpha 0.2)", "CutMix (factor 1)" or both joined by "or", as plots and artifacts name them."""
    return " or ".join([f"MixUp (alpha {mixup:g})"] * bool(mixup) + [f"CutMix (factor {cutmix:g})"] * bool(cutmix))


def blend_samples(arrays: DatasetArrays, mixup: float, seed: int = 0, count: int = 9,
                  cutmix: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The first COUNT training images and labels as training gets them with MixUp of alpha MIXUP and CutMix of
    CUTMIX (and SEED)."""
    from catsdogs.datasets import load_split

    images, labels = next(iter(load_split(arrays, "train", count, shuffle_seed=seed, mixup=mixup, cutmix=cutmix)))
    return np.asarray(images), np.asarray(labels).reshape(-1)


def png_data_uri(path: Path) -> str:
    """A PNG as a data: URI, which Prefect's UI renders inside a markdown artifact."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def _save(figure: plt.Figure, path: Path) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    data = buffer.getvalue()
    if len(data) > MAX_PNG_BYTES:  # photos compress poorly: a 256-colour palette keeps them small
        figure.canvas.draw()
        image = Image.fromarray(np.asarray(figure.canvas.buffer_rgba())).convert("RGB")
        buffer = io.BytesIO()
        image.quantize(colors=256).save(buffer, format="PNG", optimize=True)
        data = buffer.getvalue()
    plt.close(figure)
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


def date_limits(dates: list[datetime]) -> tuple[datetime, datetime]:
    """The time axis around DATES, padded by a twentieth of their span and at least an hour: matplotlib's own
    limits around a single model spanned four years."""
    pad = max((max(dates) - min(dates)) / 20, timedelta(hours=1))
    return min(dates) - pad, max(dates) + pad


VARIANT_MARKERS = ("o", "s", "^", "D", "v", "P")


def plot_accuracy_over_time(cards: list[Any], path: Path) -> Path:
    """Test accuracy of every registered model by the date it was made, one line per variant."""
    figure, axis = plt.subplots(figsize=(8, 3.6), dpi=DPI)
    for index, variant in enumerate(sorted({card.variant for card in cards})):
        mine = sorted((card for card in cards if card.variant == variant), key=lambda card: card.created_at)
        # a hollow marker of its own shape per variant: two models of one accuracy and hour stay both visible
        axis.plot([datetime.fromisoformat(card.created_at) for card in mine],
                  [card.test_accuracy for card in mine], linestyle="-", marker=VARIANT_MARKERS[index % len(
                      VARIANT_MARKERS)], markersize=6, markerfacecolor="none", label=variant)
    axis.set_ylabel("test accuracy")
    axis.set_title("registered models: test accuracy over time")
    axis.grid(alpha=0.3)
    if cards:
        axis.legend()
        axis.set_xlim(*date_limits([datetime.fromisoformat(card.created_at) for card in cards]))
        locator = mdates.AutoDateLocator()
        axis.xaxis.set_major_locator(locator)
        axis.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    figure.tight_layout()
    return _save(figure, path)


def plot_gallery(items: list[tuple[Path, str]], path: Path, columns: int = 4, thumb: int = 96) -> Path:
    """Thumbnails with a caption each (true label and predicted probability, say)."""
    rows = max(1, -(-len(items) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 1.6, rows * 1.8), dpi=DPI, squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, (image_path, caption) in zip(axes.flat, items, strict=False):
        axis.imshow(np.asarray(thumbnail(image_path, thumb)))  # upright, as the model saw it
        axis.set_title(caption, fontsize=7)
    figure.tight_layout()
    return _save(figure, path)


SEED_STYLES = ("-", "--", ":", "-.")


def sweep_line_styles(runs: list[tuple[str, int, list[dict[str, float]]]]) -> list[tuple[int, str]]:
    """Each run's (colour index, line style) in the sweep's curves: a colour per configuration, a style per
    seed, so that two seeds of one configuration are told apart."""
    configurations = list(dict.fromkeys(configuration for configuration, _, _ in runs))
    seeds = sorted({seed for _, seed, _ in runs})
    return [(configurations.index(configuration) % 10, SEED_STYLES[seeds.index(seed) % len(SEED_STYLES)])
            for configuration, seed, _ in runs]


def plot_sweep_curves(runs: list[tuple[str, int, list[dict[str, float]]]], path: Path) -> Path:
    """Validation accuracy and loss per epoch of every run of a sweep, overlaid (RUNS holds configuration,
    seed, history): one colour per configuration, one line style per seed."""
    figure, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=DPI)
    colours = plt.get_cmap("tab10")
    named: set[str] = set()
    for (configuration, _, history), (colour, style) in zip(runs, sweep_line_styles(runs), strict=True):
        if not history:
            continue
        checked = validated(history)
        for axis, metric in ((acc_ax, "val_accuracy"), (loss_ax, "val_loss")):
            axis.plot([row["epoch"] for row in checked], [row[metric] for row in checked], marker=".",
                      linestyle=style, color=colours(colour),
                      alpha=0.8, linewidth=1.2, markersize=3,
                      label=None if configuration in named or axis is loss_ax else configuration)
        named.add(configuration)
    seeds = sorted({seed for _, seed, _ in runs})  # as sweep_line_styles numbers them
    if len({seed for _, seed, history in runs if history}) > 1:  # the styles' key, in grey
        for index, seed in enumerate(seeds):
            loss_ax.plot([], [], linestyle=SEED_STYLES[index % len(SEED_STYLES)], color="0.35", label=f"seed {seed}")
        loss_ax.legend(fontsize=8)
    last = max(1, *(len(history) for _, _, history in runs))  # 1: an empty plot where every run failed
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
