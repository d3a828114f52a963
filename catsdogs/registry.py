"""The model registry: one self-describing folder per evaluated model, under WORKDIR/models."""

from __future__ import annotations

import json
import logging
import platform
import shutil
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from catsdogs import store
from catsdogs.lite import LITERT_FILE
from catsdogs.model import in_float32, load_keras_model
from catsdogs.results import Metrics, TrainedModel
from catsdogs.runtime import error_line, tensorflow
from catsdogs.settings import Settings
from catsdogs.views import views_name

log = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
CARD_FILE = "model.json"


class RegistryError(LookupError):
    """No model matches what was asked for; the message says how to get one."""


class ModelCard(BaseModel):
    """What a registered model is: how it was trained, on what, and how well it did."""

    name: str
    path: Path  # the .keras file
    created_at: str
    variant: str
    image_size: int
    test_accuracy: float
    test_loss: float
    best_epoch: int
    epochs: int
    data_url: str
    data_sha256: str | None
    settings: dict[str, Any]
    versions: dict[str, str]
    litert_path: Path | None = None  # the LiteRT export `catsdogs predict` runs without TensorFlow
    litert_error: str | None = None  # why there is none
    litert_sha256: str | None = None  # of the export as written: a file that differs is not used


def models_dir(workdir: Path) -> Path:
    return Path(workdir).resolve() / "models"


def model_folder(workdir: Path, run_dir: Path, tta_flip: bool, tta_crop: float, tta_zoom_out: float = 0.0) -> Path:
    """Where the model of RUN_DIR, evaluated over those views, is registered: named after the run and the views,
    so that each card's views and metrics are its own."""
    return models_dir(workdir) / views_name(Path(run_dir).name, tta_flip, tta_crop, tta_zoom_out)


def register_model(trained: TrainedModel, metrics: Metrics, settings: Settings, data_sha256: str,
                   folder: Path | None = None) -> ModelCard:
    """Copy an evaluated model into the registry (into FOLDER, by default its model_folder) with its card;
    registering the same run and views twice is a no-op."""
    folder = folder or model_folder(settings.workdir, trained.run_dir, metrics.tta_flip, metrics.tta_crop,
                                    metrics.tta_zoom_out)
    return store.run_once(folder, lambda: _register(folder, trained, metrics, settings, data_sha256),
                          lambda _: load_card(folder))


def _register(folder: Path, trained: TrainedModel, metrics: Metrics, settings: Settings,
              data_sha256: str) -> ModelCard:
    public = settings.public_dict()
    with store.fresh_dir(folder) as tmp:
        shutil.copyfile(trained.model_path, tmp / MODEL_FILE)
        litert_error = export_litert(tmp / MODEL_FILE, tmp / LITERT_FILE)
        card = ModelCard(
            name=folder.name, path=folder / MODEL_FILE, created_at=datetime.now(UTC).isoformat(),
            variant=trained.variant, image_size=settings.image_size, test_accuracy=metrics.test_accuracy,
            test_loss=metrics.test_loss, best_epoch=metrics.best_epoch, epochs=metrics.epochs,
            data_url=public["data_url"], data_sha256=data_sha256, settings=public, versions=_versions(),
            litert_path=None if litert_error else folder / LITERT_FILE, litert_error=litert_error,
            litert_sha256=None if litert_error else store.file_sha256(tmp / LITERT_FILE))
        store.write_json_atomic(tmp / CARD_FILE, card.model_dump(mode="json"))
        # A broken export must not hide the model: predict checks it against the card and falls back instead.
        store.mark_complete(tmp, card.model_dump(mode="json"), unchecked=(LITERT_FILE,))
    log.info("registered model %s (test accuracy %.4f)", card.name, card.test_accuracy)
    return card


def export_litert(model_path: Path, out: Path) -> str | None:
    """Export the model for LiteRT, computing in float32; returns None, or why it could not be exported.

    A model trained in mixed precision is exported in float32 with its weights (which are float32 anyway):
    LiteRT has no bfloat16 kernels, and inference needs none of mixed precision's speed-up.
    """
    tensorflow()

    try:
        model = load_keras_model(model_path)
        if any(layer.compute_dtype != "float32" for layer in model.layers):
            model = in_float32(model)
        Path(out).write_bytes(litert_flatbuffer(model))
    except Exception as err:  # noqa: BLE001  predict falls back to TensorFlow and says why
        Path(out).unlink(missing_ok=True)
        log.warning("no LiteRT export for %s (%s); predict will use TensorFlow", model_path.parent.name,
                    error_line(err))
        return error_line(err)
    return None


