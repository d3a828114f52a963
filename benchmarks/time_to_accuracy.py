"""Time to accuracy on this machine: the xception defaults against the fast and best recipes, side by side.

Each recipe runs as a user runs it, `catsdogs run --variant V --seed S --json`, in a fresh process, one after
the other (never two at once: they would share the cores), each in its own workdir so that nothing is taken
from a cache. Prints one JSON line per run (wall time of the whole flow, epochs, median training images/s,
validation accuracy of the kept epoch, test accuracy, CPU flags and any ONEDNN_MAX_CPU_ISA cap), then one
object with each recipe's mean test accuracy and its mean wall time relative to the first recipe's.

    python benchmarks/time_to_accuracy.py --data-url file://$PWD/../shared/data/dogs-vs-cats/train.zip \
        [--variants xception fast best] [--seeds 0 1 2] [--workdir /tmp/tta] [-- --epochs 50 ...]

Arguments after `--` go to every run (say, `-- --precision float32` on a BF16 CPU to see float32 speed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu() -> dict[str, object]:
    """The CPU's model name, core count and the vector flags that decide its speed."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "")
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA")  # a cap makes the CPU run as one without the flags above it
    return {"cpu": model, "cores": os.cpu_count(), "flags": [flag for flag in FLAGS if flag in flags]} | (
        {"onednn_max_cpu_isa": cap} if cap else {})


def one_run(variant: str, seed: int, data_url: str, workdir: Path, extra: list[str]) -> dict[str, object]:
    command = [sys.executable, "-m", "deployments.cli", "run", "--variant", variant, "--seed", str(seed),
               "--data-url", data_url, "--workdir", str(workdir), "--json", *extra]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    wall = time.monotonic() - started
    if done.returncode != 0:
        return {"variant": variant, "seed": seed, "error": done.stderr.strip().splitlines()[-1:]}
    metrics = json.loads(done.stdout.strip().splitlines()[-1])
    run_dir = Path(metrics["model_path"]).parent
    history = json.loads((run_dir / "history.json").read_text())
    settings = json.loads((run_dir / "settings.json").read_text())
    first, last = settings["train_range"]
    train_images = 2 * (last - first + 1)  # both classes
    kept = next(row for row in history if row["epoch"] == metrics["best_epoch"])
    return {"variant": variant, "seed": seed, "wall_s": round(wall, 1), "epochs": len(history),
            "best_epoch": metrics["best_epoch"],
            "images_per_s": round(statistics.median(train_images / row["seconds"] for row in history), 1),
            "val_accuracy": round(kept["val_accuracy"], 4), "test_accuracy": metrics["test_accuracy"],
            "test_loss": round(metrics["test_loss"], 4), "command": " ".join(command[1:])} | cpu()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-url", required=True)
    parser.add_argument("--variants", nargs="+", default=["xception", "fast", "best"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/catsdogs-time-to-accuracy"))
    args, extra = parser.parse_known_args()
    extra = [word for word in extra if word != "--"]
    runs = []
    for variant in args.variants:
        for seed in args.seeds:
            run = one_run(variant, seed, args.data_url, args.workdir / f"{variant}-seed{seed}", extra)
            print(json.dumps(run), flush=True)
            runs.append(run)
    summary: dict[str, dict[str, float]] = {}
    for variant in args.variants:
        done = [run for run in runs if run["variant"] == variant and "error" not in run]
        if done:
            summary[variant] = {"mean_test_accuracy": round(statistics.mean(r["test_accuracy"] for r in done), 4),
                                "mean_wall_s": round(statistics.mean(r["wall_s"] for r in done), 1)}
    if summary:
        reference = next(iter(summary.values()))["mean_wall_s"]
        for values in summary.values():
            values["time_relative_to_first"] = round(values["mean_wall_s"] / reference, 3)
    print(json.dumps({"summary": summary} | cpu()))


if __name__ == "__main__":
    main()
