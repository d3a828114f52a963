import json
from pathlib import Path

import numpy as np
import pytest

from catsdogs import store
from catsdogs.data import make_subsets, unzip_archive
from catsdogs.datasets import build_arrays, load_split
from catsdogs.runtime import onednn_cap_without_bf16
from catsdogs.settings import Settings
from catsdogs.train import best_row, evaluate_model, train_model

RANGES = {"train": (0, 7), "validation": (8, 9), "test": (10, 11)}


@pytest.fixture
def arrays(tiny_zip: Path, tmp_path: Path):
    subsets = make_subsets(unzip_archive(tiny_zip, tmp_path / "x", 2**30), tmp_path / "s", RANGES)
    return build_arrays(subsets, tmp_path / "d", image_size=78)


def settings(variant: str, tmp_path: Path, epochs: int = 2) -> Settings:
    return Settings(variant=variant, image_size=78, batch_size=8, epochs=epochs, workdir=tmp_path,
                    train_range="0-7", validation_range="8-9", test_range="10-11")


@pytest.mark.parametrize("variant", ["baseline", "augmented"])
def test_train_keeps_the_best_checkpoint_and_evaluates_it(arrays, tmp_path: Path, variant: str):
    seen = []
    trained = train_model(settings(variant, tmp_path), arrays, tmp_path / "run",
                          on_epoch=lambda epoch, epochs, row: seen.append((epoch, epochs)))
    assert seen == [(1, 2), (2, 2)]
    history = trained.history()
    assert [row["epoch"] for row in history] == [1, 2]
    assert set(history[0]) >= {"loss", "accuracy", "val_loss", "val_accuracy", "seconds"}
    assert trained.best_epoch == best_row(history)["epoch"]
    assert trained.model_path.is_file() and not list(tmp_path.glob("run/.*partial*"))
    assert not (tmp_path / "run" / "backup").exists()
    saved = json.loads((tmp_path / "run" / "settings.json").read_text())
    assert saved["variant"] == variant and saved["image_size"] == 78
    assert store.is_complete(trained.run_dir)

    metrics = evaluate_model(trained, arrays, 8, tmp_path / "run" / "evaluation")
    assert np.isfinite(metrics.test_loss)
    rows = json.loads(metrics.predictions_path.read_text())
    right = sum((row["dog_probability"] > 0.5) == row["label"] for row in rows)
    assert metrics.test_accuracy == pytest.approx(right / len(rows))  # accuracy is what the predictions say
    assert metrics.test_images == 4 and metrics.best_epoch == trained.best_epoch

    import keras

    model = keras.models.load_model(trained.model_path)
    loss, accuracy = model.evaluate(np.load(arrays.images("test")).astype("float32"),
                                    np.load(arrays.labels("test"))[:, None], verbose=0)
    assert loss == pytest.approx(metrics.test_loss, rel=1e-4)  # the evaluated model is the saved best one


def test_same_seed_gives_the_same_run(arrays, tmp_path: Path):
    a = train_model(settings("baseline", tmp_path, epochs=1), arrays, tmp_path / "a").history()
    b = train_model(settings("baseline", tmp_path, epochs=1), arrays, tmp_path / "b").history()
    assert a[0]["loss"] == pytest.approx(b[0]["loss"], rel=1e-5)
    assert a[0]["val_loss"] == pytest.approx(b[0]["val_loss"], rel=1e-5)


def test_a_training_traces_its_step_once_every_variable_made_before_it(arrays, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch):
    """A tf.function whose first trace makes variables (the optimizer's slots and average, a metric's counts) is
    traced again, the whole step twice. They are made as the model compiles."""
    import keras

    from catsdogs.model import build_for

    traced, step = [], keras.Model.train_step
    monkeypatch.setattr(keras.Model, "train_step", lambda model, data: traced.append(1) or step(model, data))
    train_model(settings("baseline", tmp_path, epochs=1), arrays, tmp_path / "run")  # RMSprop, binary accuracy
    assert len(traced) == 1
    # AdamW's two slots and the moving average of the weights: there before the first step too
    model = build_for(settings("xception", tmp_path), "float32", steps_per_epoch=1)
    assert model.optimizer.built and len(model.optimizer.variables) > 3 * len(model.trainable_variables)


def test_mixed_bfloat16_trains_saves_and_reloads(arrays, tmp_path: Path):
    import keras

    if cap := onednn_cap_without_bf16():  # oneDNN reads its cap once per process: no test can lift it
        pytest.skip(f"ONEDNN_MAX_CPU_ISA={cap} leaves this process without bfloat16 kernels (refused: test_variants)")

    trained = train_model(settings("augmented", tmp_path, epochs=1).model_copy(update={"precision": "mixed_bfloat16"}),
                          arrays, tmp_path / "run")
    assert np.isfinite(trained.history()[0]["loss"])
    model = keras.models.load_model(trained.model_path)
    assert {layer.compute_dtype for layer in model.layers if type(layer).__name__ == "Conv2D"} == {"bfloat16"}
    assert json.loads((tmp_path / "run" / "settings.json").read_text())["precision"] == "mixed_bfloat16"
    metrics = evaluate_model(trained, arrays, 8, tmp_path / "run" / "evaluation")
    assert np.isfinite(metrics.test_loss)


