import hashlib
import time
from pathlib import Path

import pytest

from catsdogs.download import DownloadError, TransientDownloadError, download_archive

BODY = bytes(range(256)) * 4096  # 1 MiB
SHA = hashlib.sha256(BODY).hexdigest()


def test_downloads_and_verifies(serve, tmp_path: Path):
    server = serve(BODY)
    archive = download_archive(server.url, tmp_path / "a.zip", sha256=SHA)
    assert archive.path.read_bytes() == BODY and archive.sha256 == SHA and archive.size == len(BODY)
    assert not (tmp_path / "a.zip.part").exists()


def test_dropped_connection_resumes_with_range(serve, tmp_path: Path):
    server = serve(BODY)
    server.behaviour.drop_after = [300_000]
    with pytest.raises(TransientDownloadError, match="will resume"):
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
    with pytest.raises(TransientDownloadError, match="will resume"):
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
