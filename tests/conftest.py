"""Shared fixtures: tiny generated archives, a real HTTP server on 127.0.0.1, and a Prefect test server."""

from __future__ import annotations

import atexit
import gzip
import hashlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image

from catsdogs.runtime import onednn_cap_without_bf16
from tasks import use_prefect_defaults

# The suite's Prefect state lives in a folder of its own, made for each test process and removed as it ends: the
# tests that start a temporary server wrote their runs into the developer's ~/.prefect database (listed in their UI
# afterwards), and a developer's profile (a Prefect Cloud login, say) must not receive the suite's runs either.
_PREFECT_HOME = tempfile.mkdtemp(prefix="catsdogs-tests-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
atexit.register(shutil.rmtree, _PREFECT_HOME, ignore_errors=True)
for _name in ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_PROFILE", "PREFECT_PROFILES_PATH"):
    os.environ.pop(_name, None)
use_prefect_defaults()  # before Prefect is imported

# A developer's own settings (say CATSDOGS_EPOCHS=3 in the shell, a documented way to set them) must not change
# what the tests check: each test starts from the defaults and sets what it needs. The suite's switches stay.
SUITE_SWITCHES = {"CATSDOGS_REQUIRE_BROWSER"}
for _name in [name for name in os.environ if name.startswith("CATSDOGS_") and name not in SUITE_SWITCHES]:
    del os.environ[_name]

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHARED_ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "dogs-vs-cats" / "train.zip"


# ---------------------------------------------------------------- tiers (pyproject.toml declares the markers)

# Fixtures that start a real server: a test using one is end-to-end wherever it lives.
END_TO_END_FIXTURES = {"prefect_server"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test is in one tier: realdata and e2e as marked (or by the fixtures it uses), unit otherwise."""
    for item in items:
        if item.get_closest_marker("realdata"):
            continue
        if END_TO_END_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)
        if not item.get_closest_marker("e2e"):
            item.add_marker(pytest.mark.unit)
    # The long tests first: the workers then share the short ones at the end instead of one waiting on the other.
    items.sort(key=lambda item: item.get_closest_marker("unit") is not None)


TIER_TIME: dict[str, list[float]] = {}  # tier -> [tests, seconds of setup, call and teardown]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Add each test's time to its tier's (reports from xdist's workers come here too)."""
    tier = next((name for name in ("realdata", "e2e", "unit") if name in report.keywords), None)
    if tier:
        tests, seconds = TIER_TIME.get(tier, [0, 0.0])
        TIER_TIME[tier] = [tests + (report.when == "call"), seconds + report.duration]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Each tier's test time, as CI's log shows it: the wall time of a tier alone is about its share."""
    if TIER_TIME:
        terminalreporter.write_line("test time by tier (summed over workers): " + ", ".join(
            f"{tier} {seconds:.0f} s ({tests:.0f} tests)" for tier, (tests, seconds) in sorted(TIER_TIME.items())))


@pytest.fixture(autouse=True)
def _signal_handlers_and_stop_requests_stay_as_they_were() -> Iterator[None]:
    """A test that calls the command in this process (deployments.cli.main) leaves its signal handlers installed,
    as the command keeps them for its exit: a signal this worker got later (CI logged one) then asked every
    training of the tests after it to stop. Put back after each test."""
    from catsdogs import runtime

    stop_signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    saved = {signum: signal.getsignal(signum) for signum in stop_signals}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)
    runtime.clear_stop_request()


@pytest.fixture
def eager_keras() -> Iterator[None]:
    """Keras' train and test steps run op by op instead of traced into graphs: for tests of the training loop's
    logic over a few steps, where tracing a network's functions costs more than its steps (efficientnet's test:
    docs/results.md, "Tracing the training step once"). tf.data's functions stay graphs; graph mode stays tested by
    tiny_models, the other training tests and the end-to-end runs."""
    import tensorflow as tf

    tf.config.run_functions_eagerly(True)
    try:
        yield
    finally:
        tf.config.run_functions_eagerly(False)


@pytest.fixture(autouse=True)
def _unit_tests_start_no_processes(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A unit test runs in this process: one that starts Python, a command of this environment (prefect,
    catsdogs) or a shell belongs to the e2e tier. Libraries' own probes (`uname -p`) are not counted."""
    if request.node.get_closest_marker("unit") is None:
        return
    original = subprocess.Popen.__init__
    ours = {Path(sys.executable).parent.resolve(), Path(sys.executable).resolve().parent}

    def refuse_ours(self: subprocess.Popen, args: Any, *rest: Any, **kwargs: Any) -> None:
        program = str(args if isinstance(args, str | os.PathLike) else args[0])
        shell = kwargs.get("shell") or Path(program).name in ("bash", "sh")
        if shell or program == sys.executable or Path(program).resolve().parent in ours:
            raise AssertionError(f"{request.node.nodeid} starts {program}: mark it @pytest.mark.e2e, or test the "
                                 "code in process (tests.conftest.run_cli runs a command so)")
        original(self, args, *rest, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse_ours)


@dataclass
class CommandResult:
    """What a `catsdogs` command run in this process returned and showed (the fields of CompletedProcess)."""

    returncode: int
    stdout: str
    stderr: str


def run_cli(*args: str, **env: str) -> CommandResult:
    """`catsdogs ARGS` in this process, with ENV over an environment free of catsdogs and Prefect API settings.

    For checks where a new process is not the point (usage errors, predict, models): seconds faster than a
    subprocess each. What the command changes for its process (signal handlers, stderr warnings) is put back.
    """
    import contextlib
    import logging

    from deployments.cli import main

    saved_env, saved_signals = dict(os.environ), {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM,
                                                                                    signal.SIGHUP)}
    library_log = logging.getLogger("catsdogs")
    saved_handlers = list(library_log.handlers)
    for name in [name for name in os.environ if name.startswith(("CATSDOGS_", "PREFECT_API"))]:
        del os.environ[name]
    os.environ.update(env)
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = main(list(args))
            except SystemExit as exit_:  # argparse's usage errors
                status = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        for signum, handler in saved_signals.items():
            signal.signal(signum, handler)
        library_log.handlers[:] = saved_handlers
    return CommandResult(status, out.getvalue(), err.getvalue())


