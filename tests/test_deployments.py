"""Scheduled deployments against a real `prefect server start`, both ways: serve, and a process work pool."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from catsdogs.settings import CHOICE_FIELDS
from deployments.schedules import PREDICTION, PROMOTION, SWEEP, TIMEZONE, TRAINING
from tests.conftest import SAMPLE_SHA256, free_port, wait_until_serving

pytestmark = pytest.mark.e2e  # real processes and servers, each test

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


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[PrefectServer]:
    """One server for both routes: the work pool's `prefect deploy` takes over the names serve registered."""
    started = PrefectServer(tmp_path_factory.mktemp("prefect-server"))
    yield started
    started.stop()


def serving_env(server: PrefectServer, archive: Path, workdir: str) -> dict[str, str]:
    """The serving side's settings, as a person gives them to `catsdogs serve` or a worker: the data, where
    runs train, and the tiny subsets."""
    return server.env | {"CATSDOGS_DATA_URL": archive.as_uri(), "CATSDOGS_DATA_SHA256": SAMPLE_SHA256,
                         "CATSDOGS_WORKDIR": workdir, "CATSDOGS_TRAIN_RANGE": "0-9",
                         "CATSDOGS_VALIDATION_RANGE": "10-14", "CATSDOGS_TEST_RANGE": "15-24",
                         # serve looks for triggered runs every 10 s by default: each run here would wait for it
                         "PREFECT_RUNNER_POLL_FREQUENCY": "1"}


# what a person sets in the Run form for a quick run
TINY_CHOICES = {"epochs": 1, "image_size": 78, "batch_size": 8}


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
        time.sleep(0.5)
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
        time.sleep(0.5)
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
    check_run_forms(found)


def check_run_forms(found: dict[str, dict]) -> None:
    """Each Run form offers what a person changes, and nothing that says where runs train or what data they
    read: those are the serving side's."""
    for name, deployment in found.items():
        schema = deployment["parameter_openapi_schema"]
        assert not {"workdir", "data_url", "settings", "overrides"} & set(json.dumps(schema).split('"')), name
    for spec in TRAINING:
        schema = found[spec["name"]]["parameter_openapi_schema"]
        assert set(schema["properties"]) == {"choices"}
        assert list(schema["definitions"]["RunChoices"]["properties"]) == list(CHOICE_FIELDS)
    form = found[SWEEP["name"]]["parameter_openapi_schema"]["properties"]
    assert set(form) == {"grid", "choices", "dask_address", "dask_workers"}  # grid: setting -> list of values


def check_forms_refuse_locations(server: PrefectServer, deployment_id: str) -> None:
    """A submitted form can never point a run at another folder or other data: the server refuses it."""
    for where in ({"workdir": "/tmp/elsewhere"}, {"data_url": "file:///tmp/other.zip"}):
        with pytest.raises(requests.HTTPError) as refused:
            run_deployment(server, deployment_id, {"choices": TINY_CHOICES | where})
        assert refused.value.response.status_code in (409, 422), refused.value.response.text


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


def clone_workdirs() -> dict[str, set[Path] | None]:
    """What the workdirs a run in the clone would use hold, two levels down (a step's folders); None: absent."""
    return {name: set((ROOT / name).glob("*/*")) if (ROOT / name).exists() else None
            for name in ("work", "catsdogs-work")}


