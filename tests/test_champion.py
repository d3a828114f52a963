"""The champion: one rule for "best", a promoted model that predict, web and score-folder use, and a new model
compared with it on the same test images before a rule (or a person) promotes it."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest

from catsdogs import registry, store
from catsdogs.champion import Standing, compare_with_champion, decide
from catsdogs.lite import LITERT_FILE
from tests.conftest import run_cli
from tests.test_predict import trained  # noqa: F401  (trained: the module's tiny registered model)


def clone(card: registry.ModelCard, workdir: Path, name: str, **changes) -> registry.ModelCard:
    """Another registered model in WORKDIR: CARD's files under NAME, its card changed by CHANGES."""
    folder = registry.models_dir(workdir) / name
    shutil.copytree(card.path.parent, folder)
    recorded = card.model_dump(mode="json") | {"name": name, "path": str(folder / registry.MODEL_FILE)} | changes
    if card.litert_path:
        recorded["litert_path"] = str(folder / LITERT_FILE)
    store.write_json_atomic(folder / registry.CARD_FILE, recorded)
    store.mark_complete(folder, recorded, unchecked=(LITERT_FILE,))
    return registry.resolve_model(workdir, name)


@pytest.fixture
def four_models(trained, tmp_path: Path) -> Path:  # noqa: F811
    """a (0.6, oldest), b and c (0.8, c newer: the best), d (0.5, the latest)."""
    workdir = tmp_path / "work"
    for name, accuracy, day in (("a", 0.6, 1), ("b", 0.8, 2), ("c", 0.8, 3), ("d", 0.5, 4)):
        clone(trained["card"], workdir, name, test_accuracy=accuracy, created_at=f"2026-11-0{day}T10:00:00+00:00")
    return workdir


def test_best_is_one_rule_everywhere_and_the_champion_answers_once_promoted(four_models: Path):
    workdir = four_models
    assert [card.name for card in registry.ranked(registry.list_models(workdir))] == ["c", "b", "a", "d"]
    assert [row["model"] for row in registry.leaderboard(workdir)] == ["c", "b", "a", "d"]  # the same order
    first = registry.leaderboard(workdir)[0]  # the columns the README lists (few: the pane is 724 px wide)
    assert list(first) == ["model", "test accuracy", "variant", "epochs (best)", "seed", "precision", "created"]
    assert first["test accuracy"] == "0.8000" and first["created"] == "11-03 10:00"  # 4 places, as elsewhere
    assert registry.resolve_model(workdir, "best").name == "c" and registry.resolve_model(workdir, "latest").name == "d"
    assert registry.resolve_model(workdir).name == "c"  # no champion yet: the best answers

    result = run_cli("models", "promote", "--workdir", str(workdir), "a")  # the name after an option too
    assert result.returncode == 0 and "a is the champion" in result.stdout, result.stderr
    assert registry.resolve_model(workdir).name == registry.resolve_model(workdir, "champion").name == "a"
    assert [row["model"] for row in registry.leaderboard(workdir)] == ["c", "b", "a ★", "d"]
    listed = {row["name"]: row["marks"] for row in map(json.loads, run_cli("models", "--workdir", str(workdir),
                                                                         "--json").stdout.splitlines())}
    assert listed == {"a": ["champion"], "b": [], "c": ["best"], "d": ["latest"]}

    shutil.rmtree(registry.models_dir(workdir) / "a")  # the champion deleted: the best answers, with a warning
    assert registry.resolve_model(workdir).name == "c"


def test_promote_needs_a_registered_name(four_models: Path):
    missing = run_cli("models", "promote", "--workdir", str(four_models))
    assert missing.returncode == 2 and "name the model to promote" in missing.stderr
    unknown = run_cli("models", "promote", "zz", "--workdir", str(four_models))
    assert unknown.returncode == 2 and "no registered model named 'zz'; known: a, b, c, d" in unknown.stderr
    assert registry.champion(four_models) is None  # nothing promoted by a failed command


def standing(name: str, accuracy: float) -> Standing:
    return Standing(name=name, variant="baseline", created_at="", accuracy=accuracy, registered_accuracy=accuracy)


@pytest.mark.parametrize(("rule", "champion", "accuracy", "margin", "decision"), [
    ("never", standing("old", 0.5), 0.9, 0.0, "keep"),
    ("if-better", None, 0.5, 0.01, "promote"),  # the first model becomes the champion
    ("if-better", standing("old", 0.80), 0.81, 0.01, "promote"),
    ("if-better", standing("old", 0.80), 0.805, 0.01, "keep"),  # better, but by less than the margin
    ("if-better", standing("old", 0.80), 0.70, 0.0, "keep"),
    ("ask", standing("old", 0.80), 0.70, 0.0, "ask"),
    ("if-better", standing("new", 0.80), 0.80, 0.0, "keep"),  # the champion already
])
def test_the_promotion_rule(rule, champion, accuracy, margin, decision):
    verdict, reason = decide(accuracy, champion, "new", rule, margin)
    assert verdict == decision and reason


def test_the_new_model_and_the_champion_answer_on_the_same_images(trained, four_models: Path):  # noqa: F811
    registry.promote(four_models, "a", "test")
    folder = trained["subsets"].root / "test"
    comparison = compare_with_champion(four_models, "b", folder, "if-better", 0.0)
    images = len(list(folder.rglob("*.jpg")))
    assert comparison.images == images and comparison.champion and comparison.champion.name == "a"
    # the same network under two names: the same answers on the same images, whatever their cards claim
    assert comparison.challenger.accuracy == comparison.champion.accuracy
    assert (comparison.challenger.registered_accuracy, comparison.champion.registered_accuracy) == (0.8, 0.6)
    assert comparison.decision == "promote"  # gained 0, and the margin is 0
    assert compare_with_champion(four_models, "b", folder, "if-better", 0.01).decision == "keep"


def test_a_retraining_promotes_by_its_rule_or_waits_for_a_persons_answer(prefect_server, sample_archive,
                                                                         tmp_path: Path):
    from prefect import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.flow_runs import resume_flow_run

    from flows.train import train_flow
    from tests.test_flow import tiny

    workdir = tmp_path / "w"
    first = train_flow(tiny(sample_archive.as_uri(), workdir, promote="if-better"), return_state=True)
    assert first.is_completed(), first.message
    crowned = registry.champion(workdir)  # the first model: there was no champion before it
    assert crowned is not None and crowned.test_accuracy == first.result().test_accuracy

    finished = []
    second = threading.Thread(target=lambda: finished.append(train_flow(
        tiny(sample_archive.as_uri(), workdir, promote="ask", seed=1), return_state=True)))
    second.start()
    paused = None
    with get_client(sync_client=True) as client:
        deadline = time.monotonic() + 300
        while paused is None and time.monotonic() < deadline and second.is_alive():
            waiting = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))))
            paused = next((run for run in waiting if str(workdir) in json.dumps(run.parameters, default=str)), None)
            time.sleep(1)
        assert paused is not None, "the run did not pause to ask"
        artifacts = {a.key: a for a in client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[paused.id])))}
        assert "Decision: **ask**" in artifacts["champion-comparison"].data
        assert registry.champion(workdir).name == crowned.name  # nothing changes while it waits
        resume_flow_run(paused.id, run_input={"promote": True})
    second.join(300)
    assert finished and finished[0].is_completed(), finished and finished[0].message
    assert registry.champion(workdir).name != crowned.name  # the person's answer promoted the new model
