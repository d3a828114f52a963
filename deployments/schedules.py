"""The deployments, their schedules and parameters: the one place they are defined.

`prefect.yaml` (for `prefect deploy` into a work pool) repeats these; a test keeps the two identical.
"""

from __future__ import annotations

from typing import Any

TIMEZONE = "UTC"
# A training deployment's parameters are its Run form's choices (catsdogs.settings.CHOICE_FIELDS): what it
# trains. Where it trains and which data it reads are the serving side's settings (CATSDOGS_WORKDIR,
# CATSDOGS_DATA_URL, a CATSDOGS_CONFIG file where `catsdogs serve` or the worker runs), never a form's.

TRAINING: list[dict[str, Any]] = [
    {
        "name": "nightly-baseline",
        "description": "Nightly quick check: the baseline for 10 epochs on the reference subsets; its model "
                       "becomes the champion when it beats it by 0.005 on the same test images.",
        "cron": "0 2 * * *",
        "parameters": {"choices": {"variant": "baseline", "epochs": 10, "promote": "if-better",
                                   "promote_margin": 0.005}},
    },
    {
        "name": "weekly-augmented",
        "description": "Weekly full retrain: the augmented model, 100 epochs, the reference experiment; the "
                       "run then pauses for a person to promote its model or keep the champion.",
        "cron": "0 3 * * 0",
        "parameters": {"choices": {"variant": "augmented", "epochs": 100, "promote": "ask"}},
    },
]

PREDICTION: dict[str, Any] = {
    "name": "score-folder",
    "description": "Classify the images in a folder of the workdir (incoming, unless the Run form names "
                   "others) with the champion, or the best model while none is promoted; run on demand.",
    "parameters": {"paths": ["incoming"], "model": "champion"},
}

# On demand, from the UI: make a registered model the champion.
PROMOTION: dict[str, Any] = {
    "name": "promote-model",
    "description": "Make a registered model the champion that predict, web and score-folder use: its name "
                   "(see the leaderboard artifact), or best or latest (run on demand).",
    "parameters": {"model": "best"},
}

# On demand: one run trains every configuration of the grid (each its own training-flow run) and compares them.
SWEEP: dict[str, Any] = {
    "name": "seed-study",
    "description": "Compare configurations over seeds in one run: by default the reference augmented study, "
                   "seeds 0, 1 and 2 (run on demand; edit the grid and the choices in the Run form).",
    "parameters": {"grid": {"variant": ["augmented"], "seed": [0, 1, 2]}},
}
