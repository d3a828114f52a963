"""Flow runs that can be told apart: names and tags from the settings they train with."""

from __future__ import annotations

from typing import Any

from prefect import get_client
from prefect.runtime import flow_run

from catsdogs.settings import Settings
from catsdogs.sweep import DEFAULT_GRID


def run_label(settings: Settings) -> str:
    """What a run trains, as a name: augmented-100ep-180px-seed1 (precision too when not float32)."""
    label = f"{settings.variant}-{settings.total_epochs}ep-{settings.image_size}px-seed{settings.seed}"
    return label if settings.precision in ("float32", None) else f"{label}-{settings.precision}"


def train_run_name() -> str:
    """The training flow's run name, from its settings parameter (Prefect calls this as the run starts)."""
    settings: Any = flow_run.parameters.get("settings") or Settings()
    if not isinstance(settings, Settings):
        settings = Settings.model_validate(settings)
    return run_label(settings.with_overrides(flow_run.parameters.get("overrides")))


def tag_run(settings: Settings) -> None:
    """Tag the current flow run with its variant, precision and seed, for the UI's filters."""
    if flow_run.id is None:
        return
    tags = [f"variant:{settings.variant}", f"precision:{settings.precision}", f"seed:{settings.seed}"]
    with get_client(sync_client=True) as client:
        current = client.read_flow_run(flow_run.id).tags
        client.update_flow_run(flow_run.id, tags=sorted({*current, "catsdogs", *tags}))


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
