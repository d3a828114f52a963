"""Where a sweep's trainings run on one machine: one at a time in the sweep's process, against a local Dask
cluster of two worker processes, side by side on the same grid.

Runs the sweep flow twice under one temporary Prefect server, each time in a fresh workdir (nothing cached
but the data steps, which are built before the clock starts), on ../shared/data/dogs-vs-cats/train.zip,
and prints one JSON object on its last line: each engine's wall time and the ratio.

    python benchmarks/sweep_engines.py [--seeds 4] [--epochs 2] [--image-size 120] [--per-class 300]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from tasks import use_prefect_defaults

use_prefect_defaults()  # before Prefect starts

ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "dogs-vs-cats" / "train.zip"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4, help="configurations (seeds 0 to N-1)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=120)
    parser.add_argument("--per-class", type=int, default=300, help="training images per class")
    args = parser.parse_args()

    from prefect.testing.utilities import prefect_test_harness

    from catsdogs.settings import Settings
    from flows.sweep import sweep_flow
    from flows.train import train_flow

    n = args.per_class
    root = Path(tempfile.mkdtemp(prefix="catsdogs-sweep-bench-"))
    base = Settings(data_url=ARCHIVE.as_uri(), workdir=root / "data", epochs=args.epochs,
                    image_size=args.image_size, train_range=f"0-{n - 1}", validation_range=f"{n}-{n + n // 2 - 1}",
                    test_range=f"{2 * n}-{2 * n + n // 2 - 1}")
    grid = {"seed": list(range(args.seeds))}
    results: dict[str, float] = {}
    with prefect_test_harness(server_startup_timeout=180):
        train_flow(base.model_copy(update={"epochs": 1}))  # the data steps, once, outside the clock
        for engine, workers in (("one_at_a_time", 0), ("dask_2_workers", 2)):
            workdir = root / engine
            shutil.copytree(root / "data", workdir, ignore=shutil.ignore_patterns("runs", "models"))
            started = time.perf_counter()
            summary = sweep_flow(grid=grid, settings=base.model_copy(update={"workdir": workdir}),
                                 dask_workers=workers)
            results[f"{engine}_s"] = round(time.perf_counter() - started, 1)
            assert summary.failed == 0, summary.runs
    shutil.rmtree(root, ignore_errors=True)
    results["dask_2_workers_speedup"] = round(results["one_at_a_time_s"] / results["dask_2_workers_s"], 2)
    print(json.dumps({"configurations": args.seeds, "epochs": args.epochs, "image_size": args.image_size,
                      "train_images": 2 * n, **results}))


if __name__ == "__main__":
    main()
