"""End to end: a generated archive served from 127.0.0.1, the flow under a real Prefect server."""

from __future__ import annotations

import base64
import json
import re
import shutil
import threading
import time
from pathlib import Path
from uuid import UUID

import pytest
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter, FlowRunFilterId

from catsdogs.settings import Settings
from flows.train import train_flow
from tests.conftest import SAMPLE_SHA256, SAMPLE_ZIP

EXPENSIVE = ["download", "unzip", "subsets", "datasets", "train", "evaluate", "register"]


def tiny(url: str, workdir: Path, **changes) -> Settings:
    values = dict(data_url=url, data_sha256=SAMPLE_SHA256, workdir=workdir, image_size=78, batch_size=8,
                  epochs=1, train_range="0-9", validation_range="10-14", test_range="15-24",
                  download_backoff_s=0.1)
    return Settings(**(values | changes))


def run(settings: Settings) -> tuple[UUID, object]:
    state = train_flow(settings, return_state=True)
    assert state.is_completed(), state.message
    return state.state_details.flow_run_id, state.result()


def task_states(flow_run_id: UUID) -> dict[str, str]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {re.sub(r"-[0-9a-f]+$", "", r.name): r.state.name for r in runs}


def artifacts(flow_run_id: UUID) -> dict[str, object]:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {a.key: a for a in found}


FULL_SET = {"dataset-summary", "model-summary", "training-history", "training-curves", "augmentation-grid",
            "test-metrics", "training-progress", "confusion-matrix", "most-wrong", "run-report", "leaderboard",
            "accuracy-history"}


def flow_run_name(flow_run_id: UUID) -> str:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id).name


def flow_run_tags(flow_run_id: UUID) -> list[str]:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id).tags


STEP_RESULTS = (b"Archive", b"Subsets", b"DatasetArrays", b"TrainedModel", b"Metrics", b"ModelCard")


def pickled_results_since(started: float) -> list[str]:
    """The files Prefect wrote to its result storage since STARTED that hold a pickled step result (other
    tests' failures are kept there too, as pickled exceptions)."""
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH

    found = []
    for path in Path(PREFECT_LOCAL_STORAGE_PATH.value()).glob("*"):
        if not path.is_file() or path.stat().st_mtime < started:
            continue
        text = path.read_text(errors="replace")
        try:  # a result record, or the bare base64 pickle of a failure
            text = json.loads(text)["result"]
        except (ValueError, KeyError, TypeError):
            pass
        try:
            pickled = base64.b64decode(text)
        except ValueError:
            continue
        if pickled.startswith(b"\x80") and any(name in pickled for name in STEP_RESULTS):
            found.append(path.name)
    return found


