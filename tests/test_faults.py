"""Faults met for real: a killed training process, two runs at once, a full disk, a signal to a sweep."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prefect import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
)

from catsdogs import store
from catsdogs.data import ArchiveError, unzip_archive
from catsdogs.download import DownloadError, download_archive
from catsdogs.registry import list_models
from tests.conftest import SAMPLE_SHA256

pytestmark = pytest.mark.e2e  # real processes and servers, each test

ROOT = Path(__file__).resolve().parents[1]


def cli_args(archive: Path, workdir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "deployments.cli", "run", "--json", "--data-url", archive.as_uri(), "--data-sha256",
            SAMPLE_SHA256, "--workdir", str(workdir), "--image-size", "78", "--batch-size", "16", *extra]


def cli_env(api_url: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CATSDOGS_")} | {"PREFECT_API_URL": api_url}


def test_killed_training_resumes_from_its_last_finished_epoch(prefect_server, sample_archive, tmp_path):
    """SIGKILL: no handler runs. The next run resumes the training, and marks the killed run Crashed (it would
    stay Running in the UI for good)."""
    args = cli_args(sample_archive, tmp_path / "w", "--epochs", "5", "--train-range", "0-39",
                    "--validation-range", "40-49", "--test-range", "50-59")
    begun = datetime.now(UTC)
    first = subprocess.Popen(args, env=cli_env(prefect_server), cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 400
    history: list = []
    while time.monotonic() < deadline and first.poll() is None:
        files = list((tmp_path / "w" / "runs").glob("*/history.json"))
        history = json.loads(files[0].read_text()) if files else []
        if len(history) >= 2:
            first.send_signal(signal.SIGKILL)  # a real kill: no exception handler, no cleanup
            break
        time.sleep(0.05)
    first.wait(60)
    first.stdout.close()
    first.stderr.close()
    assert first.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    run_dir = files[0].parent
    killed_at = len(json.loads(files[0].read_text()))  # read again: an epoch may have ended before the kill landed
    assert 2 <= killed_at < 5 and not store.is_complete(run_dir)
    assert list_models(tmp_path / "w") == []  # a crashed run is never registered

    second = subprocess.run(args, env=cli_env(prefect_server), cwd=ROOT, capture_output=True, text=True,
                            timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "epoch 1/5" not in second.stderr, "training started over instead of resuming"
    assert f"epoch {killed_at + 1}/5" in second.stderr and "epoch 5/5" in second.stderr
    result = json.loads(second.stdout.splitlines()[-1])
    final = json.loads((run_dir / "history.json").read_text())
    assert [row["epoch"] for row in final] == [1, 2, 3, 4, 5] and result["epochs"] == 5
    best = min(final, key=lambda row: (row["val_loss"], row["epoch"]))
    assert result["best_epoch"] == best["epoch"]
    import keras

    assert keras.models.load_model(result["model_path"]).output_shape == (None, 1)  # the checkpoint is whole
    with get_client(sync_client=True) as client:
        recent = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            expected_start_time=FlowRunFilterExpectedStartTime(after_=begun)))
    runs = {run.state_type.value: run for run in recent if str(tmp_path) in json.dumps(run.parameters, default=str)}
    assert sorted(runs) == ["COMPLETED", "CRASHED"], [(run.name, run.state_type.value) for run in recent]
    assert "took the training up from its last finished epoch" in runs["CRASHED"].state.message


def test_two_runs_at_once_on_one_workdir(prefect_server, sample_archive, tmp_path):
    args = cli_args(sample_archive, tmp_path / "w", "--epochs", "1", "--train-range", "0-19",
                    "--validation-range", "20-29", "--test-range", "30-39")
    runs = [subprocess.Popen(args, env=cli_env(prefect_server), cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=600) for run in runs]
    for run, (_out, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err[-3000:]
    results = [json.loads(out.splitlines()[-1]) for out, _ in outputs]
    assert results[0] == results[1]
    for step in ("download", "extract", "subsets", "datasets", "runs"):
        folders = list((tmp_path / "w" / step).iterdir())
        assert [f for f in folders if f.name.endswith((".tmp", ".stale"))] == [], step
        assert sum(store.is_complete(f) for f in folders) == 1, step
    assert len(list_models(tmp_path / "w")) == 1


@pytest.fixture
def small_disk(tmp_path: Path):
    """A real 4 MB tmpfs filesystem (root only); the test is skipped, saying why, where mount is refused."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_full_disk_during_download(small_disk, serve):
    from tests.test_download import zip_body

    server = serve(zip_body(os.urandom(6_000_000)))  # more than the 4 MB disk holds
    with pytest.raises(DownloadError, match="No space left|free some disk space"):
        download_archive(server.url, small_disk / "dl" / "archive.zip")
    leftovers = [p.name for p in (small_disk / "dl").iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []  # nothing a later run could take for a download


def test_full_disk_during_extraction(small_disk, tmp_path):
    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i in range(3):
            zf.writestr(f"train/cat.{i}.jpg", os.urandom(2_000_000))
    with pytest.raises(store.DiskFullError, match=f"no space left on the disk of {small_disk / 'x'}"):
        unzip_archive(archive, small_disk / "x", 2**30)
    assert not (small_disk / "x").exists()
    assert [p.name for p in small_disk.iterdir() if not p.name.endswith(".lock")] == []


def test_a_full_disk_in_any_step_is_one_line_and_the_next_run_builds_it_again(prefect_server, tmp_path: Path,
                                                                             monkeypatch, capsys):
    """ENOSPC (or a quota) wherever a step writes, however wrapped: one line naming the folder and the fix."""
    import errno

    import numpy as np

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "w" / "x.npy"))

    with pytest.raises(store.DiskFullError) as caught:
        store.run_once(tmp_path / "step", full, lambda marker: marker)
    assert str(caught.value).startswith(f"[Errno {errno.ENOSPC}] no space left on the disk of {tmp_path / 'step'} "
                                        f"writing {tmp_path / 'w' / 'x.npy'}; free some space")

    def wrapped():  # as _extract and Keras wrap it
        try:
            full()
        except OSError as err:
            raise ArchiveError("could not extract") from err

    with pytest.raises(store.DiskFullError):
        store.run_once(tmp_path / "step", wrapped, lambda marker: marker)
    assert not store.is_complete(tmp_path / "step")
    assert store.run_once(tmp_path / "step", lambda: "built", lambda marker: marker) == "built"

    # the whole command: one line on the terminal, exit 1, and with the space back the run completes
    from deployments.cli import main
    from tests.conftest import make_kaggle_zip

    archive = make_kaggle_zip(tmp_path / "k.zip", per_class=12)
    args = ["run", "--data-url", archive.as_uri(), "--workdir", str(tmp_path / "w"), "--image-size", "78",
            "--epochs", "1", "--batch-size", "8", "--train-range", "0-5", "--validation-range", "6-7",
            "--test-range", "8-11"]
    real_save = np.save
    monkeypatch.setattr(np, "save", full)
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "no space left on the disk of" in err and "datasets" in err and "Traceback" not in err
    monkeypatch.setattr(np, "save", real_save)
    assert main(args) == 0


