"""Where the test suite's CPU time goes, by kind of process: the tests in pytest's own workers, Prefect servers, Dask
workers, the catsdogs commands the tests start, Prefect's flow-run processes, the browser.

Runs the README's test command (`pytest`, PYTEST_ARGS after --) and, every INTERVAL seconds, reads the CPU time of
every process below it (psutil). A process counts with the last time it was seen, so each loses up to an
interval of its time at its end, and one that lives less than an interval can be missed; `cpu_s_reaped`, the
CPU time of every descendant that was waited for (getrusage), is printed beside the sampled total as a check.
Prints one JSON line per kind, most CPU first, with its share, then the wall time, the CPU seconds and how many
cores were busy on average. On two cores, the suite's wall time cannot fall below half the CPU seconds it
reports: this shows which kind of work a faster suite has to do less of. Run it on an otherwise idle machine.

    python benchmarks/suite_cpu.py [--interval 0.5] [-- -m e2e]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]

# First match wins; a command line that matches none is named by its program.
KINDS = [
    ("Prefect server", re.compile(r"uvicorn .*prefect\.server|prefect server start")),
    # Dask's LocalCluster starts its workers through multiprocessing's spawn (Prefect's `serve` runs its flows with
    # `python -m prefect.engine`, matched below, so nothing else in the suite spawns that way)
    ("Dask worker processes", re.compile(r"multiprocessing\.spawn|distributed\.cli")),
    ("Prefect flow-run processes", re.compile(r"prefect[./]engine|prefect\.runner|bin/prefect worker")),
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


Seen = dict[tuple[int, float], tuple[str, float]]  # (pid, creation time) -> (command line, CPU seconds so far)


def sample(root: psutil.Process, seen: Seen) -> None:
    """Record ROOT's and its descendants' command lines and CPU seconds so far. The command line is read each time:
    a child seen between its fork and its exec still shows its parent's."""
    for process in [root, *root.children(recursive=True)]:
        try:
            with process.oneshot():
                times = process.cpu_times()
                seen[(process.pid, process.create_time())] = (" ".join(process.cmdline()), times.user + times.system)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue


def by_kind(seen: Seen) -> list[dict]:
    """Processes and CPU seconds per kind, most CPU first."""
    processes: dict[str, int] = defaultdict(int)
    seconds: dict[str, float] = defaultdict(float)
    for command_line, cpu in seen.values():
        kind = kind_of(command_line)
        processes[kind] += 1
        seconds[kind] += cpu
    everything = sum(seconds.values()) or 1.0
    return [{"kind": kind, "processes": processes[kind], "cpu_s": round(seconds[kind], 1),
             "share": round(seconds[kind] / everything, 3)} for kind in sorted(seconds, key=lambda k: -seconds[k])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between two reads of the processes")
    parser.add_argument("pytest_args", nargs="*", help="after --: more arguments for pytest (say -m e2e)")
    args = parser.parse_args()
    seen: Seen = {}
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
        said = ([line for line in output.read().splitlines() if line.strip()] or [""])[-1]  # pytest's summary
    kinds = by_kind(seen)
    for row in kinds:
        print(json.dumps(row))
    cpu = sum(row["cpu_s"] for row in kinds)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "cores_busy": round(cpu / wall, 2),
                      "cpu_s_reaped": round(reaped.ru_utime + reaped.ru_stime, 1),
                      "cores": len(os.sched_getaffinity(0)), "pytest_exit": suite.returncode,
                      "pytest_says": said.strip("= ")}))


if __name__ == "__main__":
    main()
