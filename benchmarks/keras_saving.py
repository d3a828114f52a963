"""A model's save and load, with Keras' saving as it comes against catsdogs.model.keras_saving_keeps_its_skip_sets,
side by side: each variant's network compiled as training compiles it (its optimizer built), at its image size.

    python benchmarks/keras_saving.py [--variants fast efficientnet] [--rounds 5]

Keras (3.15) works out again, for each layer of each save and load, which attributes every object of its kind
has; catsdogs keeps each kind's set. For each variant, alternating the two ROUNDS times: median seconds of
save_weights (what each epoch's resume state writes), load_weights (what a resume reads) and save (the best
checkpoint), and each one's ratio. Prints one JSON line per variant.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from catsdogs.model import build_for, keras_saving_keeps_its_skip_sets
from catsdogs.runtime import tensorflow
from catsdogs.settings import Settings


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def compare(variant: str, rounds: int, folder: Path) -> dict[str, object]:
    from keras.src.saving import saving_lib

    model = build_for(Settings(variant=variant, backbone_weights="random"), "float32", steps_per_epoch=63)
    kept = saving_lib.get_attr_skipset
    ways = {"keras": getattr(kept, "keras_own", kept), "kept": kept}  # the same where Keras keeps them itself
    actions = {"save_weights": lambda: model.save_weights(folder / "w.weights.h5"),
               "load_weights": lambda: model.load_weights(folder / "w.weights.h5"),
               "save": lambda: model.save(folder / "m.keras")}
    seconds = {(way, action): [] for way in ways for action in actions}
    actions["save_weights"]()  # the file load_weights reads, and a first save's one-off costs
    for _ in range(rounds):
        for way, skip_set in ways.items():
            saving_lib.get_attr_skipset = skip_set
            for action, run in actions.items():
                seconds[(way, action)].append(timed(run))
    saving_lib.get_attr_skipset = kept
    median = {key: statistics.median(times) for key, times in seconds.items()}
    return {"variant": variant, "layers": len(model.layers), "variables": len(model.variables),
            "optimizer_variables": len(model.optimizer.variables),
            "median_s": {f"{way} {action}": round(value, 3) for (way, action), value in median.items()},
            "keras_over_kept": {action: round(median[("keras", action)] / median[("kept", action)], 2)
                                for action in actions}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=["fast", "efficientnet"])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    tensorflow()
    keras_saving_keeps_its_skip_sets()
    with tempfile.TemporaryDirectory() as folder:
        for variant in args.variants:
            print(json.dumps(compare(variant, args.rounds, Path(folder))), flush=True)


if __name__ == "__main__":
    main()
