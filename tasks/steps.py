"""One task for every library step: its folder, computed once by the pipeline, is its cache (tasks._cache)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.runtime import task_run
from prefect.states import Completed

from catsdogs import download, store
from catsdogs.settings import Settings
from catsdogs.steps import BY_NAME, DOWNLOAD, Step
from tasks._cache import PRODUCER_FILE, producer, remember_producer

MAX_RETRY_AFTER_S = 300.0


def _transient(_task: Any, _run: Any, state: Any) -> bool:
    """Retry only failures a retry may fix: connection errors, timeouts, HTTP 429 and 5xx."""
    return isinstance(state.data, download.TransientDownloadError)


@task(name="step", persist_result=False, retry_condition_fn=_transient)
def run_step(step: str, folder: Path, inputs: dict[str, Any], settings: Settings,
             needed: tuple[Any, ...] = ()) -> Any:
    """Make one library step's result in its folder, or read it back from there (the task then ends Cached)."""
    declared = BY_NAME[step]
    if store.is_complete(folder):
        result = declared.make(folder, inputs, settings, *needed)  # read back under the step's lock
        return Completed(name="Cached", data=result, message=f"taken from {folder}, made earlier")
    with PREFECT_SIDE.get(step, _nothing)(settings, Path(folder)) as hooks:
        result = declared.make(folder, inputs, settings, *needed, **hooks)
    if not (Path(folder) / PRODUCER_FILE).exists():  # the first run to finish the folder produced it
        remember_producer(folder)
    return result


def step_task(step: Step, folder: Path, inputs: dict[str, Any], settings: Settings,
              needed: tuple[Any, ...]) -> Any:
    """The pipeline's runner in a flow (catsdogs.pipeline.Pipeline(settings, run=step_task)): each step a task
    named after it, Cached where its folder was complete; the download retried as the settings say."""
    options: dict[str, Any] = {"name": step.name}
    if step is DOWNLOAD:
        options |= {"retries": settings.download_retries, "retry_delay_seconds": retry_delays(settings) or 0}
    state = run_step.with_options(**options)(step.name, folder, inputs, settings, needed, return_state=True)
    return state.result()  # the step's result, Completed or Cached; its error, Failed


def retry_delays(settings: Settings) -> list[float]:
    """Seconds Prefect waits before each retry of the download: download_backoff_s, doubling each time."""
    return [settings.download_backoff_s * 2**i for i in range(settings.download_retries)]


# ---------------------------------------------------------------- what a step does in Prefect besides its work


def _nothing(_settings: Settings, _folder: Path) -> AbstractContextManager[dict[str, Any]]:
    return nullcontext({})


@contextmanager
def _download_tries(settings: Settings, _folder: Path) -> Iterator[dict[str, Any]]:
    """Each failed try in the run's log; the last one says it gave up; a server's Retry-After honoured."""
    try:
        yield {}
    except download.TransientDownloadError as err:
        attempt, attempts = max(1, task_run.run_count), settings.download_retries + 1
        if attempt >= attempts:  # the last try: say so, rather than a retry that will not come
            tries = f"{attempts} tries" if attempts > 1 else "one try (download_retries is 0)"
            raise download.DownloadError(f"{err}; gave up after {tries}: try again later, or raise "
                                         "--download-retries") from None
        asked = min(err.retry_after, MAX_RETRY_AFTER_S) if err.retry_after else 0.0
        delay = asked + retry_delays(settings)[attempt - 1]  # then Prefect's own
        get_run_logger().warning("download try %d of %d failed: %s; trying again in %g s", attempt, attempts, err,
                                 round(delay, 1))
        if asked:  # the server said when to come back: honour it before Prefect's own delay
            time.sleep(asked)
        raise


@contextmanager
def _training_progress(settings: Settings, folder: Path) -> Iterator[dict[str, Any]]:
    """A progress artifact that moves as epochs finish; the run that trained here before and died, closed."""
    progress = create_progress_artifact(0.0, key="training-progress",
                                        description=f"Epochs finished, {settings.variant} model (%)")

    def on_epoch(epoch: int, epochs: int, row: dict[str, float]) -> None:
        update_progress_artifact(progress, 100.0 * epoch / epochs)

    yield {"on_epoch": on_epoch, "on_start": lambda: take_over_training(folder)}
    update_progress_artifact(progress, 100.0)  # early stopping ends before the last planned epoch


def take_over_training(folder: Path) -> None:
    """As a training starts or resumes in FOLDER, under its lock: the flow run recorded as training there before
    has ended, whatever Prefect says. One killed (kill -9, out of memory, a lost machine or worker) ran no
    handler and stays Running in the UI for good: it is marked Crashed, naming this run. Then this run is
    recorded as FOLDER's producer."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.runtime import flow_run
    from prefect.states import Crashed

    Path(folder).mkdir(parents=True, exist_ok=True)
    before = producer(folder).get("flow_run_id", "")
    if before and before != str(flow_run.id or ""):
        with get_client(sync_client=True) as client:
            try:
                earlier = client.read_flow_run(UUID(before))
            except (ObjectNotFound, ValueError):  # another server's run, or not an id
                earlier = None
            if earlier and earlier.state and not earlier.state.is_final():
                client.set_flow_run_state(earlier.id, Crashed(message=(
                    "its process ended before the training finished (killed, out of memory, or its machine or "
                    f"worker stopped); run {flow_run.name} took the training up from its last finished epoch")),
                    force=True)
                get_run_logger().warning("run %s (%s), which trained here before, ended without finishing: marked "
                                         "Crashed; this run takes its training up", earlier.name, earlier.id)
    remember_producer(folder)


PREFECT_SIDE: dict[str, Callable[[Settings, Path], AbstractContextManager[dict[str, Any]]]] = {
    "download": _download_tries, "train": _training_progress}
