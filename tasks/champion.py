"""The champion: a new model compared with it on the same test images, then promoted by the run's rule or
by a person's answer in the Prefect UI."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import Field

from catsdogs import champion, registry
from catsdogs.champion import Comparison
from catsdogs.data import Subsets
from catsdogs.settings import Settings

APPROVAL_WAIT_S = 24 * 3600  # a nightly run asks once a day: unanswered by then, the run fails and nothing changes


class PromotionAnswer(RunInput):
    """What a person answers when a run asks whether its model should become the champion."""

    promote: bool = Field(False, description="make the new model the champion")


@task(name="compare-with-champion")
def compare_with_champion(model_path: Path, subsets: Subsets,
                          settings: Settings) -> tuple[Comparison | None, dict[str, str]]:
    """Score the new model and the champion on this run's test images and publish them side by side; with
    nothing promoted and promote=never there is nothing to compare (None). Returns the artifact's link too."""
    if settings.promote == "never" and registry.champion(settings.workdir) is None:
        return None, {}
    comparison = champion.compare_with_champion(settings.workdir, Path(model_path).parent.name,
                                                subsets.root / "test", settings.promote, settings.promote_margin)
    artifact = create_markdown_artifact(comparison_markdown(comparison), key="champion-comparison",
                                        description=f"{comparison.decision}: {comparison.reason}")
    get_run_logger().info("champion comparison on %d test images: %s (%s)", comparison.images,
                          comparison.decision, comparison.reason)
    return comparison, {"champion-comparison": str(artifact)}


def comparison_markdown(comparison: Comparison) -> str:
    """Both models' results in one table, and the rule's verdict."""
    rows = [("new model", comparison.challenger), ("champion", comparison.champion)]
    table = "\n".join(
        f"| {role} | `{s.name}` | {s.variant} | {s.accuracy:.4f} | {s.registered_accuracy:.4f} | "
        f"{s.created_at[:16].replace('T', ' ')} |" for role, s in rows if s is not None)
    return (f"# New model against the champion\n\nOn the same {comparison.images} test images "
            f"(`{comparison.folder}`), answered as `catsdogs predict` answers.\n\n"
            "| | model | variant | accuracy here | test accuracy (own run) | registered |\n"
            f"|---|---|---|---|---|---|\n{table}\n\n"
            + ("" if comparison.champion else "No model is the champion yet.\n\n")
            + f"Rule: promote={comparison.rule}, margin {comparison.margin:.4f}. "
              f"Decision: **{comparison.decision}**: {comparison.reason}.\n")


def settle_champion(comparison: Comparison | None, workdir: Path) -> bool:
    """Act on the comparison: promote, keep, or pause the run until a person answers in the Prefect UI
    (Runs → this run → Resume). True when the new model became the champion."""
    if comparison is None:
        return False
    log = get_run_logger()
    promote, reason = comparison.decision == "promote", comparison.reason
    if comparison.decision == "ask":
        log.info("waiting for a person: resume this run in the Prefect UI and answer whether %s becomes the "
                 "champion", comparison.challenger.name)
        answer = pause_flow_run(
            wait_for_input=PromotionAnswer.with_initial_data(description=comparison_markdown(comparison)),
            timeout=APPROVAL_WAIT_S, poll_interval=2)
        promote, reason = answer.promote, "approved by a person in the Prefect UI"
        log.info("the answer: %s", "promote" if promote else "keep the champion")
    if promote:
        promote_model(comparison.challenger.name, workdir, reason)
    return promote


@task(name="promote-model")
def promote_model(name: str, workdir: Path, reason: str) -> str:
    """Make the registered model NAME the champion."""
    card = registry.promote(workdir, name, reason)
    get_run_logger().info("%s is the champion now (%s)", card.name, reason)
    return card.name
