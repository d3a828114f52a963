"""The promotion flow: make a registered model the champion, from the Prefect UI (deployment promote-model)."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from tasks.champion import promote_model


@flow(name="catsdogs-promote", flow_run_name="promote-{model}")
def promote_flow(model: str, workdir: Path = Path("catsdogs-work")) -> str:
    """Make MODEL (a registered name, or best or latest) the champion that predict, web and score-folder use."""
    return promote_model(model, workdir, "promoted by a person (deployment promote-model)")
