"""A hostile user's inputs and faults, from the command line: one line that names the problem, never a traceback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import CommandResult, copy_models, make_kaggle_zip, run_cli

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, api_url: str | None = None, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("CATSDOGS_", "PREFECT_API"))} | env
    if api_url:
        environment["PREFECT_API_URL"] = api_url
    return subprocess.run([sys.executable, "-m", "deployments.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env=environment, timeout=300)


def one_line_error(result: subprocess.CompletedProcess | CommandResult, status: int) -> str:
    """The command failed with STATUS, no traceback on the terminal, and its last line says why."""
    assert result.returncode == status, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("catsdogs: "), result.stderr[-3000:]
    return last


@pytest.mark.parametrize("args, words", [
    (["--seed", str(2**32)], ["seed"]),
    (["--seed", "-1"], ["seed"]),
    (["--download-backoff-s", "nan"], ["download_backoff_s", "finite"]),
    (["--download-backoff-s", "inf"], ["download_backoff_s"]),
    (["--download-timeout-s", "1e309"], ["download_timeout_s"]),
    (["--max-extract-gib", "inf"], ["max_extract_gib"]),
    (["--train-range", "0-99999999999"], ["train_range"]),
])
def test_every_setting_is_range_checked_before_any_work(tmp_path: Path, args: list[str], words: list[str]):
    last = one_line_error(run_cli("run", *args, "--workdir", str(tmp_path / "w")), 2)
    for word in words:
        assert word in last
    assert not (tmp_path / "w").exists()


def test_config_file_that_is_a_directory_or_not_utf8(tmp_path: Path):
    assert "is a directory" in one_line_error(run_cli("run", "--config", str(tmp_path)), 2)
    latin = tmp_path / "run.toml"
    latin.write_bytes('variant = "augmented"  # caf\xe9\n'.encode("latin-1"))
    assert "not UTF-8" in one_line_error(run_cli("run", "--config", str(latin)), 2)


def test_workdir_that_is_a_file_or_not_writable(tmp_path: Path):
    file = tmp_path / "file"
    file.write_text("x")
    assert "is a file" in one_line_error(run_cli("run", "--workdir", str(file)), 2)
    assert "cannot write" in one_line_error(run_cli("run", "--workdir", "/sys/catsdogs-work"), 2)  # read-only sysfs


def test_a_local_archive_that_is_not_there_is_said_before_any_work(tmp_path: Path):
    """A missing file, a folder, a host where the path should begin: one line, before a Prefect server starts."""
    (tmp_path / "data").mkdir()
    for url, words in [((tmp_path / "none.zip").as_uri(), "none.zip does not exist; check --data-url"),
                       ((tmp_path / "data").as_uri(), "is a folder; give the path of the zip archive in it"),
                       ("file://data/train.zip", "names a host (data) where the path should begin; a file:// URL "
                                                 "takes three slashes")]:
        for command in ("run", "sweep"):
            line = one_line_error(run_cli(command, "--data-url", url, "--workdir", str(tmp_path / "w")), 2)
            assert line.startswith("catsdogs: invalid setting data_url: ") and words in line, line
    assert not (tmp_path / "w").exists()


def test_expected_run_failures_end_with_their_line_and_no_traceback(prefect_server, serve, tmp_path: Path):
    cut = tmp_path / "cut.zip"  # a local archive cut short: said once, not retried (a file is what it is)
    cut.write_bytes(b"PK\x03\x04" + bytes(5000))
    broken = cli("run", "--data-url", cut.as_uri(), "--workdir", str(tmp_path / "w"), api_url=prefect_server)
    assert "is not a complete zip archive (5,004 bytes" in one_line_error(broken, 1)
    assert broken.stderr.count("not a complete zip") == 1, broken.stderr  # not restated by Prefect's lines above it
    assert "gave up after" not in broken.stderr and cut.is_file()
    looping = serve(b"")
    looping.behaviour.redirect_loop = True
    loop = cli("run", "--data-url", looping.url.replace("http://", "http://alice:hunter2@"), "--workdir",
               str(tmp_path / "w"), api_url=prefect_server)
    assert "redirects in a loop" in one_line_error(loop, 1) and "hunter2" not in loop.stderr + loop.stdout
    page = serve(b"<!DOCTYPE html><html>Please log in</html>")
    assert "web page" in one_line_error(cli("run", "--data-url", page.url, "--workdir", str(tmp_path / "w"),
                                            api_url=prefect_server), 1)


def test_predict_usage_errors(tmp_path: Path):
    image = tmp_path / "a.jpg"
    image.write_bytes(b"whatever")
    not_a_model = tmp_path / "model.keras"
    not_a_model.write_text("this is not a model")
    assert "not a Keras model" in one_line_error(run_cli("predict", str(image), "--model", str(not_a_model)), 2)
    for size in ("0", "-3", "many"):
        result = run_cli("predict", str(image), "--batch-size", size)
        assert result.returncode == 2 and "--batch-size" in result.stderr and "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def registry(tiny_models, tmp_path_factory):
    """A workdir with two registered tiny models."""
    made = copy_models(tiny_models, tmp_path_factory.mktemp("registry"), keep=[0, 1])
    return made["workdir"], made["subsets"]


def test_a_corrupt_registry_card_is_skipped_with_a_warning(registry):
    workdir, _ = registry
    folders = sorted(p for p in (workdir / "models").iterdir() if p.is_dir())
    marker = folders[0] / "_COMPLETE.json"
    good = marker.read_text()
    try:
        marker.write_text("{ not json")
        result = run_cli("models", "--workdir", str(workdir))
        assert result.returncode == 0, result.stderr
        assert folders[1].name in result.stdout and folders[0].name not in result.stdout
        assert f"skipping registered model {folders[0].name}" in result.stderr
    finally:
        marker.write_text(good)


@pytest.mark.e2e
def test_predict_piped_into_head_ends_quietly(registry):
    workdir, subsets = registry
    command = (f"{sys.executable} -m deployments.cli predict {subsets.root} --json --batch-size 1 --workdir {workdir} "
               "| head -n 1")
    result = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, cwd=ROOT,
                            timeout=300)
    assert len(result.stdout.splitlines()) == 1 and json.loads(result.stdout)["label"] in ("cat", "dog")
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr[-2000:]
    assert result.returncode in (0, 141)  # 141: the writer was stopped by the closed pipe, as `yes | head` is


def children_of(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        current = todo.pop()
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                kids = {int(k) for k in (task / "children").read_text().split()}
            except OSError:
                continue
            todo += list(kids - found)
            found |= kids
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_every_stop_signal_is_handled_as_ctrl_c(monkeypatch):
    """SIGINT, SIGTERM and SIGHUP take one path, so the end-to-end tests send one each, not each one everywhere."""
    from deployments import cli

    installed = {}
    monkeypatch.setattr(signal, "signal", lambda signum, handler: installed.setdefault(signum, handler))
    monkeypatch.setattr(cli, "_main", lambda argv: 0)
    assert cli.main([]) == 0
    assert set(installed) == {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    assert set(installed.values()) == {cli._interrupt}


def test_a_command_in_the_same_process_does_not_inherit_an_earlier_commands_stop():
    """A stop asked of one command (its signal handler sets it for the trainings' threads) is not the next one's."""
    from catsdogs import runtime

    runtime.request_stop()
    assert run_cli("run", "--image-size", "64").returncode == 2
    assert not runtime.stop_requested()


@pytest.mark.e2e
@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGKILL], ids=["hung-up", "killed"])
def test_a_hung_up_or_killed_run_stops_its_temporary_prefect_server(serve, tmp_path: Path, signum: int):
    """SIGHUP (a closed terminal), sent as a terminal sends it: to the command's whole process group, which must
    not stop the server under the run (the run would then retry a dead API for minutes); SIGKILL (kill -9, or
    the system out of memory) to the command alone, which then stops nothing itself. SIGTERM and SIGINT stop a
    sweep in test_faults."""
    stalled = serve(make_kaggle_zip(tmp_path / "k.zip").read_bytes())
    stalled.behaviour.stall_after = [100] * 20  # the download hangs, so the run is busy when the signal comes
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("CATSDOGS_", "PREFECT_API"))}
    log = tmp_path / "stderr.txt"
    with open(log, "w") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "deployments.cli", "run", "--data-url", stalled.url,
                                    "--workdir", str(tmp_path / "w")], cwd=ROOT, env=environment,
                                   stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
        deadline = time.monotonic() + 180
        while "Beginning flow run" not in log.read_text() and time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
        started = children_of(process.pid)
        assert started, "the temporary server runs as a child process"
        if signum == signal.SIGKILL:
            process.kill()
        else:
            os.killpg(process.pid, signum)
        assert process.wait(timeout=120) != 0
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in started) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not [pid for pid in started if alive(pid)], "the temporary Prefect server outlived the run"
    assert "Traceback" not in log.read_text()


def test_an_interrupted_step_leaves_nothing_behind_on_the_next_run(tmp_path: Path):
    from catsdogs.data import unzip_archive

    out = tmp_path / "extract" / "abc"
    leftover = tmp_path / "extract" / ".abc.x1y2.tmp"
    (leftover / "train").mkdir(parents=True)  # what a killed unzip leaves
    (leftover / "train" / "cat.0.jpg").write_bytes(b"half")
    unzip_archive(make_kaggle_zip(tmp_path / "k.zip"), out, 2**30)
    assert not leftover.exists()
    assert sorted(p.name for p in out.parent.iterdir() if not p.name.endswith(".lock")) == ["abc"]


def test_a_moved_workdir_uses_only_its_own_files(prefect_server, tmp_path: Path):
    import shutil

    from catsdogs.settings import Settings
    from flows.train import train_flow

    archive = make_kaggle_zip(tmp_path / "k.zip", per_class=12)
    settings = Settings(data_url=archive.as_uri(), workdir=tmp_path / "a", image_size=78, batch_size=8, epochs=1,
                        train_range="0-5", validation_range="6-7", test_range="8-11")
    first = train_flow(settings)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "a")  # the old folder is gone: nothing may read from (or write to) it
    trained_at = (tmp_path / "b" / Path(first.model_path).relative_to(tmp_path / "a")).stat().st_mtime_ns

    second = train_flow(settings.model_copy(update={"workdir": tmp_path / "b"}))
    assert Path(second.model_path).is_relative_to(tmp_path / "b")
    assert Path(second.predictions_path).is_relative_to(tmp_path / "b")
    assert Path(second.model_path).stat().st_mtime_ns == trained_at  # found where it is now, not trained again
    assert second.test_accuracy == first.test_accuracy
    assert not (tmp_path / "a").exists()
    models = json.loads(cli("models", "--json", "--workdir", str(tmp_path / "b")).stdout.splitlines()[0])
    assert Path(models["path"]).is_relative_to(tmp_path / "b") and Path(models["path"]).is_file()
    answer = cli("predict", str(tmp_path / "b" / "subsets"), "--json", "--workdir", str(tmp_path / "b"))
    assert answer.returncode == 0 and len(answer.stdout.splitlines()) == 24, answer.stderr[-2000:]


SECRETS = ("hunter2", "s3cret", "t0ken")


def test_credentials_stay_out_of_flow_parameters_logs_and_artifacts(prefect_server, serve, tmp_path: Path,
                                                                    monkeypatch):
    from prefect import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )

    from catsdogs.settings import Settings
    from flows.train import train_flow

    server = serve(make_kaggle_zip(tmp_path / "k.zip", per_class=12).read_bytes())
    server.behaviour.statuses = [503]  # a retried failure, whose message names the URL
    secret_url = server.url.replace("http://", "http://alice:hunter2@") + "?token=s3cret#t0ken"
    settings = Settings(data_url=secret_url, workdir=tmp_path / "w", image_size=78, batch_size=8, epochs=1,
                        train_range="0-5", validation_range="6-7", test_range="8-11", download_backoff_s=0.1)
    monkeypatch.delenv("CATSDOGS_DATA_URL", raising=False)
    state = train_flow(settings, return_state=True)
    assert state.is_completed(), state.message
    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        parameters = client.read_flow_run(run_id).parameters
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
    recorded = json.dumps(parameters) + "\n".join(log.message for log in logs) + "".join(
        str(a.data) for a in artifacts)
    assert "trying again" in recorded and "127.0.0.1" in recorded and "HTTP 503" in recorded  # the 503 was logged...
    assert not [s for s in SECRETS if s in recorded]  # ...with the URL masked, as are the parameters
    assert parameters["settings"]["data_url"] == server.url.replace("http://", "http://***@") + "?token=***#***"
    on_disk = "".join(p.read_text(errors="replace") for p in (tmp_path / "w").rglob("*.json"))
    assert not [s for s in SECRETS if s in on_disk]

    # A deployment's run gets the masked parameters back: the full URL must come from the environment
    masked = Settings.model_validate(parameters["settings"] | {"workdir": str(tmp_path / "w2")})
    failed = train_flow(masked, return_state=True)
    assert failed.is_failed() and "CATSDOGS_DATA_URL" in failed.message
    monkeypatch.setenv("CATSDOGS_DATA_URL", secret_url)
    assert train_flow(masked, return_state=True).is_completed()


@pytest.mark.parametrize("url, status", [
    ("http://alice:hunter2@127.0.0.1:99999/train.zip?token=s3cret", 2),  # the port does not parse: a usage error
    ("http://alice:hunter2@[::1/train.zip?token=s3cret", 2),
    ("ftp://alice:hunter2@example.org/train.zip?token=s3cret", 2),  # not a scheme catsdogs reads
    ("http://127.0.0.1:9/train.zip?s3cret", 1),  # a query word without =, refused by the closed port
    ("http://alice:hun\nter2@127.0.0.1:9/train.zip", 1),  # a newline in the password: the URL is masked whole
    ("http://alice:hunter2@127.0.0.1:9/train.zip#t0ken", 1),
])
def test_odd_urls_never_show_their_secrets_on_the_terminal(prefect_server, tmp_path: Path, url: str, status: int):
    result = cli("run", "--data-url", url, "--download-retries", "0", "--workdir", str(tmp_path / "w"),
                 api_url=prefect_server)
    one_line_error(result, status)
    assert not [s for s in SECRETS if s in result.stdout + result.stderr]
