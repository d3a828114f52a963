"""The test suite's wall time at each number of pytest-xdist workers, side by side, with where each worker's time went.

Runs the README's test command (`pytest`) once per worker count in WORKERS, one after the other, each with this
file loaded as a pytest plugin that writes every test's start and end, per worker, to a JSON-lines file. Prints
one JSON line per run: pytest's wall time, each worker's busy seconds and when it finished its last test, the
seconds from the first test's start to the last one's end, and the tests of more than SLOW seconds with their
worker and start; then the wall times' ratios against the first count. Quiet cores only: the point is the
ratio, and a training beside it changes every number.

    python benchmarks/suite_workers.py [--workers 2 3] [--slow 15] [-- PYTEST_ARGS...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TIMELINE = "SUITE_WORKERS_TIMELINE"  # the file the plugin below appends to, in every worker

_started: dict[str, float] = {}
_recording = True  # in each test process; not in xdist's controller, which hears of the workers' tests too


# ---------------------------------------------------------------- the plugin (loaded with -p suite_workers)


def pytest_configure(config: object) -> None:
    global _recording
    _recording = hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", 0)


def pytest_runtest_logstart(nodeid: str, location: object) -> None:
    _started[nodeid] = time.time()


def pytest_runtest_logfinish(nodeid: str, location: object) -> None:
    path = os.environ.get(TIMELINE)
    if path and _recording:
        row = {"worker": os.environ.get("PYTEST_XDIST_WORKER", "main"), "test": nodeid,
               "start": _started.pop(nodeid, time.time()), "end": time.time()}
        with open(path, "a") as timeline:
            timeline.write(json.dumps(row) + "\n")


# ---------------------------------------------------------------- the benchmark


def summary(rows: list[dict], slow: float) -> dict:
    """Per worker: tests, busy seconds and the end of its last test, from the first test's start; the slow tests."""
    first = min(row["start"] for row in rows)
    per_worker = {}
    for worker in sorted({row["worker"] for row in rows}):
        own = [row for row in rows if row["worker"] == worker]
        per_worker[worker] = {"tests": len(own), "busy_s": round(sum(row["end"] - row["start"] for row in own), 1),
                           "last_end_s": round(max(row["end"] for row in own) - first, 1)}
    slowest = sorted((row for row in rows if row["end"] - row["start"] > slow), key=lambda row: row["start"])
    return {"first_to_last_test_s": round(max(row["end"] for row in rows) - first, 1), "per_worker": per_worker,
            "slow_tests": [{"test": row["test"], "worker": row["worker"], "start_s": round(row["start"] - first, 1),
                            "seconds": round(row["end"] - row["start"], 1)} for row in slowest]}


def run_suite(workers: int, slow: float, pytest_args: list[str]) -> dict:
    """The suite at WORKERS workers; its wall time and timeline summary."""
    with tempfile.TemporaryDirectory() as folder:
        timeline = Path(folder) / "timeline.jsonl"
        env = os.environ | {TIMELINE: str(timeline), "PYTHONPATH": os.pathsep.join(
            filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", str(workers), "-p", "suite_workers",
                               *pytest_args], cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.monotonic() - started
        rows = [json.loads(line) for line in timeline.read_text().splitlines()] if timeline.exists() else []
    last = (done.stdout.strip().splitlines() or [""])[-1]
    return {"workers": workers, "wall_s": round(wall, 1), "exit": done.returncode, "pytest_says": last.strip("= ")} | (
        summary(rows, slow) if rows else {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 3], help="worker counts, run in this order")
    parser.add_argument("--slow", type=float, default=15.0, help="list the tests longer than this many seconds")
    parser.add_argument("pytest_args", nargs="*", help="after --: more arguments for pytest (say -m unit)")
    args = parser.parse_args()
    results = []
    for workers in args.workers:
        result = run_suite(workers, args.slow, args.pytest_args)
        print(json.dumps(result), flush=True)
        results.append(result)
    base = results[0]["wall_s"]
    print(json.dumps({"wall_s_against_first": {str(r["workers"]): round(r["wall_s"] / base, 3) for r in results}}))


if __name__ == "__main__":
    main()
