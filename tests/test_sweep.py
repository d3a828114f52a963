"""Sweeps: the grid, the comparison, and the flow in this process and on a real Dask LocalCluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from catsdogs import sweep
from catsdogs.settings import Settings, SettingsError
from catsdogs.sweep import RunResult, SweepSummary
from tests.conftest import SAMPLE_SHA256, auto_label, free_port

ROOT = Path(__file__).resolve().parents[1]


def tiny_base(archive: Path, workdir: Path, **changes) -> Settings:
    values = dict(data_url=archive.as_uri(), data_sha256=SAMPLE_SHA256, workdir=workdir, image_size=78,
                  batch_size=8, epochs=1, train_range="0-9", validation_range="10-14", test_range="15-24")
    return Settings(**(values | changes))


# ---------------------------------------------------------------- the grid


def test_the_grid_expands_in_order_and_each_variant_brings_its_recipe(tmp_path):
    base = Settings(workdir=tmp_path / "w", epochs=5)
    configurations = sweep.expand_grid(base, {"variant": ["augmented", "xception"], "seed": [0, 1]})
    assert [(c.variant, c.seed) for c in configurations] == [("augmented", 0), ("augmented", 1),
                                                             ("xception", 0), ("xception", 1)]
    assert {c.epochs for c in configurations} == {5}  # a shared setting given by the user stays
    xception = configurations[2]
    assert (xception.optimizer, xception.image_size, xception.tta_flip) == ("adamw", 180, True)
    assert configurations[0].optimizer == "rmsprop" and configurations[0].image_size == 180
    assert all(c.workdir.is_absolute() for c in configurations)  # workers elsewhere find the same folder
    # what tells them apart is what the grid varies, not what each variant brings with it
    assert sweep.varied_settings({"variant": ["augmented", "xception"], "seed": [0, 1], "epochs": [5]}) == [
        "variant", "seed"]
    assert sweep.describe(xception, ["variant", "seed"]) == "variant=xception seed=0"
    assert sweep.describe(xception, ["seed", "variant"], with_seed=False) == "variant=xception"


def test_one_configuration_spelled_twice_trains_once(tmp_path):
    base = Settings(workdir=tmp_path)
    assert len(sweep.expand_grid(base, {"seed": [0, 0, 1]})) == 2
    # 2e-3 is the xception variant's own learning rate: the same configuration as leaving it unset
    assert len(sweep.expand_grid(base, {"variant": ["xception"], "learning_rate": [0.002, 2e-3]})) == 1
    assert [c.seed for c in sweep.expand_grid(base, None)] == [0, 1, 2]  # no grid: three seeds
    assert len(sweep.expand_grid(base, {})) == 1  # an empty grid: the settings themselves


@pytest.mark.parametrize("grid, message", [
    ({"sed": [0, 1]}, "unknown setting 'sed'; known settings are: variant,"),
    ({"workdir": ["/a", "/b"]}, "workdir is shared by every configuration"),
    ({"data_url": ["file:///a.zip", "file:///b.zip"]}, "data_url is shared"),
    ({"seed": []}, "seed has no values"),
    ({"seed": [0, -1]}, "sweep configuration seed=-1: invalid setting seed"),
    ({"variant": ["augmented", "resnet"]}, "sweep configuration variant=resnet: invalid setting variant"),
    ({"seed": list(range(30)), "learning_rate": [0.1, 0.01, 0.001, 0.0001, 1e-5, 1e-6, 1e-7]},
     "30 seed x 7 learning_rate make 210 configurations, more than 200"),
    (["seed", 0], "a sweep grid is a table of setting = [values], got list"),
])
def test_a_bad_grid_is_one_clear_error(tmp_path, grid, message):
    with pytest.raises(SettingsError) as raised:
        sweep.expand_grid(Settings(workdir=tmp_path), grid)
    assert message in str(raised.value)


def test_the_grid_file_holds_shared_settings_and_the_grid(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text('[catsdogs]\nepochs = 3\n\n[sweep]\nvariant = ["baseline", "augmented"]\nseed = [0, 1, 2]\n'
                    'batch_size = 16\n')
    assert sweep.read_grid_file(path) == ({"variant": ["baseline", "augmented"], "seed": [0, 1, 2],
                                           "batch_size": [16]}, True)
    path.write_text('epochs = 3\n[sweep]\nseed = [0, 1]\n')
    with pytest.raises(SettingsError, match=r"put the shared settings \(epochs\) under a \[catsdogs\] table"):
        sweep.read_grid_file(path)
    path.write_text('[sweep]\nseed = 0, 1\n')
    with pytest.raises(SettingsError, match="is not valid TOML"):
        sweep.read_grid_file(path)
    with pytest.raises(SettingsError, match="does not exist"):
        sweep.read_grid_file(tmp_path / "missing.toml")


def test_a_local_cluster_shares_the_cores_between_its_workers(tmp_path):
    configurations = [Settings(workdir=tmp_path), Settings(workdir=tmp_path, threads=3)]
    shared = sweep.share_cores(configurations, workers=2, cores=8)
    assert [c.threads for c in shared] == [4, 3]  # a value the user chose stays
    assert sweep.share_cores(configurations, workers=4, cores=2)[0].threads == 1


# ---------------------------------------------------------------- the comparison


def result(configuration: str, seed: int, accuracy: float | None, loss: float | None = 0.5, **extra) -> RunResult:
    status = "completed" if accuracy is not None else "failed"
    return RunResult(label=f"{configuration} seed={seed}", configuration=configuration, seed=seed, status=status,
                     test_accuracy=accuracy, test_loss=loss if accuracy is not None else None,
                     best_epoch=3 if accuracy is not None else None, train_seconds=120.0, wall_seconds=90.0, **extra)


def test_each_configuration_gets_the_mean_and_spread_over_its_seeds():
    runs = [result("variant=augmented", 0, 0.80, 0.45), result("variant=augmented", 1, 0.82, 0.47),
            result("variant=augmented", 2, 0.84, 0.43), result("variant=baseline", 0, 0.70),
            result("variant=baseline", 1, None, error="DownloadError: no network")]
    augmented, baseline = sweep.summarize(runs)
    assert augmented.runs == 3 and augmented.failed == 0 and augmented.seeds == [0, 1, 2]
    assert augmented.test_accuracy_mean == pytest.approx(0.82)
    assert augmented.test_accuracy_std == pytest.approx(0.02)  # sample standard deviation
    assert (augmented.test_accuracy_min, augmented.test_accuracy_max) == (0.80, 0.84)
    assert augmented.test_loss_mean == pytest.approx(0.45) and augmented.train_minutes_mean == pytest.approx(2.0)
    assert baseline.failed == 1 and baseline.test_accuracy_mean == 0.70 and baseline.test_accuracy_std is None
    assert baseline.errors == ["seed 1: DownloadError: no network"]

    table = sweep.comparison_table(SweepSummary(varied=["variant", "seed"], configurations=[augmented, baseline],
                                                runs=runs), run_url=lambda r: f"http://ui/{r.seed}")
    assert "| variant=augmented | 3 | **0.8200** ± 0.0200 | 0.8000–0.8400 |" in table
    assert "| variant=augmented | 0.4500 ± 0.0200 | 3, 3, 3 | 2.0 / 1.5 |" in table
    assert "| variant=baseline | 2, **1 failed** | **0.7000** ± – | 0.7000–0.7000 |" in table
    assert "| [variant=baseline seed=1](http://ui/1) | **failed** | – | – | – / – | 2.0 / 1.5 |" in table
    assert "- [variant=baseline seed=1](http://ui/1) failed: DownloadError: no network" in table

    from deployments.cli import comparison_lines

    lines = comparison_lines(SweepSummary(varied=["variant", "seed"], configurations=[augmented, baseline],
                                          runs=runs)).splitlines()
    assert lines[0] == ("variant=augmented: test accuracy 0.8200 ± 0.0200 over 3 run(s) (seeds 0, 1, 2; range "
                        "0.8000-0.8400), test loss 0.4500")
    assert lines[1].endswith(", 1 failed") and lines[1].startswith("variant=baseline: test accuracy 0.7000 over 1")


def test_a_failure_message_stays_on_its_line_below_the_tables():
    runs = [result("a", 0, None, error="bad | worse\nworst")]
    table = sweep.comparison_table(SweepSummary(varied=[], configurations=sweep.summarize(runs), runs=runs))
    row = next(line for line in table.splitlines() if line.startswith("| a seed=0"))
    assert row.count(" | ") == 5 and "bad" not in row  # the run's row stays narrow
    assert table.splitlines()[-1] == "- a seed=0 failed: bad \\| worse worst"


def test_the_validation_curves_are_overlaid_in_one_picture(tmp_path):
    from catsdogs.plots import plot_sweep_curves, sweep_line_styles

    history = [{"epoch": e, "val_accuracy": 0.5 + e / 10, "val_loss": 1 / e} for e in range(1, 4)]
    runs = [("a", 0, history), ("a", 1, history[:2]), ("b", 0, []), ("c", 0, history), ("c", 1, history)]
    path = plot_sweep_curves(runs, tmp_path / "curves.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 400
    styles = sweep_line_styles(runs)
    assert len(set(styles)) == len(styles)  # no two runs drawn alike: seeds of one configuration differ
    assert styles[0][0] == styles[1][0] != styles[3][0] and styles[0][1] == styles[3][1] != styles[1][1]


# ---------------------------------------------------------------- the command line


def test_sweep_flags_give_the_shared_settings_and_the_grid():
    from deployments.cli import build_parser, sweep_grid

    args = build_parser().parse_args(["sweep", "--variant", "baseline,augmented", "--seed", "0", "--seed", "1,2",
                                      "--epochs", "3", "--train-range", "0-9", "--train-range", "0-19",
                                      "--tta-flip", "--learning-rate", "0.001, 0.002", "--workdir", "/x,y"])
    shared, grid = sweep_grid(args)
    assert shared == {"epochs": 3, "tta_flip": True, "workdir": "/x,y"}
    assert sweep_grid(build_parser().parse_args(["sweep", "--seed", "1", "--variant", "xception"])) == (
        {"seed": 1, "variant": "xception"}, {})
    assert grid == {"variant": ["baseline", "augmented"], "train_range": ["0-9", "0-19"], "seed": [0, 1, 2],
                    "learning_rate": [0.001, 0.002]}


@pytest.mark.parametrize("flags, expected", [
    # 30 is the baseline's default epochs: given, it must stay 30 for augmented (whose default is 100) too
    (["--variant", "baseline,augmented", "--epochs", "30"], [{"variant": "baseline", "epochs": 30},
                                                          {"variant": "augmented", "epochs": 30}]),
    (["--variant", "augmented,xception", "--epochs", "100", "--optimizer", "rmsprop"],
     [{"variant": "augmented", "epochs": 100, "optimizer": "rmsprop"},
      {"variant": "xception", "epochs": 100, "optimizer": "rmsprop", "learning_rate": 2e-3}]),
    # not given: each variant brings its own
    (["--variant", "baseline,xception"], [{"variant": "baseline", "epochs": 30, "image_size": 180},
                                          {"variant": "xception", "epochs": 100, "mixup": 0.2}]),
    # the default train range (0-999) would overlap the given test range, but the grid replaces it everywhere
    (["--test-range", "0-499", "--train-range", "1000-1999", "--train-range", "2000-2999",
      "--validation-range", "3000-3499"],
     [{"train_range": (1000, 1999), "test_range": (0, 499)}, {"train_range": (2000, 2999), "test_range": (0, 499)}]),
])
def test_each_sweep_configuration_runs_what_the_flags_say(tmp_path, monkeypatch, flags, expected):
    from deployments.cli import build_parser, sweep_plan

    monkeypatch.chdir(tmp_path)
    grid, settings, given = sweep_plan(build_parser().parse_args(["sweep", "--seed", "0", *flags]))
    configurations = sweep.expand_grid(settings, grid, given)
    assert [{name: getattr(c, name) for name in want} for c, want in zip(configurations, expected, strict=True)] \
        == expected
    # the flow gets its settings back as JSON (flow parameters): with GIVEN, it expands them the same way
    rebuilt = Settings.model_validate_json(settings.model_dump_json())
    assert rebuilt.given is None
    assert sweep.expand_grid(rebuilt, grid, given) == configurations


def test_a_given_value_survives_a_changed_variant_from_every_source(tmp_path, monkeypatch):
    from catsdogs.settings import load_settings

    config = tmp_path / "c.toml"
    config.write_text("[catsdogs]\nlabel_smoothing = 0.0\n")
    monkeypatch.setenv("CATSDOGS_IMAGE_SIZE", "180")
    base = load_settings({"epochs": 30}, config)
    assert base.given == {"epochs", "label_smoothing", "image_size"}
    xception = base.with_overrides({"variant": "xception"})
    assert (xception.epochs, xception.label_smoothing, xception.image_size, xception.optimizer) == (30, 0.0, 180,
                                                                                                   "adamw")
    # rebuilt from its values (a deployment's parameters), nothing is known to be given: the variant's recipe
    rebuilt = Settings.model_validate(base.model_dump())
    assert rebuilt.with_overrides({"variant": "xception"}).epochs == 100


@pytest.mark.parametrize("flags, message", [
    (["--seed", "0,x"], "sweep configuration seed=x: invalid setting seed"),
    (["--workdir", "a", "--workdir", "b"], "workdir is shared by every configuration"),
    (["--image-size", "64,96"], "sweep configuration image_size=64: invalid setting image_size"),
    (["--dask-workers", "0"], "must be between 1 and 4096"),
    (["--dask-workers", "2", "--dask-address", "tcp://h:8786"], "not both"),
    (["--dask-address", "http://h/x"], "is not a Dask scheduler address; give one such as tcp://scheduler:8786"),
    (["--seed", ","], "invalid setting seed: --seed was given no value"),  # not the default three seeds
    (["--seed", "", "--variant", "baseline"], "invalid setting seed: --seed was given no value"),
])
def test_a_bad_sweep_is_a_usage_error_before_any_work(tmp_path, capsys, flags, message):
    from deployments.cli import main

    try:
        code = main(["sweep", "--workdir", str(tmp_path / "w"), *flags])
    except SystemExit as exit:  # argparse's own usage errors
        code = exit.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


# ---------------------------------------------------------------- the flow


def test_a_failing_configuration_loses_none_of_the_others_and_a_rerun_reuses_the_finished(
        prefect_server, sample_archive, tmp_path):
    from prefect import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
    )

    from flows.sweep import sweep_flow

    # efficientnet's weights file is missing: both its configurations fail, at their first step
    base = tiny_base(sample_archive, tmp_path / "work", backbone_weights=str(tmp_path / "missing.weights.h5"))
    grid = {"variant": ["baseline", "efficientnet"], "seed": [0, 1]}
    # the first sweep on a local Dask cluster of two worker processes that the flow starts; the rerun here
    state = sweep_flow(grid=grid, settings=base, dask_workers=2, return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    assert [(r.label, r.status) for r in summary.runs] == [
        ("variant=baseline seed=0", "completed"), ("variant=baseline seed=1", "completed"),
        ("variant=efficientnet seed=0", "failed"), ("variant=efficientnet seed=1", "failed")]
    for failed in summary.runs[2:]:  # the reason, once, naming the training run that failed
        name = f"efficientnet-11ep-78px-seed{failed.seed}{auto_label()}-{EFFICIENTNET_CHANGES}"
        assert failed.error.startswith(f"run {name}: SettingsError: ")
        assert "missing.weights.h5" in failed.error
    baseline, efficientnet = summary.configurations
    assert baseline.runs == 2 and baseline.test_accuracy_mean is not None and efficientnet.failed == 2
    first = {r.label: r for r in summary.runs}
    assert [r.reused for r in summary.runs] == [False] * 4
    assert [r.trained_by for r in summary.runs[:2]] == [f"baseline-1ep-78px-seed{seed}-batch-size=8" for seed in (0, 1)]
    assert summary.curves_path.is_file()

    sweep_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[sweep_id])))
        sweep_run = client.read_flow_run(sweep_id)
        # filtered on the server: an unfiltered read returns only the first page of a busy server's artifacts
        artifacts = {a.key: a for a in client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[sweep_id]), key=ArtifactFilterKey(any_=["sweep-comparison"])))}
    # each configuration is a training-flow run of its own, under the sweep
    # named after what they train, with the settings that differ from their variant's defaults
    names = [*(f"baseline-1ep-78px-seed{seed}-batch-size=8" for seed in (0, 1)),
             *(f"efficientnet-11ep-78px-seed{seed}{auto_label()}-{EFFICIENTNET_CHANGES}" for seed in (0, 1))]
    assert sorted(c.name for c in children) == names
    assert sorted(task_run_names(sweep_id, "train-")) == [f"train-{name}" for name in names]
    assert sweep_run.name == "sweep-variant-seed-4runs"
    assert {"catsdogs", "sweep", "variant:baseline", "variant:efficientnet", "seed:0", "seed:1"} <= set(sweep_run.tags)
    comparison = artifacts["sweep-comparison"]
    assert "2 failed" in comparison.description and "missing.weights.h5" in comparison.data
    assert "data:image/png;base64," in comparison.data

    again = sweep_flow(grid=grid, settings=base)
    for run in again.runs:
        if run.status == "completed":  # trained by the first sweep's run, reused here
            assert run.reused and run.flow_run_id != first[run.label].flow_run_id
            assert run.trained_by == first[run.label].flow_run_name
            assert run.test_accuracy == first[run.label].test_accuracy
    assert again.failed == 2


def test_a_sweep_on_a_dask_cluster_survives_a_killed_worker(prefect_server, sample_archive, tmp_path):
    """A real LocalCluster's worker process is killed mid-training: its configuration resumes on the worker Dask
    starts in its place, and the configuration that waited behind it runs there too. One worker process (the
    failing-configuration test runs two side by side): each is a Python with TensorFlow to start, twice here."""
    from distributed import Client, LocalCluster

    started = time.monotonic()
    workdir = tmp_path / "work"
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        args = [sys.executable, "-m", "deployments.cli", "sweep", "--json", "--dask-address", cluster.scheduler_address,
                "--data-url", sample_archive.as_uri(), "--data-sha256", SAMPLE_SHA256, "--workdir", str(workdir),
                "--image-size", "78", "--batch-size", "8", "--epochs", "4", "--train-range", "0-39",
                "--validation-range", "80-99", "--test-range", "100-119", "--threads", "1", "--seed", "0,1"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("CATSDOGS_")} | {
            "PREFECT_API_URL": prefect_server}
        process = subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        run_dir = kill_a_worker_mid_training(client, workdir, process)
        out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-4000:]
    summary = json.loads(out.splitlines()[-1])
    assert [r["status"] for r in summary["runs"]] == ["completed", "completed"]
    assert [c["runs"] for c in summary["configurations"]] == [2]
    for run in summary["runs"]:
        history = json.loads(Path(run["history_path"]).read_text())
        assert [row["epoch"] for row in history] == [1, 2, 3, 4]  # every epoch once: resumed, not restarted
    # the killed configuration ran again in a new training run, which took up from its last backup
    seed = json.loads((run_dir / "settings.json").read_text())["seed"]
    crashed, retried = training_runs_named(f"baseline-4ep-78px-seed{seed}-batch-size=8")
    # marked by the run that took its training up, as it started (the sweep would have, at its end)
    assert crashed.state.type.value == "CRASHED" and "took the training up" in crashed.state.message
    assert retried.state.type.value == "COMPLETED"
    lines = epoch_lines(retried.id)
    assert "epoch 4/4" in lines[-1] and not any("epoch 1/4" in line for line in lines), lines
    print(f"LocalCluster sweep with a killed worker: {time.monotonic() - started:.1f} s")


def kill_a_worker_mid_training(client, workdir: Path, process: subprocess.Popen) -> Path:
    """SIGKILL the Dask worker processes once a training has finished two epochs (so its backup holds at
    least one) and not its last; returns that training's folder."""
    pids = list(client.run(os.getpid).values())
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and process.poll() is None:
        for history in (workdir / "runs").glob("*/history.json"):
            try:
                epochs = len(json.loads(history.read_text()))
            except ValueError:
                continue
            if 2 <= epochs < 4:
                for pid in pids:
                    os.kill(pid, signal.SIGKILL)  # a real kill: no handler, no cleanup
                return history.parent
        time.sleep(0.02)
    raise AssertionError("no training was caught between its first and last epoch")