def test_a_signal_stops_a_sweep_within_seconds_and_leaves_no_run_running(prefect_server, sample_archive, tmp_path):
    """The sweep's training runs in a task runner's thread, which signals never reach: it must stop anyway, its
    child run must end Crashed (not stay Running), and the sweep run again resumes the training. SIGTERM stops
    the first run and Ctrl-C (SIGINT) the resumed one; the third run finishes both configurations."""

    # Enough epochs (a few tenths of a second each) that a training which ignored the signal would still be
    # going when the sweep exits: with 12, three seconds of delay looked like running to the end. The second
    # configuration, which the signals never reach, only has to show that the third run goes on to it: 2 epochs.
    epochs = 24
    args = [sys.executable, "-m", "deployments.cli", "sweep", "--data-url", sample_archive.as_uri(), "--workdir",
            str(tmp_path / "w"), "--image-size", "78", "--batch-size", "16", "--epochs", f"{epochs},2",
            "--train-range", "0-15", "--validation-range", "16-19", "--test-range", "20-23"]
    history = tmp_path / "w" / "runs"
    stopped_at = 0
    for signum in (signal.SIGTERM, signal.SIGINT):
        begun = datetime.now(UTC)
        stopped_at = stop_a_sweep(args, prefect_server, history, signum, after_epochs=stopped_at + 2)
        assert stopped_at < epochs, "the training went on to its end after the signal"
        with get_client(sync_client=True) as client:
            # filtered on the server: an unfiltered read returns only the first page of a busy server's runs
            recent = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                expected_start_time=FlowRunFilterExpectedStartTime(after_=begun)))
            runs = [run for run in recent if str(tmp_path) in json.dumps(run.parameters, default=str)]
        assert len(runs) >= 2, "the sweep and its first training run"
        assert {run.state_type.value for run in runs} <= {"CRASHED", "CANCELLED", "FAILED"}, [
            (run.name, run.state_type.value) for run in runs]

    again = subprocess.run(args, env=cli_env(prefect_server), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"epoch {stopped_at + 1}/{epochs}" in again.stderr and "epoch 1/2" in again.stderr  # the second anew
    assert sorted(len(json.loads(path.read_text())) for path in history.glob("*/history.json")) == [2, epochs]


def stop_a_sweep(args: list[str], api_url: str, runs: Path, signum: int, after_epochs: int) -> int:
    """Start the sweep, send SIGNUM once its first training has AFTER_EPOCHS epochs, check that it stops within
    seconds with the interrupted line; return how many epochs that training kept."""
    sweep_run = subprocess.Popen(args, env=cli_env(api_url), cwd=ROOT, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 400
    files: list[Path] = []
    while time.monotonic() < deadline and sweep_run.poll() is None:
        files = list(runs.glob("*/history.json"))
        if files and len(json.loads(files[0].read_text() or "[]")) >= after_epochs:
            break
        time.sleep(0.1)
    sweep_run.send_signal(signum)
    signalled = time.monotonic()
    _, err = sweep_run.communicate(timeout=120)
    assert sweep_run.returncode == 130, err[-3000:]
    assert time.monotonic() - signalled < 60, "the training went on after the signal"
    assert "catsdogs: interrupted" in err
    return len(json.loads(files[0].read_text()))
