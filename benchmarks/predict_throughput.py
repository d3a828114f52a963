"""Prediction speed, LiteRT against TensorFlow side by side: one image and 1,000 images, the whole command.

A reference model (--variant, default baseline at 180×180; the speed of inference does not depend on the
weights) is registered in a temporary workdir, which exports it for LiteRT. `catsdogs predict --model NAME`
then runs on LiteRT without importing TensorFlow; the same model given as a .keras file outside the registry
runs on TensorFlow, as every model did before. Images are the first 500 cats and 500 dogs of
../shared/data/dogs-vs-cats/train.zip. Each command runs REPEATS times, alternating; medians are reported.
Prints one JSON object on its last line, with the share of the one-image command that is Python's start
and the command's imports (`python -X importtime` on the LiteRT route names the largest).

    python benchmarks/predict_throughput.py [--variant baseline] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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


def import_seconds(args: list[str]) -> tuple[float, list[tuple[str, float]]]:
    """Seconds the command spends importing, and its five largest top-level imports, from -X importtime."""
    done = subprocess.run([sys.executable, "-X", "importtime", *args[1:]], capture_output=True, text=True,
                          env=os.environ | {"TF_CPP_MIN_LOG_LEVEL": "2"}, check=True)
    top = []  # imports at the outermost level: their cumulative times add up to the whole
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, cumulative, name = line.split("|")
            if cumulative.strip().isdigit() and not name[1:].startswith(" "):
                top.append((name.strip(), int(cumulative) / 1e6))
    return sum(s for _, s in top), sorted(top, key=lambda item: -item[1])[:5]


def register_untrained(variant: str, workdir: Path) -> str:
    """Register a freshly built model of VARIANT (so exported for LiteRT); returns its registered name."""
    from catsdogs.model import build_for
    from catsdogs.registry import register_model
    from catsdogs.settings import Settings
    from catsdogs.train import Metrics, TrainedModel

    settings = Settings(variant=variant, workdir=workdir, precision="float32")
    run_dir = workdir / "runs" / f"bench-{variant}"
    run_dir.mkdir(parents=True)
    build_for(settings, "float32", 1).save(run_dir / "best.keras")
    trained = TrainedModel(run_dir=run_dir, variant=variant, epochs=1, best_epoch=1, best_val_loss=0.0, summary="")
    metrics = Metrics(variant=variant, test_accuracy=0.5, test_loss=0.7, test_images=0, best_epoch=1, epochs=1,
                      model_path=trained.model_path, confusion=[[0, 0], [0, 0]],
                      predictions_path=run_dir / "none.json")
    card = register_model(trained, metrics, settings, "0" * 64)
    if card.litert_error:
        sys.exit(f"the {variant} model could not be exported for LiteRT: {card.litert_error}")
    return card.name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="baseline")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not ARCHIVE.is_file():
        sys.exit(f"the real archive is needed at {ARCHIVE}")
    work = Path(tempfile.mkdtemp(prefix="catsdogs-predict-bench-"))
    with zipfile.ZipFile(ARCHIVE) as zf:
        for cls in ("cat", "dog"):
            for i in range(500):
                zf.extract(f"train/{cls}.{i}.jpg", work / "images")
    folder, one = work / "images" / "train", work / "images" / "train" / "cat.0.jpg"
    name = register_untrained(args.variant, work / "work")
    outside = work / "outside.keras"  # no card beside it: the TensorFlow route
    shutil.copyfile(work / "work" / "models" / name / "model.keras", outside)

    command = [sys.executable, "-m", "deployments.cli", "predict", "--json", "--workdir", str(work / "work")]
    routes = {"litert": [*command, "--model", name], "tensorflow": [*command, "--model", str(outside)]}
    seconds: dict[str, dict[str, list[float]]] = {r: {"one": [], "folder": []} for r in routes}
    for _ in range(args.repeats):
        for route, args_ in routes.items():
            seconds[route]["one"].append(timed([*args_, str(one)]))
            seconds[route]["folder"].append(timed([*args_, str(folder)]))
    result: dict[str, object] = {"variant": args.variant, "images": 1000, "cpu_count": os.cpu_count()}
    for route in routes:
        result[f"{route}_one_image_command_s"] = round(statistics.median(seconds[route]["one"]), 3)
        result[f"{route}_folder_command_s"] = round(statistics.median(seconds[route]["folder"]), 2)
        result[f"{route}_folder_images_per_s"] = round(1000 / statistics.median(seconds[route]["folder"]), 1)
    startup = statistics.median(timed([sys.executable, "-c", "pass"]) for _ in range(args.repeats))
    imports, largest = import_seconds([*routes["litert"], str(one)])
    one_image = result["litert_one_image_command_s"]
    result |= {"python_start_s": round(startup, 3), "litert_imports_s": round(imports, 3),
               "litert_one_image_import_share": round(imports / one_image, 2),  # type: ignore[operator]
               "litert_largest_imports_s": {name: round(s, 3) for name, s in largest}}
    result["one_image_speedup"] = round(result["tensorflow_one_image_command_s"]  # type: ignore[operator]
                                        / result["litert_one_image_command_s"], 2)  # type: ignore[operator]
    result["folder_speedup"] = round(result["tensorflow_folder_command_s"]  # type: ignore[operator]
                                     / result["litert_folder_command_s"], 2)  # type: ignore[operator]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
