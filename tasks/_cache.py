"""Cache keys that hold only while a step's output folder is complete on disk.

Prefect's cache remembers a result, not the files behind it. So a step's key is stored inside its output
folder: while the folder is complete the same key comes back and Prefect returns the cached result; once the
folder is deleted or was left incomplete, a key never seen before makes the step run again.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect.transactions import get_transaction

from catsdogs import store

KEY_FILE = "_PREFECT_CACHE_KEY"


def cache_while_complete(output_dir: Callable[..., Path]) -> Callable[[Any, dict[str, Any]], str]:
    """A cache_key_fn: the key recorded in the complete output folder, else a fresh one.

    The key ends with a hash of where the folder is: Prefect's cached result holds absolute paths, so a
    workdir moved or copied elsewhere gets a new key, and the step loads its folder there instead.
    """

    def key(_context: Any, parameters: dict[str, Any]) -> str:
        folder = output_dir(**parameters)
        recorded = folder / KEY_FILE
        if store.is_complete(folder) and recorded.is_file():
            base = recorded.read_text().strip()
        else:
            base = f"catsdogs-{folder.parent.name}-{folder.name}-{uuid.uuid4().hex[:12]}"
        return f"{base}{AT}{store.digest(str(folder.resolve()))}"

    return key


AT = "@"  # between a step's recorded key and the hash of its folder's location


def remember_cache_key(folder: Path) -> None:
    """Record the running task's cache key (without its location part) in its finished output folder."""
    transaction = get_transaction()
    if transaction is not None and transaction.key:
        store.write_bytes_atomic(Path(folder) / KEY_FILE, transaction.key.split(AT)[0].encode())
    if not (Path(folder) / PRODUCER_FILE).exists():  # the first run to finish it produced it
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

    record = Path(folder) / PRODUCER_FILE
    if not record.is_file():
        return "an earlier run" if store.is_complete(folder) else None
    try:
        producer = json.loads(record.read_text())
    except ValueError:
        return "an earlier run"
    if producer.get("flow_run_id") == str(flow_run.id or ""):
        return None
    return f"run {producer.get('flow_run_name')} ({producer.get('flow_run_id')}) of {producer.get('at')}"
