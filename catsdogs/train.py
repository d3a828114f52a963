"""Training and evaluation of the reference models."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from catsdogs import store
from catsdogs.datasets import DatasetArrays, load_split, split_steps
from catsdogs.model import (
    TRAINING_RESIZE,
    build_for,
    compile_model,
    load_keras_model,
    model_summary,
    training_sizes,
    unfreeze_top,
    whiten_stem,
)
from catsdogs.results import (
    PREDICTIONS,
    Metrics,
    TrainedModel,
    best_row,
    load_metrics,
    load_trained,
    read_history,
    validated,
)
from catsdogs.runtime import resolve_precision, speed_settings, stop_requested, tensorflow
from catsdogs.settings import Settings
from catsdogs.views import views_averaged

log = logging.getLogger(__name__)

# Called after each epoch with (epoch number from 1, epochs in all, that epoch's history row).
EpochHook = Callable[[int, int, dict[str, float]], None]


def train_model(settings: Settings, arrays: DatasetArrays, run_dir: Path, on_epoch: EpochHook | None = None,
                on_start: Callable[[], None] | None = None) -> TrainedModel:
    """Train the variant SETTINGS selects, keeping the checkpoint with the lowest validation loss.

    An interrupted run left in RUN_DIR resumes from its last finished epoch. ON_START is called as the
    training starts or resumes, under RUN_DIR's lock: whoever trained there before has ended.
    """
    run_dir = Path(run_dir)

    def build() -> TrainedModel:
        if on_start:
            on_start()
        return _train(settings, arrays, run_dir, on_epoch)

    return store.run_once(run_dir, build, lambda _: load_trained(run_dir))


def _train(settings: Settings, arrays: DatasetArrays, run_dir: Path, on_epoch: EpochHook | None) -> TrainedModel:
    tf = tensorflow(settings.threads, settings.onednn)
    import keras

    run_dir.mkdir(parents=True, exist_ok=True)
    precision = resolve_precision(str(settings.precision))
    settings = settings.model_copy(update={"precision": precision})
    frozen_epochs, epochs = settings.epochs_to_run, settings.total_epochs
    keras.utils.set_random_seed(settings.seed)
    steps = split_steps(arrays, "train", settings.batch_size)
    model = build_for(settings, precision, steps)
    if settings.whiten_stem:  # a resumed run then loads its own weights over these
        whiten_stem(model, np.load(arrays.images("train"), mmap_mode="r"), settings.seed)
    summary = model_summary(model)
    store.write_json_atomic(run_dir / "settings.json", settings.public_dict())
    # Epochs recorded before an interruption count only if training can resume after them.
    backups = [run_dir / "backup", run_dir / "backup-finetune", run_dir / FROZEN_WEIGHTS]
    history = read_history(run_dir / "history.json") if any(p.exists() for p in backups) else []
    if precision == "mixed_float16" and not tf.config.list_physical_devices("GPU"):
        log.warning("precision mixed_float16 without a GPU trains slower than float32 on the CPU; "
                    "use mixed_bfloat16 there (fast on CPUs with AVX-512 BF16 or AMX) or float32")
    log.info("training %s for %d epochs on %d images (batch %d, %s%s); speed settings %s, TensorFlow %s",
             settings.variant, epochs, arrays.counts["train"], settings.batch_size, precision,
             " from auto" if precision != settings.precision else "", speed_settings(), tf.__version__)

    def training_batches(first_epoch: int, backup: Path) -> Any:
        if settings.alternating_flips and (backup / BACKUP_STATE).exists():  # flips count from where it resumes
            first_epoch = int(json.loads((backup / BACKUP_STATE).read_text())["epoch"])
        return load_split(arrays, "train", settings.batch_size, shuffle_seed=settings.seed,
                          mixup=float(settings.mixup or 0.0), cutmix=float(settings.cutmix or 0.0),
                          alternating_flips=bool(settings.alternating_flips),
                          first_epoch=first_epoch)

    validation = load_split(arrays, "validation", settings.batch_size)

    for backup in backups[:2]:
        if backup.exists() and not _backup_loads(model, backup, fine_tuning=backup == backups[1]):
            log.warning("the resume state in %s is unreadable (a crash or a full disk while it was written?); "
                        "it is discarded and training starts again from epoch 1", backup)
            _discard([*backups, run_dir / "history.json", run_dir / "best.keras"])
            history = []

    def fit(first_epoch: int, last_epoch: int, backup: str) -> None:
        callbacks = [
            _stop_when_asked(),
            _epoch_recorder(run_dir / "history.json", history, epochs, arrays.counts["train"], on_epoch),
            _atomic_best_checkpoint(run_dir / "best.keras", best_so_far(history)),
            _atomic_backup(run_dir / backup),
        ]
        if settings.resize_from:
            callbacks.append(_progressive_resizing(model, training_sizes(
                int(settings.resize_from), int(settings.image_size), epochs)))  # type: ignore[arg-type]
        if settings.early_stopping_patience:
            callbacks.append(_early_stopping(int(settings.early_stopping_patience), history, first_epoch))
        if settings.ema:  # first, so that every other callback sees the averaged weights at an epoch's end
            callbacks.insert(0, _averaged_weights((run_dir / backup / BACKUP_STATE).exists()))
        model.fit(training_batches(first_epoch, run_dir / backup), validation_data=validation,
                  initial_epoch=first_epoch, epochs=last_epoch,
                  steps_per_epoch=steps if settings.alternating_flips else None,  # its dataset runs on
                  validation_freq=validated_epochs(epochs, int(settings.validate_last or 0)),
                  callbacks=callbacks, shuffle=False, verbose=0)  # shuffled by tf.data

    if (run_dir / FROZEN_WEIGHTS).exists():  # the frozen phase finished before an interruption
        model.load_weights(run_dir / FROZEN_WEIGHTS)
    else:
        fit(0, frozen_epochs, "backup")
    if epochs > frozen_epochs:  # efficientnet: train the top of the base too, at a low rate
        if not (run_dir / FROZEN_WEIGHTS).exists():
            _save_weights_atomic(model, run_dir / FROZEN_WEIGHTS)
        unfreeze_top(model, int(settings.fine_tune_layers or 0))
        compile_model(model, settings, precision, steps, learning_rate=settings.fine_tune_learning_rate,
                      epochs=epochs - frozen_epochs)
        log.info("fine-tuning the top %d layers of the base for %d epochs at %g", settings.fine_tune_layers,
                 epochs - frozen_epochs, settings.fine_tune_learning_rate)
        fit(len(read_history(run_dir / "history.json")), epochs, "backup-finetune")
    history = read_history(run_dir / "history.json")[:epochs]
    best = best_row(history)
    _discard(backups)  # a finished run keeps no resume state
    result = TrainedModel(run_dir=run_dir, variant=settings.variant, epochs=epochs, epochs_run=len(history),
                          best_epoch=int(best["epoch"]), best_val_loss=best["val_loss"], summary=summary,
                          precision=precision)
    store.mark_complete(run_dir, result.model_dump(mode="json"))
    log.info("training done: best epoch %d (val_loss %.4f) of %d run, model %s", result.best_epoch,
             result.best_val_loss, len(history), result.model_path)
    return result


def validated_epochs(epochs: int, validate_last: int) -> int | list[int]:
    """Keras' validation_freq: every epoch, or the numbers (from 1) of the last VALIDATE_LAST of EPOCHS."""
    return list(range(max(1, epochs - validate_last + 1), epochs + 1)) if validate_last else 1


