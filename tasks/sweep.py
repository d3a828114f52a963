"""Sweep tasks: where each configuration trains (in this process or on Dask), and the comparison artifact."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prefect import get_client, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.context import FlowRunContext
from prefect.futures import PrefectFuture
from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from catsdogs import plots, steps, store, sweep
from catsdogs.results import read_history
from catsdogs.sweep import EngineError, RunResult, SweepSummary


def task_runner(dask_address: str | None, dask_workers: int) -> TaskRunner:
    """Where the configurations train: an existing Dask cluster, a local one of DASK_WORKERS processes, or
    (neither given) this process, one at a time: two trainings sharing a CPU's cores go no faster."""
    if dask_address or dask_workers:
        from prefect_dask import DaskTaskRunner

        if dask_address:
            return DaskTaskRunner(address=dask_address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": dask_workers, "threads_per_worker": 1,
                                              "processes": True, "dashboard_address": ":0"})
    return ThreadPoolTaskRunner(max_workers=1)


# How often the sweep's main thread wakes while it waits for a configuration (see wait_awake).
WAKE_S = 0.25


def wait_awake(future: PrefectFuture) -> None:
    """Wait for FUTURE, waking every WAKE_S seconds. A signal's Python handler, which asks the trainings to stop,
    runs only in the main thread and only when that thread runs Python: the kernel may hand the signal to one
    of the training's threads and leave the main thread asleep on its lock until the whole training ends."""
    finished = threading.Event()
    future.add_done_callback(lambda _: finished.set())
    while not finished.wait(WAKE_S):
        pass
    future.wait()


@contextmanager
def started(runner: TaskRunner, dask_address: str | None) -> Iterator[TaskRunner]:
    """RUNNER, started and connected: an unreachable Dask scheduler is one clear error before anything runs."""
    with runner:
        try:
            getattr(runner, "client", None)  # DaskTaskRunner connects (or starts its local cluster) here
        except OSError as err:
            raise EngineError(f"cannot reach the Dask scheduler at {dask_address or 'the local cluster'}: {err}; "
                              "start it (`dask scheduler`, then `dask worker ADDRESS` on each machine) or fix "
                              "--dask-address") from None
        yield runner


@contextmanager
def workers_report_here() -> Iterator[None]:
    """Point the task runner's workers at this flow run's Prefect server.

    A run without PREFECT_API_URL talks to a temporary server that only this process knows of; Dask workers
    get Prefect's settings from the flow (Prefect sends them with each task), so they report to it too
    instead of starting temporary servers of their own.
    """
    if PREFECT_API_URL.value():
        yield
        return
    context = FlowRunContext.get()
    url = str(context.client.api_url) if context else None
    if not url:
        yield
        return
    get_run_logger().info("workers report to this run's temporary Prefect server at %s; workers on other machines "
                          "need PREFECT_API_URL set to a server they can reach", url)
    with temporary_settings(updates={PREFECT_API_URL: url}):
        yield


@task(name="close-orphaned-runs")
def close_orphaned_runs(reason: str | None = None) -> int:
    """Mark Crashed the training-flow runs of this sweep left Running or Pending: by a dead worker (Dask ran their
    configurations again on another worker, in a new run), or, with REASON, by a stopped sweep; returns how many."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.runtime import flow_run
    from prefect.states import Crashed

    unfinished = FlowRunFilter(
        parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run.id]),
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING])))
    with get_client(sync_client=True) as client:
        orphans = client.read_flow_runs(flow_run_filter=unfinished)
        for orphan in orphans:
            client.set_flow_run_state(orphan.id, Crashed(message=reason or "the worker running it died; the sweep "
                                                         "ran this configuration again in another run"), force=True)
    if orphans:
        get_run_logger().warning("%d training runs were left unfinished (%s): marked Crashed", len(orphans),
                                 reason or "by a worker that died")
    return len(orphans)


@task(name="publish-comparison")
def publish_comparison(runs: list[RunResult], varied: list[str], workdir: Path) -> SweepSummary:
    """Compare the configurations: mean and spread over seeds, and every run's validation curves overlaid."""
    folder = steps.SWEEP.folder(workdir, {"runs": sorted(r.label for r in runs), "varied": varied})
    curves = plots.plot_sweep_curves(
        [(r.configuration, r.seed, read_history(r.history_path) if r.history_path else []) for r in runs],
        folder / "validation-curves.png")
    summary = SweepSummary(varied=varied, configurations=sweep.summarize(runs), runs=runs, curves_path=curves)
    store.write_json_atomic(folder / "summary.json", summary.model_dump(mode="json"))
    best = max((c for c in summary.configurations if c.test_accuracy_mean is not None),
               key=lambda c: c.test_accuracy_mean or 0.0, default=None)
    headline = (f"best mean test accuracy {best.test_accuracy_mean:.4f} ({best.configuration})" if best
                else "no configuration finished")
    create_markdown_artifact(
        f"# Sweep: {len(summary.configurations)} configurations, {len(runs)} runs\n\n"
        f"Varied: {', '.join(varied) or 'nothing'}. {headline}; {summary.failed} failed.\n\n"
        f"{sweep.comparison_table(summary, run_url)}\n\n## Validation curves\n\n"
        f"![validation curves]({plots.png_data_uri(curves)})",
        key="sweep-comparison", description=f"{len(runs)} runs, {summary.failed} failed; {headline}")
    return summary


def run_url(run: RunResult) -> str | None:
    """The UI page of a configuration's training-flow run."""
    ui = PREFECT_UI_URL.value()
    return f"{ui}/runs/flow-run/{run.flow_run_id}" if ui and run.flow_run_id else None

