"""Sweeps: a grid of settings (variants x seeds x anything else), and the comparison of its runs.

A configuration is one set of settings; the runs of a sweep that differ only in their seed are replicates
of one configuration, so the comparison gives each configuration the mean and spread over its seeds.
"""

from __future__ import annotations

import itertools
import re
import statistics
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from catsdogs.results import read_history
from catsdogs.settings import Settings, SettingsError, read_toml

# A grid bigger than this is almost surely a typo (and would queue days of training): say so up front.
MAX_CONFIGURATIONS = 200
# What a sweep compares when it is given no grid: its settings over three seeds.
DEFAULT_GRID: dict[str, list[Any]] = {"seed": [0, 1, 2]}
# Settings that cannot be varied: where the runs keep their files and how they reach the data are the
# sweep's, shared by every configuration.
SHARED_SETTINGS = ("workdir", "data_url", "data_url_secret", "data_sha256")


class RunResult(BaseModel):
    """One configuration's training-flow run, as the sweep saw it end."""

    label: str  # the settings that vary in the sweep, seed included: "variant=augmented seed=1"
    configuration: str  # the same without the seed: the group its seeds are replicates of
    seed: int
    status: Literal["completed", "failed"]
    error: str = ""  # why it failed
    flow_run_id: str = ""
    flow_run_name: str = ""
    test_accuracy: float | None = None
    test_loss: float | None = None
    best_epoch: int | None = None
    epochs_run: int | None = None
    train_seconds: float | None = None  # the epochs' own time, whenever they ran (a reused model keeps its)
    wall_seconds: float = 0.0  # this sweep's time on the configuration (seconds when it was reused)
    trained_by: str = ""  # the flow run that trained the model
    reused: bool = False  # trained by an earlier run, not by this configuration's run
    history_path: Path | None = None


class ConfigurationSummary(BaseModel):
    """The mean and spread of one configuration's runs (one per seed)."""

    configuration: str
    runs: int
    failed: int
    seeds: list[int]
    test_accuracy_mean: float | None = None
    test_accuracy_std: float | None = None  # sample standard deviation; None with fewer than two runs
    test_accuracy_min: float | None = None
    test_accuracy_max: float | None = None
    test_loss_mean: float | None = None
    test_loss_std: float | None = None
    best_epochs: list[int] = []
    train_minutes_mean: float | None = None
    wall_minutes_mean: float | None = None  # this sweep's time on each run (minutes when it was reused)
    errors: list[str] = []


class SweepSummary(BaseModel):
    """What a sweep returns and `catsdogs sweep --json` prints: per configuration, then per run."""

    varied: list[str]
    configurations: list[ConfigurationSummary]
    runs: list[RunResult]
    curves_path: Path | None = None

    @property
    def failed(self) -> int:
        return sum(1 for run in self.runs if run.status == "failed")


def expand_grid(base: Settings, grid: dict[str, Any] | None, given: Iterable[str] | None = None) -> list[Settings]:
    """Every combination of GRID's values over BASE, in the grid's order (the last setting varies fastest).

    A value that is only a variant's default follows the variant, unless someone gave it (GIVEN, or BASE.given;
    see Settings.with_overrides). Raises SettingsError naming the setting or the combination that is not allowed.
    """
    given = given if given is not None else base.given
    grid = normalize_grid(DEFAULT_GRID if grid is None else grid)
    # runs may train in other processes, started elsewhere: a relative workdir would move with them
    base = base.model_copy(update={"workdir": Path(base.workdir).absolute()})
    names = list(grid)
    configurations: list[Settings] = []
    seen: set[str] = set()
    for values in itertools.product(*grid.values()):
        changes = dict(zip(names, values, strict=True))
        try:
            settings = base.with_overrides(changes, given)
        except SettingsError as err:
            where = " ".join(f"{name}={value}" for name, value in changes.items())
            raise SettingsError(f"sweep configuration {where}: {err}") from None
        identity = settings.model_dump_json()
        if identity not in seen:  # two spellings of one configuration train once
            seen.add(identity)
            configurations.append(settings)
    return configurations


def normalize_grid(grid: dict[str, Any]) -> dict[str, list[Any]]:
    """The grid as setting -> non-empty list of distinct values; a single value is a list of one."""
    if not isinstance(grid, dict):
        raise SettingsError(f"a sweep grid is a table of setting = [values], got {type(grid).__name__}")
    known = set(Settings.model_fields)
    out: dict[str, list[Any]] = {}
    for name, values in grid.items():
        key = str(name).replace("-", "_")
        if key not in known:
            raise SettingsError(f"sweep grid: unknown setting {name!r}; known settings are: "
                                f"{', '.join(Settings.model_fields)}")
        if key in SHARED_SETTINGS:
            raise SettingsError(f"sweep grid: {key} is shared by every configuration of a sweep and cannot vary; "
                                "give it once (a flag or [catsdogs] in the TOML file) or run two sweeps")
        values = list(values) if isinstance(values, list | tuple) else [values]
        if not values:
            raise SettingsError(f"sweep grid: {key} has no values; give at least one")
        distinct: list[Any] = []
        for value in values:
            if value not in distinct:
                distinct.append(value)
        out[key] = distinct
    count = 1
    for values in out.values():
        count *= len(values)
    if count > MAX_CONFIGURATIONS:
        sizes = " x ".join(f"{len(v)} {k}" for k, v in out.items())
        raise SettingsError(f"sweep grid: {sizes} make {count:,} configurations, more than {MAX_CONFIGURATIONS}; "
                            "split it into smaller sweeps")
    return out