EFFICIENTNET_CHANGES = "batch-size=8-backbone-weights=missing.weights.h5"


def task_run_names(flow_run_id: str, prefix: str) -> list[str]:
    """The names of the flow run's task runs that start with PREFIX."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return [run.name for run in runs if run.name.startswith(prefix)]


def training_runs_named(name: str) -> list:
    """The training-flow runs of that name, oldest first."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name])),
                                     sort=FlowRunSort.START_TIME_ASC)


def epoch_lines(flow_run_id) -> list[str]:
    """The epoch lines in a flow run's logs, in order."""
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort

    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
                                sort=LogSort.TIMESTAMP_ASC)
    return [log.message for log in logs if log.message.startswith("epoch ")]


def test_an_unreachable_dask_scheduler_is_one_line(prefect_server, sample_archive, tmp_path):
    port = free_port()  # nothing listens there
    env = {k: v for k, v in os.environ.items() if not k.startswith("CATSDOGS_")} | {
        "PREFECT_API_URL": prefect_server, "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"}
    result = subprocess.run([sys.executable, "-m", "deployments.cli", "sweep", "--dask-address", f"tcp://127.0.0.1:{port}",
                             "--data-url", sample_archive.as_uri(), "--workdir", str(tmp_path / "w")],
                            env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"catsdogs: cannot reach the Dask scheduler at tcp://127.0.0.1:{port}: ")
    assert "Traceback" not in result.stderr and not (tmp_path / "w" / "runs").exists()


