"""Prediction speed: images per second over a folder of 1,000 real images, and one-image latency.

Uses --model (default: a freshly built reference model at 180×180, saved to a temporary file: the speed of
inference does not depend on the weights). Images are the first 500 cats and 500 dogs of
../shared/data/dogs-vs-cats/train.zip. Prints one JSON object on its last line.

    python benchmarks/predict_throughput.py [--model PATH] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "dogs-vs-cats" / "train.zip"


def timed(args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env=os.environ | {"TF_CPP_MIN_LOG_LEVEL": "2"})
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="catsdogs-predict-bench-"))
    with zipfile.ZipFile(ARCHIVE) as zf:
        for cls in ("cat", "dog"):
            for i in range(500):
                zf.extract(f"train/{cls}.{i}.jpg", work / "images")
    folder = work / "images" / "train"
    model = args.model
    if model is None:
        from catsdogs.model import build_model

        model = work / "reference.keras"
        build_model("baseline", 180).save(model)

    from catsdogs.predict import Predictor, collect_inputs, predict_files

    predictor = Predictor(model)
    inputs = collect_inputs([str(folder)])
    list(predict_files(predictor, inputs[:64]))  # warm-up: graph tracing
    in_process = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        results = list(predict_files(predictor, inputs))
        in_process.append(time.perf_counter() - started)
    assert len(results) == 1000 and not any(r.error for r in results)

    command = [sys.executable, "-m", "flows.cli", "predict", "--model", str(model), "--json"]
    folder_s = [timed([*command, str(folder)]) for _ in range(args.repeats)]
    one_s = [timed([*command, str(folder / "cat.0.jpg")]) for _ in range(args.repeats)]
    print(json.dumps({
        "images": len(inputs), "cpu_count": os.cpu_count(),
        "in_process_images_per_s": round(len(inputs) / statistics.median(in_process), 1),
        "folder_command_s": round(statistics.median(folder_s), 2),
        "folder_command_images_per_s": round(len(inputs) / statistics.median(folder_s), 1),
        "one_image_command_latency_s": round(statistics.median(one_s), 2),
    }))


if __name__ == "__main__":
    main()
