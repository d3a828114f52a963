"""Test-time views: what a prediction averages (the images, their mirror images, a centre crop, the images
zoomed out), the same for evaluation, the Keras predictor and the LiteRT one, and the names that keep each set
of views apart."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from catsdogs.images import resize_bilinear


def centre_crop(images: np.ndarray, fraction: float) -> np.ndarray:
    """The centre FRACTION of each side of every NxHxWx3 image, resized back to HxW with the training's bilinear
    kernel and rounded to whole values, as the training data was."""
    size = images.shape[1]
    side = round(size * fraction)
    start = (size - side) // 2
    return np.round(resize_bilinear(images[:, start:start + side, start:start + side], size))


def zoomed_out(images: np.ndarray, fraction: float) -> np.ndarray:
    """Every NxHxWx3 image shrunk to FRACTION of each side with the training's bilinear kernel (rounded to whole
    values), in the middle of its own size, the border filled by reflection as the training's zoom fills it."""
    size = images.shape[1]
    side = round(size * fraction)
    before, after = (size - side) // 2, size - side - (size - side) // 2
    small = np.round(resize_bilinear(images, side))
    return np.pad(small, ((0, 0), (before, after), (before, after), (0, 0)), mode="reflect")


def test_time_views(images: np.ndarray, tta_flip: bool = False, tta_crop: float = 0.0,
                    tta_zoom_out: float = 0.0) -> list[np.ndarray]:
    """The views of a batch that a prediction averages: the images; their mirror images where TTA_FLIP; the
    centre crop of TTA_CROP of each side where TTA_CROP is not 0 (zoomed in); the images shrunk to TTA_ZOOM_OUT
    of each side where it is not 0 (zoomed out); each of these mirrored too where TTA_FLIP."""
    sources = [images, *([centre_crop(images, tta_crop)] if tta_crop else []),
               *([zoomed_out(images, tta_zoom_out)] if tta_zoom_out else [])]
    views = [view for source in sources for view in ([source, source[:, :, ::-1]] if tta_flip else [source])]
    return [np.ascontiguousarray(view, dtype=np.float32) for view in views]


def views_name(prefix: str, tta_flip: bool = False, tta_crop: float = 0.0, tta_zoom_out: float = 0.0) -> str:
    """PREFIX named for a set of test-time views: PREFIX (the images alone), PREFIX-tta (with their mirror
    images), PREFIX-crop0.8, PREFIX-tta-crop0.8, PREFIX-tta-crop0.8-out0.89; evaluations and registered models
    are kept apart per set by it."""
    return "-".join([prefix] + (["tta"] if tta_flip else []) + ([f"crop{tta_crop:g}"] if tta_crop else []) +
                    ([f"out{tta_zoom_out:g}"] if tta_zoom_out else []))


def views_averaged(run: Callable[[np.ndarray], Any], images: np.ndarray, tta_flip: bool = False,
                   tta_crop: float = 0.0, tta_zoom_out: float = 0.0) -> np.ndarray:
    """Each image's probability of dog from RUN (a batch to an (n, 1) output), averaged over its test-time views
    (test_time_views): what evaluation does, for every predictor."""
    return mean_over_views(run, test_time_views(np.asarray(images), tta_flip, tta_crop, tta_zoom_out))


def views_of(saved: Mapping[str, Any]) -> tuple[bool, float, float]:
    """tta_flip, tta_crop and tta_zoom_out of a model's saved settings (a card, a run's settings.json, an
    evaluation's inputs); older ones lack the later ones: none of those views."""
    return bool(saved.get("tta_flip")), float(saved.get("tta_crop") or 0.0), float(saved.get("tta_zoom_out") or 0.0)


def mean_over_views(run: Callable[[np.ndarray], Any], views: list[np.ndarray]) -> np.ndarray:
    """Each image's probability of dog from RUN (a batch to an (n, 1) output), averaged over VIEWS (batches of
    the same images)."""
    return np.mean([np.asarray(run(np.ascontiguousarray(view, dtype=np.float32)), "float64")[:, 0]
                    for view in views], axis=0)
