"""Champion and challenger: the promoted model against a new one, on the same test images, and the rule that
decides whether the new one takes over."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from catsdogs import registry
from catsdogs.predict import collect_inputs, open_predictor, predict_files

Decision = Literal["promote", "keep", "ask"]


class Standing(BaseModel):
    """One model's result on the compared images."""

    name: str
    variant: str
    created_at: str
    accuracy: float  # on the compared images, answered as predict answers
    registered_accuracy: float  # on its own run's test subset, from its card


class Comparison(BaseModel):
    """Both models on one set of test images, and what the rule made of it."""

    images: int
    folder: Path
    challenger: Standing
    champion: Standing | None  # None: nothing promoted yet
    rule: str
    margin: float
    decision: Decision
    reason: str


def accuracy_on(workdir: Path, model: str, folder: Path) -> tuple[float, int]:
    """MODEL's accuracy on the images under FOLDER (each in a cat/ or dog/ folder), answered as predict does."""
    predictions = list(predict_files(open_predictor(model, workdir), collect_inputs([str(folder)])))
    scored = [p for p in predictions if p.error is None]
    if not scored:
        raise ValueError(f"no image under {folder} could be classified")
    correct = sum(p.label == Path(p.path).parent.name for p in scored)
    return correct / len(scored), len(scored)


def standing(card: registry.ModelCard, accuracy: float) -> Standing:
    return Standing(name=card.name, variant=card.variant, created_at=card.created_at, accuracy=accuracy,
                    registered_accuracy=card.test_accuracy)


def compare_with_champion(workdir: Path, challenger: str, folder: Path, rule: str, margin: float) -> Comparison:
    """Score the registered model CHALLENGER and the champion on FOLDER's images; decide by RULE (never,
    if-better by MARGIN, ask)."""
    new = registry.resolve_model(workdir, challenger)
    accuracy, images = accuracy_on(workdir, new.name, folder)
    crowned = registry.champion(workdir)
    held = None
    if crowned is not None:
        held = standing(crowned, accuracy if crowned.name == new.name else accuracy_on(workdir, crowned.name,
                                                                                       folder)[0])
    decision, reason = decide(accuracy, held, new.name, rule, margin)
    return Comparison(images=images, folder=folder, challenger=standing(new, accuracy), champion=held, rule=rule,
                      margin=margin, decision=decision, reason=reason)


def decide(accuracy: float, held: Standing | None, challenger: str, rule: str,
           margin: float) -> tuple[Decision, str]:
    """The rule's verdict on a challenger of ACCURACY against the champion HELD, with the reason in words."""
    if held is not None and held.name == challenger:
        return "keep", "the new model is the champion already"
    if rule == "never":
        return "keep", "this run's rule is promote=never"
    if rule == "ask":
        return "ask", "this run's rule is promote=ask: a person decides in the Prefect UI"
    if held is None:
        return "promote", "there is no champion yet"
    gain = accuracy - held.accuracy
    if gain >= margin:
        return "promote", f"it is better by {gain:+.4f}, at least the margin {margin:.4f}"
    return "keep", f"its accuracy differs by {gain:+.4f}, less than the margin {margin:.4f}"
