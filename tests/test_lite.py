"""Prediction without TensorFlow: the training's pixels exactly, the Keras model's answers, a fallback."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from catsdogs import lite, views
from catsdogs.images import decode_image, decode_rgb, load_without_tensorflow, resize_bilinear
from tests.conftest import copy_models, run_cli

ROOT = Path(__file__).resolve().parents[1]


def picture(height: int, width: int, seed: int = 0) -> Image.Image:
    """Smooth gradients with noise: what JPEG's DCT and upsampling round differently if set differently."""
    rng = np.random.default_rng(seed)
    ramp = np.cumsum(rng.integers(0, 9, (height, width, 3)), axis=1) % 256
    return Image.fromarray(ramp.astype(np.uint8))


def encodings(image: Image.Image) -> dict[str, bytes]:
    found = {}
    for name, fmt, mode, options in [
        ("baseline.jpg", "JPEG", "RGB", {"quality": 85}), ("444.jpg", "JPEG", "RGB", {"subsampling": 0}),
        ("progressive.jpg", "JPEG", "RGB", {"progressive": True}), ("grey.jpg", "JPEG", "L", {}),
        ("cmyk.jpg", "JPEG", "CMYK", {}), ("alpha.png", "PNG", "RGBA", {}), ("palette.gif", "GIF", "RGB", {}),
        ("plain.bmp", "BMP", "RGB", {}),
    ]:
        buffer = io.BytesIO()
        image.convert(mode).save(buffer, format=fmt, **options)
        found[name] = buffer.getvalue()
    return found


@pytest.mark.parametrize("height, width", [(200, 200), (375, 500), (61, 47)])
def test_pixels_are_the_training_pipelines_bit_for_bit(tmp_path: Path, height: int, width: int):
    for name, data in encodings(picture(height, width)).items():
        path = tmp_path / name
        path.write_bytes(data)
        for size in (78, 160, 180, 192):
            ours, training = load_without_tensorflow(path, size), decode_image(data, size).numpy()
            assert np.array_equal(ours, training), (name, size, np.abs(ours.astype(int) - training).max())


def test_resize_is_tensorflows_bilinear_in_float32():
    import tensorflow as tf

    image = np.random.default_rng(1).integers(0, 256, (37, 53, 3)).astype(np.uint8)
    for size in (10, 37, 53, 100):
        expected = tf.image.resize(image, (size, size), method="bilinear").numpy()
        assert np.array_equal(resize_bilinear(image, size), expected)


def test_a_large_photo_is_resized_from_the_lines_it_samples_not_from_a_float_copy_of_itself():
    """A 9000x9000 PNG of a few hundred kilobytes cost the web server 1.8 GB a request through a float32 copy."""
    import tracemalloc

    image = np.random.default_rng(3).integers(0, 256, (3000, 2000, 3), dtype=np.uint8)  # 18 MB; 72 MB in float32
    tracemalloc.start()
    try:
        resized = resize_bilinear(image, 180)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, peak
    assert resized.shape == (180, 180, 3) and resized.dtype == np.float32


def test_a_batch_resizes_as_each_image_alone():
    images = np.random.default_rng(2).integers(0, 256, (3, 41, 29, 3)).astype(np.uint8)
    together = resize_bilinear(images, 50)
    assert together.shape == (3, 50, 50, 3)
    for image, resized in zip(images, together, strict=True):
        assert np.array_equal(resized, resize_bilinear(image, 50))


@pytest.mark.parametrize("size, fraction", [(180, 0.8), (180, 0.9), (96, 0.8), (78, 0.55)])
def test_centre_crop_is_tensorflows_crop_and_resize_rounded(size: int, fraction: float):
    import tensorflow as tf

    images = np.random.default_rng(3).integers(0, 256, (2, size, size, 3)).astype(np.uint8)
    side = round(size * fraction)
    start = (size - side) // 2
    crop = tf.image.crop_to_bounding_box(images, start, start, side, side)
    expected = tf.round(tf.image.resize(crop, (size, size), method="bilinear")).numpy()
    assert np.array_equal(views.centre_crop(images, fraction), expected)