class EngineError(RuntimeError):
    """The place to train cannot be used (a Dask scheduler that does not answer); the message says what to do."""


def check_engine(dask_address: str | None, dask_workers: int) -> None:
    """Raise SettingsError unless at most one place to train is given, each one well formed."""
    if dask_address and dask_workers:
        raise SettingsError("give dask_address (an existing Dask cluster) or dask_workers (a local one), not both")
    if dask_workers < 0:
        raise SettingsError(f"dask_workers must be 0 (no Dask: one training at a time here) or more, got "
                            f"{dask_workers}")
    if dask_address and not re.fullmatch(r"(tcp|tls|inproc|ucx)://[^\s/]+(:\d+)?/?|[^\s/:]+:\d+", dask_address):
        raise SettingsError(f"dask_address {dask_address!r} is not a Dask scheduler address; give one such as "
                            "tcp://scheduler:8786")


def varied_settings(grid: dict[str, Any] | None) -> list[str]:
    """The settings the grid gives more than one value: what tells its configurations apart."""
    return [name for name, values in normalize_grid(DEFAULT_GRID if grid is None else grid).items()
            if len(values) > 1]


def describe(settings: Settings, varied: list[str], with_seed: bool = True) -> str:
    """A configuration's name from the settings that vary: "variant=augmented learning_rate=0.002 seed=1"."""
    values = settings.model_dump(mode="json")
    names = [n for n in varied if n != "seed"] + (["seed"] if with_seed and "seed" in varied else [])
    text = " ".join(f"{name}={_short(values[name])}" for name in names)
    if not text:
        text = f"{settings.variant}" + (f" seed={settings.seed}" if with_seed else "")
    return text


def _short(value: Any) -> str:
    if isinstance(value, list):
        return "-".join(str(v) for v in value)
    return str(value)


def summarize(runs: list[RunResult]) -> list[ConfigurationSummary]:
    """One summary per configuration, in the order the configurations first appear."""
    groups: dict[str, list[RunResult]] = {}
    for run in runs:
        groups.setdefault(run.configuration, []).append(run)
    return [_summary(name, members) for name, members in groups.items()]


def _summary(name: str, runs: list[RunResult]) -> ConfigurationSummary:
    done = [r for r in runs if r.status == "completed"]
    accuracy = [r.test_accuracy for r in done if r.test_accuracy is not None]
    loss = [r.test_loss for r in done if r.test_loss is not None]
    train = [r.train_seconds / 60 for r in done if r.train_seconds is not None]
    return ConfigurationSummary(
        configuration=name, runs=len(runs), failed=len(runs) - len(done), seeds=[r.seed for r in runs],
        test_accuracy_mean=_mean(accuracy), test_accuracy_std=_std(accuracy),
        test_accuracy_min=min(accuracy, default=None), test_accuracy_max=max(accuracy, default=None),
        test_loss_mean=_mean(loss), test_loss_std=_std(loss),
        best_epochs=[r.best_epoch for r in done if r.best_epoch is not None], train_minutes_mean=_mean(train),
        wall_minutes_mean=_mean([r.wall_seconds / 60 for r in done]),
        errors=[f"seed {r.seed}: {r.error}" for r in runs if r.status == "failed"])


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _std(values: list[float]) -> float | None:
    return statistics.stdev(values) if len(values) >= 2 else None


def train_seconds(history_path: Path) -> float:
    """The time the epochs of a run took, from its history."""
    return float(sum(row.get("seconds", 0.0) for row in read_history(history_path)))


