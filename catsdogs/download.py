"""Download the data archive: streamed, resumable, verified, and never half-written under its final name."""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
import zipfile
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


def download_into(folder: Path, url: str, sha256: str | None = None, timeout_s: float = 60.0) -> Archive:
    """The download step: URL's archive in FOLDER, fetched (or resumed) once and then marked complete."""
    folder = Path(folder)

    def fetch() -> Archive:
        archive = download_archive(url, folder / ARCHIVE_FILE, sha256, timeout_s)
        store.mark_complete(folder, archive.model_dump(mode="json"))
        return archive

    return store.run_once(folder, fetch, lambda _: load_archive(folder))


def load_archive(folder: Path) -> Archive:
    """The archive recorded in the complete download FOLDER, wherever the workdir is now."""
    return Archive.model_validate(store.read_marker(folder) | {"path": Path(folder) / ARCHIVE_FILE})


ARCHIVE_FILE = "archive.zip"  # its name in the download step's folder


def url_scheme(url: str) -> str:
    """The URL's scheme, lower case; read without urlparse, which raises on malformed hosts."""
    match = re.match(r"([A-Za-z][A-Za-z0-9+.-]*):", url)
    return match[1].lower() if match else ""


def source_version(url: str) -> dict[str, int] | None:
    """For a file:// URL, the source's size and modification time: a changed source is a new download."""
    if url_scheme(url) != "file":
        return None
    try:
        info = Path(unquote(urlparse(url).path)).stat()
    except (OSError, ValueError):
        return None  # the download step names the problem
    return {"size": info.st_size, "mtime_ns": info.st_mtime_ns}


def download_archive(url: str, dest: Path, sha256: str | None = None, timeout_s: float = 60.0) -> Archive:
    """Fetch URL to DEST once, resuming a partial download left by an earlier attempt.

    Raises TransientDownloadError when a retry may help and DownloadError when it cannot.
    """
    dest = Path(dest)
    with store.locked(dest):
        return _download(url, dest, sha256, timeout_s)


def _download(url: str, dest: Path, sha256: str | None, timeout_s: float) -> Archive:
    if dest.is_file():
        actual = store.file_sha256(dest)
        if sha256 is None or actual == sha256:
            log.info("archive already downloaded: %s", dest)
            return Archive(path=dest, sha256=actual, size=dest.stat().st_size)
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".part")
    scheme = url_scheme(url)
    if sha256 is not None and (earlier := _verified_earlier_copy(dest, sha256)) is not None:
        log.info("archive with sha256 %s already downloaded in %s: taken from there", sha256, earlier.parent)
        _link_or_copy(earlier, partial)
    elif scheme == "file":
        _copy_local(url, partial)
    elif scheme in ("http", "https"):
        _fetch_http(url, partial, timeout_s)
    else:
        raise DownloadError(f"unsupported URL scheme {scheme!r} in {redact_url(url)}; use http(s):// or file://")
    _check_is_zip(partial, url)
    actual = store.file_sha256(partial)
    if sha256 is not None and actual != sha256:
        partial.unlink(missing_ok=True)
        raise DownloadError(
            f"checksum mismatch for {redact_url(url)}: expected SHA-256 {sha256}, got {actual}; "
            "the working directory's copy was discarded. Check --data-sha256 or the URL."
        )
    os.replace(partial, dest)
    size = dest.stat().st_size
    log.info("downloaded %s (%s bytes, sha256 %s)", dest.name, f"{size:,}", actual)
    return Archive(path=dest, sha256=actual, size=size)


def _verified_earlier_copy(dest: Path, sha256: str) -> Path | None:
    """The same archive in another complete download folder beside DEST's (keyed by URL, before a given SHA-256
    keyed it), so that an upgrade or a changed signed URL never downloads it again."""
    for folder in sorted(dest.parent.parent.glob("*/")):
        earlier = folder / dest.name
        if folder != dest.parent and earlier.is_file() and store.is_complete(folder):
            try:
                if store.read_marker(folder).get("sha256") == sha256:
                    return earlier
            except (OSError, ValueError):
                continue
    return None


def _link_or_copy(source: Path, target: Path) -> None:
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)  # no second copy of a 786 MB file where the disk allows it
    except OSError:
        shutil.copyfile(source, target)


def _check_is_zip(partial: Path, url: str) -> None:
    """Keep only what unzips: an HTML error page or a body cut short must never be cached as the archive."""
    try:
        with zipfile.ZipFile(partial) as archive:
            archive.infolist()
        return
    except (zipfile.BadZipFile, OSError, EOFError):
        pass
    with open(partial, "rb") as handle:
        start = handle.read(512).lstrip().lower()
    size = partial.stat().st_size
    partial.unlink(missing_ok=True)
    if url_scheme(url) == "file":  # a local file is what it is: fetching it again cannot help
        raise DownloadError(f"local archive {redact_url(url)} is not a complete zip archive ({size:,} bytes; cut "
                            "short?); check --data-url, or download the archive again")
    if start.startswith((b"<!doctype html", b"<html", b"<?xml", b"{")):
        raise DownloadError(f"{redact_url(url)} sent a web page or a message ({size:,} bytes), not a zip archive; "
                            "check --data-url (a login page? an expired link?)")
    raise TransientDownloadError(f"{redact_url(url)} sent {size:,} bytes that are not a complete zip archive "
                                 "(cut short?); that copy was discarded and the archive will be fetched again")


