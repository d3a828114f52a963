"""The pipeline's steps, each declared once: its name, its version, the code that makes its output, the
results of earlier steps it takes, the inputs that key its folder (``WORKDIR/FOLDER/DIGEST``), and how it
builds its result there and loads it back. catsdogs.pipeline chains them; tasks.steps runs any of them as a
Prefect task.

A step's folder key hashes its version and its inputs, and the inputs of every step after the first name the
folder of the step before: so a new version of one step makes that step and every later one again, and never
an earlier one. A changed augmentation retrains; it does not download again. Each marker records its step,
version and inputs (store.read_lineage): where a result came from is read, never searched for.

When you change the code a step runs (its CODE modules), bump its version here, or, where outputs cannot
change (a log line, a rename), record the code as it is: ``python -m catsdogs.steps --record``.
tests/test_steps.py fails until one of the two is done. ``catsdogs/step_versions.json`` holds the record.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from catsdogs import store

if TYPE_CHECKING:
    from catsdogs.data import Subsets
    from catsdogs.datasets import DatasetArrays
    from catsdogs.download import Archive
    from catsdogs.registry import ModelCard
    from catsdogs.results import Metrics, TrainedModel
    from catsdogs.settings import Settings

RECORD = Path(__file__).with_name("step_versions.json")


@dataclass(frozen=True)
class Step:
    """One step of the pipeline: what it takes, where its result lives, and how it is made and read back."""

    name: str  # the step's name, and its Prefect task's
    folder_name: str  # its results live in WORKDIR/FOLDER_NAME/KEY
    version: int  # part of its folder key: bump it when what the step makes changes
    code: tuple[str, ...]  # the modules whose code makes its output
    needs: tuple[str, ...] = ()  # the steps whose results it takes, in the order build takes them
    key: Callable[..., dict[str, Any]] | None = None  # (settings, *needed results) -> the inputs its key hashes
    build: Callable[..., Any] | None = None  # (folder, settings, *needed, **hooks) -> its result, made once
    load: Callable[[Path], Any] | None = None  # a complete folder -> its result
    place: Callable[[Path, dict[str, Any], int], Path] | None = None  # (workdir, inputs, version) -> its folder,
    # for the steps whose folder is not WORKDIR/FOLDER_NAME/KEY

    def inputs(self, settings: Settings, *needed: Any) -> dict[str, Any]:
        """What this step's result depends on, for SETTINGS and the results of the steps it needs."""
        assert self.key is not None, f"step {self.name} declares no key"
        return self.key(settings, *needed)

    def folder(self, workdir: Path, inputs: dict[str, Any]) -> Path:
        """The folder that holds this step's results for INPUTS."""
        if self.place is not None:
            return self.place(Path(workdir), inputs, self.version)
        return store.step_dir(workdir, self.folder_name, inputs, self.version)

    def folder_for(self, settings: Settings, *needed: Any) -> Path:
        return self.folder(settings.workdir, self.inputs(settings, *needed))

    def make(self, folder: Path, inputs: dict[str, Any], settings: Settings, *needed: Any, **hooks: Any) -> Any:
        """The step's result for INPUTS: read from FOLDER when complete, else built there; its marker records
        the step, its version and its inputs."""
        assert self.build is not None, f"step {self.name} declares no build"
        lineage = {"step": self.name, "version": self.version,
                   "inputs": _masked(store.workdir_relative(settings.workdir, inputs))}
        with store.recording_lineage(lineage):
            return self.build(Path(folder), settings, *needed, **hooks)


