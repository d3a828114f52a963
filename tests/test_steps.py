"""Each step's identity (catsdogs/steps.py): its version keys its folder, and a change to its code needs one."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from catsdogs import steps, store
from catsdogs.download import download_archive
from catsdogs.pipeline import Pipeline
from catsdogs.settings import Settings
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
    assert steps.SUBSETS.folder_for(settings, workdir / "extract" / "abc" / "train").name == "21a3f98937c15597"
    assert steps.DOWNLOAD.folder_for(settings).name == "b68ae0459380a20f"


def test_a_given_sha256_keys_the_download_whatever_the_url_says():
    sha = "a" * 64
    signed = [Settings(data_url=f"https://example.org/train.zip?token={token}", data_sha256=sha) for token in "xy"]
    assert steps.DOWNLOAD.folder_for(signed[0]) == steps.DOWNLOAD.folder_for(signed[1])
    other = signed[0].model_copy(update={"data_sha256": "b" * 64})
    assert steps.DOWNLOAD.folder_for(other) != steps.DOWNLOAD.folder_for(signed[0])
    unsigned = [Settings(data_url=f"https://example.org/train.zip?token={token}") for token in "xy"]
    assert steps.DOWNLOAD.folder_for(unsigned[0]) != steps.DOWNLOAD.folder_for(unsigned[1])  # unverified: by URL


@pytest.mark.usefixtures("eager_keras")
def test_a_new_version_makes_that_step_and_the_later_ones_again_never_the_earlier(tmp_path: Path, monkeypatch):
    """The library pipeline, three times: after a new version of the training (a changed augmentation, say) the
    data steps are taken as they are and only the model trains (and is evaluated and registered) again."""
    archive = make_kaggle_zip(tmp_path / "k.zip", per_class=6)
    settings = Settings(data_url=archive.as_uri(), workdir=tmp_path / "w", image_size=78, batch_size=4, epochs=1,
                        train_range="0-1", validation_range="2-3", test_range="4-5")

    def made() -> dict[str, Path]:
        pipeline = Pipeline(settings)
        pipeline.run(until=steps.EVALUATE)  # registration follows its run as evaluation does; it exports, slowly
        return pipeline.folders

    def written(folders: dict[str, Path]) -> dict[str, int]:
        return {name: (folder / store.MARKER).stat().st_mtime_ns for name, folder in folders.items()}

    first = made()
    assert list(first) == [step.name for step in steps.PIPELINE[:-1]]
    before = written(first)
    monkeypatch.setitem(steps.BY_NAME, "train", dataclasses.replace(steps.TRAIN, version=steps.TRAIN.version + 1))
    second = made()
    later = ["train", "evaluate"]
    assert [name for name in first if second[name] != first[name]] == later
    assert {name: time for name, time in written(second).items() if name not in later} == {
        name: time for name, time in before.items() if name not in later}  # not made again, not touched
    monkeypatch.setitem(steps.BY_NAME, "subsets", dataclasses.replace(steps.SUBSETS, version=steps.SUBSETS.version + 1))
    third = made()
    assert [name for name in first if third[name] != second[name]] == ["subsets", "datasets", *later]


def test_each_marker_records_its_step_version_and_inputs_and_loads_back_alone(tmp_path: Path):
    """Lineage: from a registered model back to the archive, by reading markers, never by searching folders; and
    each step's result is read back equal from its folder alone (what a Cached task does)."""
    archive = make_kaggle_zip(tmp_path / "k.zip", per_class=6)
    settings = Settings(data_url=archive.as_uri(), workdir=tmp_path / "w", image_size=78, batch_size=4, epochs=1,
                        train_range="0-1", validation_range="2-3", test_range="4-5")
    pipeline = Pipeline(settings)
    card = pipeline.get(steps.REGISTER)
    workdir = settings.workdir.resolve()

    def upstream(folder: Path, key: str) -> Path:
        return workdir / store.read_lineage(folder)["inputs"][key].removeprefix("WORKDIR/")

    lineage = store.read_lineage(card.path.parent)
    assert (lineage["step"], lineage["version"]) == ("register", steps.REGISTER.version)
    run = upstream(card.path.parent, "run")
    datasets = upstream(run, "datasets")
    subsets = upstream(datasets, "subsets")
    images = upstream(subsets, "images")
    assert [run, datasets, subsets, images] == [pipeline.folders[name] for name in ("train", "datasets", "subsets",
                                                                                     "unzip")]
    assert store.read_lineage(images)["inputs"] == {"sha256": pipeline.get(steps.DOWNLOAD).sha256}
    assert store.read_lineage(run)["inputs"]["epochs"] == 1 and "_lineage" not in store.read_marker(run)
    for name, folder in pipeline.folders.items():  # each folder is where its own lineage says
        step = steps.BY_NAME[name]
        assert store.read_lineage(folder)["step"] == name
        assert step.folder(settings.workdir, step.inputs(settings, *[pipeline.get(n) for n in step.needs])) == folder
        assert step.load(folder) == pipeline.get(step)


@pytest.mark.parametrize("step", steps.STEPS, ids=lambda step: step.name)
def test_each_step_declares_code_that_exists(step: steps.Step):
    assert step.version >= 1 and step.code
    assert steps.code_fingerprint(step.code)  # every module it names is found


def test_an_archive_already_downloaded_under_another_key_is_taken_not_fetched(tmp_path: Path):
    """A workdir from before the SHA-256 keyed the download (or a signed URL whose token changed): the archive
    is found in its earlier folder, checked, and taken; the URL, unreachable here, is never asked."""
    archive = make_kaggle_zip(tmp_path / "k.zip", per_class=2)
    sha = store.file_sha256(archive)
    earlier = steps.DOWNLOAD.folder_for(Settings(workdir=tmp_path / "w", data_url=archive.as_uri()))
    got = download_archive(archive.as_uri(), earlier / "archive.zip")
    store.mark_complete(earlier, got.model_dump(mode="json"))
    settings = Settings(workdir=tmp_path / "w", data_url="http://127.0.0.1:9/train.zip?token=new", data_sha256=sha)
    again = download_archive(settings.data_url, steps.DOWNLOAD.folder_for(settings) / "archive.zip", sha)
    assert again.sha256 == sha and again.path.parent == steps.DOWNLOAD.folder_for(settings) != earlier
