"""A bounded load test of `catsdogs web` on 127.0.0.1: requests/s and p50/p99 latency, one image a request.

A reference model (--variant, default baseline; untrained: speed does not depend on the weights) is
registered in a temporary workdir, `catsdogs web` serves it on a free local port, and CLIENTS threads send
REQUESTS requests in all, each one real 200×200 image from ../shared/data/dogs-vs-cats/train.zip. The
test stops by itself. Prints one JSON object on its last line.

    python benchmarks/web_load.py [--requests 300] [--clients 4] [--variant baseline]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
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
    args = parser.parse_args()
    if not ARCHIVE.is_file():
        sys.exit(f"the real archive is needed at {ARCHIVE}")
    work = Path(tempfile.mkdtemp(prefix="catsdogs-web-bench-"))
    with zipfile.ZipFile(ARCHIVE) as zf:
        images = [zf.read(f"train/{cls}.{i}.jpg") for i in range(50) for cls in ("cat", "dog")]
    register_untrained(args.variant, work / "work")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "flows.cli", "web", "--workdir", str(work / "work"), "--port",
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
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
        failures = [0]
        counter = iter(range(args.requests))
        lock = threading.Lock()

        def client() -> None:
            with requests.Session() as session:
                while True:
                    with lock:
                        number = next(counter, None)
                    if number is None:
                        return
                    started = time.perf_counter()
                    response = session.post(f"{url}/predict", timeout=60, files=[
                        ("files", (f"{number}.jpg", images[number % len(images)], "image/jpeg"))])
                    elapsed = time.perf_counter() - started
                    with lock:
                        latencies.append(elapsed)
                        failures[0] += not (response.ok and "label" in response.json()[0])

        started = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(30)
    ordered = sorted(latencies)
    print(json.dumps({
        "requests": len(latencies), "clients": args.clients, "failures": failures[0], "runtime": health["runtime"],
        "requests_per_s": round(len(latencies) / wall, 1),
        "p50_ms": round(1000 * statistics.median(ordered), 1),
        "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 1),
        "cpu_count": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
