"""Cat or dog? Classify image files with a trained model, one clear answer or error per file."""

from __future__ import annotations

import errno
import glob
import json
import logging
import os
import stat
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel, field_validator

from catsdogs import store
from catsdogs.data import CLASS_NAMES
from catsdogs.images import ImageError, load_with_tensorflow
from catsdogs.model import load_keras_model
from catsdogs.registry import ModelCard, card_for_file, resolve_model
from catsdogs.runtime import error_line, tensorflow
from catsdogs.views import views_averaged, views_of

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".heic", ".heif", ".avif"}


class Prediction(BaseModel):
    """One input's answer: a label and its probability, or an error."""

    path: str
    label: str | None = None
    probability: float | None = None
    error: str | None = None

    @field_validator("error")
    @classmethod
    def _one_line(cls, error: str | None) -> str | None:
        """An error is one line wherever it is shown, whatever raised it (a decoder's message may run over lines)."""
        return None if error is None else " ".join(error.split())


class Predictor(Protocol):
    """What the command line, the web app, the predict flow and the champion check ask of a model, whichever
    runtime answers (KerasPredictor here, lite.LitePredictor without TensorFlow)."""

    name: str  # the registered model's name, or the model file's
    runtime: str  # "tensorflow" or "litert"
    image_size: int

    def load(self, path: Path) -> np.ndarray:
        """One file decoded and resized as the training data was, or ImageError."""
        ...

    def predict_batch(self, images: np.ndarray) -> np.ndarray:
        """Each image's probability of dog, averaged over the model's test-time views."""
        ...


class KerasPredictor:
    """A loaded Keras model, the image size it was trained at, and the test-time views it averages."""

    runtime = "tensorflow"

    def __init__(self, model_path: Path, image_size: int | None = None, tta_flip: bool = False,
                 tta_crop: float = 0.0, tta_zoom_out: float = 0.0, name: str | None = None):
        tensorflow()

        self.path = Path(model_path)
        self.name = name or self.path.name
        if not self.path.is_file():
            raise FileNotFoundError(f"model file {self.path} does not exist")
        try:
            self.model = load_keras_model(self.path)  # inference needs no optimizer
        except Exception as err:  # noqa: BLE001  Keras raises many kinds for a file that is not a model
            raise ValueError(f"{self.path} is not a Keras model catsdogs can load ({type(err).__name__}); give a "
                             "model.keras from a run or the registry, or a registered model's name") from None
        trained_size = int(self.model.input_shape[1])
        if image_size is not None and image_size != trained_size:
            raise ValueError(f"{self.path} was saved with image_size {image_size} but takes {trained_size}")
        self.image_size = trained_size
        self.tta_flip, self.tta_crop, self.tta_zoom_out = tta_flip, tta_crop, tta_zoom_out

    @classmethod
    def for_model(cls, path: Path, card: ModelCard | None) -> KerasPredictor:
        """The model file PATH with its card's settings, or, for a file outside the registry, its run's."""
        saved = card.settings if card else _run_settings(path)
        return cls(path, saved.get("image_size"), *views_of(saved), name=card.name if card else None)

    def load(self, path: Path) -> np.ndarray:
        """One file decoded and resized as the training data was."""
        return load_with_tensorflow(path, self.image_size)

    def predict_batch(self, images: np.ndarray) -> np.ndarray:
        """Probabilities that each image is a dog (averaged over the test-time views the model's settings name)."""
        return views_averaged(lambda batch: self.model.predict_on_batch(batch), images, self.tta_flip,
                              self.tta_crop, self.tta_zoom_out)