def comparison_table(summary: SweepSummary, run_url: Callable[[RunResult], str | None] | None = None) -> str:
    """The comparison as Markdown: the configurations' accuracy, then their loss and time, then one row per run
    (linked by RUN_URL), and why any failed. The Prefect UI shows cells on one line, in a pane about 700 px wide:
    hence several narrow tables, and the reasons below them."""
    lines = ["| configuration | runs | test accuracy, mean ± std | min–max |", "|---|---|---|---|"]
    for c in summary.configurations:
        accuracy = (f"**{c.test_accuracy_mean:.4f}** ± {_fmt(c.test_accuracy_std)}"
                    if c.test_accuracy_mean is not None else "–")
        spread = (f"{c.test_accuracy_min:.4f}–{c.test_accuracy_max:.4f}" if c.test_accuracy_mean is not None
                  else "–")
        runs = f"{c.runs}, **{c.failed} failed**" if c.failed else str(c.runs)
        lines.append(f"| {c.configuration} | {runs} | {accuracy} | {spread} |")
    lines += ["", "| configuration | test loss, mean ± std | best epochs | minutes, train / wall |",
              "|---|---|---|---|"]
    for c in summary.configurations:
        loss = f"{c.test_loss_mean:.4f} ± {_fmt(c.test_loss_std)}" if c.test_loss_mean is not None else "–"
        lines.append(f"| {c.configuration} | {loss} | {', '.join(map(str, c.best_epochs)) or '–'} | "
                     f"{_fmt(c.train_minutes_mean, 1)} / {_fmt(c.wall_minutes_mean, 1)} |")
    lines += ["", "| run | status | test accuracy | test loss | best / epochs | minutes, train / wall |",
              "|---|---|---|---|---|---|"]
    notes = []
    for r in summary.runs:
        url = run_url(r) if run_url else None
        name = f"[{r.label}]({url})" if url else r.label
        status = "**failed**" if r.status != "completed" else "reused" if r.reused else "trained"
        if r.status != "completed":
            notes.append(f"- {name} failed: {_cell(r.error)}")
        elif r.reused:
            notes.append(f"- {name} reused the model trained by {r.trained_by}")
        train = _fmt(None if r.train_seconds is None else r.train_seconds / 60, 1)
        lines.append(f"| {name} | {status} | {_fmt(r.test_accuracy)} | {_fmt(r.test_loss)} "
                     f"| {r.best_epoch or '–'} / {r.epochs_run or '–'} | {train} / {r.wall_seconds / 60:.1f} |")
    return "\n".join(lines + ([""] + notes if notes else []))


def _fmt(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _cell(text: str) -> str:
    """Text that stays inside one Markdown table cell."""
    return " ".join(text.replace("|", "\\|").split())[:300]


def read_grid_file(path: str | Path) -> tuple[dict[str, list[Any]], bool]:
    """The [sweep] table of a TOML file, and whether the file also has a [catsdogs] table of shared settings.

    Raises SettingsError naming what is wrong with the file.
    """
    path = Path(path)
    values = read_toml(path)
    grid = values.pop("sweep", {})
    if not isinstance(grid, dict):
        raise SettingsError(f"config file {path}: sweep must be a table of setting = [values]")
    loose = sorted(k for k in values if k != "catsdogs")
    if loose:
        raise SettingsError(f"config file {path}: put the shared settings ({', '.join(loose)}) under a [catsdogs] "
                            "table; a sweep's file holds [catsdogs] and [sweep]")
    return normalize_grid(grid), "catsdogs" in values


def completed_run(settings: Settings, varied: list[str], metrics: Any, flow_run_id: str, flow_run_name: str,
                  wall_seconds: float, trained_by: str, reused: bool) -> RunResult:
    """The row of a configuration whose training-flow run finished (METRICS: its catsdogs.train.Metrics)."""
    history = Path(metrics.model_path).parent / "history.json"
    rows = read_history(history)
    return RunResult(
        label=describe(settings, varied), configuration=describe(settings, varied, with_seed=False),
        seed=settings.seed, status="completed", flow_run_id=flow_run_id, flow_run_name=flow_run_name,
        test_accuracy=metrics.test_accuracy, test_loss=metrics.test_loss, best_epoch=metrics.best_epoch,
        epochs_run=len(rows) or None, train_seconds=train_seconds(history), wall_seconds=wall_seconds,
        trained_by=trained_by, reused=reused, history_path=history)


def failed_run(settings: Settings, varied: list[str], error: str, wall_seconds: float = 0.0) -> RunResult:
    """The row of a configuration whose run failed, with the reason."""
    return RunResult(label=describe(settings, varied), configuration=describe(settings, varied, with_seed=False),
                     seed=settings.seed, status="failed", error=error, wall_seconds=wall_seconds)


def check_local_memory(configurations: list[Settings], dask_address: str | None, dask_workers: int) -> None:
    """Raise SettingsError when the configurations that train on this machine, one at a time or DASK_WORKERS at
    once on a local cluster, cannot fit in its memory (a remote cluster's workers check their own)."""
    from catsdogs.model import check_memory, training_memory_floor

    if dask_address or not configurations:
        return
    largest = max(configurations, key=training_memory_floor)
    check_memory(largest, at_once=min(dask_workers or 1, len(configurations)))


def share_cores(configurations: list[Settings], workers: int, cores: int) -> list[Settings]:
    """Give each of WORKERS trainings on one machine its share of the CORES, where threads is not set:
    TensorFlow would otherwise start a thread per core in every worker, and they would fight over them."""
    share = max(1, cores // max(1, workers))
    return [c if c.threads else c.model_copy(update={"threads": share}) for c in configurations]
