"""Training speed: the plain reference script against catsdogs' training path, side by side.

Both train the reference baseline on the same 2,000 real training images (and validate on the same 1,000)
from ../shared/data/dogs-vs-cats/train.zip, each in a fresh process, alternating, ROUNDS times. The first
epoch of every process is left out (graph tracing, file cache). Prints one JSON object on its last line.

A third side, "plain_onednn_off", runs the plain script with TF_ENABLE_ONEDNN_OPTS=0: what TensorFlow does by
default on x86 CPUs without AVX-512 VNNI/BF16 or AMX. On such a CPU that is the plain script's speed; on one
with them (TensorFlow then turns oneDNN on by itself) it shows what that default is worth.

    python benchmarks/train_throughput.py [--epochs 3] [--rounds 2] [--workdir DIR] [--precision P] [--no-onednn-off]

--precision times catsdogs with that precision setting (default float32, the reference's math).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import get_args

from catsdogs.settings import Precision

HERE = Path(__file__).resolve().parent
ARCHIVE = HERE.parents[1] / "shared" / "data" / "dogs-vs-cats" / "train.zip"
TRAIN_IMAGES = 2000

CATSDOGS_RUN = """
import json, sys
from pathlib import Path
from catsdogs.datasets import DatasetArrays
from catsdogs.settings import Settings
from catsdogs.train import train_model
arrays = DatasetArrays.model_validate_json(Path(sys.argv[1]).read_text())
settings = Settings(epochs=int(sys.argv[2]), workdir=Path(sys.argv[3]), precision=sys.argv[5])
trained = train_model(settings, arrays, Path(sys.argv[3]))
Path(sys.argv[4]).write_text(json.dumps(trained.history()))
"""


def prepare(workdir: Path) -> tuple[Path, Path]:
    """The library pipeline's data steps on the archive: the reference subsets decoded once (shared by both
    sides)."""
    from catsdogs.pipeline import Pipeline
    from catsdogs.settings import Settings
    from catsdogs.steps import DATASETS, SUBSETS

    made = Pipeline(Settings(data_url=ARCHIVE.as_uri(), workdir=workdir, image_size=180))
    arrays = made.get(DATASETS)
    spec = workdir / "arrays.json"
    spec.write_text(arrays.model_dump_json())
    return made.get(SUBSETS).root, spec


def plain(subsets: Path, epochs: int, out: Path, onednn_off: bool = False) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "CATSDOGS_"))}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    if onednn_off:
        env["TF_ENABLE_ONEDNN_OPTS"] = "0"
    times = out / "plain.json"
    subprocess.run([sys.executable, str(HERE / "plain_reference.py"), str(subsets), str(epochs), str(times)],
                   check=True, env=env, cwd=out, stdout=subprocess.DEVNULL)
    return json.loads(times.read_text())


def catsdogs(spec: Path, epochs: int, out: Path, precision: str = "float32") -> list[dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CATSDOGS_")}
    history = out / "catsdogs.json"
    subprocess.run([sys.executable, "-c", CATSDOGS_RUN, str(spec), str(epochs), str(out / "run"), str(history),
                    precision], check=True, env=env, cwd=out)
    return json.loads(history.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per process (the first is left out)")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the two")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--precision", default="float32", choices=get_args(Precision), help="catsdogs' precision")
    parser.add_argument("--no-onednn-off", action="store_true", help="leave out the plain_onednn_off side")
    args = parser.parse_args()
    if not ARCHIVE.is_file():
        sys.exit(f"the real archive is needed at {ARCHIVE}")
    logging.basicConfig(level=logging.WARNING)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="catsdogs-bench-"))
    subsets, spec = prepare(workdir)
    sides = ("plain", "catsdogs") if args.no_onednn_off else ("plain", "catsdogs", "plain_onednn_off")
    epochs: dict[str, list[float]] = {name: [] for name in sides}
    histories: dict[str, list[list[dict]]] = {name: [] for name in sides}
    for round_ in range(args.rounds):
        for name in sides if round_ % 2 == 0 else sides[::-1]:
            out = Path(tempfile.mkdtemp(dir=workdir, prefix=f"{name}-"))
            if name == "catsdogs":
                rows = catsdogs(spec, args.epochs, out, args.precision)
            else:
                rows = plain(subsets, args.epochs, out, onednn_off=name == "plain_onednn_off")
            seconds = [row["seconds"] for row in rows]
            epochs[name] += seconds[1:]
            histories[name].append(rows)
            print(f"round {round_ + 1} {name}: epoch seconds {[round(s, 1) for s in seconds]}, val_accuracy "
                  f"{[round(row['val_accuracy'], 3) for row in rows]}", flush=True)
    plain_s = statistics.median(epochs["plain"])
    ours_s = statistics.median(epochs["catsdogs"])
    off_s = statistics.median(epochs["plain_onednn_off"]) if "plain_onednn_off" in sides else None
    # The same seed twice on catsdogs' path: how far apart are the runs, epoch by epoch?
    ours = histories["catsdogs"]
    same_seed_diff = max((abs(a["val_loss"] - b["val_loss"]) for run in ours[1:]
                          for a, b in zip(ours[0], run, strict=True)), default=None)
    print(json.dumps({
        "catsdogs_precision": args.precision, "train_images": TRAIN_IMAGES,
        "epochs_measured_each": len(epochs["plain"]), "cpu_count": os.cpu_count(),
        "plain_epoch_s": round(plain_s, 2), "catsdogs_epoch_s": round(ours_s, 2),
        "plain_images_per_s": round(TRAIN_IMAGES / plain_s, 1),
        "catsdogs_images_per_s": round(TRAIN_IMAGES / ours_s, 1),
        "ratio": round(plain_s / ours_s, 2),
        "plain_onednn_off_epoch_s": off_s and round(off_s, 2),
        "plain_onednn_off_images_per_s": off_s and round(TRAIN_IMAGES / off_s, 1),
        "ratio_vs_plain_onednn_off": off_s and round(off_s / ours_s, 2),
        "plain_final_val_accuracy": [round(h[-1]["val_accuracy"], 4) for h in histories["plain"]],
        "catsdogs_final_val_accuracy": [round(h[-1]["val_accuracy"], 4) for h in ours],
        "catsdogs_same_seed_max_val_loss_diff": same_seed_diff,
    }))


if __name__ == "__main__":
    main()