def _masked(value: Any) -> Any:
    """VALUE with every URL in it as logs show it (credentials masked): lineage is written to disk."""
    from catsdogs.settings import redact_url

    if isinstance(value, dict):
        return {key: _masked(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_masked(item) for item in value]
    return redact_url(value) if isinstance(value, str) and "://" in value else value


# ---------------------------------------------------------------- what each step depends on


def _download_inputs(settings: Settings) -> dict[str, Any]:
    """Keyed by the archive's SHA-256 where it is given (a signed URL whose token changes is the same archive),
    else by its URL (and, for a file:// URL, the file's size and time: a changed file is copied again)."""
    from catsdogs.download import source_version

    if settings.data_sha256:
        return {"sha256": settings.data_sha256}
    inputs: dict[str, Any] = {"url": settings.data_url, "sha256": None}
    if version := source_version(settings.data_url):
        inputs["source"] = version
    return inputs


def _extract_inputs(settings: Settings, archive: Archive) -> dict[str, Any]:
    return {"sha256": archive.sha256}


def _subsets_inputs(settings: Settings, images: Path) -> dict[str, Any]:
    return {"images": images, "ranges": [settings.train_range, settings.validation_range, settings.test_range]}


def _datasets_inputs(settings: Settings, subsets: Subsets) -> dict[str, Any]:
    return {"subsets": subsets.root, "size": settings.image_size}


def _train_inputs(settings: Settings, arrays: DatasetArrays) -> dict[str, Any]:
    inputs = {"datasets": arrays.root, "variant": settings.variant, "epochs": settings.epochs_to_run,
              "batch_size": settings.batch_size, "seed": settings.seed}
    return inputs | settings.recipe_key()


def _views_inputs(settings: Settings, trained: TrainedModel, *_: Any) -> dict[str, Any]:
    from catsdogs.views import views_of

    flip, crop, zoom_out = views_of(settings.model_dump())
    zoomed = {"tta_zoom_out": zoom_out} if zoom_out else {}  # named only where used: earlier keys stay as they were
    return {"run": trained.run_dir, "tta_flip": flip, "tta_crop": crop, **zoomed}


def _evaluation_place(workdir: Path, inputs: dict[str, Any], version: int) -> Path:
    """Inside its run's folder, named for its views and, from version 2 on, its version."""
    from catsdogs.views import views_name, views_of

    name = "evaluation" if version == 1 else f"evaluation-v{version}"
    return Path(inputs["run"]) / views_name(name, *views_of(inputs))


def _register_place(workdir: Path, inputs: dict[str, Any], version: int) -> Path:
    """WORKDIR/models/RUN-VIEWS (the name predict and web show), with -vN from version 2 on."""
    from catsdogs.registry import model_folder
    from catsdogs.views import views_of

    folder = model_folder(workdir, inputs["run"], *views_of(inputs))
    return folder if version == 1 else folder.with_name(f"{folder.name}-v{version}")


# ---------------------------------------------------------------- how each step is made and read back


def _loader(module: str, function: str) -> Callable[[Path], Any]:
    """MODULE.FUNCTION(folder), imported when first called: declaring the steps imports no TensorFlow."""

    def load(folder: Path) -> Any:
        return getattr(importlib.import_module(module), function)(Path(folder))

    return load


def _download(folder: Path, settings: Settings) -> Archive:
    from catsdogs.download import download_into

    return download_into(folder, settings.data_url, settings.data_sha256, settings.download_timeout_s)


def _extract(folder: Path, settings: Settings, archive: Archive) -> Path:
    from catsdogs.data import unzip_archive

    return unzip_archive(archive.path, folder, int(settings.max_extract_gib * 2**30))


def _make_subsets(folder: Path, settings: Settings, images: Path) -> Subsets:
    from catsdogs.data import make_subsets

    ranges = {"train": settings.train_range, "validation": settings.validation_range, "test": settings.test_range}
    return make_subsets(images, folder, ranges)


def _build_arrays(folder: Path, settings: Settings, subsets: Subsets) -> DatasetArrays:
    from catsdogs.datasets import build_arrays

    return build_arrays(subsets, folder, settings.image_size, settings.batch_size)


def _train(folder: Path, settings: Settings, arrays: DatasetArrays, on_epoch: Any = None,
           on_start: Any = None) -> TrainedModel:
    from catsdogs.train import train_model

    return train_model(settings, arrays, folder, on_epoch=on_epoch, on_start=on_start)


def _evaluate(folder: Path, settings: Settings, trained: TrainedModel, arrays: DatasetArrays) -> Metrics:
    from catsdogs.train import evaluate_model
    from catsdogs.views import views_of

    return evaluate_model(trained, arrays, settings.batch_size, folder, *views_of(settings.model_dump()))


def _register(folder: Path, settings: Settings, trained: TrainedModel, metrics: Metrics,
              archive: Archive) -> ModelCard:
    from catsdogs.registry import register_model

    return register_model(trained, metrics, settings, archive.sha256, folder)


# Version 3 is the one every step had when one global version keyed them all: workdirs keep their folders.
DOWNLOAD = Step("download", "download", 3, ("catsdogs.download",),
                (), _download_inputs, _download, _loader("catsdogs.download", "load_archive"))
EXTRACT = Step("unzip", "extract", 3, ("catsdogs.data",),
               ("download",), _extract_inputs, _extract, lambda folder: Path(folder))
SUBSETS = Step("subsets", "subsets", 3, ("catsdogs.data", "catsdogs.images"),
               ("unzip",), _subsets_inputs, _make_subsets, _loader("catsdogs.data", "load_subsets"))
DATASETS = Step("datasets", "datasets", 3, ("catsdogs.datasets", "catsdogs.images"),
                ("subsets",), _datasets_inputs, _build_arrays, _loader("catsdogs.datasets", "load_arrays"))
TRAIN = Step("train", "runs", 3, ("catsdogs.train", "catsdogs.model", "catsdogs.variants", "catsdogs.results"),
             ("datasets",), _train_inputs, _train, _loader("catsdogs.results", "load_trained"))
EVALUATE = Step("evaluate", "evaluation", 1, ("catsdogs.train", "catsdogs.views", "catsdogs.results"),
                ("train", "datasets"), _views_inputs, _evaluate, _loader("catsdogs.results", "load_metrics"),
                _evaluation_place)
REGISTER = Step("register", "models", 1, ("catsdogs.registry", "catsdogs.lite"),
                ("train", "evaluate", "download"), _views_inputs, _register, _loader("catsdogs.registry", "load_card"),
                _register_place)
PIPELINE = (DOWNLOAD, EXTRACT, SUBSETS, DATASETS, TRAIN, EVALUATE, REGISTER)  # in the order they run
# A sweep's comparison of the runs it trained or reused: a folder of its own, made by the sweep flow.
SWEEP = Step("sweep", "sweeps", 3, ("catsdogs.sweep",))
STEPS = (*PIPELINE, SWEEP)
BY_NAME = {step.name: step for step in STEPS}


# ---------------------------------------------------------------- code fingerprints


def code_fingerprint(modules: tuple[str, ...]) -> str:
    """A hash of what the MODULES' code does: their syntax trees without docstrings, comments or layout."""
    parts = []
    for module in modules:
        spec = importlib.util.find_spec(module)
        assert spec and spec.origin, module
        parts.append(_canonical(ast.parse(Path(spec.origin).read_text())))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _canonical(node: Any) -> str:
    """NODE as text, the same on every Python version that parses it alike: empty and location fields left out."""
    if isinstance(node, list):
        return "[" + ",".join(_canonical(item) for item in node if not _is_docstring(item)) + "]"
    if not isinstance(node, ast.AST):
        return repr(node)
    fields = [f"{name}={_canonical(value)}" for name, value in ast.iter_fields(node)
              if value not in (None, []) and name not in ("ctx", "type_comment", "kind")]
    return f"{type(node).__name__}({','.join(fields)})"


def _is_docstring(node: Any) -> bool:
    return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str))


def fingerprints() -> dict[str, dict[str, Any]]:
    """Each step's version and code fingerprint, as the record keeps them."""
    return {step.name: {"version": step.version, "code": code_fingerprint(step.code)} for step in STEPS}


def recorded() -> dict[str, dict[str, Any]]:
    return json.loads(RECORD.read_text()) if RECORD.is_file() else {}


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit("usage: python -m catsdogs.steps --record   (after a change that does not change any step's output)")
    store.write_json_atomic(RECORD, fingerprints())
    print(f"recorded {RECORD}")  # noqa: T201  a developer's command, not the library's logging
