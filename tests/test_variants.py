"""The stronger variants: xception (from scratch) and efficientnet (pretrained base), and their recipe settings."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from catsdogs import runtime
from catsdogs.data import make_subsets, unzip_archive
from catsdogs.datasets import build_arrays
from catsdogs.model import build_for, build_network, check_backbone_weights, compile_model, unfreeze_top
from catsdogs.settings import VARIANT_DEFAULTS, Settings, SettingsError, load_settings
from catsdogs.train import FROZEN_WEIGHTS, _early_stopping, evaluate_model, predict_probabilities, train_model
from catsdogs.variants import VARIANTS
from tests.conftest import auto_label

RANGES = {"train": (0, 7), "validation": (8, 9), "test": (10, 11)}


@pytest.fixture
def arrays(tiny_zip: Path, tmp_path: Path):
    subsets = make_subsets(unzip_archive(tiny_zip, tmp_path / "x", 2**30), tmp_path / "s", RANGES)
    return build_arrays(subsets, tmp_path / "d", image_size=78)


def tiny(variant: str, tmp_path: Path, **changes) -> Settings:
    values = dict(variant=variant, image_size=78, batch_size=8, epochs=2, workdir=tmp_path,
                  train_range="0-7", validation_range="8-9", test_range="10-11", backbone_weights="random")
    return Settings(**(values | changes))


# ---------------------------------------------------------------- declarations


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_declared_variant_builds_as_declared_and_is_offered_everywhere(name, tmp_path: Path, capsys):
    from catsdogs.settings import RunChoices
    from deployments.cli import build_parser

    spec = VARIANTS[name]
    assert {key: getattr(Settings(variant=name), key) for key in spec.defaults} == spec.defaults
    settings = tiny(name, tmp_path, image_size=96)  # fast grows from 96 px, so 96 is its smallest size
    assert settings.spec is spec
    model = build_network(settings, "float32")
    assert model.output_shape == (None, 1) and model.name == f"catsdogs_{name}"
    augmentation = [layer for layer in model.layers if layer.name == "data_augmentation"]
    assert bool(augmentation) == spec.augments and settings.total_epochs >= settings.epochs_to_run
    assert f"{name} ({spec.summary})" in Settings.model_fields["variant"].description
    assert name in RunChoices.model_json_schema()["properties"]["variant"]["anyOf"][0]["enum"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--help"])
    assert f"{name} ({spec.summary})" in " ".join(capsys.readouterr().out.split())


def test_a_half_declared_or_unknown_variant_fails_loudly(monkeypatch):
    from catsdogs import model
    from catsdogs.variants import variant_spec

    monkeypatch.delitem(model.NETWORKS, "xception")  # declared, but no builder for its network
    with pytest.raises(ValueError, match="declares network 'xception', which catsdogs.model.NETWORKS does not build"):
        build_network(Settings(variant="fast", image_size=96), "float32")
    with pytest.raises(KeyError, match="no variant 'resnet' is declared"):
        variant_spec("resnet")
    with pytest.raises(SettingsError, match="variant"):
        load_settings({"variant": "resnet"})


# ---------------------------------------------------------------- settings


def test_each_variant_fills_its_own_defaults_and_the_reference_keeps_its_own():
    base, xception = Settings(), Settings(variant="xception")
    assert (base.image_size, base.precision, base.optimizer, base.lr_schedule, base.tta_flip) == (
        180, "float32", "rmsprop", "constant", False)
    assert base.early_stopping_patience == 0 and base.recipe_key() == {}
    assert Settings(variant="augmented").recipe_key() == {}
    for name, value in VARIANT_DEFAULTS["xception"].items():
        assert getattr(xception, name) == value, name
    assert xception.precision == "auto" and xception.epochs_to_run == VARIANT_DEFAULTS["xception"]["epochs"]
    efficientnet = Settings(variant="efficientnet")
    assert efficientnet.total_epochs == efficientnet.epochs + efficientnet.fine_tune_epochs > efficientnet.epochs


def test_run_names_show_each_setting_that_differs_from_the_variant_defaults():
    from tasks.runs import run_label

    auto = auto_label()  # the precision auto trains in here, never "auto"
    assert run_label(Settings()) == "baseline-30ep-180px-seed0"
    assert run_label(Settings(variant="xception", seed=2)) == f"xception-100ep-180px-seed2{auto}"
    assert run_label(Settings(variant="xception", precision="float32")) == "xception-100ep-180px-seed0"
    # a sweep over mixup, or any recipe setting, no longer gives runs one name
    assert run_label(Settings(variant="xception", mixup=0.4, ema=0, tta_flip=False)) == (
        f"xception-100ep-180px-seed0{auto}-mixup=0.4-ema=0-tta-flip=off")
    assert run_label(Settings(variant="augmented", tta_crop=0.9)) == "augmented-100ep-180px-seed0-tta-crop=0.9"
    assert run_label(Settings(variant="augmented", batch_size=64, learning_rate=1e-4)) == (
        "augmented-100ep-180px-seed0-batch-size=64-learning-rate=0.0001")
    # a weights file by its name, not its folders; backbone settings only where there is a backbone
    assert run_label(Settings(variant="efficientnet", backbone_weights="/w/b0.weights.h5")) == (
        f"efficientnet-20ep-224px-seed0{auto}-backbone-weights=b0.weights.h5")
    assert run_label(Settings(backbone_weights="random", fine_tune_epochs=3)) == "baseline-30ep-180px-seed0"
    # nor warm-up without the cosine schedule, nor decoupled weight decay without AdamW: nothing trains twice
    ignored = Settings(warmup_epochs=5, weight_decay=0.3)
    assert run_label(ignored) == "baseline-30ep-180px-seed0" and ignored.recipe_key() == Settings().recipe_key()
    assert run_label(Settings(variant="xception", warmup_epochs=5)).endswith("-warmup-epochs=5")
    # settings that change no result stay out of the name
    assert Settings(threads=1, workdir=Path("elsewhere")).changed_from_variant() == {}


def test_a_value_given_beats_the_variant_default_from_every_source(tmp_path: Path, monkeypatch):
    config = tmp_path / "run.toml"
    config.write_text('variant = "xception"\nlabel_smoothing = 0.0\n')
    monkeypatch.setenv("CATSDOGS_IMAGE_SIZE", "128")
    s = load_settings({"precision": "float32"}, config_file=config)
    assert (s.variant, s.image_size, s.precision, s.label_smoothing) == ("xception", 128, "float32", 0.0)
    assert s.optimizer == "adamw"  # not given anywhere: the variant's


def test_settings_round_trip_as_a_flow_parameter():
    s = Settings(variant="xception", seed=2)
    again = Settings.model_validate(s.model_dump(mode="json"))
    assert again == s
    # A partial dict (a deployment's parameters) gets the variant's defaults too.
    assert Settings.model_validate({"variant": "xception"}).image_size == VARIANT_DEFAULTS["xception"]["image_size"]


def test_recipe_changes_are_part_of_the_trained_model_key(tmp_path: Path):
    from catsdogs.datasets import DatasetArrays
    from catsdogs.steps import EVALUATE, TRAIN

    arrays = DatasetArrays(root=tmp_path / "d", image_size=78, counts={})
    reference = Settings(workdir=tmp_path)
    variants = [reference, reference.model_copy(update={"label_smoothing": 0.1}),
                reference.model_copy(update={"optimizer": "adam"}), Settings(workdir=tmp_path, variant="xception"),
                Settings(workdir=tmp_path, variant="xception", warmup_epochs=1)]
    assert len({TRAIN.folder_for(s, arrays) for s in variants}) == len(variants)
    # test-time flipping changes the evaluation, not the trained model
    flipped = reference.model_copy(update={"tta_flip": True})
    assert TRAIN.folder_for(flipped, arrays) == TRAIN.folder_for(reference, arrays)

    class Trained:
        run_dir = tmp_path / "r"

    assert EVALUATE.folder_for(flipped, Trained) != EVALUATE.folder_for(reference, Trained)
    # and so does a test-time crop: each set of views its own evaluation of the same model
    cropped = [flipped.model_copy(update={"tta_crop": crop}) for crop in (0.8, 0.9)]
    assert {TRAIN.folder_for(s, arrays) for s in cropped} == {TRAIN.folder_for(reference, arrays)}
    folders = [EVALUATE.folder_for(s, Trained) for s in (reference, flipped, *cropped)]
    assert len(set(folders)) == 4 and folders[1].name == "evaluation-tta"  # flip alone: the older name, reused


def test_mixup_blends_training_batches_only_and_repeats_with_its_seed(arrays):
    from catsdogs.datasets import load_split

    def batches(**kwargs):
        return [(x.numpy(), y.numpy()) for x, y in load_split(arrays, "train", 16, **kwargs)]

    plain = batches(shuffle_seed=1)
    mixed, again = batches(shuffle_seed=1, mixup=0.4), batches(shuffle_seed=1, mixup=0.4)
    labels = np.concatenate([y for _, y in mixed])[:, 0]
    assert set(np.concatenate([y for _, y in plain])[:, 0]) == {0.0, 1.0}
    assert np.any((labels > 0.01) & (labels < 0.99)) and labels.min() >= 0 and labels.max() <= 1  # blends
    assert not np.array_equal(plain[0][0], mixed[0][0])
    for (x1, y1), (x2, y2) in zip(mixed, again, strict=True):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert Settings(variant="xception", mixup=0.2).recipe_key()["mixup"] == 0.2  # a new model, a new key


def test_cutmix_pastes_a_box_of_another_image_and_mixes_the_labels_repeatably(arrays):
    from catsdogs.datasets import load_split

    def batches(**kwargs):
        return [(x.numpy(), y.numpy()) for x, y in load_split(arrays, "train", 16, **kwargs)]

    (plain, plain_labels), = batches(shuffle_seed=1)
    (cut, labels), = batches(shuffle_seed=1, cutmix=1.0)
    changed = np.any(cut != plain, axis=-1)  # per image, the pixels taken from another image
    pasted = [image for image in range(len(cut)) if changed[image].any()]
    assert pasted and any((0.01 < label < 0.99) for label in labels[:, 0])
    for image in pasted:  # one box: its rows and columns span a rectangle of changed pixels
        rows, cols = np.flatnonzero(changed[image].any(1)), np.flatnonzero(changed[image].any(0))
        box = cut[image, rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert any(np.array_equal(box, plain[other, rows.min():rows.max() + 1, cols.min():cols.max() + 1])
                   for other in range(len(plain)))
    unchanged = [image for image in range(len(cut)) if not changed[image].any()]
    assert all(labels[image, 0] in (0.0, 1.0) for image in unchanged) and labels.min() >= 0 and labels.max() <= 1
    (again, again_labels), = batches(shuffle_seed=1, cutmix=1.0)
    np.testing.assert_array_equal(cut, again)
    np.testing.assert_array_equal(labels, again_labels)
    assert Settings(variant="fast", cutmix=1.0).recipe_key()["cutmix"] == 1.0  # a new model, a new key
    # with MixUp too, each batch is one or the other: some batches blend every pixel, some paste boxes
    kinds = set()
    for seed in range(8):
        (both, _), = batches(shuffle_seed=seed, mixup=0.4, cutmix=1.0)
        (alone, _), = batches(shuffle_seed=seed)
        differs = np.any(both != alone, axis=-1).mean(axis=(1, 2))
        kinds.add("mixup" if np.median(differs) > 0.99 else "cutmix")
    assert kinds == {"mixup", "cutmix"}


def test_mixup_training_accuracy_counts_a_blend_by_its_larger_part():
    from catsdogs.model import dominant_label_accuracy

    labels = np.array([[0.7], [0.2], [1.0], [0.4]], "float32")
    probabilities = np.array([[0.9], [0.1], [0.3], [0.6]], "float32")
    assert np.asarray(dominant_label_accuracy(labels, probabilities)).ravel().tolist() == [1.0, 1.0, 0.0, 0.0]


def test_ema_validates_and_checkpoints_the_moving_average(arrays, tmp_path: Path):
    """The checkpoint holds the weights whose validation loss the history records: the average, not the last step's."""
    import keras

    from catsdogs.datasets import load_split

    # 5 epochs of 4 steps: a momentum of 0.5 is within the cap (a tenth of the run's 20 steps). The average is
    # the optimizer's, whatever the network: the baseline's is the quickest to build.
    settings = tiny("baseline", tmp_path, epochs=5, batch_size=2, ema=0.5, mixup=0.3, label_smoothing=0.1,
                    precision="float32")
    trained = train_model(settings, arrays, tmp_path / "run")
    model = keras.models.load_model(trained.model_path, compile=False)
    model.compile(loss=keras.losses.BinaryCrossentropy(label_smoothing=0.1))
    val_loss = model.evaluate(load_split(arrays, "validation", 8), verbose=0)
    assert val_loss == pytest.approx(trained.best_val_loss, abs=1e-5)
    assert all(0 <= row["accuracy"] <= 1 for row in trained.history())
    plain = train_model(settings.model_copy(update={"ema": 0.0}), arrays, tmp_path / "plain")
    assert [row["val_loss"] for row in plain.history()] != [row["val_loss"] for row in trained.history()]


