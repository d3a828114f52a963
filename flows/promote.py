"""The promotion flow: make a registered model the champion, from the Prefect UI (deployment promote-model)."""

from __future__ import annotations

from prefect import flow

from catsdogs.settings import load_settings
from tasks.champion import promote_model


@flow(name="catsdogs-promote", flow_run_name="promote-{model}")
def promote_flow(model: str) -> str:
    """Make MODEL (a registered name, or best or latest) the champion that predict, web and score-folder use,
    in the serving side's workdir (CATSDOGS_WORKDIR where it runs)."""
    return promote_model(model, load_settings().workdir, "promoted by a person (deployment promote-model)")
