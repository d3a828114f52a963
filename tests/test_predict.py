"""Prediction: registry, bad input, exit statuses, and the same preprocessing as training."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import numpy as np
import pytest
from PIL import Image

from catsdogs import store
from catsdogs.images import MAX_FILE_BYTES, ImageError, load_with_tensorflow
from catsdogs.predict import KerasPredictor, collect_inputs
from catsdogs.registry import RegistryError, list_models, register_model, resolve_model
from catsdogs.train import evaluate_model, train_model
from tests.conftest import copy_models, run_cli
from tests.test_data import png_with_bad_idat_crc

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tiny_models, tmp_path_factory):
    """A tiny registered model (tests.conftest.tiny_models), in this module's own workdir."""
    made = copy_models(tiny_models, tmp_path_factory.mktemp("predict"), keep=[0])
    (card, metrics), = made["models"]
    return made | {"settings": made["settings"][0], "metrics": metrics, "card": card}


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def bomb_jpeg() -> bytes:
    """A small JPEG whose header claims 20,000×20,000 pixels."""
    data = bytearray(encoded(Image.new("RGB", (16, 16)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = (20000).to_bytes(2, "big") * 2
    return bytes(data)


def broken_avif() -> bytes:
    """An AVIF photo with 16 bytes of its header zeroed: Pillow reads its size, then its decoder fails."""
    data = bytearray(encoded(Image.new("RGB", (300, 200), (200, 100, 50)), "AVIF"))
    data[96:112] = bytes(16)
    return bytes(data)


def bad_and_odd_inputs(folder: Path) -> dict[str, bool]:
    """Write one file per case; the value says whether it must be classified."""
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 90, 3), dtype=np.uint8))
    jpeg = encoded(rgb, "JPEG")
    cases = {
        "zero.jpg": (b"", False),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], False),
        "text.jpg": (b"this is not an image\n", False),
        "bomb.jpg": (bomb_jpeg(), False),
        "alpha.png": (encoded(rgb.convert("RGBA"), "PNG"), True),
        "grey.jpg": (encoded(rgb.convert("L"), "JPEG"), True),
        "cmyk.jpg": (encoded(rgb.convert("CMYK"), "JPEG"), True),
        "anim.gif": (encoded(rgb, "GIF"), True),
        "photo.webp": (encoded(rgb, "WEBP"), True),
        "plain.jpg": (jpeg, True),
        "crc.png": (png_with_bad_idat_crc(), False),  # Pillow accepts it, TensorFlow does not
        "broken.avif": (broken_avif(), False),  # Pillow's AVIF plugin fails with a RuntimeError, not an OSError
        "huge.jpg": (None, False),  # too large to read: a sparse file, refused by its size
    }
    for name, (content, _) in cases.items():
        if content is None:
            with open(folder / name, "wb") as handle:
                handle.truncate(MAX_FILE_BYTES + 1)
        else:
            (folder / name).write_bytes(content)
    return {name: ok for name, (_, ok) in cases.items()}


def test_every_bad_input_gets_its_own_error_and_the_rest_goes_on(trained, tmp_path: Path):
    expected = bad_and_odd_inputs(tmp_path)
    result = run_cli("predict", str(tmp_path), str(tmp_path / "missing.jpg"), "--model", str(trained["card"].path),
                 "--json")
    assert result.returncode == 1
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    by_name = {Path(line["path"]).name: line for line in lines}
    assert set(by_name) == set(expected) | {"missing.jpg"}
    for name, ok in expected.items():
        if ok:
            assert by_name[name]["label"] in ("cat", "dog") and 0.5 <= by_name[name]["probability"] <= 1, name
        else:
            assert "error" in by_name[name] and "label" not in by_name[name], name
    assert "0 bytes" in by_name["zero.jpg"]["error"]
    assert "truncated" in by_name["truncated.jpg"]["error"]
    assert "not an image" in by_name["text.jpg"]["error"]
    assert by_name["bomb.jpg"]["error"] == ("image holds 400,000,000 pixels, more than the 89,478,485 allowed (a "
                                            "decompression bomb?); resize it first")  # the limit that applies
    assert by_name["broken.avif"]["error"].startswith("corrupt or truncated image: ")
    assert "no such file" in by_name["missing.jpg"]["error"]
    assert "TensorFlow cannot decode" in by_name["crc.png"]["error"]
    assert "more than the" in by_name["huge.jpg"]["error"] and "bytes" in by_name["huge.jpg"]["error"]