def test_ema_momentum_is_capped_to_a_tenth_of_a_short_run():
    from catsdogs.model import ema_momentum

    settings = Settings(variant="xception")
    assert settings.ema == 0.995 and ema_momentum(settings.ema, 100 * 63) == 0.995  # 6,300 steps: as set
    assert ema_momentum(settings.ema, 6 * 3) == pytest.approx(1 - 10 / 18)
    assert ema_momentum(settings.ema, 1 * 2) == 0.0
    model = build_for(settings.model_copy(update={"epochs": 6, "image_size": 78}), "float32", steps_per_epoch=3)
    assert model.optimizer.use_ema and model.optimizer.ema_momentum == pytest.approx(1 - 10 / 18)


def test_a_resumed_ema_run_trains_the_weights_it_had_not_their_average():
    """A backup is written with the average in the model; resuming swaps it back out before the first epoch."""
    from catsdogs.train import _averaged_weights

    settings = Settings(variant="xception", image_size=78, ema=0.9)
    model = build_for(settings, "float32", steps_per_epoch=1)
    optimizer = model.optimizer  # built as the model compiled
    averages = optimizer._model_variables_moving_average
    # As a backup left them: the average (3) in the model, the trained weights (7) in the optimizer's slot.
    for variable, average in zip(model.trainable_variables, averages, strict=True):
        variable.assign(np.full(variable.shape, 3.0, "float32"))
        average.assign(np.full(average.shape, 7.0, "float32"))
    for resuming, in_model, in_slot in ((False, 3.0, 7.0), (True, 7.0, 3.0)):
        callback = _averaged_weights(resuming)
        callback.set_model(model)
        callback.set_params({"epochs": 5})
        callback.on_epoch_begin(0)
        assert float(np.asarray(model.trainable_variables[0]).flat[0]) == in_model
        assert float(np.asarray(averages[0]).flat[0]) == in_slot


