"""Orchestration cost: a flow run's wall time against its tasks' own work, and a fully cached second run.

Runs the training flow twice with the same settings on ../shared/data/dogs-vs-cats/train.zip under a
temporary Prefect server, reads the task runs back from the Prefect API, and prints one JSON object on its
last line: first_run_s, task_work_s (sum of the task runs' own run time), overhead_s, cached_run_s.

    python benchmarks/pipeline_overhead.py [--epochs 1] [--image-size 180] [--per-class 200]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from tasks import use_prefect_defaults

use_prefect_defaults()  # before Prefect starts

ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "dogs-vs-cats" / "train.zip"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--image-size", type=int, default=180)
    parser.add_argument("--per-class", type=int, default=200, help="training images per class")
    args = parser.parse_args()

    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.testing.utilities import prefect_test_harness

    from catsdogs.settings import Settings
    from flows.train import train_flow

    n = args.per_class
    settings = Settings(data_url=ARCHIVE.as_uri(), workdir=Path(tempfile.mkdtemp(prefix="catsdogs-overhead-")),
                        epochs=args.epochs, image_size=args.image_size, train_range=f"0-{n - 1}",
                        validation_range=f"{n}-{n + n // 2 - 1}", test_range=f"{2 * n}-{3 * n - 1}")

    def timed_run() -> tuple[float, float, dict[str, str]]:
        started = time.perf_counter()
        state = train_flow(settings, return_state=True)
        wall = time.perf_counter() - started
        assert state.is_completed(), state.message
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
        work = sum(run.total_run_time.total_seconds() for run in runs)
        return wall, work, {run.name.rsplit("-", 1)[0]: run.state.name for run in runs}

    with prefect_test_harness(server_startup_timeout=180):
        first_s, work_s, _ = timed_run()
        cached_s, _, states = timed_run()
    print(f"second run task states: {states}")
    print(json.dumps({
        "first_run_s": round(first_s, 2), "task_work_s": round(work_s, 2),
        "overhead_s": round(first_s - work_s, 2), "cached_run_s": round(cached_s, 2),
        "cached_speedup": round(first_s / cached_s, 1), "epochs": args.epochs, "image_size": args.image_size,
        "train_images": 2 * n,
    }))


if __name__ == "__main__":
    main()