def test_the_table_keeps_one_line_an_input_whatever_a_name_or_a_decoder_says(trained, tmp_path: Path):
    """A file named with a newline, and a HEIC cut short (libheif's message ends in a newline): the table keeps
    one line for each input, and the JSON one object a line."""
    import pillow_heif

    odd = tmp_path / "two\nlines.jpg"
    odd.write_bytes(encoded(Image.new("RGB", (50, 50), (200, 50, 50)), "JPEG"))
    latin1 = tmp_path / os.fsdecode(b"caf\xe9.jpg")  # a name that is not UTF-8: a terminal cannot print it as is
    latin1.write_bytes(odd.read_bytes())
    pillow_heif.from_pillow(Image.new("RGB", (64, 64), (10, 200, 10))).save(tmp_path / "cut.heic", quality=50)
    (tmp_path / "cut.heic").write_bytes((tmp_path / "cut.heic").read_bytes()[:-10])
    model = str(trained["card"].path)
    table = run_cli("predict", str(odd), str(tmp_path / "cut.heic"), str(latin1), "--model", model)
    lines = table.stdout.splitlines()
    assert table.returncode == 1 and len(lines) == 4 and all(line.isprintable() for line in lines), table.stdout
    assert "two\\nlines.jpg" in lines[1] and lines[2].split()[1:3] == ["error:", "corrupt"], lines
    assert "caf\\udce9.jpg" in lines[3]
    answers = run_cli("predict", str(odd), str(tmp_path / "cut.heic"), "--model", model, "--json").stdout
    rows = [json.loads(line) for line in answers.splitlines()]
    assert [row["path"] for row in rows] == [str(odd), str(tmp_path / "cut.heic")]
    assert "\n" not in rows[1]["error"] and "truncated" in rows[1]["error"]


def test_exit_statuses(trained, tmp_path: Path):
    good = tmp_path / "good.jpg"
    good.write_bytes(encoded(Image.new("RGB", (50, 50), (200, 50, 50)), "JPEG"))
    model = str(trained["card"].path)
    ok = run_cli("predict", str(good), "--model", model)
    assert ok.returncode == 0 and "good.jpg" in ok.stdout and "label" in ok.stdout
    assert run_cli("predict", str(good), str(tmp_path / "nope.jpg"), "--model", model).returncode == 1
    assert run_cli("predict").returncode == 2
    assert run_cli("predict", str(good), "--model", str(tmp_path / "none.keras")).returncode == 2
    empty = run_cli("predict", str(good), "--workdir", str(tmp_path / "empty"))
    assert empty.returncode == 2 and "no registered model" in empty.stderr


