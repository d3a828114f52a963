"""One cache: a step's folder, complete once its marker is written; Prefect only shows it.

The library builds each step's folder once and marks it complete (catsdogs.store). A step whose folder is
complete when its task starts is read back from there by the step's own loader, and its task ends Cached; one
whose folder is missing, unfinished or damaged runs. Prefect keeps no result of its own (no pickled object to
outgrow its class): a deleted, unfinished or moved folder is never answered from a record. Beside the marker,
each folder names the flow run that produced it, so a run that reuses it can say where it came from.
"""

from __future__ import annotations

import json
from pathlib import Path

from catsdogs import store

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