def test_waiting_for_a_configuration_runs_a_signal_handler_that_another_thread_received():
    """The kernel may hand a signal to any thread that does not block it; its Python handler (which asks the
    trainings to stop) must still run while the sweep waits, not only once the training has ended. The main
    thread blocks SIGUSR1 here, so the kernel must hand it to the training's thread."""
    import concurrent.futures
    import threading
    import uuid

    from prefect.futures import PrefectConcurrentFuture

    from tasks.sweep import wait_awake

    handled = threading.Event()
    ended_first = concurrent.futures.Future()

    def training() -> None:
        """Signal this process once the main thread sleeps in its wait; run until the handler has run, or 10 s."""
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGUSR1)
        ended_first.set_result(not handled.wait(10))

    previous = signal.signal(signal.SIGUSR1, lambda *_: handled.set())
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
        worker = threading.Thread(target=lambda: (signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1}),
                                                  training()))
        worker.start()
        wait_awake(PrefectConcurrentFuture(uuid.uuid4(), ended_first))
        worker.join()
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
        signal.signal(signal.SIGUSR1, previous)
    assert ended_first.result() is False, "the handler ran only after the training had ended"


def test_a_local_cluster_has_at_most_one_worker_a_configuration(tmp_path):
    """--dask-workers 4096 on two cores started hundreds of processes, and hung: the rest would only idle."""
    from deployments.cli import build_parser, sweep_plan

    args = build_parser().parse_args(["sweep", "--dask-workers", "4096", "--workdir", str(tmp_path / "w"),
                                      "--seed", "0,1,2"])
    sweep_plan(args)
    assert args.dask_workers == 3
