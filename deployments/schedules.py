"""The deployments, their schedules and parameters: the one place they are defined.

`prefect.yaml` (for `prefect deploy` into a work pool) repeats these; a test keeps the two identical.
"""

from __future__ import annotations

from typing import Any

TIMEZONE = "UTC"

TRAINING: list[dict[str, Any]] = [
    {
        "name": "nightly-baseline",
        "description": "Nightly quick check: the baseline for 10 epochs on the reference subsets.",
        "cron": "0 2 * * *",
        "parameters": {"settings": {"variant": "baseline", "epochs": 10}},
    },
    {
        "name": "weekly-augmented",
        "description": "Weekly full retrain: the augmented model, 100 epochs, the reference experiment.",
        "cron": "0 3 * * 0",
        "parameters": {"settings": {"variant": "augmented", "epochs": 100}},
    },
]

PREDICTION: dict[str, Any] = {
    "name": "score-folder",
    "description": "Classify a folder of images with the best registered model (run on demand).",
    "parameters": {"paths": ["incoming"], "model": "best"},
}

# On demand: one run trains every configuration of the grid (each its own training-flow run) and compares them.
SWEEP: dict[str, Any] = {
    "name": "seed-study",
    "description": "Compare configurations over seeds in one run: by default the reference augmented study, "
                   "seeds 0, 1 and 2 (run on demand; edit the grid in the Run form).",
    "parameters": {"grid": {"variant": ["augmented"], "seed": [0, 1, 2]}},
}
