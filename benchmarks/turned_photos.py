"""What a photo's EXIF orientation is worth: a registered model's accuracy on the test images as stored, and on the
same images stored turned the way a phone stores a photo taken held sideways (the pixels turned, EXIF naming the
turn that shows them upright), read with the tag (as `catsdogs predict` and the web app read it) and without it
(the pixels as stored: what prediction saw before it read the tag).

Each test image is decoded once, turned by a quarter (EXIF 6 and 8, half each) and saved as PNG, lossless, so that
only the turn differs. Prints one JSON line per case, then the accuracies side by side.

    python benchmarks/turned_photos.py --workdir WORKDIR --subsets WORKDIR/subsets/KEY [--model champion]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from catsdogs.predict import open_predictor, predict_files

QUARTER_TURNS = {6: 1, 8: -1}  # EXIF orientation -> np.rot90's k that stores the upright picture so


def stored_turned(source: Path, out: Path, orientation: int, tagged: bool) -> None:
    """SOURCE's pixels turned as a camera held sideways stores them, as PNG; its EXIF names the turn if TAGGED."""
    with Image.open(source) as image:
        pixels = np.rot90(np.asarray(image.convert("RGB")), QUARTER_TURNS[orientation])
    exif = Image.Exif()
    if tagged:
        exif[0x0112] = orientation
    Image.fromarray(np.ascontiguousarray(pixels)).save(out, format="PNG", exif=exif.tobytes())


def accuracy(predictor, files: list[Path], labels: list[str]) -> dict:
    answers = list(predict_files(predictor, [(str(f), f, None) for f in files]))
    errors = [a for a in answers if a.error]
    right = sum(a.label == label for a, label in zip(answers, labels, strict=True))
    return {"images": len(files), "errors": len(errors), "accuracy": round(right / len(files), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--subsets", type=Path, required=True, help="a subsets step folder (its test/ is read)")
    parser.add_argument("--model", default="champion")
    args = parser.parse_args()
    originals = sorted((args.subsets / "test").rglob("*.jpg"))
    labels = [path.parent.name for path in originals]  # test/cat/cat.1500.jpg -> cat
    predictor = open_predictor(args.model, args.workdir)
    results = {"as stored": accuracy(predictor, originals, labels)}
    with tempfile.TemporaryDirectory() as scratch:
        for tagged in (True, False):
            turned = []
            for index, source in enumerate(originals):
                turned.append(Path(scratch) / f"{tagged}-{index}.png")
                stored_turned(source, turned[-1], (6, 8)[index % 2], tagged)
            results["turned, EXIF read" if tagged else "turned, no EXIF (sideways)"] = accuracy(
                predictor, turned, labels)
    for case, result in results.items():
        print(json.dumps({"case": case, "model": predictor.name, "runtime": predictor.runtime} | result))
    base = results["as stored"]["accuracy"]
    print("accuracy against the images as stored: " + ", ".join(
        f"{case} {result['accuracy']:.4f} ({result['accuracy'] - base:+.4f})" for case, result in results.items()))


if __name__ == "__main__":
    main()
