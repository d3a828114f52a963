"""Test-time views: what a prediction averages (the images, their mirror images, a centre crop), the same
for evaluation, the Keras predictor and the LiteRT one, and the names that keep each set of views apart."""

from __future__ import annotations

from collections.abc import Callable
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


def test_time_views(images: np.ndarray, tta_flip: bool = False, tta_crop: float = 0.0) -> list[np.ndarray]:
    """The views of a batch that a prediction averages: the images; their mirror images where TTA_FLIP; the
    centre crop of TTA_CROP of each side (and its mirror image where TTA_FLIP) where TTA_CROP is not 0."""
    sources = [images, centre_crop(images, tta_crop)] if tta_crop else [images]
    views = [view for source in sources for view in ([source, source[:, :, ::-1]] if tta_flip else [source])]
    return [np.ascontiguousarray(view, dtype=np.float32) for view in views]


def views_name(prefix: str, tta_flip: bool = False, tta_crop: float = 0.0) -> str:
    """PREFIX named for a set of test-time views: PREFIX (the images alone), PREFIX-tta (with their mirror
    images), PREFIX-crop0.8, PREFIX-tta-crop0.8; evaluations and registered models are kept apart per set by it."""
    return "-".join([prefix] + (["tta"] if tta_flip else []) + ([f"crop{tta_crop:g}"] if tta_crop else []))


def views_averaged(run: Callable[[np.ndarray], Any], images: np.ndarray, tta_flip: bool = False,
                   tta_crop: float = 0.0) -> np.ndarray:
    """Each image's probability of dog from RUN (a batch to an (n, 1) output), averaged over its test-time views
    (test_time_views): what evaluation does, for every predictor."""
    return mean_over_views(run, test_time_views(np.asarray(images), tta_flip, tta_crop))


def mean_over_views(run: Callable[[np.ndarray], Any], views: list[np.ndarray]) -> np.ndarray:
    """Each image's probability of dog from RUN (a batch to an (n, 1) output), averaged over VIEWS (batches of
    the same images)."""
    return np.mean([np.asarray(run(np.ascontiguousarray(view, dtype=np.float32)), "float64")[:, 0]
                    for view in views], axis=0)
