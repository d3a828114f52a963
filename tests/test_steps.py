"""Each step's identity (catsdogs/steps.py): its version keys its folder, and a change to its code needs one."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from catsdogs import steps, store
from catsdogs.data import make_subsets, unzip_archive
from catsdogs.datasets import build_arrays
from catsdogs.download import download_archive
from catsdogs.settings import Settings
from catsdogs.train import train_model
from tests.conftest import make_kaggle_zip


def test_every_steps_code_is_recorded_with_its_version():
    """Fails when the code that makes a step's output changed while its version did not."""
    changed = {name: now for name, now in steps.fingerprints().items() if steps.recorded().get(name) != now}
    modules = sorted({module for step in steps.STEPS if step.name in changed for module in step.code})
    assert not changed, (
        f"the code of step(s) {', '.join(changed)} changed ({', '.join(modules)}): bump their version in "
        "catsdogs/steps.py so that their results are made again, then record it (python -m catsdogs.steps "
        "--record); where no output can change (a log line, a rename), record it without a bump")


def test_the_fingerprint_sees_code_not_comments_docstrings_or_layout():
    def fingerprint(source: str) -> str:
        return steps._canonical(ast.parse(source))

    plain = fingerprint("def f(x):\n    return x + 1\n")
    assert fingerprint('def f(x):\n    """Add one."""\n    # why\n    return (x +\n            1)\n') == plain
    assert fingerprint("def f(x):\n    return x + 2\n") != plain
    assert fingerprint("def f(x):\n    return x - 1\n") != plain


def test_existing_workdirs_keep_their_folders(tmp_path: Path):
    """The keys of the one global version (3) that came before (computed with that code): an upgrade makes
    nothing again."""
    workdir = Path("/tmp/wd")
    settings = Settings(workdir=workdir, data_url="https://example.org/train.zip")
    assert steps.subsets_folder(workdir / "extract" / "abc" / "train", settings).name == "21a3f98937c15597"
    assert steps.download_folder(settings).name == "b68ae0459380a20f"


def test_a_given_sha256_keys_the_download_whatever_the_url_says():
    sha = "a" * 64
    signed = [Settings(data_url=f"https://example.org/train.zip?token={token}", data_sha256=sha) for token in "xy"]
    assert steps.download_folder(signed[0]) == steps.download_folder(signed[1])
    assert steps.download_folder(signed[0].model_copy(update={"data_sha256": "b" * 64})) != steps.download_folder(
        signed[0])
    unsigned = [Settings(data_url=f"https://example.org/train.zip?token={token}") for token in "xy"]
    assert steps.download_folder(unsigned[0]) != steps.download_folder(unsigned[1])  # unverified: by URL


def test_a_new_version_makes_that_step_and_the_later_ones_again_never_the_earlier(tmp_path: Path, monkeypatch):
    """The pipeline in process, twice: after a new version of the training (a changed augmentation, say) the
    data steps are taken as they are and only the model trains again."""
    archive = make_kaggle_zip(tmp_path / "k.zip", per_class=6)
    settings = Settings(data_url=archive.as_uri(), workdir=tmp_path / "w", image_size=78, batch_size=4, epochs=1,
                        train_range="0-1", validation_range="2-3", test_range="4-5")

    def pipeline() -> dict[str, Path]:
        folder = steps.download_folder(settings)
        got = download_archive(settings.data_url, folder / "archive.zip")
        if not store.is_complete(folder):  # as the download task marks it
            store.mark_complete(folder, got.model_dump(mode="json"))
        images = unzip_archive(got.path, steps.extract_folder(got, settings), 2**30)
        ranges = {"train": (0, 1), "validation": (2, 3), "test": (4, 5)}
        subsets = make_subsets(images, steps.subsets_folder(images, settings), ranges)
        arrays = build_arrays(subsets, steps.datasets_folder(subsets, settings), 78)
        run = train_model(settings, arrays, steps.run_folder(arrays, settings))
        return {"download": got.path.parent, "extract": images, "subsets": subsets.root, "datasets": arrays.root,
                "runs": run.run_dir}

    def written(folders: dict[str, Path]) -> dict[str, int]:
        return {name: (folder / store.MARKER).stat().st_mtime_ns for name, folder in folders.items()}

    first = pipeline()
    before = written(first)
    monkeypatch.setattr(steps, "TRAIN", dataclasses.replace(steps.TRAIN, version=steps.TRAIN.version + 1))
    second = pipeline()
    assert {name: second[name] == first[name] for name in first} == {
        "download": True, "extract": True, "subsets": True, "datasets": True, "runs": False}
    assert {name: time for name, time in written(second).items() if name != "runs"} == {
        name: time for name, time in before.items() if name != "runs"}  # not made again, not touched
    monkeypatch.setattr(steps, "SUBSETS", dataclasses.replace(steps.SUBSETS, version=steps.SUBSETS.version + 1))
    third = pipeline()
    assert [name for name in first if third[name] != second[name]] == ["subsets", "datasets", "runs"]


@pytest.mark.parametrize("step", steps.STEPS, ids=lambda step: step.name)
def test_each_step_declares_code_that_exists(step: steps.Step):
    assert step.version >= 1 and step.code
    assert steps.code_fingerprint(step.code)  # every module it names is found


def test_an_archive_already_downloaded_under_another_key_is_taken_not_fetched(tmp_path: Path):
    """A workdir from before the SHA-256 keyed the download (or a signed URL whose token changed): the archive
    is found in its earlier folder, checked, and taken; the URL, unreachable here, is never asked."""
    archive = make_kaggle_zip(tmp_path / "k.zip", per_class=2)
    sha = store.file_sha256(archive)
    earlier = steps.download_folder(Settings(workdir=tmp_path / "w", data_url=archive.as_uri()))
    got = download_archive(archive.as_uri(), earlier / "archive.zip")
    store.mark_complete(earlier, got.model_dump(mode="json"))
    settings = Settings(workdir=tmp_path / "w", data_url="http://127.0.0.1:9/train.zip?token=new", data_sha256=sha)
    again = download_archive(settings.data_url, steps.download_folder(settings) / "archive.zip", sha)
    assert again.sha256 == sha and again.path.parent == steps.download_folder(settings) != earlier