# ---------------------------------------------------------------- precision auto


def test_bf16_is_read_from_the_cpu_flags(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)  # the flags alone, whatever cap this process runs under
    assert runtime.cpu_has_bf16("flags\t\t: fpu avx512f avx512_bf16 avx512_vnni\n")
    assert runtime.cpu_has_bf16("flags : fpu amx_bf16 amx_tile\n")
    assert not runtime.cpu_has_bf16("flags : fpu avx2 avx512f avx512_vnni\n")
    assert not runtime.cpu_has_bf16("")


@pytest.mark.parametrize("cap, bf16", [("AVX2", False), ("avx512_core_vnni", False), ("AVX512_CORE_BF16", True),
                                       ("AVX512_CORE_AMX", True), ("", True)])
def test_a_onednn_cap_below_bf16_counts_as_a_cpu_without_it(monkeypatch, cap, bf16):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)  # how benchmarks run an AVX-512 machine as an AVX2 one
    assert runtime.cpu_has_bf16("flags : fpu avx2 avx512f avx512_bf16\n") is bf16


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "auto", "float32"])
def test_bfloat16_asked_for_under_a_cap_without_it_is_refused_naming_the_fix(monkeypatch, precision):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")
    tf = runtime.tensorflow()
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])
    if precision != "mixed_bfloat16":  # auto falls back to float32 there; float32 always runs
        assert runtime.resolve_precision(precision) == "float32"
        return
    with pytest.raises(SettingsError, match="ONEDNN_MAX_CPU_ISA=AVX2.*--precision auto or float32"):
        runtime.resolve_precision(precision)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx512_core_bf16")
    assert runtime.resolve_precision(precision) == "mixed_bfloat16"