def open_predictor(choice: str | None, workdir: Path) -> Predictor:
    """The fastest way to answer with the chosen model (a model file path, a selector such as champion, best or
    latest, or a registered name in WORKDIR): its LiteRT export where it has one (no TensorFlow imported), else
    the Keras model, saying why in one log line. Raises RegistryError, FileNotFoundError or ValueError."""
    path, card = chosen_model(choice, workdir)  # resolved once: both runtimes answer for this card
    reason = "it is not in the registry" if card is None else card.litert_error or (
        None if card.litert_path and Path(card.litert_path).is_file() else "it has no LiteRT export")
    if reason is None and card.litert_sha256 and store.file_sha256(card.litert_path) != card.litert_sha256:
        reason = (f"its LiteRT export {card.litert_path} is not the file registered with it (changed or cut short "
                  "since); register the model again to export it anew")
    if reason is None:
        try:
            import ai_edge_litert.interpreter  # noqa: F401
        except ImportError:
            reason = "ai-edge-litert is not installed"
    if reason is None:
        from catsdogs.lite import LitePredictor

        try:
            return LitePredictor(card.litert_path, card.image_size, *views_of(card.settings),
                                 name=card.name)
        except Exception as err:  # noqa: BLE001  any export that does not load or fit is set aside, saying why
            reason = f"its LiteRT export does not load or fit its card ({type(err).__name__}: {err})"[:300]
    log.warning("predicting with TensorFlow: %s", reason)
    return KerasPredictor.for_model(path, card)


def chosen_model(choice: str | None, workdir: Path) -> tuple[Path, ModelCard | None]:
    """The model file CHOICE names (a path, a selector such as champion or best, or a registered name) and its
    card, if it has one."""
    if choice is not None and not choice.strip():  # an unset shell variable: not "the champion"
        raise FileNotFoundError("--model is empty; give a model file, a registered name, or leave it out for the "
                                "champion")
    choice = choice or "champion"
    if choice.endswith(".keras") or os.sep in choice:
        path = Path(choice)
        if not path.is_file():  # said before TensorFlow is started to read it
            raise FileNotFoundError(f"model file {path} is a folder; give the .keras file in it" if path.is_dir()
                                    else f"model file {path} does not exist")
        return path, card_for_file(path)
    card = resolve_model(workdir, choice)
    return card.path, card


def _run_settings(model_path: Path) -> dict[str, Any]:
    """The settings.json a training run leaves beside its checkpoint, if any."""
    settings = model_path.parent / "settings.json"
    return json.loads(settings.read_text()) if settings.is_file() else {}


def collect_inputs(arguments: Iterable[str]) -> list[tuple[str, Path | None, str | None]]:
    """Files, folders (recursively, image files only) and glob patterns to (shown path, path, error): whatever
    cannot be read (a folder without permission, a name too long) is its own error, the rest is found."""
    found: list[tuple[str, Path | None, str | None]] = []
    for argument in arguments:
        try:
            found += _inputs_of(argument)
        except OSError as err:
            found.append((argument, None, f"could not read: {err.strerror or err}"))
    return found


def _inputs_of(argument: str) -> list[tuple[str, Path | None, str | None]]:
    if not argument.strip():  # an unset shell variable: not "this folder", which Path("") would be
        return [(argument, None, "an empty path; give image files, folders or patterns")]
    path = Path(argument)
    if path.is_dir():
        return _folder_inputs(argument, path)
    if path.is_file():
        return [(argument, path, None)]
    if glob.has_magic(argument):
        matches = sorted(Path(m) for m in glob.glob(argument, recursive=True) if Path(m).is_file())
        return [(str(p), p, None) for p in matches] or [(argument, None, "no file matches this pattern")]
    return [(argument, None, _not_a_file(argument, path))]


def _folder_inputs(argument: str, folder: Path) -> list[tuple[str, Path | None, str | None]]:
    """The image files under FOLDER, and an error for each folder in it that could not be read (its images
    would otherwise be left out without a word). Symbolic links to folders are not followed."""
    unreadable: list[OSError] = []
    files = sorted(Path(root) / name for root, _, names in os.walk(folder, onerror=unreadable.append)
                   for name in names if Path(name).suffix.lower() in IMAGE_SUFFIXES)
    found: list[tuple[str, Path | None, str | None]] = [(str(p), p, None) for p in files if p.is_file()]
    found += [(str(err.filename or folder), None, f"could not read this folder ({err.strerror or err}): its "
               "images were not classified") for err in unreadable]
    return found or [(argument, None, "folder holds no image files")]