def test_test_time_views_are_the_images_mirrors_and_centre_crops():
    images = np.random.default_rng(4).integers(0, 256, (2, 20, 20, 3)).astype(np.float32)
    assert len(views.test_time_views(images)) == 1
    plain, mirror = views.test_time_views(images, tta_flip=True)
    assert np.array_equal(plain, images) and np.array_equal(mirror, images[:, :, ::-1])
    four = views.test_time_views(images, tta_flip=True, tta_crop=0.8)
    assert len(four) == 4 and all(view.dtype == np.float32 and view.shape == images.shape for view in four)
    assert np.array_equal(four[2], views.centre_crop(images, 0.8))
    assert np.array_equal(four[3], four[2][:, :, ::-1])
    assert len(views.test_time_views(images, tta_crop=0.8)) == 2
    # the average is over every view: a stand-in model that scores each image by its mean pixel shows it
    score = lambda batch: batch.mean(axis=(1, 2, 3))[:, None] / 255  # noqa: E731
    expected = np.mean([score(view)[:, 0] for view in four], axis=0)
    np.testing.assert_allclose(views.views_averaged(score, images, True, 0.8), expected)
    six = views.test_time_views(images, tta_flip=True, tta_crop=0.8, tta_zoom_out=0.9)
    assert len(six) == 6 and all(np.array_equal(a, b) for a, b in zip(six[:4], four, strict=True))
    assert np.array_equal(six[4], views.zoomed_out(images, 0.9)) and np.array_equal(six[5], six[4][:, :, ::-1])


@pytest.mark.parametrize("size, fraction", [(144, 0.89), (78, 0.89), (20, 0.9), (21, 0.5)])
def test_zooming_out_shrinks_the_image_into_its_middle_and_reflects_the_border(size: int, fraction: float):
    import tensorflow as tf

    images = np.random.default_rng(5).integers(0, 256, (2, size, size, 3)).astype(np.uint8)
    side = round(size * fraction)
    before = (size - side) // 2
    out = views.zoomed_out(images, fraction)
    assert out.shape == images.shape
    small = tf.round(tf.image.resize(images, (side, side), method="bilinear")).numpy()
    assert np.array_equal(out[:, before:before + side, before:before + side], small)
    assert np.array_equal(out[:, before - 1, before:before + side], small[:, 1])  # mirrored about the edge row
    assert np.array_equal(out[:, before + side, before:before + side], small[:, -2])


def test_other_formats_use_pillow_within_a_tolerance(tmp_path: Path):
    """WebP and TIFF have no TensorFlow decoder: Pillow's RGB, resized the same way, is what the model sees."""
    for fmt in ("WEBP", "TIFF"):
        path = tmp_path / f"x.{fmt.lower()}"
        picture(90, 120).save(path, format=fmt)
        with Image.open(path) as image:
            expected = resize_bilinear(np.asarray(image.convert("RGB")), 64)
        assert np.abs(load_without_tensorflow(path, 64).astype(float) - expected).max() <= 0.5  # rounding only


