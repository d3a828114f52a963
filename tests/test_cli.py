"""The command line: usage errors in process, and runs as a user starts them, in a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SAMPLE_SHA256, run_cli

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, api_url: str | None = None, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CATSDOGS_")} | env
    if api_url:
        environment["PREFECT_API_URL"] = api_url
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, env=environment,
                          timeout=600)


def test_invalid_setting_is_a_usage_error_before_any_work(tmp_path: Path):
    result = run_cli("run", "--image-size", "64", "--workdir", str(tmp_path / "w"))
    assert result.returncode == 2
    assert "invalid setting image_size" in result.stderr and "from 78 to 1024 pixels" in result.stderr
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize(("value", "why"), [("-1e-3", "be greater than 0"), ("-inf", "be a finite number"),
                                          ("-0.5", "be greater than 0")])
def test_a_negative_number_after_its_option_gets_the_settings_own_line(value: str, why: str, tmp_path: Path):
    """argparse reads -1e-3 and -inf (not -0.5) as options: "expected one argument" and a page of usage."""
    result = run_cli("run", "--learning-rate", value, "--workdir", str(tmp_path / "w"))
    assert result.returncode == 2 and result.stderr.strip() == (
        f"catsdogs: invalid setting learning_rate: Input should {why} (got '{value}')")
    assert not (tmp_path / "w").exists()


def test_a_sweeps_negative_numbers_after_their_option_get_the_settings_own_line(tmp_path: Path):
    result = run_cli("sweep", "--learning-rate", "-1e-3,2e-3", "--workdir", str(tmp_path / "w"))
    assert result.returncode == 2 and result.stderr.strip().endswith(
        "learning_rate=-0.001: invalid setting learning_rate: Input should be greater than 0 (got -0.001)")


def test_bfloat16_under_a_onednn_cap_without_it_is_a_usage_error_before_any_work(tmp_path: Path):
    result = run_cli("run", "--precision", "mixed_bfloat16", "--workdir", str(tmp_path / "w"),
                     ONEDNN_MAX_CPU_ISA="AVX2")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "invalid setting precision" in result.stderr and "ONEDNN_MAX_CPU_ISA=AVX2" in result.stderr
    assert "--precision auto or float32" in result.stderr and not (tmp_path / "w").exists()


def test_a_training_too_large_for_the_memory_is_a_usage_error_before_any_work(tmp_path: Path, monkeypatch):
    from catsdogs import runtime

    monkeypatch.setattr(runtime, "memory_limit_bytes", lambda: 16 * 2**30)  # whatever this machine has
    for command in ("run", "sweep"):
        result = run_cli(command, "--image-size", "1024", "--batch-size", "4096", "--workdir", str(tmp_path / "w"))
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "needs at least" in result.stderr and "allows 16.0 GiB" in result.stderr
        assert "--batch-size" in result.stderr
        assert not (tmp_path / "w").exists()
    several = run_cli("sweep", "--image-size", "512", "--batch-size", "64", "--seed", "0,1,2,3", "--dask-workers",
                      "4", "--workdir", str(tmp_path / "w"))  # each fits 16 GiB alone, not four at once
    assert several.returncode == 2 and "lower --dask-workers" in several.stderr, several.stderr
    assert not (tmp_path / "w").exists()


def test_a_prefect_without_its_private_server_start_still_runs_the_command(monkeypatch):
    """The command patches a private method of Prefect's temporary server (its own session, stopped with the
    command): a Prefect release without that method must still run the command, without those guards."""
    from prefect.server.api import server
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from deployments import cli

    monkeypatch.delattr(server.SubprocessASGIServer, "_run_uvicorn_command")
    with temporary_settings(restore_defaults={PREFECT_API_URL}):  # as without a server of one's own
        cli._temporary_server_in_its_own_session()
    assert not hasattr(server.SubprocessASGIServer, "_run_uvicorn_command")


def test_version_names_catsdogs_and_the_libraries_its_answers_depend_on():
    from importlib.metadata import version

    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    libraries = ", ".join(f"{name} {version(name)}" for name in ("tensorflow", "keras", "prefect"))
    assert result.stdout.strip() == f"catsdogs {version('catsdogs')} (Python {sys.version.split()[0]}; {libraries})"


def test_environment_setting_is_checked_too(tmp_path: Path):
    result = run_cli("run", CATSDOGS_VALIDATION_RANGE="500-1200")
    assert result.returncode == 2 and "overlaps" in result.stderr
    bad = run_cli("run", "--workdir", str(tmp_path / "w"), CATSDOGS_EPOCHS="abc")  # fixed in the shell, not a flag
    assert bad.returncode == 2 and bad.stderr.strip().endswith("(from CATSDOGS_EPOCHS in the environment)")
    assert "(from CATSDOGS" not in run_cli("run", "--epochs", "abc", CATSDOGS_EPOCHS="abc").stderr  # the flag's
    (tmp_path / "file").write_text("x")
    models = run_cli("models", "--workdir", str(tmp_path / "file"))
    assert models.returncode == 2 and "is a file, not a folder" in models.stderr
    typo = run_cli("run", "--workdir", str(tmp_path / "w"), CATSDOGS_EPOCH="5")  # was ignored: 30 epochs trained
    assert typo.returncode == 2 and typo.stderr.strip().splitlines() == [
        "catsdogs: unknown setting CATSDOGS_EPOCH in the environment: did you mean CATSDOGS_EPOCHS? unset it, or "
        "name a setting (catsdogs run --help lists them)"]
    assert not (tmp_path / "w").exists()


def test_run_json_with_python_m_deployments(prefect_server, sample_archive: Path, tmp_path: Path):
    result = cli("-m", "deployments", "run", "--json", "--data-url", sample_archive.as_uri(), "--data-sha256",
                 SAMPLE_SHA256, "--workdir", str(tmp_path / "w"), "--image-size", "78", "--epochs", "1",
                 "--batch-size", "8", "--train-range", "0-9", "--validation-range", "10-14",
                 "--test-range", "15-24", api_url=prefect_server)
    assert result.returncode == 0, result.stderr[-3000:]
    last = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(last) >= {"variant", "test_accuracy", "test_loss", "best_epoch", "model_path"}
    assert last["variant"] == "baseline" and Path(last["model_path"]).is_file()
    assert "epoch 1/1: loss" in result.stderr  # the library's epoch line reaches the Prefect logs
    # the first line comes before Prefect and TensorFlow start, and says where the runs are kept
    assert result.stderr.splitlines()[0] == (f"catsdogs: training baseline for 1 epoch in {tmp_path / 'w'}, unless a "
                                             "run of the same settings finished there, with the Prefect server at "
                                             "PREFECT_API_URL")
    for noise in ("I0000", "E0000", "absl::InitializeLog", "cuInit"):  # no C++ start-up chatter
        assert noise not in result.stderr


def test_unreachable_source_says_how_to_use_a_local_file(prefect_server, tmp_path: Path):
    result = cli("-m", "deployments.cli", "run", "--data-url", "http://127.0.0.1:9/train.zip", "--download-retries",
                 "0", "--workdir", str(tmp_path / "w"), api_url=prefect_server)
    assert result.returncode == 1
    assert "--data-url file:///" in result.stderr.splitlines()[-1]


def test_help_names_every_variant_shows_each_default_once_and_ranges_as_typed(capsys):
    from deployments.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--help"])
    flags = [" ".join(part.split()) for part in capsys.readouterr().out.split("\n  --")[1:]]
    variant = next(flag for flag in flags if flag.startswith("variant"))
    for name in ("baseline", "augmented", "xception", "fast", "efficientnet"):
        assert name in variant, name
    assert [flag for flag in flags if flag.count("(default") > 1] == []  # never said twice
    assert any("(default: 0-999)" in flag for flag in flags) and not any("(0, 999)" in flag for flag in flags)
    # a setting the variant fills is shown with the variants' defaults, never as "none"
    assert [flag.split()[0] for flag in flags if "(default: none)" in flag] == [
        "data-sha256", "data-url-secret"]
    assert any(flag.startswith("warmup-epochs") and "(default: 0; xception 3; fast and best 2)" in flag
               for flag in flags)


def test_settings_checked_together_are_named_in_their_message():
    from catsdogs.settings import SettingsError, load_settings

    with pytest.raises(SettingsError) as caught:
        load_settings({"train_range": "0-1200"})
    assert str(caught.value) == ("invalid settings: train_range 0-1200 overlaps validation_range 1000-1499: an image "
                                 "must not be in two subsets")


@pytest.mark.parametrize("outcome", ["answer", "failure"])
def test_the_temporary_server_stops_before_the_commands_last_line(monkeypatch, capsys, outcome):
    """Prefect stops its temporary server at exit, with a line of its own: that line came after the command's
    answer or reason. The command stops it as its runs end, once their logs are sent, and then says its line."""
    from prefect.server.api import server

    from catsdogs.download import DownloadError
    from deployments import cli

    class Started:  # what SubprocessASGIServer holds while its process runs
        server_process = object()

        def stop(self) -> None:
            print("Stopping temporary server", file=sys.stderr)
            self.server_process = None

    # a server that ran before the command (a caller's own, in this process) is not the command's to stop
    before = Started()
    monkeypatch.setattr(server.SubprocessASGIServer, "_instances", {None: before})
    monkeypatch.setattr(cli, "_temporary_server_in_its_own_session", lambda: None)

    def work() -> str:
        server.SubprocessASGIServer._instances[8765] = Started()  # the run starts the temporary server
        if outcome == "failure":
            raise DownloadError("could not reach the archive")
        return "the answer"

    shown = cli.run_and_show(work, False, lambda result: f"catsdogs: {result}")
    said = capsys.readouterr()
    lines = said.err.strip().splitlines() + said.out.strip().splitlines()  # stderr is shown as it comes
    last = "catsdogs: the answer" if outcome == "answer" else "catsdogs: could not reach the archive"
    assert lines == ["Stopping temporary server", last]
    assert (shown is None) == (outcome == "failure") and before.server_process is not None


def test_a_runs_quieting_of_prefects_restatements_ends_with_it(monkeypatch, capsys):
    """`catsdogs run` keeps Prefect's restatements of its failure off the terminal for its own run only: a later
    command in the same process (a sweep, a test's next command) sees Prefect's lines again."""
    import logging

    from prefect.logging.handlers import PrefectConsoleHandler

    from catsdogs.download import DownloadError
    from deployments import cli

    console = PrefectConsoleHandler()  # as Prefect's logging setup gives the terminal
    logging.getLogger("prefect.flow_runs").addHandler(console)
    monkeypatch.setattr(cli, "_temporary_server_in_its_own_session", lambda: None)
    seen = []

    def fails() -> None:
        seen.append([f for f in console.filters if isinstance(f, cli._NotRestated)])
        raise DownloadError("could not reach the archive")

    try:
        assert cli.run_and_show(fails, False, str, failure_said_once=True) is None
    finally:
        logging.getLogger("prefect.flow_runs").removeHandler(console)
    assert capsys.readouterr().err.strip() == "catsdogs: could not reach the archive"
    assert seen[0] and not [f for f in console.filters if isinstance(f, cli._NotRestated)]  # during the run only


@pytest.mark.e2e
def test_serve_without_a_server_to_keep_its_schedules_says_so_at_once(tmp_path: Path):
    """A temporary server has no scheduler: `catsdogs serve` on one said it was serving, and no schedule fired."""
    result = cli("-m", "deployments.cli", "serve", PREFECT_HOME=str(tmp_path / "prefect"))
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "catsdogs serve: needs a Prefect server that keeps running (a temporary one has no scheduler: the schedules "
        "would never fire); start one with `prefect server start` and set PREFECT_API_URL=http://127.0.0.1:4200/api "
        "(README, \"Scheduled deployments\")"]
    (tmp_path / "file").write_text("x")
    result = cli("-m", "deployments.cli", "serve", PREFECT_HOME=str(tmp_path / "prefect"),
                 PREFECT_API_URL="http://127.0.0.1:9/api", CATSDOGS_WORKDIR=str(tmp_path / "file"))
    assert result.returncode == 2 and "is a file, not a folder" in result.stderr


def test_an_on_off_setting_takes_a_bare_flag_a_value_or_its_no_form():
    """`--tta-flip` alone asked for a value and had no `--no-` form, where `--onednn=false` was refused."""
    from deployments.cli import build_parser

    parser = build_parser()
    for args, expected in [(["--tta-flip"], True), (["--tta-flip", "false"], "false"), (["--no-tta-flip"], False),
                           ([], None)]:
        assert parser.parse_args(["run", *args]).tta_flip == expected, args
    assert parser.parse_args(["run", "--onednn=false"]).onednn == "false"
    assert parser.parse_args(["run", "--no-onednn"]).onednn is False
    refused = run_cli("run", "--one-warp", "maybe")
    assert refused.returncode == 2 and refused.stderr.strip() == (
        "catsdogs: invalid setting one_warp: give true or false (or on/off, yes/no, 1/0), got 'maybe'")


@pytest.mark.parametrize("stop", ["SIGHUP", "SIGTERM", "SIGINT"])
def test_a_stop_handled_inside_a_finalizer_still_stops_the_command(stop: str, monkeypatch, capsys):
    """Python runs a signal's handler wherever the main thread is, and what the handler raises inside a weakref
    callback or a __del__ is printed with a traceback and dropped: CI saw a hung-up run go on downloading. The
    command must still stop, at once even while it waits in a system call, with its one line and no traceback."""
    import signal
    import time

    from deployments import cli

    class Finalized:
        def __del__(self) -> None:
            signal.raise_signal(signal.Signals[stop])  # its handler runs here, inside the finalizer

    def work(argv: object) -> int:
        Finalized()  # collected at once
        time.sleep(60)  # a wait in a system call, as a download's or a server's
        return 0

    monkeypatch.setattr(cli, "_main", work)
    started = time.monotonic()
    assert cli.main([]) == 130
    assert time.monotonic() - started < 30, "the stop waited for the sleep to end"
    err = capsys.readouterr().err
    assert "catsdogs: interrupted" in err and "Exception ignored" not in err and "Traceback" not in err, err
