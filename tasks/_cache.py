"""One cache: a step's folder, complete once its marker is written; Prefect's cache key is read off it.

The library builds each step's folder once and marks it complete (catsdogs.store). Prefect only names what
the folder holds: a complete folder's key is a hash of its marker and of where the folder is; a folder that
is missing or incomplete has no key, so the step runs. The cache record holds the step's name and folder as
JSON, and a cache hit reads the result back with the step's own loader: no pickled class, so a changed class
never breaks a cached run, and a deleted, unfinished or moved folder is never answered from the cache.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect.results import get_result_store
from prefect.serializers import Serializer
from pydantic import Field

from catsdogs import store
from catsdogs.steps import BY_NAME, Step

KEY_PREFIX = "catsdogs-step"  # earlier catsdogs kept pickled results under "catsdogs-...": never read again


def folder_key(folder: Path) -> str | None:
    """The cache key of a step's folder: None until it is complete."""
    folder = Path(folder)
    if not store.is_complete(folder):
        return None
    marker = hashlib.sha256((folder / store.MARKER).read_bytes()).hexdigest()[:16]
    return f"{KEY_PREFIX}-{folder.parent.name}-{folder.name}-{marker}@{store.digest(str(folder.resolve()))}"


@dataclass(frozen=True)
class StepFolder:
    """What a cache record keeps of a step's result: the step and the folder its loader reads."""

    step: str
    folder: Path


class StepFolderSerializer(Serializer):  # type: ignore[type-arg]
    """Writes a StepFolder as JSON; reads it back as the step's result, loaded from its folder."""

    type: str = Field(default="catsdogs-step-folder", frozen=True)

    def dumps(self, obj: Any) -> bytes:
        return json.dumps({"step": obj.step, "folder": str(obj.folder)}).encode()

    def loads(self, blob: bytes) -> Any:
        record = json.loads(blob)
        return BY_NAME[record["step"]].load(Path(record["folder"]))  # type: ignore[misc]


def remember_result(step: Step, folder: Path) -> None:
    """Keep STEP's now complete FOLDER under its key, so that the next run takes the result from Prefect's cache."""
    if (key := folder_key(folder)) is not None:
        results = get_result_store().model_copy(update={"serializer": StepFolderSerializer()})
        if not results.exists(key):
            results.persist_result_record(results.create_result_record(StepFolder(step.name, Path(folder)), key=key))
    if not (Path(folder) / PRODUCER_FILE).exists():  # the first run to finish the folder produced it
        remember_producer(folder)


PRODUCER_FILE = "_PRODUCED_BY.json"


def remember_producer(folder: Path) -> None:
    """Record which flow run produced FOLDER, so that a later run that reuses it can say where it came from."""
    from datetime import UTC, datetime

    from prefect.runtime import flow_run

    store.write_json_atomic(Path(folder) / PRODUCER_FILE, {
        "flow_run_id": str(flow_run.id or ""), "flow_run_name": flow_run.name or "",
        "at": datetime.now(UTC).isoformat(timespec="seconds")})


def reused_from(folder: Path) -> str | None:
    """'run NAME (ID) of DATE' when an earlier flow run produced FOLDER, None when this one did."""
    from prefect.runtime import flow_run

    found = producer(folder)
    if not found:
        return "an earlier run" if store.is_complete(folder) else None
    if found.get("flow_run_id") == str(flow_run.id or ""):
        return None
    return f"run {found.get('flow_run_name')} ({found.get('flow_run_id')}) of {found.get('at')}"


def producer(folder: Path) -> dict[str, str]:
    """The flow run that produced FOLDER: its flow_run_id and flow_run_name (empty when unknown)."""
    try:
        return dict(json.loads((Path(folder) / PRODUCER_FILE).read_text()))
    except (OSError, ValueError, TypeError):  # missing, or not the JSON object remember_producer writes
        return {}