def _format_matrix(folder: Path) -> dict[str, Path]:
    """One small noisy picture in every format and mode either decoding route may meet."""
    rng = np.random.default_rng(0)
    base = Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))
    palette = base.convert("P")
    grey16 = Image.fromarray(rng.integers(0, 65536, (20, 24)).astype(np.uint16))
    second = base.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    cases = {
        "png-rgb": (base, "PNG", {}), "png-rgba": (base.convert("RGBA"), "PNG", {}),
        "png-grey": (base.convert("L"), "PNG", {}), "png-grey-alpha": (base.convert("LA"), "PNG", {}),
        "png-palette": (palette, "PNG", {}), "png-palette-transparent": (palette, "PNG", {"transparency": 0}),
        "png-16-bit-grey": (grey16, "PNG", {}), "png-1-bit": (base.convert("1"), "PNG", {}),
        "bmp-rgb": (base, "BMP", {}), "bmp-grey": (base.convert("L"), "BMP", {}),
        "bmp-palette": (palette, "BMP", {}), "bmp-1-bit": (base.convert("1"), "BMP", {}),
        "gif": (palette, "GIF", {}), "gif-transparent": (palette, "GIF", {"transparency": 0}),
        "jpeg-rgb": (base, "JPEG", {"quality": 90}), "jpeg-grey": (base.convert("L"), "JPEG", {"quality": 90}),
        "jpeg-cmyk": (base.convert("CMYK"), "JPEG", {"quality": 90}),
        "jpeg-progressive": (base, "JPEG", {"quality": 90, "progressive": True}),
        "jpeg-multi-picture": (base, "MPO", {"save_all": True, "append_images": [second]}),  # as phones write
        "webp-lossless": (base, "WEBP", {"lossless": True}), "webp-lossy": (base, "WEBP", {"quality": 80}),
    }
    paths = {}
    for name, (image, fmt, options) in cases.items():
        paths[name] = folder / f"{name}.img"  # a name that says nothing: formats are told by content
        image.save(paths[name], format=fmt, **options)
    return paths


def test_both_decoding_routes_give_the_same_pixels_or_the_same_refusal_for_every_format(tmp_path: Path):
    """Training (TensorFlow, through image_problem's checks) and prediction without TensorFlow (Pillow and
    simplejpeg) must see one picture; a format one of them misreads is refused by both, with one reason."""
    from catsdogs.images import ImageError, image_problem, read_image_file, tf_decode

    refused = {}
    for name, path in _format_matrix(tmp_path).items():
        problem = image_problem(path)
        try:
            answer = decode_rgb(path)
        except ImageError as err:
            assert problem == str(err), name  # refused the same way by both
            refused[name] = problem
            continue
        assert problem is None, f"{name}: training refuses what prediction reads ({problem})"
        training = tf_decode(read_image_file(path)[0]).numpy()
        assert training.shape == answer.shape and np.array_equal(training, answer), name
    assert set(refused) == {"bmp-palette", "bmp-1-bit"}
    assert refused["bmp-palette"].startswith("palette BMP: TensorFlow, which the training decodes with, does not "
                                             "read its colours; save it as PNG")


def with_orientation(image: Image.Image, fmt: str, orientation: int | None) -> bytes:
    """IMAGE saved as FMT, its EXIF naming ORIENTATION (none when None), as a camera writes a turned photo."""
    out, exif = io.BytesIO(), Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    image.save(out, format=fmt, exif=exif.tobytes(), **({"quality": 90} if fmt == "JPEG" else {}))
    return out.getvalue()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_photo_is_seen_turned_as_its_exif_shows_it_by_both_routes(tmp_path: Path, orientation: int):
    """A phone photo stores its pixels as the sensor read them and names the turn in EXIF; every viewer (and the
    web page's preview) shows it turned. Both prediction routes must see it as Pillow's exif_transpose shows it."""
    from PIL import ImageOps

    from catsdogs.images import load_with_tensorflow

    path = tmp_path / "photo.png"  # lossless, square at the model's size: the pixels themselves are compared
    path.write_bytes(with_orientation(picture(32, 32), "PNG", orientation))
    with Image.open(path) as stored:
        shown = np.asarray(ImageOps.exif_transpose(stored).convert("RGB"))
    assert np.array_equal(load_without_tensorflow(path, 32), shown)
    assert np.array_equal(load_with_tensorflow(path, 32), shown)


def test_a_turned_jpeg_is_its_untagged_twin_turned_at_any_size(tmp_path: Path):
    """The camera's usual case: a landscape JPEG tagged 6 (turned right). The same compressed pixels without the
    tag, resized to the model's size, are what both routes see turned a quarter clockwise."""
    from catsdogs.images import load_with_tensorflow

    image = picture(30, 50)
    (tmp_path / "turned.jpg").write_bytes(with_orientation(image, "JPEG", 6))
    (tmp_path / "stored.jpg").write_bytes(with_orientation(image, "JPEG", None))
    for load in (load_without_tensorflow, load_with_tensorflow):
        stored = load(tmp_path / "stored.jpg", 24)
        assert np.array_equal(load(tmp_path / "turned.jpg", 24), np.rot90(stored, -1)), load.__name__