def test_float16_without_a_gpu_is_warned_about(arrays, tmp_path: Path, caplog):
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU, where mixed_float16 is the fast choice")
    mixed = settings("baseline", tmp_path, epochs=1).model_copy(update={"precision": "mixed_float16"})
    with caplog.at_level("WARNING", logger="catsdogs.train"):
        trained = train_model(mixed, arrays, tmp_path / "run")
    assert np.isfinite(trained.history()[0]["loss"])
    assert "mixed_bfloat16" in caplog.text and "without a GPU" in caplog.text


def test_completed_run_is_not_trained_again(arrays, tmp_path: Path):
    first = train_model(settings("baseline", tmp_path, epochs=1), arrays, tmp_path / "run")
    stamp = first.model_path.stat().st_mtime_ns
    again = train_model(settings("baseline", tmp_path, epochs=1), arrays, tmp_path / "run")
    assert again == first and first.model_path.stat().st_mtime_ns == stamp


def interrupt_after(stop_epoch: int):
    def hook(epoch, epochs, row):
        if epoch == stop_epoch:
            raise KeyboardInterrupt("killed after an epoch")

    return hook


@pytest.mark.usefixtures("eager_keras")
def test_interrupted_training_resumes_from_its_backup(arrays, tmp_path: Path):
    with pytest.raises(KeyboardInterrupt):
        train_model(settings("augmented", tmp_path, epochs=3), arrays, tmp_path / "run", on_epoch=interrupt_after(2))
    # killed in epoch 2's end, before its backup: the state is epoch 1's
    state = json.loads((tmp_path / "run" / "backup" / "training_metadata.json").read_text())
    assert state == {"epoch": 1, "weights": "epoch-1.weights.h5"}
    assert sorted(p.name for p in (tmp_path / "run" / "backup").iterdir()) == [
        "epoch-1.weights.h5", "training_metadata.json"]
    seen = []
    trained = train_model(settings("augmented", tmp_path, epochs=3), arrays, tmp_path / "run",
                          on_epoch=lambda epoch, epochs, row: seen.append(epoch))
    assert seen == [2, 3] and [row["epoch"] for row in trained.history()] == [1, 2, 3]


@pytest.mark.usefixtures("eager_keras")
@pytest.mark.parametrize("damage", ["truncated weights", "garbage state", "state names a missing file",
                                    "weights without a state"])
def test_a_broken_backup_is_discarded_with_a_warning_and_training_starts_again(arrays, tmp_path: Path, caplog,
                                                                                 damage: str):
    """What a full disk or a kill -9 during the backup's write leaves: the next run trains, never fails forever."""
    with pytest.raises(KeyboardInterrupt):
        train_model(settings("baseline", tmp_path, epochs=2), arrays, tmp_path / "run", on_epoch=interrupt_after(2))
    backup = tmp_path / "run" / "backup"
    weights, state = backup / "epoch-1.weights.h5", backup / "training_metadata.json"
    if damage == "truncated weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "garbage state":
        state.write_bytes(b'{"epoch": 1, "wei')
    elif damage == "state names a missing file":
        weights.unlink()
    else:
        state.unlink()
    with caplog.at_level("WARNING", logger="catsdogs.train"):
        trained = train_model(settings("baseline", tmp_path, epochs=2), arrays, tmp_path / "run")
    assert "unreadable" in caplog.text and "starts again from epoch 1" in caplog.text
    assert [row["epoch"] for row in trained.history()] == [1, 2] and trained.model_path.is_file()


@pytest.mark.parametrize("variant", ["baseline", "xception"])
def test_a_model_learns_separable_images(tmp_path: Path, variant: str):
    """Reddish cats, bluish dogs: a few epochs get every test image right, which chance does not."""
    from tests.conftest import make_kaggle_zip

    subsets = make_subsets(unzip_archive(make_kaggle_zip(tmp_path / "k.zip", per_class=40), tmp_path / "x", 2**30),
                           tmp_path / "s", {"train": (0, 23), "validation": (24, 31), "test": (32, 39)})
    arrays = build_arrays(subsets, tmp_path / "d", image_size=78)
    learn = Settings(variant=variant, image_size=78, batch_size=8, epochs=6, workdir=tmp_path,
                     train_range="0-23", validation_range="24-31", test_range="32-39")
    trained = train_model(learn, arrays, tmp_path / "run")
    metrics = evaluate_model(trained, arrays, 8, tmp_path / "eval")
    assert metrics.test_accuracy == 1.0 and metrics.test_loss < 0.5, trained.history()


