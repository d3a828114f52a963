"""The working directory: one folder per step and inputs, trusted only once marked complete.

Every step writes into ``WORKDIR/STEP/DIGEST`` where DIGEST hashes the step's inputs. The marker file
``_COMPLETE.json`` is written last (write-then-rename), so a folder without it is never taken as a result,
by this library or by the Prefect cache.
"""

from __future__ import annotations

import errno
import fcntl
import glob
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
MARKER = "_COMPLETE.json"


def digest(value: Any, version: int = 3) -> str:
    """A short, stable hash of JSON-able values (paths and pydantic models included) and a VERSION (each step's
    own, catsdogs.steps; 3 was the one version of every key before steps had their own)."""

    def default(obj: Any) -> Any:
        if hasattr(obj, "model_dump"):
            return obj.model_dump(mode="json")
        return str(obj)

    text = json.dumps([version, value], sort_keys=True, default=default)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def step_dir(workdir: Path, step: str, inputs: dict[str, Any], version: int) -> Path:
    """The folder that holds the outputs of STEP (at its VERSION) for these inputs (catsdogs.steps declares them).

    Paths inside WORKDIR count relative to it, so a workdir moved or copied elsewhere keeps its folders.
    """
    return Path(workdir).resolve() / step / digest(workdir_relative(workdir, inputs), version)


