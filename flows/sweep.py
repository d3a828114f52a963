"""The sweep flow: every configuration of a grid trained by its own run of the training flow, then compared."""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_client, task
from prefect.futures import PrefectFuture

from catsdogs import runtime, sweep
from catsdogs.settings import RunChoices, Settings, settings_for_choices
from catsdogs.sweep import RunResult, SweepSummary
from flows.train import train_flow
from tasks._cache import producer
from tasks.runs import configuration_run_name, one_training_at_a_time, sweep_run_name, tag_sweep
from tasks.sweep import (
    close_orphaned_runs,
    publish_comparison,
    started,
    task_runner,
    wait_awake,
    workers_report_here,
)


@flow(name="catsdogs-sweep", flow_run_name=sweep_run_name, log_prints=False)
def sweep_flow(grid: dict[str, list[Any]] | None = None, settings: Settings | None = None,
               dask_address: str | None = None, dask_workers: int = 0,
               given: list[str] | None = None) -> SweepSummary:
    """Train each configuration of GRID (setting: [values]) over SETTINGS, each in its own training-flow run,
    on Dask (DASK_ADDRESS, or a local cluster of DASK_WORKERS processes) or here one at a time; compare them.
    GIVEN names the settings someone chose: they stay as they are in every configuration, whatever its variant."""
    sweep.check_engine(dask_address, dask_workers)
    configurations = sweep.expand_grid(settings or Settings(), grid, given)
    sweep.check_local_memory(configurations, dask_address, dask_workers)
    varied = sweep.varied_settings(grid)
    if dask_workers and not dask_address:  # one machine's cores, shared between its workers
        configurations = sweep.share_cores(configurations, dask_workers, runtime.cpu_cores())
    tag_sweep(configurations)
    try:
        with (one_training_at_a_time(), workers_report_here(),
              started(task_runner(dask_address, dask_workers), dask_address) as runner):
            try:
                futures = [runner.submit(train_configuration, {"settings": s, "varied": varied})
                           for s in configurations]
                runs = [outcome(future, s, varied) for future, s in zip(futures, configurations, strict=True)]
            except BaseException:  # a signal (Prefect's or ours) reaches this thread only: stop the trainings too,
                runtime.request_stop()  # before the runner waits for its threads
                raise
    except BaseException as err:  # no training run of this sweep may be left Running
        close_orphaned_runs(f"the sweep stopped before this run finished ({type(err).__name__}); run it again to "
                            "resume")
        raise
    close_orphaned_runs()
    return publish_comparison(runs, varied, configurations[0].workdir)


@flow(name="catsdogs-sweep", flow_run_name=sweep_run_name, log_prints=False)
def deployed_sweep_flow(grid: dict[str, list[Any]] | None = None, choices: RunChoices | None = None,
                        dask_address: str | None = None, dask_workers: int = 0) -> SweepSummary:
    """The sweep flow as its deployment runs it: GRID over CHOICES from the Run form, over the serving side's
    settings, which alone say where the runs train and which data they read."""
    settings = settings_for_choices(choices)
    return sweep_flow.fn(grid, settings, dask_address, dask_workers, sorted(settings.given))


@task(name="train-configuration", task_run_name=configuration_run_name)
def train_configuration(settings: Settings, varied: list[str]) -> RunResult:
    """Run the training flow on one configuration: a child flow run with its own page and artifacts."""
    began = time.monotonic()
    state = train_flow(settings, return_state=True)
    child = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        name = client.read_flow_run(child).name if child else ""
    if not state.is_completed():
        reason = (state.message or state.name).removeprefix("Flow run encountered an exception: ")
        raise ConfigurationFailed(f"run {name}: {reason}")
    metrics = state.result()
    made_by = producer(metrics.model_path.parent)
    return sweep.completed_run(settings, varied, metrics, str(child), name, time.monotonic() - began,
                               trained_by=made_by.get("flow_run_name", ""),
                               reused=made_by.get("flow_run_id") not in (None, str(child)))


class ConfigurationFailed(RuntimeError):
    """A configuration's training-flow run ended in a state other than Completed."""


def outcome(future: PrefectFuture, settings: Settings, varied: list[str]) -> RunResult:
    """The configuration's row: its result, or why it failed (the others go on either way)."""
    wait_awake(future)
    state = future.state
    if state.is_completed():
        return state.result()
    error = state.result(raise_on_failure=False)
    return sweep.failed_run(settings, varied, str(error) if isinstance(error, Exception) else state.message or "")
