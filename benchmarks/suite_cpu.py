"""Where the test suite's CPU time goes, by kind of process: the tests in pytest's own workers, Prefect servers, Dask
workers, the catsdogs commands the tests start, Prefect's flow-run processes, the browser.

Runs the README's test command (`pytest`, PYTEST_ARGS after --) and, every INTERVAL seconds, reads the CPU time of
every process below it (psutil). A process counts with the last time it was seen, so one that ends between two
reads loses at most an interval of its time. Prints one JSON line per kind, most CPU first, with its share, then
the wall time, the CPU seconds and how many cores were busy on average. On two cores, the suite's wall time cannot
fall below half its CPU seconds: this shows which kind of work a faster suite has to do less of. Quiet cores only.

    python benchmarks/suite_cpu.py [--interval 0.5] [-- -m e2e]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]

# First match wins; a command line that matches none is named by its program.
KINDS = [
    ("Prefect server", re.compile(r"uvicorn .*prefect\.server|prefect server start")),
    ("Dask worker processes", re.compile(r"multiprocessing\.spawn|distributed\.cli")),
    ("Prefect flow-run processes", re.compile(r"prefect[./]engine|prefect\.runner|bin/prefect (worker|deploy)")),
    ("Prefect commands", re.compile(r"bin/prefect ")),
    ("browser (Chromium, Playwright)", re.compile(r"chrom|playwright")),
    ("pytest and its workers (the in-process tests)", re.compile(r"-m pytest|bin/pytest|exec\(eval\(sys\.stdin")),
]
# `python -m deployments.cli run ...`, `catsdogs run ...`, `python deployments/serve.py`
COMMAND = re.compile(r"(?:-m deployments(?:\.cli)?|deployments/(?:cli|__main__)\.py|bin/catsdogs) (\w+)"
                     r"|deployments/(\w+)\.py")


def kind_of(command_line: str) -> str:
    """The kind of process COMMAND_LINE runs, as the tables print it."""
    for kind, pattern in KINDS:
        if pattern.search(command_line):
            return kind
    if found := COMMAND.search(command_line):
        return f"catsdogs {found.group(1) or found.group(2)}"
    program = command_line.split(" ", 1)[0]
    return Path(program).name or "unknown"


def sample(root: psutil.Process, seen: dict[tuple[int, float], list]) -> None:
    """Record ROOT's and its descendants' CPU seconds so far, keyed by (pid, creation time)."""
    for process in [root, *root.children(recursive=True)]:
        try:
            with process.oneshot():
                key = (process.pid, process.create_time())
                times = process.cpu_times()
                if key not in seen:
                    seen[key] = [" ".join(process.cmdline()), 0.0]
                seen[key][1] = times.user + times.system
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue


def by_kind(seen: dict[tuple[int, float], list]) -> list[dict]:
    """Processes and CPU seconds per kind, most CPU first."""
    totals: dict[str, list] = {}
    for command_line, cpu in seen.values():
        count, seconds = totals.setdefault(kind_of(command_line), [0, 0.0])
        totals[kind_of(command_line)] = [count + 1, seconds + cpu]
    everything = sum(seconds for _, seconds in totals.values()) or 1.0
    return [{"kind": kind, "processes": count, "cpu_s": round(seconds, 1), "share": round(seconds / everything, 3)}
            for kind, (count, seconds) in sorted(totals.items(), key=lambda item: -item[1][1])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between two reads of the processes")
    parser.add_argument("pytest_args", nargs="*", help="after --: more arguments for pytest (say -m e2e)")
    args = parser.parse_args()
    seen: dict[tuple[int, float], list] = {}
    with tempfile.TemporaryFile("w+") as output:
        started = time.monotonic()
        suite = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args.pytest_args],
                                 cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
        root = psutil.Process(suite.pid)
        while suite.poll() is None:
            sample(root, seen)
            time.sleep(args.interval)
        wall = time.monotonic() - started
        output.seek(0)
        last = ([line for line in output.read().splitlines() if re.search(r"\d+ (passed|failed)", line)] or [""])[-1]
    kinds = by_kind(seen)
    for row in kinds:
        print(json.dumps(row))
    cpu = sum(row["cpu_s"] for row in kinds)
    print(json.dumps({"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "cores_busy": round(cpu / wall, 2),
                      "cores": os.cpu_count(), "pytest_exit": suite.returncode, "pytest_says": last.strip("= ")}))


if __name__ == "__main__":
    main()