def test_an_animated_webp_is_its_first_frame_to_both_routes_and_training_says_why_it_reads_none(tmp_path: Path):
    """TensorFlow decodes no animated WebP in RGB: the TensorFlow route answered nothing where the other answered
    the first frame. Both read that frame with Pillow now; training says what it reads instead."""
    from catsdogs.images import image_problem, load_with_tensorflow

    frames = [picture(20, 24, seed) for seed in range(3)]
    path = tmp_path / "sticker.webp"
    frames[0].save(path, save_all=True, append_images=frames[1:], lossless=True)
    first = resize_bilinear(np.asarray(frames[0]), 32).round().astype(np.uint8)
    assert np.array_equal(load_without_tensorflow(path, 32), first)
    assert np.array_equal(load_with_tensorflow(path, 32), first)
    assert image_problem(path).startswith("animated WebP: training reads still images")


def test_an_iphone_heic_photo_is_answered_upright_and_training_says_it_reads_none(tmp_path: Path):
    """HEIC is what iPhones take photos in. Prediction reads it (pillow-heif, turned as its EXIF says), and a
    folder's .heic files are asked about; training, which reads what TensorFlow reads, names the format."""
    import pillow_heif

    from catsdogs.images import image_problem, load_with_tensorflow
    from catsdogs.predict import collect_inputs

    upright = np.zeros((48, 32, 3), np.uint8)
    upright[:12] = 255  # white along the top of the picture as it is shown
    exif = Image.Exif()
    exif[0x0112] = 6  # held upright: stored a quarter turn counter-clockwise, shown turned back
    pillow_heif.from_pillow(Image.fromarray(np.ascontiguousarray(np.rot90(upright, 1)))).save(
        tmp_path / "IMG_0001.HEIC", quality=-1, exif=exif.tobytes())
    seen = load_without_tensorflow(tmp_path / "IMG_0001.HEIC", 32)
    assert np.array_equal(seen, load_with_tensorflow(tmp_path / "IMG_0001.HEIC", 32))
    assert seen[:4].min() > 200 and seen[-4:].max() < 50  # upright: white at the top, black at the bottom
    assert [path for _, path, _ in collect_inputs([str(tmp_path)])] == [tmp_path / "IMG_0001.HEIC"]
    assert image_problem(tmp_path / "IMG_0001.HEIC").startswith("unsupported format HEIF: training reads")


@pytest.fixture(scope="module")
def registered(tiny_models, tmp_path_factory):
    """A tiny baseline and a tiny bfloat16 xception, trained, evaluated and registered (and so exported)."""
    made = copy_models(tiny_models, tmp_path_factory.mktemp("lite"), keep=[0, 2])
    return made | {"cards": dict(zip(["baseline", "xception"], made["models"], strict=True))}


PREDICT_AND_REPORT_MODULES = """
import json, sys
from deployments.cli import main
status = main(["predict", *sys.argv[1:]])
print(json.dumps({"status": status, "tensorflow": "tensorflow" in sys.modules, "prefect": "prefect" in sys.modules}))
"""