def _not_a_file(argument: str, path: Path) -> str:
    """Why PATH, neither a file nor a folder nor a pattern, cannot be read as an image."""
    if argument == "-":
        return "images are not read from standard input; give image files, folders or patterns"
    try:
        mode = path.stat().st_mode
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "a loop of symbolic links, which leads to no file"
        if path.is_symlink():
            return f"a broken symbolic link (to {os.readlink(path)})"
        return "no such file or directory" if err.errno == errno.ENOENT else f"could not read: {err.strerror}"
    kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
    return f"{kind}, not an image file; give a regular file"


def predict_files(predictor: Predictor, inputs: list[tuple[str, Path | None, str | None]],
                  batch_size: int = 32, workers: int | None = None) -> Iterator[Prediction]:
    """Classify every input in order; files are decoded in parallel, batches go through the model at once.

    The one error policy of every way to ask (command line, web app, flows): whatever goes wrong with a file,
    or with a batch in the model, is those files' error answers; the other files are answered.
    """
    workers = workers or os.cpu_count() or 1

    def decode(item: tuple[str, Path | None, str | None]) -> tuple[str, np.ndarray | None, str | None]:
        shown, path, error = item
        if error or path is None:
            return shown, None, error
        try:
            return shown, predictor.load(path), None
        except ImageError as err:
            return shown, None, str(err)
        except OSError as err:
            return shown, None, f"could not read: {err.strerror or err}"
        except Exception as err:  # noqa: BLE001  an unforeseen failure is this file's error line, not the batch's
            return shown, None, f"could not classify: {type(err).__name__}: {err}"

    with ThreadPoolExecutor(workers) as pool:
        for start in range(0, len(inputs), batch_size):
            decoded = list(pool.map(decode, inputs[start:start + batch_size]))
            good = [image for _, image, _ in decoded if image is not None]
            failed, probabilities = None, iter([])
            try:
                probabilities = iter(predictor.predict_batch(np.stack(good)) if good else [])
            except Exception as err:  # noqa: BLE001  the model failing on a batch fails those files, not the rest
                reason = error_line(err)
                log.warning("the model failed on a batch of %d images: %s", len(good), reason)
                failed = f"could not classify: the model failed ({reason})"
            for shown, image, error in decoded:
                if image is None or failed:
                    yield Prediction(path=shown, error=error or failed)
                else:
                    yield labelled(shown, float(next(probabilities)))


def labelled(path: str, dog_probability: float) -> Prediction:
    """The label a dog-probability means, with the probability of that label."""
    is_dog = dog_probability > 0.5  # as Keras' binary accuracy counts it
    return Prediction(path=path, label=CLASS_NAMES[int(is_dog)],
                      probability=dog_probability if is_dog else 1.0 - dog_probability)


def format_table(predictions: list[Prediction]) -> str:
    """A plain aligned table, one line an input: path, label, probability (or the error). A control character in
    a path (a file named with a newline) is shown escaped, as Python writes it, so that it cannot start a line."""
    paths = [_printable(p.path) for p in predictions]
    width = max([len(path) for path in paths] + [4])
    lines = [f"{'path':<{width}}  label  probability"]
    for path, p in zip(paths, predictions, strict=True):
        if p.error:
            lines.append(f"{path:<{width}}  error: {p.error}")
        else:
            lines.append(f"{path:<{width}}  {p.label:<5}  {p.probability:.3f}")
    return "\n".join(lines)


def _printable(path: str) -> str:
    return path if path.isprintable() else repr(path)[1:-1]


def as_json_line(prediction: Prediction) -> str:
    fields: dict[str, Any] = prediction.model_dump(exclude_none=True)
    return json.dumps(fields)