@pytest.mark.parametrize("gpus, bf16, expected", [
    (["GPU:0"], True, "mixed_float16"), (["GPU:0"], False, "mixed_float16"),
    ([], True, "mixed_bfloat16"), ([], False, "float32"),
])
def test_auto_precision_follows_the_machine(monkeypatch, tmp_path, gpus, bf16, expected):
    assert runtime.resolve_precision("float32") == "float32"
    assert runtime.resolve_precision("mixed_float16") == "mixed_float16"
    tf = runtime.tensorflow()
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: gpus if kind == "GPU" else [])
    monkeypatch.setattr(runtime, "DEV_ROOT", tmp_path)
    (tmp_path / "nvidia0").touch()  # a driver's device file: TensorFlow is asked
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda cpuinfo=None: bf16)
    assert runtime.resolve_precision("auto") == expected


@pytest.mark.parametrize("device_files, asked", [([], False), (["nvidia0"], True), (["nvidiactl"], False),
                                                 (["kfd"], True), (["dxg"], True)])
def test_without_a_gpu_drivers_device_file_auto_precision_does_not_start_tensorflow(monkeypatch, tmp_path,
                                                                                   device_files, asked):
    """A run that fails before training, or a sweep's coordinator, needs auto's precision only to name its runs:
    starting TensorFlow to look for a GPU took it 3 s. On Linux no device file means no GPU to find."""
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(runtime, "DEV_ROOT", tmp_path)
    for name in device_files:
        (tmp_path / name).touch()
    started = []
    tf = runtime.tensorflow()
    monkeypatch.setattr(runtime, "tensorflow", lambda *a, **k: started.append(1) or tf)
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])  # a driver, no CUDA build
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda cpuinfo=None: False)
    assert runtime.resolve_precision("auto") == "float32"
    assert bool(started) is asked


# ---------------------------------------------------------------- models


def test_xception_is_the_books_blocks_with_a_strided_stem():
    model = build_network(Settings(variant="xception", image_size=160), "float32")
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("SeparableConv2D") == 10 and kinds.count("Add") == 5
    assert [layer.filters for layer in model.layers if type(layer).__name__ == "SeparableConv2D"][::2] == [
        32, 64, 128, 256, 512]
    stem = next(layer for layer in model.layers if type(layer).__name__ == "Conv2D")
    assert stem.kernel_size == (5, 5) and stem.strides == (2, 2)
    assert kinds[-3:] == ["GlobalAveragePooling2D", "Dropout", "Dense"]
    assert model.layers[1].name == "data_augmentation"
    assert model.output_shape == (None, 1) and model.layers[-1].dtype_policy.name == "float32"


def test_recipe_compiles_adamw_cosine_with_warmup_and_label_smoothing():
    settings = Settings(variant="xception", image_size=78, epochs=10, warmup_epochs=2)
    model = build_for(settings, "float32", steps_per_epoch=5)
    optimizer = model.optimizer
    assert type(optimizer).__name__ == "AdamW" and optimizer.weight_decay == pytest.approx(0.05)
    schedule = optimizer._learning_rate
    rates = [float(schedule(step)) for step in (0, 5, 10, 30, 50)]
    assert rates[0] == 0.0 and rates[1] == pytest.approx(1e-3) and rates[2] == pytest.approx(2e-3)
    assert rates[2] > rates[3] > rates[4] >= 0.0  # warm-up to the peak after 2 epochs, then cosine decay
    assert model.loss.get_config()["label_smoothing"] == pytest.approx(0.1)