def predict_json(model: str, registered, *extra: str, also: Path | None = None) -> tuple[dict[str, dict], dict, str]:
    """`catsdogs predict --json` on the test subset (and the file ALSO) in a new process: its answers by file name,
    the modules it imported, its stderr."""
    inputs = [str(registered["subsets"].root / "test"), *([str(also)] if also else [])]
    result = subprocess.run([sys.executable, "-c", PREDICT_AND_REPORT_MODULES, *inputs, "--json", "--model", model,
                             "--workdir", str(registered["workdir"]), *extra],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    lines = result.stdout.strip().splitlines()
    answers = {Path(row["path"]).name: row for row in map(json.loads, lines[:-1])}
    return answers, json.loads(lines[-1]), result.stderr


def predict_in_process(model: str, registered) -> tuple[dict[str, dict], int, str]:
    result = run_cli("predict", str(registered["subsets"].root / "test"), "--json", "--model", model, "--workdir",
                     str(registered["workdir"]))
    return {Path(row["path"]).name: row for row in map(json.loads, result.stdout.splitlines())}, result.returncode, \
        result.stderr


@pytest.mark.e2e  # a new process: that predict imports neither TensorFlow nor Prefect is the point
@pytest.mark.parametrize("variant", ["baseline", "xception"])
def test_predict_answers_as_keras_did_without_importing_tensorflow(registered, variant: str, tmp_path: Path):
    card, metrics = registered["cards"][variant]
    assert card.litert_path and card.litert_path.is_file() and card.litert_error is None
    if variant == "xception":  # evaluated over six views (zoomed in and out, each mirrored): answered over them too
        assert card.name.endswith("-tta-crop0.8-out0.89") and metrics.tta_zoom_out == card.settings["tta_zoom_out"]
    broken_exif = tmp_path / "broken-exif.jpg"  # its EXIF block cut short: Pillow's parser warns on reading it
    Image.new("RGB", (40, 30), (200, 10, 10)).save(broken_exif, exif=bytes.fromhex(
        "457869660000" "4d4d002a00000008" "0005" "011200030000000100060000") + b"\xff" * 7)
    answers, modules, stderr = predict_json(card.name, registered, also=broken_exif)
    assert modules == {"status": 0, "tensorflow": False, "prefect": False}, stderr[-2000:]
    assert "XNNPACK" not in stderr and "INFO:" not in stderr  # LiteRT's start-up line stays off the terminal
    assert "Warning" not in stderr and answers["broken-exif.jpg"]["label"] in ("cat", "dog"), stderr[-2000:]
    # the baseline computes in float32 in both; the xception trained in bfloat16 and is exported in float32
    tolerance = 1e-5 if variant == "baseline" else 2e-2
    for row in json.loads(metrics.predictions_path.read_text()):
        answer = answers[Path(row["file"]).name]
        dog = answer["probability"] if answer["label"] == "dog" else 1 - answer["probability"]
        assert dog == pytest.approx(row["dog_probability"], abs=tolerance)
        if abs(row["dog_probability"] - 0.5) > tolerance:
            assert (answer["label"] == "dog") == (row["dog_probability"] > 0.5)


def test_a_model_without_its_export_falls_back_to_tensorflow_and_says_why(registered):
    card, metrics = registered["cards"]["baseline"]
    moved = card.litert_path.with_suffix(".moved")
    card.litert_path.rename(moved)
    try:
        answers, status, stderr = predict_in_process(card.name, registered)
    finally:
        moved.rename(card.litert_path)
    assert status == 0, stderr[-2000:]
    assert "predicting with TensorFlow: it has no LiteRT export" in stderr
    assert len(answers) == metrics.test_images


@pytest.mark.parametrize("damage", ["cut short", "another model's export"])
def test_an_export_that_is_not_its_cards_falls_back_to_tensorflow_and_says_why(registered, damage: str):
    """A LiteRT file cut short, or swapped for another model's (other shapes): the card's hash tells, predict
    answers with the Keras model and names the reason, instead of crashing."""
    card, metrics = registered["cards"]["baseline"]
    other, _ = registered["cards"]["xception"]
    original = card.litert_path.read_bytes()
    card.litert_path.write_bytes(original[:len(original) // 2] if damage == "cut short"
                                 else other.litert_path.read_bytes())
    try:
        answers, status, stderr = predict_in_process(card.name, registered)
    finally:
        card.litert_path.write_bytes(original)
    assert status == 0, stderr[-2000:]
    assert "predicting with TensorFlow: its LiteRT export" in stderr and "is not the file registered" in stderr
    assert len(answers) == metrics.test_images and all("label" in row for row in answers.values())


def test_an_export_of_other_shapes_is_refused_by_its_loader(registered):
    from catsdogs.lite import LitePredictor

    other, _ = registered["cards"]["xception"]
    with pytest.raises(ValueError, match=r"not the \(64, 64, 3\) images"):
        LitePredictor(other.litert_path, 64)


def test_a_png_tensorflow_refuses_is_refused_here_too(tmp_path: Path):
    from catsdogs.images import ImageError
    from tests.test_data import png_with_bad_idat_crc

    path = tmp_path / "crc.png"
    path.write_bytes(png_with_bad_idat_crc())
    with pytest.raises(ImageError, match="checksum"):
        load_without_tensorflow(path, 64)


@pytest.mark.realdata
def test_the_real_test_subset_gives_keras_answers_on_litert(shared_archive: Path, tmp_path: Path):
    """The 2,000 real test images: pixels identical to the training's; on every eighth of them (both classes,
    250 images; the runtimes' arithmetic does not depend on which), probabilities within 1e-5 of Keras'."""
    import keras

    from catsdogs.data import make_subsets, unzip_archive
    from catsdogs.datasets import build_arrays
    from catsdogs.model import build_for
    from catsdogs.registry import litert_flatbuffer
    from catsdogs.settings import Settings

    subsets = make_subsets(unzip_archive(shared_archive, tmp_path / "x", 2**31), tmp_path / "s",
                           {"train": (0, 9), "validation": (10, 19), "test": (1500, 2499)})
    arrays = build_arrays(subsets, tmp_path / "d", 180)
    images = np.load(arrays.images("test"))
    ours = np.stack([load_without_tensorflow(subsets.root / name, 180) for name in arrays.files("test")])
    assert ours.shape == (2000, 180, 180, 3) and np.array_equal(ours, images)

    keras.utils.set_random_seed(0)
    model = build_for(Settings(variant="baseline"), "float32", 1)
    (tmp_path / "model.tflite").write_bytes(litert_flatbuffer(model))  # as a registration exports it
    sample = ours[::8]
    expected = model.predict(sample.astype("float32"), batch_size=64, verbose=0)[:, 0]
    predictor = lite.LitePredictor(tmp_path / "model.tflite", 180)
    got = np.concatenate([predictor.predict_batch(sample[i:i + 64]) for i in range(0, len(sample), 64)])
    assert np.abs(got - expected).max() < 1e-5
    clear = np.abs(expected - 0.5) > 1e-5
    assert np.array_equal((got > 0.5)[clear], (expected > 0.5)[clear])


def test_a_registrations_export_of_fast_answers_as_keras_does_with_its_own_layers(tmp_path: Path, caplog):
    """fast's own layers (its training resize, its one warp, the fused batch normalisation), exported as a
    registration exports them (LiteRT's built-in operations only), answer as Keras does, with the moving statistics
    away from their first values, where a wrong fold would show. (efficientnet's export, 20 s here, is checked
    the same way by benchmarks/litert_export.py.)"""
    from catsdogs.model import build_network
    from catsdogs.registry import litert_flatbuffer
    from catsdogs.settings import Settings

    size = 96  # the least fast takes (it starts at 96 px)
    model = build_network(Settings(variant="fast", image_size=size), "float32")
    assert moved_statistics(model) > 0
    with caplog.at_level("WARNING"):
        (tmp_path / "model.tflite").write_bytes(litert_flatbuffer(model))
    assert not caplog.records, [record.getMessage() for record in caplog.records]  # nothing in a run's log
    images = np.random.default_rng(1).uniform(0, 255, (4, size, size, 3)).astype("float32")
    expected = model.predict(images, verbose=0)[:, 0]
    assert expected.std() > 1e-4  # answers that differ between images, not one saturated value
    got = lite.LitePredictor(tmp_path / "model.tflite", size).predict_batch(images)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def moved_statistics(model) -> int:
    """Batch normalisation's moving means and variances set to random values; how many were set."""
    rng = np.random.default_rng(0)
    moved = 0
    for weight in model.weights:
        name = weight.path.rsplit("/", 1)[-1]
        if name in ("moving_mean", "moving_variance"):
            low, high = (-0.2, 0.2) if name == "moving_mean" else (0.5, 1.5)
            weight.assign(rng.uniform(low, high, weight.shape).astype("float32"))
            moved += 1
    return moved