def test_prediction_reproduces_evaluation(trained):
    """The command's answers on the test subset give the accuracy evaluation reported: same preprocessing."""
    subsets, arrays, metrics = trained["subsets"], trained["arrays"], trained["metrics"]
    result = run_cli("predict", str(subsets.root / "test"), "--workdir", str(trained["settings"].workdir), "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    correct = [line["label"] == Path(line["path"]).parent.name for line in lines]
    assert len(lines) == metrics.test_images
    assert sum(correct) / len(correct) == pytest.approx(metrics.test_accuracy, abs=1e-6)

    predictor = KerasPredictor(trained["card"].path)
    rows = np.load(arrays.images("test"))
    for row, name in enumerate(arrays.files("test")):
        assert np.array_equal(load_with_tensorflow(subsets.root / name, predictor.image_size), rows[row]), name


def test_registry_best_latest_and_crashed_runs(trained, tmp_path: Path):
    settings = trained["settings"]
    card = trained["card"]
    assert resolve_model(settings.workdir, "best") == card == resolve_model(settings.workdir, "latest")
    assert resolve_model(settings.workdir, card.name) == card
    archive = Path(url2pathname(urlparse(card.data_url).path))  # the archive it was trained on
    assert card.data_sha256 == store.file_sha256(archive)
    assert card.image_size == 78 and "tensorflow" in str(card.versions)
    assert card.settings["variant"] == "baseline" and card.created_at

    def crash(epoch, epochs, row):
        raise KeyboardInterrupt("killed during training")

    with pytest.raises(KeyboardInterrupt):
        train_model(settings.model_copy(update={"seed": 5}), trained["arrays"], settings.workdir / "runs" / "r2",
                    on_epoch=crash)
    assert list_models(settings.workdir) == [card]
    assert resolve_model(settings.workdir, "latest") == card
    with pytest.raises(RegistryError, match="no registered model named"):
        resolve_model(settings.workdir, "nope")


def test_each_set_of_views_of_one_run_is_registered_apart(trained, tmp_path: Path):
    from catsdogs.views import views_name

    assert [views_name("r1", *views) for views in [(False, 0.0), (True, 0.0), (False, 0.8), (True, 0.8),
                                                   (True, 0.8, 0.89), (False, 0.0, 0.9)]] == [
        "r1", "r1-tta", "r1-crop0.8", "r1-tta-crop0.8", "r1-tta-crop0.8-out0.89", "r1-out0.9"]
    settings, name = trained["settings"], trained["card"].name
    folder = settings.workdir / "runs" / name
    written = {path: path.stat().st_mtime_ns for path in folder.rglob("*")}
    run = train_model(settings, trained["arrays"], folder)  # the module's run, reused
    assert {path: path.stat().st_mtime_ns for path in folder.rglob("*")} == written
    flipped = evaluate_model(run, trained["arrays"], 8, tmp_path / "evaluation-tta", tta_flip=True)
    into = settings.model_copy(update={"workdir": tmp_path / "work", "tta_flip": True})
    card = register_model(run, flipped, into, "0" * 64)
    assert card.name == f"{name}-tta" and card.settings["tta_flip"] is True
    assert card.test_accuracy == flipped.test_accuracy and trained["card"].settings["tta_flip"] is False
    assert register_model(run, flipped, into, "0" * 64) == card  # the same views again: the card already there


def test_collect_inputs_globs_and_folders(tmp_path: Path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/1.jpg", "a/b/2.PNG", "a/readme.txt", "c.jpg"):
        (tmp_path / name).write_bytes(b"x")
    found = collect_inputs([str(tmp_path / "a"), str(tmp_path / "*.jpg")])
    assert [Path(p).relative_to(tmp_path).as_posix() for _, p, _ in found] == ["a/1.jpg", "a/b/2.PNG", "c.jpg"]


def test_load_errors_are_image_errors(tmp_path: Path):
    path = tmp_path / "x.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageError):
        load_with_tensorflow(path, 78)


def test_tensorflows_refusal_names_the_problem_without_its_graph_and_op_names(tmp_path: Path):
    """What TensorFlow says of a broken JPEG, without "{{function_node __wrapped__DecodeImage_device_/job:localhost/
    replica:0/task:0/device:CPU:0}}" and "[Op:DecodeImage]" around it: the training's skip line and a Keras
    model's answer both show it."""
    from catsdogs.images import image_problem

    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    jpeg = encoded(Image.fromarray(noise), "JPEG")  # its header whole, half its scan
    path = tmp_path / "cut.jpg"
    path.write_bytes(jpeg[: len(jpeg) // 2])
    with pytest.raises(ImageError) as refused:
        load_with_tensorflow(path, 78)
    for message in (str(refused.value), image_problem(path)):
        assert message.startswith("corrupt or truncated image: TensorFlow cannot decode it (") and "JPEG" in message
        assert "function_node" not in message and "[Op:" not in message and "job:localhost" not in message


def test_predict_flow_publishes_a_table_and_a_gallery(prefect_server, trained, tmp_path: Path, monkeypatch):
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from flows.predict import predict_flow

    (tmp_path / "broken.jpg").write_bytes(b"nope")
    workdir = trained["settings"].workdir
    monkeypatch.setenv("CATSDOGS_WORKDIR", str(workdir))  # the serving side's, as the deployment runs it
    folder = os.path.relpath(trained["subsets"].root / "test", workdir)  # a relative path is the workdir's
    state = predict_flow([folder, str(tmp_path / "broken.jpg")], model="best", return_state=True)
    assert state.is_completed()
    predictions = state.result()
    assert len(predictions) == trained["metrics"].test_images + 1
    assert predictions[-1].error and all(p.label for p in predictions[:-1])
    with get_client(sync_client=True) as client:
        found = {a.key: a for a in client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))}
        name = client.read_flow_run(state.state_details.flow_run_id).name
    assert name == "score-test-and-1-more-with-best"  # named for what it scored, not at random
    assert "broken.jpg" in str(found["predictions"].data) and '"label"' in str(found["predictions"].data)
    assert "data:image/png;base64," in found["prediction-gallery"].data


def test_models_command_lists_best_and_latest(trained, tmp_path: Path):
    result = run_cli("models", "--workdir", str(trained["settings"].workdir), "--json")
    assert result.returncode == 0, result.stderr
    [line] = [json.loads(line) for line in result.stdout.splitlines()]
    assert line["name"] == trained["card"].name and set(line["marks"]) == {"best", "latest"}
    assert run_cli("models", "--workdir", str(tmp_path / "none")).returncode == 2


def test_inputs_that_are_not_files_are_named_for_what_they_are(tmp_path: Path):
    import os

    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    (tmp_path / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    errors = {Path(shown).name: error for shown, _, error in collect_inputs(
        [str(fifo), str(tmp_path / "dangling.jpg"), str(tmp_path / "missing.jpg")])}
    assert errors == {"pipe.jpg": "a named pipe (FIFO), not an image file; give a regular file",
                      "dangling.jpg": f"a broken symbolic link (to {tmp_path / 'gone.jpg'})",
                      "missing.jpg": "no such file or directory"}


def test_paths_that_cannot_be_read_are_each_an_error_and_the_rest_is_found(tmp_path: Path, monkeypatch):
    """A name too long for the file system, a loop of symbolic links, "-", and a folder inside the one given that
    cannot be listed (as a folder without permission is for anyone but root): each is its error line, the
    other images are found, none is left out without a word."""
    import os

    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    (tmp_path / "photos" / "locked").mkdir(parents=True)
    for name in ("photos/a.jpg", "photos/locked/b.jpg", "c.jpg"):
        (tmp_path / name).write_bytes(b"x")
    real_scandir = os.scandir

    def refuse_locked(path: object = ".") -> object:
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", refuse_locked)  # what os.walk lists folders with
    long_name = str(tmp_path / ("x" * 300 + ".jpg"))
    found = collect_inputs([long_name, str(tmp_path / "loop1"), "-", str(tmp_path / "photos"), str(tmp_path / "c.jpg"),
                            ""])
    assert found.pop() == ("", None, "an empty path; give image files, folders or patterns")  # not "this folder"
    assert found == [
        (long_name, None, "could not read: File name too long"),
        (str(tmp_path / "loop1"), None, "a loop of symbolic links, which leads to no file"),
        ("-", None, "images are not read from standard input; give image files, folders or patterns"),
        (str(tmp_path / "photos" / "a.jpg"), tmp_path / "photos" / "a.jpg", None),
        (str(tmp_path / "photos" / "locked"), None,
         "could not read this folder (Permission denied): its images were not classified"),
        (str(tmp_path / "c.jpg"), tmp_path / "c.jpg", None)]
    locked = tmp_path / "photos" / "locked"  # given itself: its own error, not "holds no image files"
    assert collect_inputs([str(locked)]) == [(str(locked), None, "could not read this folder (Permission denied): "
                                                                 "its images were not classified")]


def test_a_model_file_that_is_missing_or_a_folder_is_said_before_tensorflow_starts(tmp_path: Path):
    from catsdogs.predict import chosen_model

    with pytest.raises(FileNotFoundError, match=r"none\.keras does not exist$"):
        chosen_model(str(tmp_path / "none.keras"), tmp_path)
    (tmp_path / "run.keras").mkdir()
    with pytest.raises(FileNotFoundError, match="is a folder; give the .keras file in it"):
        chosen_model(str(tmp_path / "run.keras"), tmp_path)
    with pytest.raises(FileNotFoundError, match="--model is empty"):  # an unset shell variable, not the champion
        chosen_model(" ", tmp_path)