def test_efficientnet_base_is_frozen_then_its_top_unfreezes_without_batchnorm():
    settings = Settings(variant="efficientnet", image_size=78, backbone_weights="random")
    model = compile_model(build_network(settings, "float32"), settings, "float32", steps_per_epoch=1)
    base = next(layer for layer in model.layers if layer.name.startswith("efficientnet"))
    assert not base.trainable
    frozen_weights = len(model.trainable_weights)
    assert frozen_weights == 2  # the new head's Dense kernel and bias
    unfreeze_top(model, 20)
    top = base.layers[-20:]
    assert any(layer.trainable and layer.weights for layer in top)
    assert not any(layer.trainable for layer in top if type(layer).__name__ == "BatchNormalization")
    assert not any(layer.trainable for layer in base.layers[:-20])
    assert len(model.trainable_weights) > frozen_weights


def test_efficientnet_without_weights_stops_before_any_work_naming_both_ways(tmp_path: Path, monkeypatch):
    import catsdogs.model

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(catsdogs.model, "EFFICIENTNET_WEIGHTS_URL", "http://127.0.0.1:9/")  # nothing listens
    with pytest.raises(SettingsError) as caught:
        check_backbone_weights(Settings(variant="efficientnet"))
    assert "--backbone-weights" in str(caught.value) and "network" in str(caught.value)
    with pytest.raises(SettingsError, match="no file at"):
        check_backbone_weights(Settings(variant="efficientnet", backbone_weights=str(tmp_path / "none.h5")))
    (tmp_path / "notes.h5").write_text("not weights")  # Keras would refuse it only after the data steps
    with pytest.raises(SettingsError, match=r"notes\.h5 is not a Keras weights file \(HDF5\)"):
        check_backbone_weights(Settings(variant="efficientnet", backbone_weights=str(tmp_path / "notes.h5")))
    (tmp_path / "weights.h5").write_bytes(catsdogs.model.HDF5_SIGNATURE + bytes(8))
    check_backbone_weights(Settings(variant="efficientnet", backbone_weights=str(tmp_path / "weights.h5")))
    check_backbone_weights(Settings(variant="efficientnet", backbone_weights="random"))
    check_backbone_weights(Settings(variant="xception"))  # other variants need no weights
    cached = tmp_path / "keras" / "models" / catsdogs.model.EFFICIENTNET_WEIGHTS
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"weights")
    check_backbone_weights(Settings(variant="efficientnet"))  # Keras' cache is enough


def test_efficientnet_weights_found_over_http_are_accepted(serve, tmp_path: Path, monkeypatch):
    import catsdogs.model

    server = serve(b"weights")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(catsdogs.model, "EFFICIENTNET_WEIGHTS_URL", server.url.rsplit("/", 1)[0] + "/")
    check_backbone_weights(Settings(variant="efficientnet"))
    assert server.behaviour.requests


