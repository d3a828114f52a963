"""The pipeline's steps, each declared once: its name, its version, the code that makes its output, and the
folder its inputs key (``WORKDIR/NAME/DIGEST``).

A step's folder key hashes its version and its inputs, and the inputs of every step after the first name the
folder of the step before: so a new version of one step makes that step and every later one again, and never
an earlier one. A changed augmentation retrains; it does not download again.

When you change the code a step runs (its CODE modules), bump its version here, or, where outputs cannot
change (a log line, a rename), record the code as it is: ``python -m catsdogs.steps --record``.
tests/test_steps.py fails until one of the two is done. ``catsdogs/step_versions.json`` holds the record.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from catsdogs import store

if TYPE_CHECKING:
    from catsdogs.data import Subsets
    from catsdogs.datasets import DatasetArrays
    from catsdogs.download import Archive
    from catsdogs.results import TrainedModel
    from catsdogs.settings import Settings

RECORD = Path(__file__).with_name("step_versions.json")


@dataclass(frozen=True)
class Step:
    """One step of the pipeline: where its results live and what makes them."""

    name: str  # the workdir folder of its results, and its task's name
    version: int  # part of its folder key: bump it when what the step makes changes
    code: tuple[str, ...]  # the modules whose code makes its output

    def folder(self, workdir: Path, inputs: dict[str, Any]) -> Path:
        """The folder that holds this step's results for INPUTS."""
        return store.step_dir(workdir, self.name, inputs, self.version)


# Version 3 is the one every step had when one global version keyed them all: workdirs keep their folders.
DOWNLOAD = Step("download", 3, ("catsdogs.download",))
EXTRACT = Step("extract", 3, ("catsdogs.data",))
SUBSETS = Step("subsets", 3, ("catsdogs.data", "catsdogs.images"))
DATASETS = Step("datasets", 3, ("catsdogs.datasets", "catsdogs.images"))
TRAIN = Step("runs", 3, ("catsdogs.train", "catsdogs.model", "catsdogs.variants", "catsdogs.results"))
# An evaluation lives in its run's folder, named for its views and, from version 2 on, its version.
EVALUATE = Step("evaluation", 1, ("catsdogs.train", "catsdogs.views", "catsdogs.results"))
SWEEP = Step("sweeps", 3, ("catsdogs.sweep",))  # a sweep's comparison of the runs it trained or reused
STEPS = (DOWNLOAD, EXTRACT, SUBSETS, DATASETS, TRAIN, EVALUATE, SWEEP)


def download_folder(settings: Settings) -> Path:
    """Keyed by the archive's SHA-256 where it is given (a signed URL whose token changes is the same archive),
    else by its URL (and, for a file:// URL, the file's size and time: a changed file is copied again)."""
    from catsdogs.download import source_version

    if settings.data_sha256:
        return DOWNLOAD.folder(settings.workdir, {"sha256": settings.data_sha256})
    inputs: dict[str, Any] = {"url": settings.data_url, "sha256": None}
    if version := source_version(settings.data_url):
        inputs["source"] = version
    return DOWNLOAD.folder(settings.workdir, inputs)


def extract_folder(archive: Archive, settings: Settings) -> Path:
    return EXTRACT.folder(settings.workdir, {"sha256": archive.sha256})


def subsets_folder(images: Path, settings: Settings) -> Path:
    ranges = [settings.train_range, settings.validation_range, settings.test_range]
    return SUBSETS.folder(settings.workdir, {"images": images, "ranges": ranges})


def datasets_folder(subsets: Subsets, settings: Settings) -> Path:
    return DATASETS.folder(settings.workdir, {"subsets": subsets.root, "size": settings.image_size})


def run_folder(arrays: DatasetArrays, settings: Settings) -> Path:
    inputs = {"datasets": arrays.root, "variant": settings.variant, "epochs": settings.epochs_to_run,
              "batch_size": settings.batch_size, "seed": settings.seed}
    return TRAIN.folder(settings.workdir, inputs | settings.recipe_key())


def evaluation_folder(trained: TrainedModel, settings: Settings) -> Path:
    from catsdogs.views import views_name

    name = EVALUATE.name if EVALUATE.version == 1 else f"{EVALUATE.name}-v{EVALUATE.version}"
    return trained.run_dir / views_name(name, bool(settings.tta_flip), float(settings.tta_crop or 0.0))


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
