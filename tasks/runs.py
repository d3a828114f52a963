"""Flow runs that can be told apart: names and tags from the settings they train with."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import get_client, get_run_logger
from prefect.runtime import flow_run, task_run

from catsdogs import runtime
from catsdogs.settings import Settings, SettingsError, settings_for_choices
from catsdogs.sweep import DEFAULT_GRID


def run_label(settings: Settings) -> str:
    """What a run trains, as a name: augmented-100ep-180px-seed1, then the precision it trains in when not
    float32 (auto resolved for this machine) and each setting that differs from its variant's defaults
    (xception-100ep-180px-seed0-mixed_bfloat16-mixup=0.4)."""
    label = f"{settings.variant}-{settings.total_epochs}ep-{settings.image_size}px-seed{settings.seed}"
    precision = runtime.resolve_precision(str(settings.precision or "float32"))
    if precision != "float32":
        label = f"{label}-{precision}"
    changes = [f"{name.replace('_', '-')}={_short(value)}" for name, value in settings.changed_from_variant().items()]
    return "-".join([label, *changes])


def _short(value: object) -> str:
    """A setting's value as a run name shows it: numbers in few digits, a weights file by its name only."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    text = str(value)
    return text if text in ("imagenet", "random") else Path(text).name


def train_run_name() -> str:
    """The training flow's run name, from its settings parameter (Prefect calls this as the run starts)."""
    return run_label(_settings_parameter(flow_run.parameters))


def chosen_run_name() -> str:
    """A deployment's training run name, from its Run form choices over the serving side's settings."""
    try:
        settings = settings_for_choices(flow_run.parameters.get("choices"))
    except SettingsError:  # the run itself fails with the reason
        return "train-invalid-choices"
    return run_label(settings)


def configuration_run_name() -> str:
    """A sweep's task run for one configuration, named after the training run it starts: train-xception-…"""
    return f"train-{run_label(_settings_parameter(task_run.parameters))}"


def _settings_parameter(parameters: dict[str, Any]) -> Settings:
    """A run's settings parameter as Settings (Prefect may hand it over as a plain dict)."""
    settings = parameters.get("settings") or Settings()
    return settings if isinstance(settings, Settings) else Settings.model_validate(settings)


def tag_run(settings: Settings) -> None:
    """Tag the current flow run with its variant, precision, seed and workdir, for the UI's filters: runs of
    the same settings in two workdirs are told apart by the last."""
    _add_tags([f"variant:{settings.variant}", f"precision:{settings.precision}", f"seed:{settings.seed}",
               f"workdir:{Path(settings.workdir).resolve()}"])


def tag_sweep(configurations: list[Settings]) -> None:
    """Tag the current sweep run with "sweep" and every variant and seed it trains, for the UI's filters."""
    _add_tags(["sweep", *{f"variant:{s.variant}" for s in configurations},
               *{f"seed:{s.seed}" for s in configurations}])


# The tag of a flow run whose model came from the cache: trained by an earlier run, not by this one.
REUSED_MODEL_TAG = "reused-model"


def tag_reused_model() -> None:
    """Tag the current flow run as one that reused an earlier run's model instead of training one."""
    _add_tags([REUSED_MODEL_TAG])


def _add_tags(tags: list[str]) -> None:
    """Add TAGS (and "catsdogs") to the current flow run's, keeping the ones it has."""
    if flow_run.id is None:
        return
    with get_client(sync_client=True) as client:
        current = client.read_flow_run(flow_run.id).tags
        client.update_flow_run(flow_run.id, tags=sorted({*current, "catsdogs", *tags}))


def score_run_name() -> str:
    """The prediction flow's run name: what it scores, with which model, e.g. score-photos-with-best, or
    score-cat.1.jpg-and-2-more-with-3f2a9c1e."""
    paths = [Path(str(p)).name or str(p) for p in flow_run.parameters.get("paths") or []]
    what = (paths[0] if paths else "nothing") + (f"-and-{len(paths) - 1}-more" if len(paths) > 1 else "")
    return f"score-{what}-with-{Path(str(flow_run.parameters.get('model', 'best'))).name}"


def sweep_run_name() -> str:
    """The sweep flow's run name: what it varies and how many runs, e.g. sweep-variant-seed-6runs."""
    grid = flow_run.parameters.get("grid")
    grid = DEFAULT_GRID if grid is None else grid
    varied = [str(name).replace("_", "-") for name, values in grid.items()
              if isinstance(values, list | tuple) and len(values) > 1]
    count = 1
    for values in grid.values():
        count *= len(values) if isinstance(values, list | tuple) and values else 1
    return f"sweep-{'-'.join(varied) or 'one'}-{count}runs"


# One training at a time on a machine: a global concurrency limit of this name, which `catsdogs serve` creates
# with one slot. Top-level training and sweep runs take its slot; a sweep's own trainings do not (its
# parallelism is its dask_workers setting). Where the limit does not exist, nothing waits.
TRAINING_LIMIT = "catsdogs-training"


@contextmanager
def one_training_at_a_time() -> Iterator[None]:
    """Hold a slot of TRAINING_LIMIT for the block, saying in the run's log when it has to wait for one."""
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectNotFound

    if flow_run.parent_flow_run_id is not None:
        yield
        return
    try:
        with get_client(sync_client=True) as client:
            client.read_global_concurrency_limit_by_name(TRAINING_LIMIT)
    except ObjectNotFound:
        yield
        return
    log = get_run_logger()
    holding = False
    try:
        with concurrency(TRAINING_LIMIT, timeout_seconds=1):
            holding = True
            yield
            return
    except TimeoutError:
        if holding:  # the training's own timeout, not the slot's
            raise
    log.info("waiting for the training that holds the %s concurrency limit to finish: one training at a time "
             "on these cores", TRAINING_LIMIT)
    started = time.monotonic()
    with concurrency(TRAINING_LIMIT):
        log.info("%s: our turn after %.0f s", TRAINING_LIMIT, time.monotonic() - started)
        yield