def jpeg_bytes(colour: tuple[int, int, int], size: int = 40, seed: int = 0) -> bytes:
    """A small noisy JPEG of mostly one colour."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.normal(0, 25, (size, size, 3)), 0, 255).astype("uint8")
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def make_kaggle_zip(path: Path, per_class: int = 12, corrupt: dict[str, list[int]] | None = None) -> Path:
    """A Kaggle-layout train.zip of tiny images: reddish cats, bluish dogs; CORRUPT indices hold junk."""
    corrupt = corrupt or {}
    with zipfile.ZipFile(path, "w") as zf:
        for cls, colour in (("cat", (200, 60, 60)), ("dog", (60, 60, 200))):
            for i in range(per_class):
                data = b"not an image" if i in corrupt.get(cls, []) else jpeg_bytes(colour, seed=i)
                zf.writestr(f"train/{cls}.{i}.jpg", data)
    return path


@pytest.fixture
def tiny_zip(tmp_path: Path) -> Path:
    return make_kaggle_zip(tmp_path / "train.zip")


# Orchestration tests run on this generated archive, never on ../shared: 300 small noisy JPEGs per class
# (reddish cats, bluish dogs), enough for every range they use. Built once per test session, in memory.
SAMPLE_PER_CLASS = 300


def _sample_zip() -> tuple[bytes, str]:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for cls, colour in (("cat", (200, 60, 60)), ("dog", (60, 60, 200))):
            for i in range(SAMPLE_PER_CLASS):
                info = zipfile.ZipInfo(f"train/{cls}.{i}.jpg", date_time=(2020, 1, 1, 0, 0, 0))
                zf.writestr(info, jpeg_bytes(colour, seed=i))
    data = buffer.getvalue()
    return data, hashlib.sha256(data).hexdigest()


SAMPLE_ZIP, SAMPLE_SHA256 = _sample_zip()


@pytest.fixture(scope="session")
def sample_archive(tmp_path_factory) -> Path:
    """The generated sample archive as a file (Kaggle layout)."""
    path = tmp_path_factory.mktemp("sample") / "train.zip"
    path.write_bytes(SAMPLE_ZIP)
    return path


@pytest.fixture
def shared_archive() -> Path:
    if not SHARED_ARCHIVE.is_file():
        pytest.skip(f"real-data archive not found at {SHARED_ARCHIVE} (it lives in ../shared beside the repo)")
    return SHARED_ARCHIVE


# ---------------------------------------------------------------- HTTP server


@dataclass
class Behaviour:
    """How the test server misbehaves; each list is consumed one request at a time."""

    statuses: list[int] = field(default_factory=list)  # answer these statuses first
    retry_after: str | None = None
    drop_after: list[int] = field(default_factory=list)  # close the connection after N body bytes
    honour_range: bool = True
    stall_after: list[int] = field(default_factory=list)  # send N body bytes, then go silent for 5 s
    gzip: bool = False  # answer with Content-Encoding: gzip, whatever Accept-Encoding says
    range_shift: int = 0  # a 206 starts this many bytes before the byte asked for
    no_length: bool = False  # no Content-Length: the end of the body is the connection's close
    redirect_loop: bool = False  # every request is redirected to itself
    requests: list[dict[str, str]] = field(default_factory=list)


class HungUpQuietHTTPServer(ThreadingHTTPServer):
    """A client hanging up mid-request (a download's read timeout, a stopped run) is what the fault tests make
    happen: not a traceback to print into the test log. Any other error in a handler is still printed."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class ArchiveServer:
    """A real HTTP server on 127.0.0.1 serving one file, with Range support and scripted faults."""

    def __init__(self, body: bytes):
        self.body = body
        self.behaviour = Behaviour()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                b = server.behaviour
                b.requests.append(dict(self.headers))
                if b.statuses:
                    status = b.statuses.pop(0)
                    self.send_response(status)
                    if b.retry_after:
                        self.send_header("Retry-After", b.retry_after)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if b.redirect_loop:
                    self.send_response(302)
                    self.send_header("Location", self.path)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = 0
                header = self.headers.get("Range")
                if header and b.honour_range:
                    start = max(0, int(header.removeprefix("bytes=").split("-")[0]) - b.range_shift)
                    if start >= len(server.body):
                        self.send_response(416)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(server.body) - 1}/{len(server.body)}")
                else:
                    self.send_response(200)
                payload = server.body[start:]
                if b.gzip:
                    payload = gzip.compress(payload)
                    self.send_header("Content-Encoding", "gzip")
                if b.no_length:
                    self.close_connection = True
                else:
                    self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if b.stall_after:
                    self.wfile.write(payload[: b.stall_after.pop(0)])
                    self.wfile.flush()
                    time.sleep(5)
                    self.close_connection = True
                    return
                if b.drop_after:
                    self.wfile.write(payload[: b.drop_after.pop(0)])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(payload)

        self.httpd = HungUpQuietHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/train.zip"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)

    def __enter__(self) -> ArchiveServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve() -> Iterator:
    """serve(bytes) -> a running ArchiveServer; stopped after the test."""
    servers: list[ArchiveServer] = []

    def start(body: bytes) -> ArchiveServer:
        server = ArchiveServer(body).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__()