def local_source_problem(url: str) -> str | None:
    """Why a file:// URL names no archive to copy (a missing file, a folder, a host where the path should be);
    None for a file that is there, and for other schemes."""
    if url_scheme(url) != "file":
        return None
    try:
        parsed = urlparse(url)
        source = Path(unquote(parsed.path))
    except ValueError:
        return f"{redact_url(url)} is not a valid file:// URL; use file:///absolute/path/train.zip"
    if parsed.netloc not in ("", "localhost"):  # file://data/train.zip: "data" is read as a host
        return (f"{redact_url(url)} names a host ({parsed.netloc}) where the path should begin; a file:// URL "
                "takes three slashes and an absolute path: file:///absolute/path/train.zip")
    if source.is_dir():
        return f"local archive {source} is a folder; give the path of the zip archive in it"
    if not source.is_file():
        return f"local archive {source} does not exist; check --data-url (file:///absolute/path)"
    return None


def _copy_local(url: str, partial: Path) -> None:
    if problem := local_source_problem(url):
        raise DownloadError(problem)
    source = Path(unquote(urlparse(url).path))
    try:
        with open(source, "rb") as src, open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst, CHUNK)
    except OSError as err:
        partial.unlink(missing_ok=True)
        raise DownloadError(f"could not copy {source} into the working directory: {err}") from err


def _fetch_http(url: str, partial: Path, timeout_s: float) -> None:
    shown = redact_url(url)
    offset = partial.stat().st_size if partial.exists() else 0
    # identity: a compressed body would not match Content-Length, and Range counts bytes of the file itself
    headers = {"Accept-Encoding": "identity"} | ({"Range": f"bytes={offset}-"} if offset else {})
    # requests' own messages repeat the URL, credentials and all: only the error's type is shown, and the error
    # is raised outside the except block so that not even its __context__ keeps requests' message.
    failure: DownloadError | None = None
    try:
        response = requests.get(url, stream=True, timeout=timeout_s, headers=headers)
    except requests.TooManyRedirects:
        failure = DownloadError(f"{shown} redirects in a loop (more than 30 redirects); check --data-url")
    except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema,
            requests.exceptions.InvalidHeader, ValueError, UnicodeError) as err:
        failure = DownloadError(f"{shown} is not a valid URL ({type(err).__name__}); check --data-url")
    except requests.RequestException as err:
        failure = TransientDownloadError(f"could not reach {shown}: {type(err).__name__}. {LOCAL_ARCHIVE_HINT}")
    if failure is not None:
        raise failure
    with response:
        status = response.status_code
        if status == 416 and offset:
            # The partial file is not a prefix the server recognises: start over on the next attempt.
            partial.unlink()
            raise TransientDownloadError(f"{shown} refused to resume at byte {offset}; the partial file is discarded, "
                                         "so a retry starts from the beginning")
        if status == 429 or status >= 500:
            raise TransientDownloadError(
                f"{shown} answered HTTP {status}", retry_after=_retry_after(response)
            )
        if status >= 400:
            raise DownloadError(f"{shown} answered HTTP {status} {response.reason}; check --data-url")
        encoded = response.headers.get("Content-Encoding", "identity").lower() not in ("", "identity")
        start = _range_start(response) if status == 206 else 0
        if status == 206 and offset and start == offset and not encoded:
            mode = "ab"
            log.info("resuming download of %s at byte %s", shown, f"{offset:,}")
        elif start:  # a part that does not start where asked (or at 0) cannot be appended
            partial.unlink(missing_ok=True)
            raise TransientDownloadError(f"{shown} answered a range starting at byte {start:,} where {offset:,} "
                                         "was asked; the partial file is discarded, so a retry starts from the "
                                         "beginning")
        else:
            mode, offset = "wb", 0  # server ignored Range: restart cleanly
        # With a Content-Encoding (gzip despite identity asked), Content-Length counts encoded bytes.
        total = None if encoded else _total_size(response, offset)
        try:
            _stream_to(response, partial, mode, offset, total, shown)
        except TransientDownloadError:
            if encoded:  # an encoded body cannot be resumed by byte ranges
                partial.unlink(missing_ok=True)
            raise


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
            f"connection to {shown} broke after {done:,} bytes ({type(err).__name__}); a retry resumes there"
        ) from None
    except OSError as err:
        partial.unlink(missing_ok=True)
        raise DownloadError(f"could not write {partial}: {err}; free some disk space or choose --workdir") from err
    if total is not None and done != total:
        raise TransientDownloadError(f"{shown} sent {done:,} of {total:,} bytes; a retry resumes there")
    _log_progress(done, offset, total, started)


def _log_progress(done: int, offset: int, total: int | None, started: float) -> None:
    rate = (done - offset) / max(time.monotonic() - started, 1e-6) / 1e6
    of_total = f" of {total:,} ({100 * done / total:.0f}%)" if total else ""
    log.info("downloaded %s bytes%s at %.1f MB/s", f"{done:,}", of_total, rate)


def _range_start(response: requests.Response) -> int:
    """The first byte a 206 answer holds, from its Content-Range (bytes START-END/TOTAL); -1 if unreadable."""
    match = re.match(r"\s*bytes\s+(\d+)-\d+/", response.headers.get("Content-Range", ""))
    return int(match[1]) if match else -1


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
