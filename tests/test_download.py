import hashlib
import io
import os
import random
import time
import zipfile
from pathlib import Path

import pytest

from catsdogs.download import DownloadError, TransientDownloadError, download_archive


def zip_body(payload: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("train/cat.0.jpg", payload)
    return buffer.getvalue()


BODY = zip_body(random.Random(0).randbytes(1 << 20))  # a 1 MiB zip archive that gzip cannot shrink
SHA = hashlib.sha256(BODY).hexdigest()


def test_downloads_and_verifies(serve, tmp_path: Path):
    server = serve(BODY)
    archive = download_archive(server.url, tmp_path / "a.zip", sha256=SHA)
    assert archive.path.read_bytes() == BODY and archive.sha256 == SHA and archive.size == len(BODY)
    assert not (tmp_path / "a.zip.part").exists()


def test_dropped_connection_resumes_with_range(serve, tmp_path: Path):
    server = serve(BODY)
    server.behaviour.drop_after = [300_000]
    with pytest.raises(TransientDownloadError, match="a retry resumes there"):
        download_archive(server.url, tmp_path / "a.zip", sha256=SHA)
    assert not (tmp_path / "a.zip").exists(), "a partial file must never carry the final name"
    kept = (tmp_path / "a.zip.part").stat().st_size
    assert 200_000 < kept <= 300_000
    archive = download_archive(server.url, tmp_path / "a.zip", sha256=SHA)
    assert archive.sha256 == SHA
    assert server.behaviour.requests[-1]["Range"] == f"bytes={kept}-"


def test_server_ignoring_range_restarts_cleanly(serve, tmp_path: Path):
    server = serve(BODY)
    server.behaviour.drop_after = [100_000]
    server.behaviour.honour_range = False
    with pytest.raises(TransientDownloadError):
        download_archive(server.url, tmp_path / "a.zip")
    assert download_archive(server.url, tmp_path / "a.zip", sha256=SHA).sha256 == SHA


@pytest.mark.parametrize("status", [429, 500, 503])
def test_throttling_and_server_errors_are_transient(serve, tmp_path: Path, status):
    server = serve(BODY)
    server.behaviour.statuses = [status]
    server.behaviour.retry_after = "7"
    with pytest.raises(TransientDownloadError) as caught:
        download_archive(server.url, tmp_path / "a.zip")
    assert caught.value.retry_after == 7.0
    assert download_archive(server.url, tmp_path / "a.zip").sha256 == SHA


@pytest.mark.parametrize("status", [401, 403, 404])
def test_client_errors_fail_at_once(serve, tmp_path: Path, status):
    server = serve(BODY)
    server.behaviour.statuses = [status]
    with pytest.raises(DownloadError, match=f"HTTP {status}") as caught:
        download_archive(server.url, tmp_path / "a.zip")
    assert not isinstance(caught.value, TransientDownloadError)
    assert server.url in str(caught.value)


def test_stalled_server_hits_the_read_timeout(serve, tmp_path: Path):
    server = serve(BODY)
    server.behaviour.stall_after = [100_000]
    started = time.monotonic()
    with pytest.raises(TransientDownloadError, match="a retry resumes there"):
        download_archive(server.url, tmp_path / "a.zip", timeout_s=1)
    assert time.monotonic() - started < 4.5  # gave up on the silence, did not wait for the server
    assert download_archive(server.url, tmp_path / "a.zip", sha256=SHA).sha256 == SHA


def test_checksum_mismatch_deletes_the_file(serve, tmp_path: Path):
    server = serve(BODY)
    with pytest.raises(DownloadError, match="checksum mismatch") as caught:
        download_archive(server.url, tmp_path / "a.zip", sha256="0" * 64)
    assert not isinstance(caught.value, TransientDownloadError)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_unreachable_server_says_how_to_use_a_local_archive(tmp_path: Path):
    with pytest.raises(TransientDownloadError, match="--data-url file:///"):
        download_archive("http://127.0.0.1:9/train.zip", tmp_path / "a.zip", timeout_s=2)


def test_file_url(tmp_path: Path):
    source = tmp_path / "src.zip"
    source.write_bytes(BODY)
    archive = download_archive(source.as_uri(), tmp_path / "out" / "a.zip", sha256=SHA)
    assert archive.path.read_bytes() == BODY


def test_missing_local_file(tmp_path: Path):
    with pytest.raises(DownloadError, match="does not exist"):
        download_archive((tmp_path / "nope.zip").as_uri(), tmp_path / "a.zip")


def test_credentials_never_appear_in_errors(serve, tmp_path: Path):
    server = serve(BODY)
    server.behaviour.statuses = [404]
    url = server.url.replace("http://", "http://alice:hunter2@") + "?token=s3cret"
    with pytest.raises(DownloadError) as caught:
        download_archive(url, tmp_path / "a.zip")
    assert "hunter2" not in str(caught.value) and "s3cret" not in str(caught.value)


# ---------------------------------------------------------------- what is cached must be the archive


def test_gzip_content_encoding_completes_with_the_archive_itself(serve, tmp_path: Path):
    server = serve(BODY)
    server.behaviour.gzip = True
    assert download_archive(server.url, tmp_path / "a.zip", sha256=SHA).path.read_bytes() == BODY
    assert server.behaviour.requests[0]["Accept-Encoding"] == "identity"


def test_gzip_body_cut_short_restarts_instead_of_appending(serve, tmp_path: Path):
    server = serve(BODY)
    server.behaviour.gzip = True
    server.behaviour.drop_after = [50_000]
    with pytest.raises(TransientDownloadError):
        download_archive(server.url, tmp_path / "a.zip")
    assert not (tmp_path / "a.zip.part").exists()  # encoded bytes cannot be resumed by range
    assert download_archive(server.url, tmp_path / "a.zip", sha256=SHA).sha256 == SHA
    assert "Range" not in server.behaviour.requests[-1]


def test_a_206_starting_elsewhere_is_not_appended(serve, tmp_path: Path):
    server = serve(BODY)
    server.behaviour.drop_after = [300_000]
    server.behaviour.range_shift = 1000  # the resumed part starts 1000 bytes early
    with pytest.raises(TransientDownloadError):
        download_archive(server.url, tmp_path / "a.zip")
    with pytest.raises(TransientDownloadError, match="starting at byte"):
        download_archive(server.url, tmp_path / "a.zip")
    assert not (tmp_path / "a.zip.part").exists()
    assert download_archive(server.url, tmp_path / "a.zip", sha256=SHA).sha256 == SHA  # from byte 0


def test_body_without_length_cut_short_is_not_cached(serve, tmp_path: Path):
    server = serve(BODY)
    server.behaviour.no_length = True
    server.behaviour.drop_after = [300_000]
    with pytest.raises(TransientDownloadError, match="not a complete zip archive"):
        download_archive(server.url, tmp_path / "a.zip")
    assert not (tmp_path / "a.zip").exists() and not (tmp_path / "a.zip.part").exists()
    assert download_archive(server.url, tmp_path / "a.zip").sha256 == SHA


@pytest.mark.parametrize("page", [b"<!DOCTYPE html><html><body>Sign in</body></html>", b"<html>gone</html>"])
def test_a_web_page_is_not_cached_as_the_archive(serve, tmp_path: Path, page: bytes):
    server = serve(page)
    with pytest.raises(DownloadError, match="web page") as caught:
        download_archive(server.url, tmp_path / "a.zip")
    assert not isinstance(caught.value, TransientDownloadError)
    assert not (tmp_path / "a.zip").exists() and not (tmp_path / "a.zip.part").exists()


def test_redirect_loop_is_one_clear_error(serve, tmp_path: Path):
    server = serve(BODY)
    server.behaviour.redirect_loop = True
    url = server.url.replace("http://", "http://alice:hunter2@")
    with pytest.raises(DownloadError, match="redirects in a loop") as caught:
        download_archive(url, tmp_path / "a.zip")
    assert "hunter2" not in str(caught.value) and not isinstance(caught.value, TransientDownloadError)


@pytest.mark.parametrize("url", [
    "http://alice:hunter2@127.0.0.1:99999/train.zip?token=s3cret",  # invalid port
    "http://alice:hunter2@[::1/train.zip?token=s3cret",  # invalid host
    "http://alice:hun@ter2@127.0.0.1:9/x?token=s3cret#frag-s3cret",  # an @ in the password, not encoded
])
def test_malformed_urls_fail_clearly_without_their_secrets(tmp_path: Path, url: str):
    with pytest.raises(DownloadError) as caught:
        download_archive(url, tmp_path / "a.zip", timeout_s=2)
    message = str(caught.value)
    assert "hunter2" not in message and "s3cret" not in message and "ter2" not in message
    assert caught.value.__cause__ is None and caught.value.__context__ is None  # nothing chained keeps them


def test_a_changed_file_source_is_a_new_download(tmp_path: Path):
    from catsdogs.settings import Settings
    from catsdogs.steps import DOWNLOAD

    source = tmp_path / "src.zip"
    source.write_bytes(BODY)
    settings = Settings(data_url=source.as_uri(), workdir=tmp_path / "w")
    before = DOWNLOAD.folder_for(settings)
    assert DOWNLOAD.folder_for(settings) == before
    source.write_bytes(zip_body(b"other images"))
    os.utime(source, ns=(1, 1))
    assert DOWNLOAD.folder_for(settings) != before


def test_the_test_server_prints_no_traceback_for_a_client_that_hung_up_and_does_for_other_errors(capsys):
    """The fault tests hang up on the test server on purpose; CI's log showed each as a socketserver traceback."""
    from tests.conftest import ArchiveServer

    server = ArchiveServer(b"body")
    for error in (ConnectionResetError(104, "Connection reset by peer"), BrokenPipeError(32, "Broken pipe"),
                  ValueError("a handler's own mistake")):
        try:
            raise error
        except Exception:  # noqa: BLE001  as socketserver calls handle_error: inside the handler's except
            server.httpd.handle_error(None, ("127.0.0.1", 1))
    server.httpd.server_close()
    printed = capsys.readouterr().err
    assert printed.count("Exception occurred during processing of request") == 1 and "ValueError" in printed
    assert "ConnectionResetError" not in printed and "BrokenPipeError" not in printed