def _relative_to(root: Path, value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _relative_to(root, item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_relative_to(root, item) for item in value]
    if isinstance(value, Path) and value.is_absolute() and value.is_relative_to(root):
        return f"WORKDIR/{value.relative_to(root).as_posix()}"
    return value


def is_complete(folder: Path) -> bool:
    """True when the folder's outputs were all written and are still what was written."""
    return (Path(folder) / MARKER).is_file() and damage(folder) is None


def read_marker(folder: Path) -> dict[str, Any]:
    """What the step recorded when it completed (its result), without the records of its files and lineage."""
    recorded = json.loads((Path(folder) / MARKER).read_text())
    recorded.pop(FILES, None)
    recorded.pop(LINEAGE, None)
    return recorded


def read_lineage(folder: Path) -> dict[str, Any]:
    """Which step made FOLDER, at which version, from which inputs (the folders of the steps before it among
    them, relative to the workdir as WORKDIR/...); empty for a folder made before markers recorded it."""
    return dict(json.loads((Path(folder) / MARKER).read_text()).get(LINEAGE) or {})


FILES = "_files"  # the marker's record of the step's own files: name -> size (and sha256, where cheap)
LINEAGE = "_lineage"  # the marker's record of the step, its version and its inputs (catsdogs.steps)
_lineage: ContextVar[dict[str, Any] | None] = ContextVar("catsdogs_lineage", default=None)


@contextmanager
def recording_lineage(lineage: dict[str, Any]) -> Iterator[None]:
    """Markers completed in this block (by this thread or task) record LINEAGE: catsdogs.steps makes each
    step's folder inside one, so that the library functions it calls need not carry it."""
    token = _lineage.set(lineage)
    try:
        yield
    finally:
        _lineage.reset(token)


def workdir_relative(root: Path, value: Any) -> Any:
    """VALUE with the paths inside ROOT written WORKDIR/..., so that a workdir moved elsewhere keeps its keys."""
    return _relative_to(Path(root).resolve(), value)


HASHED_UP_TO = 1 << 20  # bytes: files up to this size are hashed too (JSON, cards), the rest only sized


def _file_record(path: Path) -> dict[str, Any]:
    size = path.stat().st_size
    return {"size": size} | ({"sha256": file_sha256(path)} if size <= HASHED_UP_TO else {})


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in chunks."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def damage(folder: Path) -> str | None:
    """Why a complete FOLDER can no longer be trusted (a file it recorded is missing, of another size or changed;
    its marker unreadable), or None. Markers written before files were recorded are trusted as they are."""
    folder = Path(folder)
    try:
        recorded = json.loads((folder / MARKER).read_text()).get(FILES) or {}
    except (OSError, ValueError, AttributeError):
        return f"its marker {MARKER} is unreadable"
    for name, record in recorded.items():
        path = folder / name
        if not path.is_file():
            return f"its file {name} is missing"
        size = path.stat().st_size
        if size != record.get("size"):
            return f"its file {name} is {size:,} bytes where {record.get('size', 0):,} were written"
        if "sha256" in record and file_sha256(path) != record["sha256"]:
            return f"its file {name} has changed since it was written"
    return None


class DiskFullError(OSError):
    """A step could not write its files: the disk (or the user's quota) is full."""


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full_cause(error: BaseException | None) -> OSError | None:
    """The OSError for a full disk or quota in ERROR or what caused it (Keras and h5py wrap it), if any."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and (error.errno in DISK_FULL or "No space left on device" in str(error)):
            return error
        error = error.__cause__ or error.__context__
    return None


def run_once(folder: Path, build: Callable[[], T], load: Callable[[dict[str, Any]], T]) -> T:
    """The step's result: loaded from FOLDER when complete, else built there under the step's lock.

    A full disk while it builds is one DiskFullError naming the folder and the fix; what it half wrote is
    never marked complete, so the next run, with space freed, builds it again (or resumes it)."""
    with locked(folder):
        if (Path(folder) / MARKER).is_file():
            problem = damage(folder)
            if problem is None:
                return load(read_marker(folder))
            log.warning("%s was complete, but %s (cut short, edited or deleted?); it is built again",
                        folder, problem)
            (Path(folder) / MARKER).unlink()
        remove_stale_temporaries(folder)
        try:
            return build()
        except Exception as err:
            full = disk_full_cause(err)
            if full is None or isinstance(err, DiskFullError):
                raise
            where = f" writing {full.filename}" if full.filename else ""
            raise DiskFullError(full.errno or errno.ENOSPC,
                                f"no space left on the disk of {folder}{where}; free some space or choose "
                                "another --workdir, then run again: finished steps are kept") from None


# The names this module and train.py give files while they are being written: ".NAME.XXXX.tmp" (write_bytes_atomic),
# ".STEM.partial.XXXX.SUFFIX" (atomic_path) and ".STEM.partial.SUFFIX" (checkpoints and weights).
_TEMPORARY_NAMES = (".*.tmp", ".*.partial.*", ".*.partial")


def remove_stale_temporaries(folder: Path) -> None:
    """Delete what an interrupted attempt at FOLDER left beside it and inside it; call while holding FOLDER's lock.

    A temporary file is promoted only by the write that made it, in the same process, right after it finished;
    one found on the next run is a fragment (a kill or a full disk mid-write): deleted with a warning, never used.
    """
    folder = Path(folder)
    if not folder.parent.is_dir():
        return
    for leftover in folder.parent.glob(f".{glob.escape(folder.name)}.*"):
        if leftover.is_dir() and leftover.suffix in (".tmp", ".stale"):
            shutil.rmtree(leftover, ignore_errors=True)
    if folder.is_dir():
        for path in sorted({p for pattern in _TEMPORARY_NAMES for p in folder.rglob(pattern) if p.is_file()}):
            log.warning("discarding %s: a temporary file left by an interrupted write, never a result", path)
            path.unlink(missing_ok=True)


def mark_complete(folder: Path, info: dict[str, Any], unchecked: tuple[str, ...] = ()) -> None:
    """Record that every output in FOLDER is written, with the size (and, where cheap, the hash) of each of its
    files but the UNCHECKED ones, so that a file changed later is noticed (see damage); done last."""
    folder = Path(folder)
    files = {path.name: _file_record(path) for path in sorted(folder.iterdir())
             if path.is_file() and not path.name.startswith(".") and path.name != MARKER
             and path.name not in unchecked}
    lineage = {LINEAGE: recorded} if (recorded := _lineage.get()) else {}
    write_json_atomic(folder / MARKER, info | {FILES: files} | lineage)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary name beside PATH, then rename: readers see the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide results from other users of a shared machine
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, value: Any) -> None:
    """JSON version of write_bytes_atomic."""
    write_bytes_atomic(path, (json.dumps(value, indent=2, sort_keys=True, default=str) + "\n").encode())


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside PATH for a writer that needs a file name; renamed on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.partial.", suffix=path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


@contextmanager
def fresh_dir(folder: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside FOLDER; it replaces FOLDER only if the block succeeds.

    Incomplete leftovers of an earlier, interrupted attempt are moved aside first, never read.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
    os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide the results from other users
    try:
        yield tmp
        if folder.exists():
            stale = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".stale"))
            os.replace(folder, stale / folder.name)
            shutil.rmtree(stale, ignore_errors=True)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on FOLDER's step: a second process waits, then finds the folder complete.

    The lock is an flock on a file beside the folder, released by the kernel if the holder dies.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