def litert_flatbuffer(model: Any) -> bytes:
    """MODEL as a LiteRT flatbuffer: its inference traced for batches of any size, its weights frozen in as
    constants, converted to LiteRT's built-in operations only (what ai-edge-litert runs without TensorFlow's).
    The same answers as Keras' own export (`model.export(format="litert")`), which writes a SavedModel and reads it
    back, 2.7-5.7 times as fast (docs/results.md, "Keras' saving, and the LiteRT export")."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    tf = tensorflow()
    images = tf.TensorSpec((None, *model.input_shape[1:]), model.inputs[0].dtype)
    serve = tf.function(lambda batch: model(batch, training=False), input_signature=[images])
    frozen = convert_variables_to_constants_v2(serve.get_concrete_function())
    # The function itself as the converter's "trackable object": without one, TensorFlow logs a deprecation warning
    # into every registration's log; a function keeps the same conversion (a model would be saved, then read back).
    return tf.lite.TFLiteConverter.from_concrete_functions([frozen], trackable_obj=frozen).convert()


def list_models(workdir: Path) -> list[ModelCard]:
    """Every complete registered model, oldest first."""
    root = models_dir(workdir)
    cards = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if not (folder / store.MARKER).is_file():  # being registered, or interrupted: not a model yet
            continue
        if problem := store.damage(folder):
            log.warning("skipping registered model %s: %s; delete the folder or train again", folder.name, problem)
            continue
        try:
            cards.append(_card(store.read_marker(folder), folder))
        except (ValueError, OSError) as err:  # corrupt JSON or a card of another shape: the rest still count
            log.warning("skipping registered model %s: its card is unreadable (%s); delete the folder or "
                        "train again", folder.name, type(err).__name__)
    return sorted(cards, key=lambda card: card.created_at)


def ranked(cards: list[ModelCard]) -> list[ModelCard]:
    """Best first: highest test accuracy, the newest on ties. The one rule for "best", everywhere."""
    return sorted(cards, key=lambda card: (card.test_accuracy, card.created_at), reverse=True)


CHAMPION_FILE = "CHAMPION.json"  # in the models folder: the model a person (or a deployment's rule) promoted
SELECTORS = {
    "champion": "the promoted model, or the best while none is promoted",
    "best": "the highest test accuracy, the newest on ties",
    "latest": "the newest",
}


def resolve_model(workdir: Path, which: str = "champion") -> ModelCard:
    """The model WHICH names: a selector of SELECTORS or a registered model's name."""
    cards = list_models(workdir)
    if not cards:
        raise RegistryError(f"no registered model in {models_dir(workdir)}; train one with `catsdogs run` "
                            "(predict and web also take a model file: --model path/to/model.keras)")
    if which == "champion":
        return champion(workdir, cards) or ranked(cards)[0]
    if which == "best":
        return ranked(cards)[0]
    if which == "latest":
        return cards[-1]
    for card in cards:
        if card.name == which:
            return card
    raise RegistryError(f"no registered model named {which!r}; known: {', '.join(c.name for c in cards)}")


def champion(workdir: Path, cards: list[ModelCard] | None = None) -> ModelCard | None:
    """The promoted model, or None when none is (or the one promoted is no longer registered)."""
    try:
        name = json.loads((models_dir(workdir) / CHAMPION_FILE).read_text())["name"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("ignoring the unreadable %s (%s); promote a model again", CHAMPION_FILE, type(err).__name__)
        return None
    found = next((card for card in (list_models(workdir) if cards is None else cards) if card.name == name), None)
    if found is None:
        log.warning("the champion %s is no longer registered; the best model answers until another is promoted",
                    name)
    return found


def promote(workdir: Path, name: str, reason: str) -> ModelCard:
    """Make the registered model NAME the champion, recording why (a person, or a deployment's rule)."""
    card = resolve_model(workdir, name)
    store.write_json_atomic(models_dir(workdir) / CHAMPION_FILE, {
        "name": card.name, "promoted_at": datetime.now(UTC).isoformat(timespec="seconds"), "reason": reason})
    log.info("promoted model %s to champion (%s)", card.name, reason)
    return card


def card_for_file(path: Path) -> ModelCard | None:
    """The card of a registered model file, or None for a .keras file outside the registry."""
    card = Path(path).parent / CARD_FILE
    try:
        return _card(json.loads(card.read_text()), card.parent) if card.is_file() else None
    except (ValueError, OSError) as err:
        log.warning("ignoring the unreadable card beside %s (%s)", path, type(err).__name__)
        return None


def load_card(folder: Path) -> ModelCard:
    """The card of the complete registered model in FOLDER."""
    return _card(store.read_marker(folder), folder)


def _card(recorded: dict[str, Any], folder: Path) -> ModelCard:
    """A card as recorded, with the model file where the folder is now (the workdir may have moved)."""
    here = Path(folder).resolve()
    lite = {"litert_path": here / LITERT_FILE} if recorded.get("litert_path") else {}
    return ModelCard.model_validate(recorded | {"path": here / MODEL_FILE} | lite)


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "os": f"{platform.system()} {platform.machine()}"}
    for package in ("catsdogs", "tensorflow", "tensorflow-cpu", "keras", "numpy", "pillow"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


# Short names: the Prefect UI shows table cells on one line, in a pane about 720 px wide at 1280 px.
PRECISION_SHORT = {"float32": "fp32", "mixed_bfloat16": "bf16", "mixed_float16": "fp16"}
CHAMPION_MARK = " ★"


def leaderboard(workdir: Path) -> list[dict[str, Any]]:
    """Every registered model, best test accuracy first (the champion marked ★), with the settings that tell
    runs apart: columns few and short enough for the artifact pane."""
    rows = []
    crowned = champion(workdir)
    for card in ranked(list_models(workdir)):
        settings = card.settings
        mark = CHAMPION_MARK if crowned and crowned.name == card.name else ""
        precision = str(settings.get("precision", ""))
        rows.append({"model": card.name + mark, "test accuracy": f"{card.test_accuracy:.4f}",  # as elsewhere
                     "variant": card.variant, "epochs (best)": f"{card.epochs} ({card.best_epoch})",
                     "seed": settings.get("seed", ""), "precision": PRECISION_SHORT.get(precision, precision),
                     "created": card.created_at[5:16].replace("T", " ")})  # month-day hour:minute, UTC
    return rows
