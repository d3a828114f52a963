from pathlib import Path

from PIL import Image

from catsdogs.data import make_subsets, unzip_archive
from catsdogs.datasets import build_arrays
from catsdogs.plots import blend_samples, plot_augmentations, plot_blends, plot_history, png_data_uri

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


def test_a_runs_augmentation_artifact_shows_and_names_the_layers_its_model_trained_through():
    """fast trains through one warp (RandomRotateZoom): its grid and text said RandomRotation, RandomZoom, drawn
    by the reference's layers."""
    from catsdogs.model import augmentation_for, augmentation_text, build_network
    from catsdogs.settings import Settings

    for settings, text in [
        (Settings(variant="augmented"), "RandomFlip, RandomRotation, RandomZoom"),
        (Settings(variant="fast"), "RandomFlip, RandomRotateZoom"),
        (Settings(variant="xception", translate=0.1), "RandomFlip, RandomRotation, RandomZoom, RandomTranslation"),
        (Settings(variant="best", alternating_flips=True),
         "RandomRotation, RandomZoom; mirrored on alternate epochs by the input pipeline")]:
        assert augmentation_text(settings) == text
        network = build_network(settings.model_copy(update={"image_size": 96}), "float32")

        def described(layers: list) -> list:  # each random layer's kind and settings (its seed too), not its name
            return [(type(layer).__name__, layer.get_config() | {"name": None}) for layer in layers]

        trained_through = network.get_layer("data_augmentation").layers
        assert described(augmentation_for(settings).layers) == described(trained_through), text


def test_mixup_grid_shows_blended_images_with_their_blended_labels(tiny_zip: Path, tmp_path: Path):
    subsets = make_subsets(unzip_archive(tiny_zip, tmp_path / "x", 2**30), tmp_path / "s",
                           {"train": (0, 5), "validation": (6, 6), "test": (7, 7)})
    arrays = build_arrays(subsets, tmp_path / "d", image_size=80)
    images, labels = blend_samples(arrays, mixup=0.4, seed=3)
    assert images.shape == (9, 80, 80, 3) and labels.shape == (9,)
    assert ((labels > 0) & (labels < 1)).any()  # blends, not the plain 0/1 labels
    again_images, again_labels = blend_samples(arrays, mixup=0.4, seed=3)
    assert (again_labels == labels).all() and (again_images == images).all()  # the run's seed, the run's blends
    path = plot_blends(arrays, tmp_path / "blends.png", mixup=0.4, seed=3)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.height > image.width  # room for each tile's label
    assert path.stat().st_size < 100_000


def test_the_accuracy_history_of_one_model_spans_hours_not_years(tmp_path: Path):
    from datetime import datetime, timedelta
    from types import SimpleNamespace

    from catsdogs.plots import date_limits, plot_accuracy_over_time

    made = datetime(2026, 12, 2, 18, 0)
    low, high = date_limits([made])
    assert low < made < high and high - low <= timedelta(hours=2)
    week = [made, made + timedelta(days=7)]
    low, high = date_limits(week)
    assert low < week[0] and high > week[1] and high - low < timedelta(days=8)
    card = SimpleNamespace(variant="baseline", created_at=made.isoformat(), test_accuracy=0.7)
    with Image.open(plot_accuracy_over_time([card], tmp_path / "history.png")) as image:
        assert image.format == "PNG"


def test_two_variants_of_one_accuracy_and_hour_stay_told_apart(tmp_path: Path, monkeypatch):
    """Models of two variants registered the same hour with the same accuracy: each variant its own hollow
    marker, so neither point hides the other."""
    from types import SimpleNamespace

    import matplotlib.axes

    from catsdogs.plots import plot_accuracy_over_time

    drawn = []
    original = matplotlib.axes.Axes.plot
    monkeypatch.setattr(matplotlib.axes.Axes, "plot", lambda self, *a, **k: drawn.append(k) or original(
        self, *a, **k))
    cards = [SimpleNamespace(variant=variant, created_at="2026-12-02T18:00:00", test_accuracy=0.9)
             for variant in ("fast", "xception", "best")]
    plot_accuracy_over_time(cards, tmp_path / "history.png")
    assert len({k["marker"] for k in drawn}) == 3 and {k["markerfacecolor"] for k in drawn} == {"none"}


def test_the_gallery_shows_a_turned_photo_upright(tmp_path: Path, monkeypatch):
    """A phone photo stored sideways with its EXIF turn: the prediction gallery shows it as the model saw it."""
    import matplotlib.axes
    import numpy as np

    from catsdogs.plots import plot_gallery

    upright = np.zeros((40, 20, 3), np.uint8)
    upright[:10] = 255  # white at the top of the picture as it is shown
    exif = Image.Exif()
    exif[0x0112] = 6  # camera turned right: the stored pixels need a quarter turn clockwise
    Image.fromarray(np.ascontiguousarray(np.rot90(upright, 1))).save(tmp_path / "p.png", exif=exif.tobytes())
    shown = []
    original = matplotlib.axes.Axes.imshow
    monkeypatch.setattr(matplotlib.axes.Axes, "imshow", lambda self, x, *a, **k: shown.append(x) or original(
        self, x, *a, **k))
    plot_gallery([(tmp_path / "p.png", "dog 0.9")], tmp_path / "gallery.png")
    [thumbnail] = shown
    assert thumbnail.shape[0] > thumbnail.shape[1] and thumbnail[0].min() == 255 and thumbnail[-1].max() == 0