def _discard(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


FROZEN_WEIGHTS = "frozen-phase.weights.h5"
BACKUP_STATE = "training_metadata.json"  # names the weights file of the last finished epoch


def _atomic_backup(folder: Path) -> Any:
    """Keras' BackupAndRestore, crash-consistent: each epoch's weights go to a new file, renamed when complete,
    and only then does the state file (written atomically) name it. Keras' own writes both in place, so a crash
    or a full disk mid-write left a backup that every later run failed to load."""
    import keras

    class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
        def _load_model(self) -> None:
            state = folder / BACKUP_STATE
            if state.is_file():
                saved = json.loads(state.read_text())
                self.model.load_weights(folder / saved["weights"])  # the optimizer's slots too (built as compiled)
                self.model._initial_epoch = int(saved["epoch"])

        def _save_model(self) -> None:
            folder.mkdir(parents=True, exist_ok=True)
            name = f"epoch-{self._current_epoch}.weights.h5"
            _save_weights_atomic(self.model, folder / name)
            store.write_json_atomic(folder / BACKUP_STATE, {"epoch": self._current_epoch, "weights": name})
            for older in folder.glob("epoch-*.weights.h5"):
                if older.name != name:
                    older.unlink(missing_ok=True)

    return AtomicBackupAndRestore(str(folder))


def _backup_loads(model: Any, folder: Path, fine_tuning: bool = False) -> bool:
    """True when FOLDER holds a resume state whose weights load into MODEL (or no state at all yet); FINE_TUNING:
    the fine-tuning's state, checked with the frozen phase's optimizer."""
    state = folder / BACKUP_STATE
    if not state.exists():
        return not any(folder.glob("*.h5"))  # weights without a state: Keras' old format or a broken write
    try:
        saved = json.loads(state.read_text())
        with warnings.catch_warnings():
            if fine_tuning:  # fewer slots than the state holds: Keras warns that it skips them; they load when the
                # fine-tuning starts (AtomicBackupAndRestore)
                warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer",
                                        category=UserWarning)
            model.load_weights(folder / saved["weights"])
        return int(saved["epoch"]) >= 0
    except Exception:  # noqa: BLE001  any unreadable state is discarded, whatever broke it
        return False


