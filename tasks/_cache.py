"""One cache: a step's folder, complete once its marker is written; Prefect's cache key is read off it.

The library builds each step's folder once and marks it complete (catsdogs.store). Prefect only names what
the folder holds: a complete folder's key is a hash of its marker and of where the folder is; a folder that
is missing or incomplete has no key, so the step runs. Nothing else is stored to make the two agree: a
deleted, unfinished or moved folder is never answered from the cache, and a complete one shows as Cached.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from prefect.results import get_result_store

from catsdogs import store

T = TypeVar("T")


def folder_key(folder: Path) -> str | None:
    """The cache key of a step's folder: None until it is complete."""
    folder = Path(folder)
    if not store.is_complete(folder):
        return None
    marker = hashlib.sha256((folder / store.MARKER).read_bytes()).hexdigest()[:16]
    return f"catsdogs-{folder.parent.name}-{folder.name}-{marker}@{store.digest(str(folder.resolve()))}"


def cache_while_complete(output_dir: Callable[..., Path]) -> Callable[[Any, dict[str, Any]], str | None]:
    """A cache_key_fn: the key of the step's output folder (None, so no caching, until it is complete)."""

    def key(_context: Any, parameters: dict[str, Any]) -> str | None:
        return folder_key(output_dir(**parameters))

    return key


def remember_result(folder: Path, result: T) -> T:
    """Keep RESULT under the key of its now complete FOLDER, so the next run takes it from Prefect's cache."""
    if (key := folder_key(folder)) is not None:
        results = get_result_store()
        if not results.exists(key):
            results.persist_result_record(results.create_result_record(result, key=key))
    if not (Path(folder) / PRODUCER_FILE).exists():  # the first run to finish the folder produced it
        remember_producer(folder)
    return result


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