def embedded_png_sizes(markdown: str) -> list[int]:
    return [len(base64.b64decode(m)) for m in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", markdown)]


@pytest.fixture
def served_archive(serve):
    return serve(SAMPLE_ZIP)


def test_flow_end_to_end_then_cached_then_variant_change(prefect_server, served_archive, tmp_path: Path):
    started = time.time()
    settings = tiny(served_archive.url, tmp_path / "work", variant="augmented")
    first_id, metrics = run(settings)
    assert metrics.variant == "augmented" and metrics.test_images == 20 and metrics.epochs == 1
    (tn, fp), (fn, tp) = metrics.confusion
    assert metrics.test_accuracy == pytest.approx((tn + tp) / 20) and tn + fp == fn + tp == 10
    assert metrics.best_epoch == 1
    assert Path(metrics.model_path).is_file()
    assert all(state == "Completed" for state in task_states(first_id).values())

    found = artifacts(first_id)
    assert set(found) == FULL_SET
    assert "Every step ran in this run" in found["run-report"].data
    assert re.search(r"Registered as `([\w.-]+)`; ask it: `catsdogs predict --workdir \S+ --model \1 photo.jpg`",
                     found["run-report"].data)  # where a newcomer goes next
    assert "RandomFlip, RandomRotation, RandomZoom" in found["augmentation-grid"].description
    assert "| train | 10 | 10 | 20 |" in found["dataset-summary"].data
    assert "kaggle" in found["dataset-summary"].data
    assert "Total params" in found["model-summary"].data
    assert f"{metrics.test_accuracy:.4f}" in found["test-metrics"].data
    assert found["training-progress"].data == 100.0
    history = found["training-history"].data
    assert "| epoch | loss | accuracy | val_loss | val_accuracy | seconds |" in history  # in reading order
    assert re.search(r"\| 1 \| \d\.\d{4} \| \d\.\d{4} \|", history)  # rounded, not raw floats
    assert f"test accuracy {metrics.test_accuracy:.4f}" in found["test-metrics"].description
    assert "| layer | type | output shape | parameters |" in found["model-summary"].data
    for key in ("training-curves", "augmentation-grid"):
        sizes = embedded_png_sizes(found[key].data)
        assert len(sizes) == 1 and 1000 < sizes[0] < 100_000

    # the same settings again: every expensive step comes from the cache
    grid = Path(metrics.model_path).parent / "augmentations.png"
    drawn = grid.stat().st_ino
    second_id, again = run(settings)
    states = task_states(second_id)
    assert [states[name] for name in EXPENSIVE] == ["Cached"] * len(EXPENSIVE)
    assert again == metrics
    assert pickled_results_since(started) == []  # a step's result is read back from its folder, never unpickled
    assert len(served_archive.behaviour.requests) == 1
    # a cached run publishes the full set too, and says which run produced what it reused
    cached = artifacts(second_id)
    assert set(cached) == FULL_SET
    first_name = flow_run_name(first_id)
    assert first_name == "augmented-1ep-78px-seed0-batch-size=8"
    assert f"reused from run {first_name}" in cached["dataset-summary"].data
    rows = [line.split(" |")[0] for line in cached["dataset-summary"].data.splitlines() if line.startswith("| ")]
    assert rows[1:] == ["| train", "| validation", "| test"]  # as the first run's, not A to Z from the record
    for step in ("download", "unzip", "subsets", "datasets", "train", "evaluate"):  # every step it took
        assert f"`{step}`: reused from run {first_name} ({first_id})" in cached["run-report"].data
    assert cached["training-progress"].data == 100.0
    assert grid.stat().st_ino == drawn and cached["augmentation-grid"].data == found["augmentation-grid"].data
    # the runs list tells the rerun that trained nothing from the run that trained
    assert "reused-model" in flow_run_tags(second_id) and "reused-model" not in flow_run_tags(first_id)

    # only the variant changes: the data steps are reused, the model is trained anew
    third_id, baseline = run(tiny(served_archive.url, tmp_path / "work", variant="baseline"))
    states = task_states(third_id)
    assert [states[name] for name in ["download", "unzip", "subsets", "datasets"]] == ["Cached"] * 4
    assert states["train"] == "Completed" and states["evaluate"] == "Completed"
    assert "plot-augmentations" not in states and baseline.variant == "baseline"

    # outputs deleted behind Prefect's back: those steps run again instead of returning stale paths
    shutil.rmtree(Path(baseline.model_path).parent)
    fourth_id, rebuilt = run(tiny(served_archive.url, tmp_path / "work", variant="baseline"))
    states = task_states(fourth_id)
    assert states["datasets"] == "Cached" and states["train"] == "Completed"
    assert Path(rebuilt.model_path).is_file()


def test_download_survives_a_failing_server(prefect_server, served_archive, tmp_path: Path):
    served_archive.behaviour.statuses = [503, 500]
    served_archive.behaviour.drop_after = [300_000]
    flow_run_id, metrics = run(tiny(served_archive.url, tmp_path / "work"))
    assert Path(metrics.model_path).is_file()
    requests = served_archive.behaviour.requests
    assert len(requests) == 4  # 503, 500, a body cut at 300 kB, then the rest
    assert requests[-1]["Range"].startswith("bytes=") and requests[-1]["Range"] != "bytes=0-"
    assert task_states(flow_run_id)["download"] == "Completed"


def test_permanent_download_failure_is_not_retried(prefect_server, served_archive, tmp_path: Path):
    served_archive.behaviour.statuses = [404]
    state = train_flow(tiny(served_archive.url, tmp_path / "work"), return_state=True)
    assert state.is_failed()
    assert len(served_archive.behaviour.requests) == 1
    with pytest.raises(Exception, match="HTTP 404"):
        state.result()


def test_the_last_failed_download_try_says_it_gave_up_not_that_it_will_retry(prefect_server, served_archive,
                                                                               tmp_path: Path):
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    served_archive.behaviour.statuses = [503, 503, 503]
    state = train_flow(tiny(served_archive.url, tmp_path / "work", download_retries=1), return_state=True)
    assert state.is_failed() and len(served_archive.behaviour.requests) == 2
    with pytest.raises(Exception, match=r"HTTP 503; gave up after 2 tries") as caught:
        state.result()
    assert "trying again" not in str(caught.value)
    import time

    said: list[str] = []
    deadline = time.monotonic() + 60  # logs reach the server in batches, a little after the run
    while not said and time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(
                any_=[state.state_details.flow_run_id])))
        said = [log.message for log in logs if "trying again" in log.message]
        time.sleep(0.5)
    assert len(said) == 1 and "try 1 of 2" in said[0]  # only the first try, which was retried...
    assert said[0].endswith("trying again in 0.1 s")  # ...after download_backoff_s


