from pathlib import Path

from PIL import Image

from catsdogs.data import make_subsets, unzip_archive
from catsdogs.datasets import build_arrays
from catsdogs.plots import plot_augmentations, plot_history, png_data_uri

HISTORY = [{"epoch": e, "loss": 1 / e, "accuracy": 1 - 1 / (e + 1), "val_loss": abs(e - 3) + 0.5,
            "val_accuracy": 0.5 + e / 20} for e in range(1, 8)]


def test_curves_are_a_small_png(tmp_path: Path):
    path = plot_history(HISTORY, tmp_path / "curves.png", title="baseline")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > image.height > 100
    assert path.stat().st_size < 100_000
    assert png_data_uri(path).startswith("data:image/png;base64,iVBOR")


def test_augmentation_grid(tiny_zip: Path, tmp_path: Path):
    subsets = make_subsets(unzip_archive(tiny_zip, tmp_path / "x", 2**30), tmp_path / "s",
                           {"train": (0, 1), "validation": (2, 2), "test": (3, 3)})
    arrays = build_arrays(subsets, tmp_path / "d", image_size=80)
    path = plot_augmentations(arrays, tmp_path / "grid.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width == image.height
    assert path.stat().st_size < 100_000