def test_a_stale_checkpoint_fragment_is_never_promoted_by_an_epoch_that_saved_nothing(tmp_path: Path):
    """A kill or a full disk during the best checkpoint's save leaves .best.partial.keras behind; the next epoch
    that does not improve must leave the good best.keras alone, not rename the fragment over it."""
    from catsdogs.model import build_model
    from catsdogs.train import _atomic_best_checkpoint

    best = tmp_path / "best.keras"
    best.write_bytes(b"the good checkpoint")
    fragment = tmp_path / ".best.partial.keras"
    fragment.write_bytes(b"half a zip")
    callback = _atomic_best_checkpoint(best, initial_best=0.0)  # no val_loss is below 0: nothing is saved
    callback.set_model(build_model("baseline", 78))
    callback.on_epoch_end(0, {"val_loss": 0.7})
    assert best.read_bytes() == b"the good checkpoint" and not fragment.exists()


@pytest.mark.usefixtures("eager_keras")
def test_temporary_files_left_in_a_step_folder_are_discarded_with_a_warning(arrays, tmp_path: Path, caplog):
    with pytest.raises(KeyboardInterrupt):
        train_model(settings("baseline", tmp_path, epochs=3), arrays, tmp_path / "run", on_epoch=interrupt_after(2))
    run = tmp_path / "run"
    leftovers = [run / ".best.partial.keras", run / "backup" / ".epoch-2.partial.weights.h5",
                 run / ".history.json.k3j2.tmp", run / ".predictions.partial.x1y2.json"]
    for path in leftovers:
        path.write_bytes(b"a fragment")
    with caplog.at_level("WARNING", logger="catsdogs.store"):
        trained = train_model(settings("baseline", tmp_path, epochs=3), arrays, run)
    for path in leftovers:
        assert not path.exists() and str(path) in caplog.text
    import keras

    keras.models.load_model(trained.model_path, compile=False)  # the checkpoint the run kept loads
    assert [row["epoch"] for row in trained.history()] == [1, 2, 3]


@pytest.mark.usefixtures("eager_keras")
def test_validate_last_skips_early_validation_and_keeps_only_validated_epochs(arrays, tmp_path: Path, caplog):
    from catsdogs.plots import plot_history
    from catsdogs.train import history_table

    chosen = settings("augmented", tmp_path, epochs=4).model_copy(
        update={"validate_last": 2, "early_stopping_patience": 1})
    with pytest.raises(KeyboardInterrupt):  # killed before any validation: a resume must cope with that too
        train_model(chosen, arrays, tmp_path / "run", on_epoch=interrupt_after(2))
    caplog.clear()
    with caplog.at_level("INFO", logger="catsdogs.train"):
        trained = train_model(chosen, arrays, tmp_path / "run")
    history = trained.history()
    assert [("val_loss" in row) for row in history] == [False, False, True, True]
    assert trained.best_epoch in (3, 4) and trained.model_path.is_file()
    assert "epoch 1/4" not in caplog.text and "epoch 2/4" in caplog.text  # epoch 2 ran again after the kill
    assert "(not validated)" in caplog.text and "val_loss" in caplog.text
    table = history_table(history).splitlines()
    assert table[2].split("|")[4].strip() == "" and table[4].split("|")[4].strip() != ""
    assert plot_history(history, tmp_path / "curves.png").is_file()
    assert settings("augmented", tmp_path).recipe_key() == {}  # off by default: reference keys stay
    assert chosen.recipe_key()["validate_last"] == 2


@pytest.mark.usefixtures("eager_keras")
def test_validating_fewer_epochs_trains_the_same_weights(arrays, tmp_path: Path):
    """Validation swaps the weight average in and out (Keras adds and subtracts to swap): with it and MixUp, a
    run must train to the same losses, and the same last epoch, whether it validates every epoch or the last."""
    chosen = settings("augmented", tmp_path).model_copy(update={"ema": 0.9, "mixup": 0.2})
    runs = [train_model(chosen.model_copy(update={"validate_last": last}), arrays, tmp_path / f"run{last}").history()
            for last in (0, 1)]
    assert [row["loss"] for row in runs[0]] == [row["loss"] for row in runs[1]]  # bit for bit
    assert runs[0][-1]["val_loss"] == runs[1][-1]["val_loss"] and "val_loss" not in runs[1][0]


@pytest.mark.usefixtures("eager_keras")
def test_alternating_flips_train_and_a_resumed_run_flips_from_its_resume_epoch(arrays, tmp_path: Path,
                                                                              monkeypatch):
    import catsdogs.train

    first_epochs = []

    def recorded(*args, **kwargs):
        if kwargs.get("alternating_flips"):
            first_epochs.append(kwargs["first_epoch"])
        return load_split(*args, **kwargs)

    monkeypatch.setattr(catsdogs.train, "load_split", recorded)
    chosen = settings("xception", tmp_path, epochs=3).model_copy(update={"alternating_flips": True, "mixup": 0.2})
    with pytest.raises(KeyboardInterrupt):
        train_model(chosen, arrays, tmp_path / "run", on_epoch=interrupt_after(2))
    trained = train_model(chosen, arrays, tmp_path / "run")
    assert first_epochs == [0, 1]  # killed in epoch 2: its resume trains epochs 2 and 3 (from 0: 1 and 2)
    assert [row["epoch"] for row in trained.history()] == [1, 2, 3] and trained.model_path.is_file()
