"""Download the data archive: streamed, resumable, verified, and never half-written under its final name."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import unquote, urlparse

import requests
from pydantic import BaseModel

from catsdogs import store
from catsdogs.settings import redact_url

log = logging.getLogger(__name__)

CHUNK = 1 << 16  # small reads: a broken connection loses at most this much of what arrived
PROGRESS_EVERY_S = 5.0
LOCAL_ARCHIVE_HINT = (
    "No network, or the server is down? Download the archive elsewhere and point catsdogs at it: "
    "--data-url file:///absolute/path/to/train.zip"
)


class DownloadError(RuntimeError):
    """The download failed for good: retrying will not help (404, checksum mismatch, missing file)."""


class TransientDownloadError(DownloadError):
    """The download failed in a way that a retry may fix (connection, timeout, 429, 5xx)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class Archive(BaseModel):
    """A complete, verified archive on disk."""

    path: Path
    sha256: str
    size: int


def sha256_of(path: Path) -> str:
    """SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def download_archive(url: str, dest: Path, sha256: str | None = None, timeout_s: float = 60.0) -> Archive:
    """Fetch URL to DEST once, resuming a partial download left by an earlier attempt.

    Raises TransientDownloadError when a retry may help and DownloadError when it cannot.
    """
    dest = Path(dest)
    with store.locked(dest):
        return _download(url, dest, sha256, timeout_s)


def _download(url: str, dest: Path, sha256: str | None, timeout_s: float) -> Archive:
    if dest.is_file():
        actual = sha256_of(dest)
        if sha256 is None or actual == sha256:
            log.info("archive already downloaded: %s", dest)
            return Archive(path=dest, sha256=actual, size=dest.stat().st_size)
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".part")
    scheme = urlparse(url).scheme.lower()
    if scheme == "file":
        _copy_local(url, partial)
    elif scheme in ("http", "https"):
        _fetch_http(url, partial, timeout_s)
    else:
        raise DownloadError(f"unsupported URL scheme {scheme!r} in {redact_url(url)}; use http(s):// or file://")
    actual = sha256_of(partial)
    if sha256 is not None and actual != sha256:
        partial.unlink(missing_ok=True)
        raise DownloadError(
            f"checksum mismatch for {redact_url(url)}: expected SHA-256 {sha256}, got {actual}; "
            "the file was deleted. Check --data-sha256 or the URL."
        )
    os.replace(partial, dest)
    size = dest.stat().st_size
    log.info("downloaded %s (%s bytes, sha256 %s)", dest.name, f"{size:,}", actual)
    return Archive(path=dest, sha256=actual, size=size)


def _copy_local(url: str, partial: Path) -> None:
    source = Path(unquote(urlparse(url).path))
    if not source.is_file():
        raise DownloadError(f"local archive {source} does not exist; check --data-url (file:///absolute/path)")
    try:
        with open(source, "rb") as src, open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst, CHUNK)
    except OSError as err:
        partial.unlink(missing_ok=True)
        raise DownloadError(f"could not copy {source} into the working directory: {err}") from err


def _fetch_http(url: str, partial: Path, timeout_s: float) -> None:
    shown = redact_url(url)
    offset = partial.stat().st_size if partial.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        response = requests.get(url, stream=True, timeout=timeout_s, headers=headers)
    except (requests.ConnectionError, requests.Timeout) as err:
        raise TransientDownloadError(f"could not reach {shown}: {type(err).__name__}. {LOCAL_ARCHIVE_HINT}") from None
    with response:
        status = response.status_code
        if status == 416 and offset:
            # The partial file is not a prefix the server recognises: start over on the next attempt.
            partial.unlink()
            raise TransientDownloadError(f"{shown} refused to resume at byte {offset}; restarting")
        if status == 429 or status >= 500:
            raise TransientDownloadError(
                f"{shown} answered HTTP {status}; will retry", retry_after=_retry_after(response)
            )
        if status >= 400:
            raise DownloadError(f"{shown} answered HTTP {status} {response.reason}; check --data-url")
        if status == 206 and offset:
            mode = "ab"
            log.info("resuming download of %s at byte %s", shown, f"{offset:,}")
        else:
            mode, offset = "wb", 0  # server ignored Range: restart cleanly
        total = _total_size(response, offset)
        _stream_to(response, partial, mode, offset, total, shown)


def _stream_to(response: requests.Response, partial: Path, mode: str, offset: int, total: int | None,
               shown: str) -> None:
    done, started, last_log = offset, time.monotonic(), time.monotonic()
    try:
        with open(partial, mode) as handle:
            for chunk in response.iter_content(CHUNK):
                handle.write(chunk)
                done += len(chunk)
                if time.monotonic() - last_log >= PROGRESS_EVERY_S:
                    last_log = time.monotonic()
                    _log_progress(done, offset, total, started)
    except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as err:
        raise TransientDownloadError(
            f"connection to {shown} broke after {done:,} bytes ({type(err).__name__}); will resume"
        ) from None
    except OSError as err:
        partial.unlink(missing_ok=True)
        raise DownloadError(f"could not write {partial}: {err}; free some disk space or choose --workdir") from err
    if total is not None and done != total:
        raise TransientDownloadError(f"{shown} sent {done:,} of {total:,} bytes; will resume")
    _log_progress(done, offset, total, started)


def _log_progress(done: int, offset: int, total: int | None, started: float) -> None:
    rate = (done - offset) / max(time.monotonic() - started, 1e-6) / 1e6
    of_total = f" of {total:,} ({100 * done / total:.0f}%)" if total else ""
    log.info("downloaded %s bytes%s at %.1f MB/s", f"{done:,}", of_total, rate)


def _total_size(response: requests.Response, offset: int) -> int | None:
    length = response.headers.get("Content-Length")
    return offset + int(length) if length and length.isdigit() else None


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
