"""A bounded load test of `catsdogs web` on 127.0.0.1: requests/s and p50/p99 latency, one image a request.

A reference model (--variant, default baseline; untrained: speed does not depend on the weights) is
registered in a temporary workdir, `catsdogs web` serves it on a free local port, and CLIENTS threads send
REQUESTS requests in all, each one real 200×200 image from ../shared/data/dogs-vs-cats/train.zip. The
test stops by itself. Prints one JSON object on its last line.

With --large N, each request instead sends N large PNGs (2,000 x 2,000 noise, under the pixel limits) to saturate
the server, while one more thread asks GET /healthz every 50 ms: its p50/p99 say whether light requests are
still answered while heavy ones are worked on (they are decoded and classified off the event loop), and the
503s say how many heavy requests were told to come back.

    python benchmarks/web_load.py [--requests 300] [--clients 4] [--variant baseline] [--large 4]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predict_throughput import ARCHIVE, register_untrained  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--variant", default="baseline")
    parser.add_argument("--large", type=int, default=0, help="large PNGs per request (0: one real photo)")
    args = parser.parse_args()
    if not ARCHIVE.is_file():
        sys.exit(f"the real archive is needed at {ARCHIVE}")
    work = Path(tempfile.mkdtemp(prefix="catsdogs-web-bench-"))
    with zipfile.ZipFile(ARCHIVE) as zf:
        images = [zf.read(f"train/{cls}.{i}.jpg") for i in range(50) for cls in ("cat", "dog")]
    large = large_png() if args.large else b""
    register_untrained(args.variant, work / "work")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "deployments.cli", "web", "--workdir", str(work / "work"),
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env=os.environ | {"TF_CPP_MIN_LOG_LEVEL": "2"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                health = requests.get(f"{url}/healthz", timeout=1).json()
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        else:
            sys.exit("catsdogs web did not start")
        latencies: list[float] = []
        health_latencies: list[float] = []
        failures, busy = [0], [0]
        done = threading.Event()
        counter = iter(range(args.requests))
        lock = threading.Lock()

        def client() -> None:
            with requests.Session() as session:
                while True:
                    with lock:
                        number = next(counter, None)
                    if number is None:
                        return
                    files = [("files", (f"{number}-{k}.png", large, "image/png")) for k in range(args.large)] \
                        or [("files", (f"{number}.jpg", images[number % len(images)], "image/jpeg"))]
                    started = time.perf_counter()
                    response = session.post(f"{url}/predict", timeout=120, files=files)
                    elapsed = time.perf_counter() - started
                    with lock:
                        latencies.append(elapsed)
                        busy[0] += response.status_code == 503
                        failures[0] += response.status_code != 503 and not (
                            response.ok and "label" in response.json()[0])

        def watch_health() -> None:
            with requests.Session() as session:
                while not done.is_set():
                    started = time.perf_counter()
                    session.get(f"{url}/healthz", timeout=60)
                    health_latencies.append(time.perf_counter() - started)
                    time.sleep(0.05)

        started = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        watcher = threading.Thread(target=watch_health)
        watcher.start()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
        done.set()
        watcher.join()
    finally:
        server.terminate()
        server.wait(30)
    print(json.dumps({
        "requests": len(latencies), "clients": args.clients, "large_pngs_per_request": args.large,
        "failures": failures[0], "busy_503": busy[0], "runtime": health["runtime"],
        "requests_per_s": round(len(latencies) / wall, 1), "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99), "healthz_p50_ms": percentile(health_latencies, 50),
        "healthz_p99_ms": percentile(health_latencies, 99), "cpu_count": os.cpu_count(),
    }))


def percentile(values: list[float], q: int) -> float | None:
    ordered = sorted(values)
    return round(1000 * ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))], 1) if ordered else None


def large_png(side: int = 2000) -> bytes:
    """Noise that PNG cannot compress much: slow to decode, under the 50 MB and pixel limits."""
    import io

    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


if __name__ == "__main__":
    main()