# ---------------------------------------------------------------- local servers started by tests


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_serving(url: str, process: subprocess.Popen, timeout: float, log: Path | None = None) -> None:
    """Poll URL until it answers 2xx; raise if PROCESS exits first (with LOG's tail) or TIMEOUT passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).ok:
                return
        except requests.ConnectionError:
            pass
        if process.poll() is not None:
            tail = log.read_text()[-2000:] if log else ""
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode} before {url} answered: {tail}")
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


# ---------------------------------------------------------------- Prefect


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[str]:
    """A real temporary Prefect server (own SQLite database) for the whole session; yields its API URL."""
    from prefect.settings import get_current_settings
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield str(get_current_settings().api.url)


# ---------------------------------------------------------------- registered tiny models


def train_and_register(folder: Path, ranges: dict[str, tuple[int, int]], *changes: dict,
                       last_first: bool = False) -> dict:
    """A generated archive through the library pipeline, once per CHANGES: one tiny model each (78 px, 1 epoch
    unless changed) trained, evaluated and registered in FOLDER/work, the data steps shared. Returns the
    subsets, their arrays, the workdir, each model's settings, and (card, metrics) per model, in CHANGES' order.
    Processes may share FOLDER: each step is made by one and read back by the others (catsdogs.store's locks);
    LAST_FIRST makes the models in the other order, so that two processes start on different ones."""
    from catsdogs import store
    from catsdogs.pipeline import Pipeline
    from catsdogs.settings import Settings
    from catsdogs.steps import DATASETS, EVALUATE, REGISTER, SUBSETS

    per_class = max(last for _, last in ranges.values()) + 1
    archive = folder / "k.zip"
    with store.locked(archive):
        if not archive.is_file():  # made once: a folder trained in before is read back, its steps complete
            folder.mkdir(parents=True, exist_ok=True)
            make_kaggle_zip(archive, per_class=per_class)
    spans = {f"{split}_range": f"{first}-{last}" for split, (first, last) in ranges.items()}
    settings_used = [Settings(**({"image_size": 78, "batch_size": 8, "epochs": 1, "workdir": folder / "work",
                                  "data_url": archive.as_uri()} | spans | change)) for change in changes]
    assert settings_used, "no model asked for"
    models: dict[int, tuple] = {}
    for index in reversed(range(len(changes))) if last_first else range(len(changes)):
        made = Pipeline(settings_used[index])
        models[index] = (made.get(REGISTER), made.get(EVALUATE))
    return {"subsets": made.get(SUBSETS), "arrays": made.get(DATASETS), "workdir": folder / "work",
            "models": [models[index] for index in range(len(changes))], "settings": settings_used}


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, worker_id: str) -> dict:
    """The prediction, registry, web and LiteRT tests' models: a baseline (2 epochs), the same with seed 1, and a
    bfloat16 xception (TINY_XCEPTION_PRECISION). Trained once per test session in one folder for every xdist
    worker: odd-numbered workers start from the last model, so that two workers asking at once train different
    models side by side, and each reads back what the other made. Take a copy (copy_models)."""
    base = tmp_path_factory.getbasetemp()
    shared = (base if worker_id == "master" else base.parent) / "tiny-models"
    return train_and_register(shared, TINY_RANGES, {"epochs": 2}, {"seed": 1},
                              {"variant": "xception", "precision": TINY_XCEPTION_PRECISION, "tta_zoom_out": 0.89},
                              last_first=worker_id != "master" and int(worker_id.removeprefix("gw")) % 2 == 1)


TINY_RANGES = {"train": (0, 11), "validation": (12, 13), "test": (14, 17)}  # images a class, of tiny_models
# The tiny xception trains in bfloat16, for its saving and export, except where a oneDNN cap leaves this
# process without bfloat16 kernels (ONEDNN_MAX_CPU_ISA=AVX2, how a BF16 machine runs the suite as an AVX2 one).
TINY_XCEPTION_PRECISION = "float32" if onednn_cap_without_bf16() else "mixed_bfloat16"


def copy_models(made: dict, folder: Path, keep: list[int]) -> dict:
    """A module's own workdir holding the models KEEP names (by index) of MADE, as train_and_register returns:
    the module may register, damage and promote there without touching another module's answers."""
    import shutil

    from catsdogs.registry import list_models

    workdir = folder / "work"
    shutil.copytree(made["workdir"], workdir)
    kept = {made["models"][index][0].name for index in keep}
    for model in (workdir / "models").iterdir():
        if model.is_dir() and model.name not in kept:
            shutil.rmtree(model)
    cards = {card.name: card for card in list_models(workdir)}
    subsets = made["subsets"].model_copy(update={"root": workdir / made["subsets"].root.relative_to(made["workdir"])})
    return {"subsets": subsets, "arrays": made["arrays"], "workdir": workdir,
            "models": [(cards[made["models"][i][0].name], made["models"][i][1]) for i in keep],
            "settings": [made["settings"][i].model_copy(update={"workdir": workdir}) for i in keep]}


def auto_label() -> str:
    """What precision auto adds to a run's name on this machine: nothing where it trains in float32."""
    from catsdogs.runtime import resolve_precision

    precision = resolve_precision("auto")
    return "" if precision == "float32" else f"-{precision}"
