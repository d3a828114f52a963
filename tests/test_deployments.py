"""Scheduled deployments against a real `prefect server start`, both ways: serve, and a process work pool."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from deployments.schedules import PREDICTION, PROMOTION, SWEEP, TIMEZONE, TRAINING
from tests.conftest import SAMPLE_SHA256, free_port, wait_until_serving

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
ALL_NAMES = {s["name"] for s in TRAINING} | {PREDICTION["name"], PROMOTION["name"], SWEEP["name"]}



class PrefectServer:
    """A real `prefect server start` on 127.0.0.1 with its own PREFECT_HOME and SQLite file."""

    def __init__(self, home: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        self.ui = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CATSDOGS_"))} | {
            "PREFECT_HOME": str(home),
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/prefect.db",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_API_URL": self.url,
            "PREFECT_UI_URL": self.ui,
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }
        self.log = open(home / "server.log", "w")  # noqa: SIM115
        self.process = subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env, stdout=self.log, stderr=subprocess.STDOUT, cwd=home)
        wait_until_serving(f"{self.url}/health", self.process, 180, home / "server.log")

    def api(self, method: str, path: str, **body) -> object:
        for _ in range(10):  # SQLite answers 503 while another writer holds it on a busy machine
            response = requests.request(method, f"{self.url}{path}", json=body or None, timeout=30)
            if response.status_code != 503:
                break
            time.sleep(2)
        response.raise_for_status()
        return response.json() if response.content else None

    def prefect(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "prefect"), *args], env=self.env, cwd=ROOT, capture_output=True,
                              text=True, timeout=300)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PrefectServer]:
    started = PrefectServer(tmp_path)
    yield started
    started.stop()


def tiny_settings(archive: Path, workdir: Path) -> dict:
    return {"variant": "augmented", "data_url": archive.as_uri(), "data_sha256": SAMPLE_SHA256,
            "workdir": str(workdir), "image_size": 78, "batch_size": 8, "epochs": 1, "train_range": [0, 9],
            "validation_range": [10, 14], "test_range": [15, 24]}


def deployments_by_name(server: PrefectServer) -> dict[str, dict]:
    return {d["name"]: d for d in server.api("POST", "/deployments/filter")}


def wait_for_deployments(server: PrefectServer, names: set[str], process: subprocess.Popen | None = None) -> dict:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        found = deployments_by_name(server)
        if names <= set(found):
            return found
        if process is not None and process.poll() is not None:
            raise RuntimeError("the serve process exited before registering the deployments")
        time.sleep(2)
    raise AssertionError(f"deployments {names} not registered; found {set(deployments_by_name(server))}")


def run_deployment(server: PrefectServer, deployment_id: str, parameters: dict) -> str:
    run = server.api("POST", f"/deployments/{deployment_id}/create_flow_run", parameters=parameters)
    return run["id"]


def wait_for_run(server: PrefectServer, flow_run_id: str, timeout: float = 420) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = server.api("GET", f"/flow_runs/{flow_run_id}")
        if run["state"]["type"] in TERMINAL:
            return run
        time.sleep(2)
    raise AssertionError(f"flow run {flow_run_id} did not finish in {timeout} s")


def run_artifacts(server: PrefectServer, flow_run_id: str) -> dict[str, dict]:
    found = server.api("POST", "/artifacts/filter", artifacts={"flow_run_id": {"any_": [flow_run_id]}})
    return {a["key"]: a for a in found}


def check_schedules(found: dict[str, dict]) -> None:
    for spec in TRAINING:
        deployment = found[spec["name"]]
        assert deployment["parameters"] == spec["parameters"]
        [schedule] = deployment["schedules"]
        assert schedule["schedule"]["cron"] == spec["cron"] and schedule["schedule"]["timezone"] == TIMEZONE
        assert schedule["active"]
    for spec in (PREDICTION, PROMOTION, SWEEP):  # on demand: no schedule
        assert found[spec["name"]]["parameters"] == spec["parameters"] and not found[spec["name"]]["schedules"]
    # the sweep's Run form edits its grid: a table of setting -> list of values
    form = found[SWEEP["name"]]["parameter_openapi_schema"]["properties"]
    assert {"grid", "settings", "dask_address", "dask_workers"} <= set(form)


def check_training_artifacts(server: PrefectServer, flow_run_id: str, augmented: bool = True) -> dict[str, dict]:
    found = run_artifacts(server, flow_run_id)
    assert set(found) >= {"run-report", "test-metrics", "training-curves", "confusion-matrix", "most-wrong",
                          "model-summary", "dataset-summary", "training-history", "training-progress",
                          "leaderboard", "accuracy-history"}
    assert ("augmentation-grid" in found) == augmented
    report = found["run-report"]["data"]
    assert "test accuracy" in report and "data:image/png;base64," in report
    # links lead to this run's own artifacts, and only to those that exist
    for key in ("confusion-matrix", "test-metrics", "leaderboard"):
        assert f"{server.ui}/artifacts/artifact/{found[key]['id']}" in report
    assert "/artifacts/key/" not in report and ("augmentation-grid" in report) == augmented
    return found


# the library's own lines, as a person reads them in the run's log
LIBRARY_LINES = ("subsets ready in", "epoch 1/1: loss", "test accuracy", "registered model")


def check_training_logs(server: PrefectServer, flow_run_id: str) -> list[str]:
    """The run's log in the API holds the library's lines, however the flow was started."""
    deadline = time.monotonic() + 30  # logs are sent in batches, after the run's state
    while True:
        logs = server.api("POST", "/logs/filter", logs={"flow_run_id": {"any_": [flow_run_id]}}, limit=200)
        messages = [entry["message"] for entry in logs]
        missing = [line for line in LIBRARY_LINES if not any(line in message for message in messages)]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert not missing, f"missing from the run's log: {missing}; it holds: {messages[:40]}"
    return messages


def test_prefect_yaml_matches_the_schedules():
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    by_name = {d["name"]: d for d in config["deployments"]}
    for spec in TRAINING:
        entry = by_name[spec["name"]]
        assert entry["parameters"] == spec["parameters"] and entry["description"] == spec["description"]
        assert entry["schedules"] == [{"cron": spec["cron"], "timezone": TIMEZONE}]
    for spec in (PREDICTION, PROMOTION, SWEEP):
        assert by_name[spec["name"]]["parameters"] == spec["parameters"]
        assert by_name[spec["name"]]["description"] == spec["description"]


def test_serve_registers_schedules_and_runs_a_triggered_deployment(server, sample_archive, tmp_path):
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115
    elsewhere = tmp_path / "elsewhere"  # `catsdogs serve` started outside the repository
    elsewhere.mkdir()
    serve = subprocess.Popen([sys.executable, "-m", "flows.cli", "serve"], env=server.env, cwd=elsewhere,
                             stdout=log, stderr=subprocess.STDOUT)
    try:
        found = wait_for_deployments(server, ALL_NAMES, serve)
        check_schedules(found)
        started = time.monotonic()
        # a partial override merges onto the deployment's settings (variant baseline stays; 1 epoch, tiny data)
        overrides = {k: v for k, v in tiny_settings(sample_archive, tmp_path / "work").items() if k != "variant"}
        flow_run_id = run_deployment(server, found["nightly-baseline"]["id"], {"overrides": overrides})
        run = wait_for_run(server, flow_run_id)
        assert run["state"]["type"] == "COMPLETED", (tmp_path / "serve.log").read_text()[-3000:]
        print(f"served deployment run finished in {time.monotonic() - started:.1f} s")
        assert run["name"] == "baseline-1ep-78px-seed0-batch-size=8"  # named from its merged settings
        assert {"catsdogs", "variant:baseline", "precision:float32", "seed:0",
                f"workdir:{(tmp_path / 'work').resolve()}"} <= set(run["tags"])
        artifacts = check_training_artifacts(server, flow_run_id, augmented=False)
        check_training_logs(server, flow_run_id)
        assert "epoch 1/1: loss" in (tmp_path / "serve.log").read_text()  # and in the serve terminal
        check_sweep_deployment(server, found[SWEEP["name"]]["id"], tiny_settings(sample_archive, tmp_path / "work"))
        from tests.browser import check_artifact_page, chromium_available

        if chromium_available() or os.environ.get("CATSDOGS_REQUIRE_BROWSER") == "1":
            shot = check_artifact_page(server.ui, artifacts["run-report"]["id"], flow_run_id, tmp_path)
            print(f"screenshots: {shot} and {shot.with_name('flow-run-artifacts.png')}")
        else:
            pytest.skip("deployment checks passed; the UI check needs Debian's chromium (.ci/run installs it)")
    finally:
        serve.terminate()
        serve.wait(30)
        log.close()


def check_sweep_deployment(server: PrefectServer, deployment_id: str, settings: dict) -> None:
    """The seed-study deployment, its grid given in the run's parameters as the Run form would."""
    grid = {"seed": [0, 1]}
    flow_run_id = run_deployment(server, deployment_id, {"grid": grid, "settings": settings | {"variant": "baseline"}})
    run = wait_for_run(server, flow_run_id)
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert run["name"] == "sweep-seed-2runs"
    comparison = run_artifacts(server, flow_run_id)["sweep-comparison"]
    assert "2 runs, 0 failed" in comparison["description"] and "seed=1" in comparison["data"]
    assert "data:image/png;base64," in comparison["data"]  # the validation curves, overlaid
    children = [r for r in server.api("POST", "/flow_runs/filter") if r["name"].startswith("baseline-1ep-78px-seed")]
    assert {r["name"] for r in children} >= {f"baseline-1ep-78px-seed{seed}-batch-size=8" for seed in (0, 1)}


def test_work_pool_deploy_and_worker(server, sample_archive, tmp_path):
    created = server.prefect("work-pool", "create", "catsdogs", "--type", "process")
    assert created.returncode == 0, created.stdout + created.stderr
    deployed = server.prefect("--no-prompt", "deploy", "--all")
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    found = wait_for_deployments(server, ALL_NAMES)
    check_schedules(found)
    assert found["nightly-baseline"]["work_pool_name"] == "catsdogs"
    flow_run_id = run_deployment(server, found["nightly-baseline"]["id"],
                                 {"settings": tiny_settings(sample_archive, tmp_path / "work")})
    worker = subprocess.run([str(BIN / "prefect"), "worker", "start", "--pool", "catsdogs", "--run-once"],
                            env=server.env, cwd=ROOT, capture_output=True, text=True, timeout=480)
    run = wait_for_run(server, flow_run_id, timeout=60)
    assert run["state"]["type"] == "COMPLETED", worker.stdout[-3000:] + worker.stderr[-3000:]
    check_training_artifacts(server, flow_run_id)
    check_training_logs(server, flow_run_id)
    assert "epoch 1/1: loss" in worker.stdout + worker.stderr  # and in the worker's terminal