def test_serve_registers_schedules_and_runs_a_triggered_deployment(server, sample_archive, tmp_path):
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115
    elsewhere = tmp_path / "elsewhere"  # `catsdogs serve` started outside the repository, its workdir relative
    elsewhere.mkdir()
    in_the_clone = clone_workdirs()  # a developer's own `catsdogs run` in the clone made catsdogs-work: it stays
    serve = subprocess.Popen([sys.executable, "-m", "deployments.cli", "serve"], cwd=elsewhere,
                             env=serving_env(server, sample_archive, "work"), stdout=log, stderr=subprocess.STDOUT)
    try:
        found = wait_for_deployments(server, ALL_NAMES, serve)
        check_schedules(found)
        check_forms_refuse_locations(server, found["nightly-baseline"]["id"])
        started = time.monotonic()
        # the form's choices for a quick run; variant baseline from the serving side's defaults
        flow_run_id = run_deployment(server, found["nightly-baseline"]["id"], {"choices": TINY_CHOICES})
        run = wait_for_run(server, flow_run_id)
        assert run["state"]["type"] == "COMPLETED", (tmp_path / "serve.log").read_text()[-3000:]
        print(f"served deployment run finished in {time.monotonic() - started:.1f} s")
        assert run["name"] == "baseline-1ep-78px-seed0-batch-size=8"  # named from its resolved settings
        workdir = (elsewhere / "work").resolve()  # where serve was started, though serve works in the clone
        assert {"catsdogs", "variant:baseline", "precision:float32", "seed:0", f"workdir:{workdir}"} <= set(run["tags"])
        assert (workdir / "runs").is_dir() and clone_workdirs() == in_the_clone  # nothing made in the clone
        artifacts = check_training_artifacts(server, flow_run_id, augmented=False)
        check_training_logs(server, flow_run_id)
        assert "epoch 1/1: loss" in (tmp_path / "serve.log").read_text()  # and in the serve terminal
        comparison = check_sweep_deployment(server, found[SWEEP["name"]]["id"])
        from tests.browser import check_artifact_page, check_tables_fit, chromium_available

        if chromium_available() or os.environ.get("CATSDOGS_REQUIRE_BROWSER") == "1":
            tables = ("run-report", "test-metrics", "leaderboard", "model-summary", "training-history",
                      "dataset-summary")
            check_tables_fit(server.ui, {key: artifacts[key]["id"] for key in tables} |
                             {"sweep-comparison": comparison["id"]})
            shot = check_artifact_page(server.ui, artifacts["run-report"]["id"], flow_run_id, tmp_path)
            print(f"screenshots: {shot} and {shot.with_name('flow-run-artifacts.png')}")
        else:
            pytest.skip("deployment checks passed; the UI check needs Debian's chromium (.ci/run installs it)")
    finally:
        serve.terminate()
        serve.wait(30)
        log.close()


def check_sweep_deployment(server: PrefectServer, deployment_id: str) -> dict:
    """The seed-study deployment, its grid and choices given in the run's parameters as the Run form would."""
    grid = {"seed": [0, 1]}
    choices = TINY_CHOICES | {"variant": "baseline"}
    flow_run_id = run_deployment(server, deployment_id, {"grid": grid, "choices": choices})
    run = wait_for_run(server, flow_run_id)
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert run["name"] == "sweep-seed-2runs"
    comparison = run_artifacts(server, flow_run_id)["sweep-comparison"]
    assert "2 runs, 0 failed" in comparison["description"] and "seed=1" in comparison["data"]
    assert "data:image/png;base64," in comparison["data"]  # the validation curves, overlaid
    children = [r for r in server.api("POST", "/flow_runs/filter") if r["name"].startswith("baseline-1ep-78px-seed")]
    assert {r["name"] for r in children} >= {f"baseline-1ep-78px-seed{seed}-batch-size=8" for seed in (0, 1)}
    return comparison


def test_work_pool_deploy_and_worker(server, sample_archive, tmp_path):
    created = server.prefect("work-pool", "create", "catsdogs", "--type", "process")
    assert created.returncode == 0, created.stdout + created.stderr
    deployed = server.prefect("--no-prompt", "deploy", "--all")
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    found = wait_for_deployments(server, ALL_NAMES)
    check_schedules(found)
    assert found["nightly-baseline"]["work_pool_name"] == "catsdogs"
    flow_run_id = run_deployment(server, found["weekly-augmented"]["id"],
                                 {"choices": TINY_CHOICES | {"variant": "augmented", "promote": "never"}})
    worker = subprocess.run([str(BIN / "prefect"), "worker", "start", "--pool", "catsdogs", "--run-once"],
                            env=serving_env(server, sample_archive, str(tmp_path / "work")), cwd=ROOT,
                            capture_output=True, text=True, timeout=480)
    run = wait_for_run(server, flow_run_id, timeout=60)
    assert run["state"]["type"] == "COMPLETED", worker.stdout[-3000:] + worker.stderr[-3000:]
    check_training_artifacts(server, flow_run_id)
    check_training_logs(server, flow_run_id)
    assert "epoch 1/1: loss" in worker.stdout + worker.stderr  # and in the worker's terminal