def test_precision_is_part_of_the_trained_model_key(tmp_path: Path):
    from catsdogs import store
    from catsdogs.datasets import DatasetArrays
    from catsdogs.steps import TRAIN

    arrays = DatasetArrays(root=tmp_path / "d", image_size=78, counts={})
    reference = Settings(workdir=tmp_path)
    keys = {p: TRAIN.folder_for(reference.model_copy(update={"precision": p}), arrays)
            for p in ("float32", "mixed_bfloat16", "mixed_float16")}
    assert len(set(keys.values())) == 3
    # float32 runs keep the folders they had before precision was a setting, so nothing retrains.
    assert keys["float32"] == store.step_dir(tmp_path, "runs", {
        "datasets": arrays.root, "variant": "baseline", "epochs": 30, "batch_size": 32, "seed": 0}, 3)


def run_log(flow_run_id: UUID, wanted: str, timeout: float = 30) -> list[str]:
    """The run's log lines, read until one holds WANTED (logs reach the API in batches, after the state)."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            lines = [log.message for log in client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))]
        if any(wanted in line for line in lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.5)


def test_a_training_waits_its_turn_while_another_holds_the_training_limit(prefect_server, sample_archive,
                                                                          tmp_path: Path):
    """The limit `catsdogs serve` creates: a run waits for the slot and says so; a sweep takes one slot, and
    its own trainings none (else they would wait for their parent for ever)."""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.concurrency.sync import concurrency

    from flows.sweep import sweep_flow
    from tasks.runs import TRAINING_LIMIT

    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=TRAINING_LIMIT, limit=1))
    try:
        holding, released = threading.Event(), []

        def other_training() -> None:
            with concurrency(TRAINING_LIMIT):
                holding.set()
                time.sleep(4)
                released.append(time.monotonic())

        other = threading.Thread(target=other_training)
        other.start()
        assert holding.wait(60)
        state = train_flow(tiny(sample_archive.as_uri(), tmp_path / "w"), return_state=True)
        finished = time.monotonic()
        other.join()
        assert state.is_completed(), state.message
        assert released and released[0] <= finished  # it ran after the other one let go
        lines = run_log(state.state_details.flow_run_id, "our turn after")
        assert any(line.startswith(f"waiting for the training that holds the {TRAINING_LIMIT}") for line in lines)
        assert any(line.startswith(f"{TRAINING_LIMIT}: our turn after") for line in lines)

        summary = sweep_flow(grid={"seed": [0, 1]}, settings=tiny(sample_archive.as_uri(), tmp_path / "w"))
        assert [run.status for run in summary.runs] == ["completed", "completed"]
    finally:
        with get_client(sync_client=True) as client:
            client.delete_global_concurrency_limit_by_name(TRAINING_LIMIT)