def _save_weights_atomic(model: Any, path: Path) -> None:
    partial = path.with_name(f".{path.stem}.partial.weights.h5")
    model.save_weights(partial)
    os.replace(partial, path)


def _early_stopping(patience: int, history: list[dict[str, float]], first_epoch: int) -> Any:
    """EarlyStopping on val_loss that remembers, after a resume, how long the loss has not improved."""
    import keras

    class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
        def on_train_begin(self, logs: Any = None) -> None:
            super().on_train_begin(logs)
            if validated(history):
                best = best_row(history)
                self.best, self.wait = best["val_loss"], len(history) - int(best["epoch"])

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            if "val_loss" in (logs or {}):  # epochs before validate_last's have nothing to compare
                super().on_epoch_end(epoch, logs)

        def on_train_end(self, logs: Any = None) -> None:
            if self.stopped_epoch > 0:
                log.info("early stopping: no lower validation loss for %d epochs; stopped after epoch %d",
                         self.patience, self.stopped_epoch + 1)

    return ResumableEarlyStopping(monitor="val_loss", patience=patience, start_from_epoch=first_epoch)


def _stop_when_asked() -> Any:
    """Raise KeyboardInterrupt after the batch during which a signal asked this process to stop, in whatever
    thread the training runs; the last finished epoch's backup stays, so the next run resumes there."""
    import keras

    class StopWhenAsked(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            if stop_requested():
                raise KeyboardInterrupt("training stopped by a signal")

        on_test_batch_end = on_train_batch_end

    return StopWhenAsked()


def _progressive_resizing(model: Any, sizes: list[int]) -> Any:
    """Set each epoch's training image size (the TrainingResize layer's variable) before the epoch starts."""
    import keras

    class ProgressiveResizing(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            size = sizes[min(epoch, len(sizes) - 1)]
            layer = model.get_layer(TRAINING_RESIZE)
            if int(layer.size.numpy()) != size:
                log.info("progressive resizing: training at %dx%d from epoch %d", size, size, epoch + 1)
            layer.size.assign(size)

    return ProgressiveResizing()


def _averaged_weights(resuming: bool) -> Any:
    """Keras' SwapEMAWeights(swap_on_epoch=True): validation, checkpoints and backups see the moving average.

    A backup is written at an epoch's end, when the average is in the model and the trained weights are in
    the optimizer's slot; a resumed run must swap them back before its first epoch, as an uninterrupted one does.
    """
    import keras

    callback = keras.callbacks.SwapEMAWeights(swap_on_epoch=True)
    callback._ema_weights_in_model = resuming
    return callback


def best_so_far(history: list[dict[str, float]]) -> float | None:
    return best_row(history)["val_loss"] if validated(history) else None


def evaluate_model(trained: TrainedModel, arrays: DatasetArrays, batch_size: int, out_dir: Path,
                   tta_flip: bool = False, tta_crop: float = 0.0, tta_zoom_out: float = 0.0) -> Metrics:
    """Load the best checkpoint and measure loss and accuracy on the test subset, each image's score averaged
    over its test-time views (TTA_FLIP: with mirror images; TTA_CROP: with a centre crop of that fraction;
    TTA_ZOOM_OUT: with the image shrunk to that fraction)."""
    out_dir = Path(out_dir)
    views = (tta_flip, tta_crop, tta_zoom_out)
    return store.run_once(out_dir, lambda: _evaluate(trained, arrays, batch_size, out_dir, *views),
                          lambda _: load_metrics(out_dir, trained.model_path))


def _evaluate(trained: TrainedModel, arrays: DatasetArrays, batch_size: int, out_dir: Path,
              tta_flip: bool, tta_crop: float, tta_zoom_out: float) -> Metrics:
    tensorflow()

    model = load_keras_model(trained.model_path)
    dog_probability = predict_probabilities(model, load_split(arrays, "test", batch_size), tta_flip, tta_crop,
                                            tta_zoom_out)
    labels = np.load(arrays.labels("test")).astype(int)
    predicted = (dog_probability > 0.5).astype(int)  # Keras' binary accuracy threshold
    accuracy = float(np.mean(predicted == labels))
    # Plain binary cross-entropy, as the reference reports it, even where training smoothed the labels.
    loss = binary_crossentropy(labels, dog_probability)
    confusion = [[int(np.sum((labels == t) & (predicted == p))) for p in (0, 1)] for t in (0, 1)]
    out_dir.mkdir(parents=True, exist_ok=True)
    store.write_json_atomic(out_dir / PREDICTIONS, [
        {"file": name, "label": int(label), "dog_probability": float(prob)}
        for name, label, prob in zip(arrays.files("test"), labels, dog_probability, strict=True)])
    metrics = Metrics(variant=trained.variant, test_accuracy=float(accuracy), test_loss=float(loss),
                      test_images=arrays.counts["test"], best_epoch=trained.best_epoch, epochs=trained.epochs,
                      model_path=trained.model_path, confusion=confusion, tta_flip=tta_flip, tta_crop=tta_crop,
                      tta_zoom_out=tta_zoom_out, predictions_path=out_dir / PREDICTIONS)
    store.mark_complete(out_dir, metrics.model_dump(mode="json") | {"evaluated_at": _now()})
    log.info("test accuracy %.4f, test loss %.4f on %d images (best epoch %d)", metrics.test_accuracy,
             metrics.test_loss, metrics.test_images, metrics.best_epoch)
    return metrics


def binary_crossentropy(labels: np.ndarray, dog_probability: np.ndarray) -> float:
    """Mean binary cross-entropy, with Keras' clipping of probabilities to [1e-7, 1 - 1e-7]."""
    p = np.clip(dog_probability, 1e-7, 1 - 1e-7)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def predict_probabilities(model: Any, images: Any, tta_flip: bool = False, tta_crop: float = 0.0,
                          tta_zoom_out: float = 0.0) -> np.ndarray:
    """Each image's probability of dog: a tf.data (images, labels) or an image batch; averaged over the test-time
    views TTA_FLIP, TTA_CROP and TTA_ZOOM_OUT name, as every predictor averages them (catsdogs.views)."""
    tf = tensorflow()
    if not isinstance(images, tf.data.Dataset):
        images = tf.data.Dataset.from_tensor_slices(np.asarray(images, "float32")).batch(256)
    else:
        images = images.map(lambda x, *_: x)
    batches = [views_averaged(model.predict_on_batch, batch, tta_flip, tta_crop, tta_zoom_out)
               for batch in images.as_numpy_iterator()]
    return np.concatenate(batches) if batches else np.zeros(0)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _epoch_recorder(path: Path, history: list[dict[str, float]], epochs: int, train_images: int,
                    on_epoch: EpochHook | None) -> Any:
    """A callback that logs one line per epoch, saves the history after each, and calls the epoch hook."""
    import keras  # TensorFlow is started by the caller, with the speed settings

    class EpochRecorder(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.started = time.monotonic()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            seconds = time.monotonic() - self.started
            row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()},
                   "seconds": round(seconds, 3)}
            del history[epoch:]
            history.append(row)
            store.write_json_atomic(path, history)
            scores = (f" val_loss {row['val_loss']:.4f} val_accuracy {row['val_accuracy']:.4f}"
                      if "val_loss" in row else " (not validated)")
            log.info("epoch %d/%d: loss %.4f accuracy %.4f%s (%.1f s, %.1f images/s)", epoch + 1, epochs,
                     row["loss"], row["accuracy"], scores, seconds, train_images / max(seconds, 1e-9))
            if on_epoch:
                on_epoch(epoch + 1, epochs, row)

    return EpochRecorder()


def _atomic_best_checkpoint(path: Path, initial_best: float | None) -> Any:
    """ModelCheckpoint(save_best_only=True, monitor="val_loss") writing to a temporary name, then renaming."""
    import keras

    class AtomicBestCheckpoint(keras.callbacks.ModelCheckpoint):
        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            partial = Path(self.filepath)
            # Only the file this call writes is promoted: a fragment left by a killed save or a full disk
            # must never be renamed over a good best.keras by an epoch that saved nothing.
            partial.unlink(missing_ok=True)
            if "val_loss" in (logs or {}):  # an epoch that was not validated (validate_last) keeps nothing
                super().on_epoch_end(epoch, logs)
            if partial.exists():
                os.replace(partial, path)

    return AtomicBestCheckpoint(
        str(path.with_name(f".{path.stem}.partial.keras")), monitor="val_loss", save_best_only=True,
        initial_value_threshold=initial_best, verbose=0,
    )


HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds")


def history_table(history: list[dict[str, float]]) -> str:
    """The history as a markdown table: epochs in order, the columns in a reading order, numbers rounded."""
    lines = ["| " + " | ".join(HISTORY_COLUMNS) + " |", "|" + "---:|" * len(HISTORY_COLUMNS)]
    for row in history:
        cells = [str(int(row["epoch"])), *(f"{row[c]:.4f}" if c in row else "" for c in HISTORY_COLUMNS[1:-1]),
                 f"{row['seconds']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def most_wrong(metrics: Metrics, count: int = 8) -> list[dict[str, Any]]:
    """The misclassified test images the model was most sure of, most confident mistake first."""
    rows = json.loads(metrics.predictions_path.read_text())
    wrong = [r for r in rows if abs(r["label"] - r["dog_probability"]) > 0.5]
    return sorted(wrong, key=lambda r: -abs(r["label"] - r["dog_probability"]))[:count]
