"""Epoch times with tf.data's autotuning against without it (what catsdogs.datasets does), side by side.

Each side trains fast's network at 144 px (no progressive resizing, validated every epoch, so every epoch ends
with an iterator's end twice) on the same 2,000 real training images, in a fresh process, alternating, ROUNDS
times. The first epoch of every process is left out (graph tracing). Prints one JSON line per process and one
object with the medians and their ratio on its last line.

    python benchmarks/tfdata_autotune.py [--epochs 10] [--rounds 2] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ARCHIVE = HERE.parents[1] / "shared" / "data" / "dogs-vs-cats" / "train.zip"
SIZE = 144

ONE_SIDE = """
import json, sys, time
from pathlib import Path
import catsdogs.datasets
from catsdogs.datasets import DatasetArrays
from catsdogs.settings import Settings
from catsdogs.train import train_model
if sys.argv[4] == "autotuned":  # tf.data's default options: autotuning on
    catsdogs.datasets._without_autotuning = lambda tf: tf.data.Options()
arrays = DatasetArrays.model_validate_json(Path(sys.argv[1]).read_text())
settings = Settings(variant="fast", epochs=int(sys.argv[2]), image_size=int(sys.argv[5]), resize_from=0,
                    validate_last=0, workdir=Path(sys.argv[3]))
started = time.monotonic()
trained = train_model(settings, arrays, Path(sys.argv[3]) / "run")
seconds = [row["seconds"] for row in trained.history()]
print(json.dumps({"side": sys.argv[4], "fit_s": round(time.monotonic() - started, 1),
                  "epochs_after_first_s": round(sum(seconds[1:]), 1), "slowest_epoch_s": max(seconds[1:]),
                  "epoch_s": seconds}))
"""


def prepare(workdir: Path) -> Path:
    """The library pipeline's data steps on the archive, at 144 px; the arrays' description as a file."""
    from catsdogs.pipeline import Pipeline
    from catsdogs.settings import Settings
    from catsdogs.steps import DATASETS

    arrays = Pipeline(Settings(data_url=ARCHIVE.as_uri(), workdir=workdir, image_size=SIZE)).get(DATASETS)
    spec = workdir / "arrays.json"
    spec.write_text(arrays.model_dump_json())
    return spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tfdata-autotune-"))
    spec = prepare(workdir)
    found: dict[str, list[dict]] = {"autotuned": [], "without": []}
    for round_ in range(args.rounds):
        for side in ("autotuned", "without") if round_ % 2 == 0 else ("without", "autotuned"):
            done = subprocess.run([sys.executable, "-c", ONE_SIDE, str(spec), str(args.epochs),
                                   str(workdir / f"{side}-{round_}"), side, str(SIZE)], capture_output=True, text=True,
                                  check=True)
            found[side].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps({"round": round_ + 1, **found[side][-1]}), flush=True)
    medians = {side: statistics.median(r["epochs_after_first_s"] for r in rows) for side, rows in found.items()}
    print(json.dumps({"epochs_after_first_s": medians,
                      "without_relative_to_autotuned": round(medians["without"] / medians["autotuned"], 3)}))


if __name__ == "__main__":
    main()
