"""The pipeline without Prefect: every step's result for one set of settings, each made once, when first asked for.

    made = Pipeline(settings)
    metrics = made.get(EVALUATE)  # downloads, unzips, copies the subsets, decodes, trains, then evaluates

Each step (catsdogs.steps) declares the steps it needs; asking for one asks for those first. A step whose folder
is complete is read back, never made again. The training flow runs the same pipeline with a runner that makes
each step a cached Prefect task (tasks.steps); tests and benchmarks run it as it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from catsdogs.settings import Settings
from catsdogs.steps import BY_NAME, PIPELINE, Step


class StepRunner(Protocol):
    """Makes STEP's result in FOLDER for INPUTS from the results it NEEDED (Step.make, or a task around it)."""

    def __call__(self, step: Step, folder: Path, inputs: dict[str, Any], settings: Settings,
                 needed: tuple[Any, ...]) -> Any: ...


def make_step(step: Step, folder: Path, inputs: dict[str, Any], settings: Settings, needed: tuple[Any, ...]) -> Any:
    """The library's runner: the step itself, in this process."""
    return step.make(folder, inputs, settings, *needed)


class Pipeline:
    """The results of SETTINGS' steps, made by RUN (by default in this process), each once."""

    def __init__(self, settings: Settings, run: StepRunner = make_step):
        self.settings = settings
        self._run = run
        self._results: dict[str, Any] = {}
        self.folders: dict[str, Path] = {}  # step name -> its folder, for the steps made or read so far

    def get(self, step: Step | str) -> Any:
        """STEP's result, and before it the results of the steps it needs."""
        if isinstance(step, str):
            if step not in BY_NAME:
                raise KeyError(f"no step {step!r} is declared in catsdogs.steps; declared: {', '.join(BY_NAME)}")
            step = BY_NAME[step]
        if step.name not in self._results:
            needed = tuple(self.get(name) for name in step.needs)
            inputs = step.inputs(self.settings, *needed)
            folder = step.folder(self.settings.workdir, inputs)
            self._results[step.name] = self._run(step, folder, inputs, self.settings, needed)
            self.folders[step.name] = folder
        return self._results[step.name]

    def run(self, until: Step | str = PIPELINE[-1]) -> dict[str, Any]:
        """Every step up to UNTIL (by default to registration), by step name."""
        self.get(until)
        return dict(self._results)