def test_cli_exits_2_for_efficientnet_without_weights(tmp_path: Path, monkeypatch, capsys):
    import catsdogs.model
    from deployments.cli import main

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(catsdogs.model, "EFFICIENTNET_WEIGHTS_URL", "http://127.0.0.1:9/")
    assert main(["run", "--variant", "efficientnet", "--workdir", str(tmp_path / "work")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("catsdogs: invalid setting backbone_weights") and "--backbone-weights" in last
    assert not (tmp_path / "work").exists()


# ---------------------------------------------------------------- training


@pytest.mark.usefixtures("eager_keras")
def test_efficientnet_trains_frozen_then_fine_tunes_and_a_stopped_fine_tuning_resumes(arrays, tmp_path: Path,
                                                                                    caplog):
    """Stopped in its fine-tuning, a run resumes there: the resume state, which holds the fine-tuning optimizer's
    slots, loads (it is not discarded as unreadable), and the frozen phase is not trained again."""
    from tests.test_train import interrupt_after

    settings = tiny("efficientnet", tmp_path, epochs=1, fine_tune_epochs=2, fine_tune_layers=10, batch_size=16)
    with pytest.raises(KeyboardInterrupt):  # at the end of epoch 3, before its backup: the state is epoch 2's
        train_model(settings, arrays, tmp_path / "run", on_epoch=interrupt_after(3))
    seen = []
    with caplog.at_level("WARNING", logger="catsdogs.train"), warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        trained = train_model(settings, arrays, tmp_path / "run",
                              on_epoch=lambda epoch, epochs, row: seen.append(epoch))
    assert "unreadable" not in caplog.text and seen == [3]
    assert not [w for w in warned if "Skipping variable loading" in str(w.message)]  # nothing a person must doubt
    assert trained.epochs == 3 and [row["epoch"] for row in trained.history()] == [1, 2, 3]
    assert not (tmp_path / "run" / FROZEN_WEIGHTS).exists()  # a finished run leaves no resume state
    metrics = evaluate_model(trained, arrays, 8, tmp_path / "eval", tta_flip=True)
    assert metrics.test_images == 4


def test_early_stopping_stops_and_remembers_its_patience_across_a_resume(tmp_path: Path):
    model = build_network(Settings(image_size=78), "float32")
    history = [{"epoch": 1, "val_loss": 0.5}, {"epoch": 2, "val_loss": 0.6}, {"epoch": 3, "val_loss": 0.7}]
    stopper = _early_stopping(3, history, first_epoch=0)
    stopper.set_model(model)
    stopper.on_train_begin()
    assert stopper.best == 0.5 and stopper.wait == 2  # two epochs since the best, before the interruption
    stopper.on_epoch_end(3, {"val_loss": 0.8})
    assert model.stop_training  # the third epoch without improvement


def test_early_stopping_ends_a_run_that_does_not_improve(arrays, tmp_path: Path):
    # At a rate of 1e-12 no weight moves by a float32 step that changes the validation loss: it cannot improve,
    # on any CPU. (A rate of 0.5 threw the weights about, but on some CPUs the loss then fell for 8 epochs.)
    settings = tiny("baseline", tmp_path, epochs=8, early_stopping_patience=1, learning_rate=1e-12)
    trained = train_model(settings, arrays, tmp_path / "run")
    rows = trained.history()
    assert trained.epochs_run == len(rows) < 8 and trained.epochs == 8
    assert rows[-1]["val_loss"] >= min(row["val_loss"] for row in rows[:-1])  # stopped on no improvement


@pytest.mark.usefixtures("eager_keras")
def test_xception_evaluates_with_its_views_and_predicts_as_evaluated_once_registered(tiny_zip: Path, tmp_path: Path):
    """Flip averaging, then flip and centre crop (four views), each as the model's own predictions average them;
    then `catsdogs predict` on the registered model: its image size and views, as in evaluation."""
    import keras
    import tensorflow as tf

    from catsdogs.registry import register_model
    from tests.conftest import run_cli

    size = 96  # not the default 180: predict must take the card's
    subsets = make_subsets(unzip_archive(tiny_zip, tmp_path / "x", 2**30), tmp_path / "s", RANGES)
    arrays = build_arrays(subsets, tmp_path / "d", image_size=size)
    settings = tiny("xception", tmp_path / "work", image_size=size)
    trained = train_model(settings, arrays, tmp_path / "work" / "runs" / "x1")
    assert trained.precision == runtime.resolve_precision("auto") and trained.epochs_run == 2
    saved = json.loads((trained.run_dir / "settings.json").read_text())
    assert saved["precision"] == trained.precision and saved["tta_flip"] is True
    metrics = evaluate_model(trained, arrays, 8, tmp_path / "eval", tta_flip=True)
    assert metrics.tta_flip
    model = keras.models.load_model(trained.model_path, compile=False)
    images = np.load(arrays.images("test")).astype("float32")
    plain = model.predict(images, verbose=0)[:, 0]
    mirrored = model.predict(images[:, :, ::-1], verbose=0)[:, 0]
    recorded = [row["dog_probability"] for row in json.loads(metrics.predictions_path.read_text())]
    np.testing.assert_allclose(recorded, (plain + mirrored) / 2, atol=1e-5)
    np.testing.assert_allclose(predict_probabilities(model, images, tta_flip=False), plain, atol=1e-6)
    # with a centre crop too: four views, the crop made here by TensorFlow's own crop and resize
    cropped = evaluate_model(trained, arrays, 8, trained.run_dir / "evaluation-tta", tta_flip=True, tta_crop=0.8)
    assert cropped.tta_crop == 0.8 and cropped.predictions_path != metrics.predictions_path
    side = round(size * 0.8)
    crops = tf.round(tf.image.resize(tf.image.crop_to_bounding_box(images, (size - side) // 2, (size - side) // 2,
                                                                   side, side), (size, size))).numpy()
    crop_views = [model.predict(view, verbose=0)[:, 0] for view in (crops, crops[:, :, ::-1])]
    recorded = [row["dog_probability"] for row in json.loads(cropped.predictions_path.read_text())]
    np.testing.assert_allclose(recorded, (plain + mirrored + crop_views[0] + crop_views[1]) / 4, atol=1e-5)

    settings = settings.model_copy(update={"tta_crop": 0.8})  # the views evaluation averaged, as the card says
    card = register_model(trained, cropped, settings.model_copy(update={"precision": trained.precision}), "0" * 64)
    assert card.variant == "xception" and card.image_size == size and card.settings["tta_flip"] is True
    assert card.settings["tta_crop"] == 0.8 and card.name == "x1-tta-crop0.8"  # apart from the same run's other views
    result = run_cli("predict", str(subsets.root / "test"), "--json", "--workdir", str(tmp_path / "work"))
    assert result.returncode == 0, result.stderr[-2000:]
    answers = {Path(row["path"]).name: row for row in map(json.loads, result.stdout.splitlines())}
    # evaluated in bfloat16 (auto precision here), answered by its float32 LiteRT export
    tolerance = 1e-5 if trained.precision == "float32" else 2e-2
    for row in json.loads(cropped.predictions_path.read_text()):
        answer = answers[Path(row["file"]).name]
        dog = answer["probability"] if answer["label"] == "dog" else 1 - answer["probability"]
        assert dog == pytest.approx(row["dog_probability"], abs=tolerance)


def test_an_evaluation_recorded_before_a_field_was_added_loads_with_its_default(tmp_path: Path):
    """Results are read back from their markers (never unpickled): one an older catsdogs wrote lacks tta_crop."""
    from catsdogs import store
    from catsdogs.results import Metrics, load_metrics

    metrics = Metrics(variant="xception", test_accuracy=0.9, test_loss=0.3, test_images=2, best_epoch=1, epochs=1,
                      model_path=tmp_path / "best.keras", confusion=[[1, 0], [0, 1]], tta_flip=True,
                      predictions_path=tmp_path / "evaluation" / "test-predictions.json")
    folder = tmp_path / "evaluation"
    folder.mkdir()
    store.mark_complete(folder, {k: v for k, v in metrics.model_dump(mode="json").items() if k != "tta_crop"})
    older = load_metrics(folder)
    assert older.tta_crop == 0.0 and older.tta_flip is True
    assert older == metrics


# ---------------------------------------------------------------- fast: progressive resizing, whitened stem


def test_progressive_sizes_grow_from_the_first_to_the_full_size_in_multiples_of_8():
    from catsdogs.model import training_sizes

    sizes = training_sizes(112, 180, 40)
    assert len(sizes) == 40 and sizes == sorted(sizes) and all(size % 8 == 0 for size in sizes if size != 180)
    assert sizes[:20] == [112] * 20 and sizes[22] > 112  # the first half at the first size, then growing
    assert sizes[-7:] == [180] * 7 and sizes[-8] < 180  # full size from 85 % of the run
    assert training_sizes(96, 96, 3) == [96, 96, 96] and training_sizes(64, 96, 1) == [96]


def test_whitening_kernel_decorrelates_the_patches_it_was_made_from():
    from catsdogs.model import whitening_kernel

    rng = np.random.default_rng(0)
    smooth = rng.integers(0, 255, (40, 12, 12, 3)).repeat(3, axis=1).repeat(3, axis=2).astype(np.uint8)  # correlated
    kernel = whitening_kernel(smooth, filters=8, kernel=5, patches=4000, eps=1e-6)
    assert kernel.shape == (5, 5, 3, 8)
    windows = np.stack([smooth[i, r:r + 5, c:c + 5] for i in range(40) for r in (0, 9, 20) for c in (3, 17, 30)])
    responses = (windows.reshape(len(windows), -1) / 255.0) @ kernel.reshape(75, 8)
    covariance = np.cov(responses[:, :4], rowvar=False)
    np.testing.assert_allclose(covariance, np.eye(4), atol=0.35)  # whitened: unit variance, no correlation
    np.testing.assert_allclose(kernel[..., 4:], -kernel[..., :4])  # and the negatives, for the ReLUs after


def test_training_resize_shrinks_training_batches_only_and_survives_saving(tmp_path: Path):
    from catsdogs.model import TRAINING_RESIZE, load_keras_model

    model = build_network(Settings(variant="fast", image_size=96, resize_from=64), "float32")
    layer = model.get_layer(TRAINING_RESIZE)
    images = np.random.default_rng(0).uniform(0, 255, (2, 96, 96, 3)).astype("float32")
    layer.size.assign(64)
    assert tuple(layer(images, training=True).shape) == (2, 64, 64, 3)
    assert layer(images, training=False) is images or np.array_equal(layer(images, training=False), images)
    model.save(tmp_path / "m.keras")
    loaded = load_keras_model(tmp_path / "m.keras")
    assert loaded.input_shape == (None, 96, 96, 3)
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6)


def test_resize_from_and_whiten_stem_are_checked_and_part_of_the_run_key():
    from tasks.runs import run_label

    fast = Settings(variant="fast")
    assert (fast.resize_from, fast.whiten_stem, fast.mixup, fast.ema, fast.epochs) == (96, True, 0.2, 0.998, 120)
    best = Settings(variant="best")
    assert (best.ema, best.epochs, best.cutmix, best.image_size) == (0.998, 400, 1.0, 180)  # as best was measured
    assert run_label(fast) == f"fast-120ep-144px-seed0{auto_label()}"
    assert run_label(Settings(variant="fast", resize_from=0)) == f"fast-120ep-144px-seed0{auto_label()}-resize-from=0"
    assert Settings(variant="xception").recipe_key() == Settings(variant="xception", resize_from=0).recipe_key()
    for bad, words in [({"variant": "fast", "resize_from": 200},
                        r"^invalid setting resize_from: .*\(144\).*200: give --resize-from 0 or at most 144, or "
                        r"--image-size 200 or more$"),
                       ({"variant": "fast", "resize_from": 16}, "from 32"),
                       ({"variant": "augmented", "whiten_stem": True}, "whiten_stem: for the .* not augmented"),
                       ({"variant": "augmented", "one_warp": True}, "one_warp: for the .* not augmented"),
                       ({"variant": "baseline", "alternating_flips": True}, "alternating_flips: for the .* not ba"),
                       ({"variant": "baseline", "patch_stem": True}, "patch_stem: for the .* not baseline"),
                       ({"variant": "augmented", "single_conv_blocks": 1}, "single_conv_blocks: for the .* not augm"),
                       ({"variant": "fast", "single_conv_blocks": 6}, "single_conv_blocks: .* less than or equal "
                                                                      "to 5")]:
        with pytest.raises(SettingsError, match=words):
            load_settings(bad)


def test_one_warp_replaces_the_rotation_and_zoom_layers_and_keys_the_run():
    from catsdogs.model import build_network

    def augmentation(settings: Settings) -> list[str]:
        model = build_network(settings, "float32")
        return [type(layer).__name__ for layer in model.get_layer("data_augmentation").layers]

    plain, warped = Settings(variant="xception", image_size=96), Settings(variant="xception", image_size=96,
                                                                         one_warp=True)
    assert augmentation(plain) == ["RandomFlip", "RandomRotation", "RandomZoom"]
    assert augmentation(warped) == ["RandomFlip", "RandomRotateZoom"]
    assert "one_warp" not in plain.recipe_key() and warped.recipe_key()["one_warp"] is True
    alternating = Settings(variant="xception", image_size=96, alternating_flips=True)
    assert augmentation(alternating) == ["RandomRotation", "RandomZoom"]  # the input pipeline mirrors instead
    assert alternating.recipe_key()["alternating_flips"] is True and "alternating_flips" not in plain.recipe_key()


def test_a_model_with_one_warp_saves_and_loads_back(tmp_path: Path):
    from catsdogs.model import build_network, load_keras_model

    model = build_network(Settings(variant="xception", image_size=96, one_warp=True), "float32")
    model.save(tmp_path / "warped.keras")
    loaded = load_keras_model(tmp_path / "warped.keras")
    layer = loaded.get_layer("data_augmentation").layers[1]
    assert type(layer).__name__ == "RandomRotateZoom" and (layer.rotation, layer.zoom) == (0.1, 0.2)
    images = np.random.default_rng(0).uniform(0, 255, (2, 96, 96, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6)


def test_a_patch_stem_replaces_the_stem_and_first_block_whitens_and_keys_the_run():
    from catsdogs.model import STEM, whiten_stem

    def separable_widths(model) -> list[int]:
        return [layer.filters for layer in model.layers if type(layer).__name__ == "SeparableConv2D"]

    def pooled_grid(model) -> tuple[int, int]:
        pooling = next(layer for layer in model.layers if type(layer).__name__ == "GlobalAveragePooling2D")
        return tuple(pooling.input.shape[1:3])

    plain = build_network(Settings(variant="xception", image_size=96), "float32")
    settings = Settings(variant="xception", image_size=96, patch_stem=True)
    patched = build_network(settings, "float32")
    stem = patched.get_layer(STEM)
    assert (stem.kernel_size, stem.strides, stem.filters) == ((4, 4), (4, 4), 32)
    assert separable_widths(plain)[2:] == separable_widths(patched) == [64, 64, 128, 128, 256, 256, 512, 512]
    assert {type(layer).__module__ for layer in plain.layers if type(layer).__name__ == "BatchNormalization"} == {
        "catsdogs.model"}  # trains fused
    assert pooled_grid(patched) == pooled_grid(plain) == (2, 2)  # 96 px: /4 then 4 pools, or /2 then 5
    whiten_stem(patched, np.random.default_rng(0).integers(0, 255, (8, 96, 96, 3)).astype(np.uint8), seed=0)
    np.testing.assert_allclose(stem.kernel.numpy()[..., 16:], -stem.kernel.numpy()[..., :16], rtol=1e-6)
    assert settings.recipe_key()["patch_stem"] is True and "patch_stem" not in Settings(variant="xception").recipe_key()


def test_single_conv_blocks_convolve_once_from_the_first_block_and_key_the_run():
    from tasks.runs import run_label

    def convolutions_a_block(model) -> list[int]:
        widths = [layer.filters for layer in model.layers if type(layer).__name__ == "SeparableConv2D"]
        return [widths.count(width) for width in dict.fromkeys(widths)]

    plain = Settings(variant="xception")  # two a block: test_xception_is_the_books_blocks_with_a_strided_stem
    for blocks, expected in [(2, [1, 1, 2, 2, 2]), (5, [1] * 5)]:
        settings = Settings(variant="xception", image_size=96, single_conv_blocks=blocks)
        assert convolutions_a_block(build_network(settings, "float32")) == expected
        assert settings.recipe_key()["single_conv_blocks"] == blocks
        assert run_label(settings).endswith(f"-single-conv-blocks={blocks}")
    assert "single_conv_blocks" not in plain.recipe_key()
    assert plain.recipe_key() == Settings(variant="xception", single_conv_blocks=0).recipe_key()
    assert Settings(variant="fast").single_conv_blocks == 2 and Settings(variant="best").single_conv_blocks == 0


def test_fast_trains_at_growing_sizes_from_a_whitened_stem_and_evaluates_at_full_size(arrays, tmp_path: Path,
                                                                                       caplog):
    settings = tiny("fast", tmp_path, epochs=3, resize_from=48)
    with caplog.at_level("INFO"):
        trained = train_model(settings, arrays, tmp_path / "run")
    assert "whiten 5x5 patches" in caplog.text
    assert "training at 48x48 from epoch 1" in caplog.text and "training at 78x78 from epoch" in caplog.text
    assert trained.epochs_run == 3
    metrics = evaluate_model(trained, arrays, 8, tmp_path / "eval", tta_flip=True)
    assert metrics.test_images == 4 and 0 <= metrics.test_accuracy <= 1
