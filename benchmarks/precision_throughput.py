"""Mixed precision against float32 on catsdogs' training path, side by side.

The reference baseline trains on the same 2,000 real images (validating on the same 1,000) from
../shared/data/dogs-vs-cats/train.zip, once in float32 and once with a mixed policy, each in a fresh process,
alternating, ROUNDS times; the first epoch of every process is left out. The mixed policy is mixed_float16
where TensorFlow sees a GPU and mixed_bfloat16 otherwise (fast only on CPUs with AVX-512 BF16 or AMX).
Prints one JSON object on its last line.

    python benchmarks/precision_throughput.py [--epochs 3] [--rounds 1] [--workdir DIR] [--mixed POLICY]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import get_args

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import ARCHIVE, TRAIN_IMAGES, catsdogs, prepare  # noqa: E402

from catsdogs.settings import Precision  # noqa: E402


def default_mixed_policy() -> str:
    from catsdogs.runtime import tensorflow

    return "mixed_float16" if tensorflow().config.list_physical_devices("GPU") else "mixed_bfloat16"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per process (the first is left out)")
    parser.add_argument("--rounds", type=int, default=1, help="alternations of the two")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--mixed", choices=[p for p in get_args(Precision) if p != "float32"], default=None,
                        help="the mixed policy to time (default: float16 on a GPU, bfloat16 on a CPU)")
    args = parser.parse_args()
    if not ARCHIVE.is_file():
        sys.exit(f"the real archive is needed at {ARCHIVE}")
    if args.epochs < 2:
        sys.exit("--epochs must be at least 2: the first epoch of each process is left out")
    logging.basicConfig(level=logging.WARNING)
    mixed = args.mixed or default_mixed_policy()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="catsdogs-precision-"))
    _, spec = prepare(workdir)
    sides = ("float32", mixed)
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    final: dict[str, list[dict]] = {name: [] for name in sides}
    for round_ in range(args.rounds):
        for name in sides if round_ % 2 == 0 else sides[::-1]:
            rows = catsdogs(spec, args.epochs, Path(tempfile.mkdtemp(dir=workdir, prefix=f"{name}-")), name)
            seconds[name] += [row["seconds"] for row in rows][1:]
            final[name].append(rows[-1])
            print(f"round {round_ + 1} {name}: epoch seconds {[round(row['seconds'], 1) for row in rows]}, "
                  f"val_accuracy {[round(row['val_accuracy'], 3) for row in rows]}", flush=True)
    full_s, mixed_s = statistics.median(seconds["float32"]), statistics.median(seconds[mixed])
    print(json.dumps({
        "train_images": TRAIN_IMAGES, "epochs_measured_each": len(seconds["float32"]),
        "cpu_count": os.cpu_count(), "mixed_policy": mixed,
        "float32_epoch_s": round(full_s, 2), "mixed_epoch_s": round(mixed_s, 2),
        "float32_images_per_s": round(TRAIN_IMAGES / full_s, 1),
        "mixed_images_per_s": round(TRAIN_IMAGES / mixed_s, 1),
        "ratio": round(full_s / mixed_s, 2),
        "float32_final_val_accuracy": [round(row["val_accuracy"], 4) for row in final["float32"]],
        "mixed_final_val_accuracy": [round(row["val_accuracy"], 4) for row in final[mixed]],
        "float32_final_val_loss": [round(row["val_loss"], 4) for row in final["float32"]],
        "mixed_final_val_loss": [round(row["val_loss"], 4) for row in final[mixed]],
    }))


if __name__ == "__main__":
    main()
