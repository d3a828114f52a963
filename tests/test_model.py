import re

import numpy as np
import pytest

from catsdogs.model import build_augmentation, build_model, in_float32, layer_seeds, load_keras_model, model_summary


def layer_kinds(model):
    kinds = []
    for layer in model.layers[1:]:
        if layer.name == "data_augmentation":
            kinds += [type(inner).__name__ for inner in layer.layers]
        else:
            kinds.append(type(layer).__name__)
    return kinds


def test_baseline_is_the_reference_architecture():
    model = build_model("baseline", 180)
    assert layer_kinds(model) == ["Rescaling"] + ["Conv2D", "MaxPooling2D"] * 4 + ["Conv2D", "Flatten", "Dense"]
    filters = [layer.filters for layer in model.layers if type(layer).__name__ == "Conv2D"]
    assert filters == [32, 64, 128, 256, 256]
    assert model.count_params() == 991_041  # the reference book's figure for this model at 180x180
    assert model.layers[-1].activation.__name__ == "sigmoid"
    assert type(model.optimizer).__name__ == "RMSprop" and model.loss == "binary_crossentropy"


def test_augmented_adds_augmentation_and_dropout():
    model = build_model("augmented", 180)
    assert layer_kinds(model) == (["RandomFlip", "RandomRotation", "RandomZoom", "Rescaling"]
                                  + ["Conv2D", "MaxPooling2D"] * 4 + ["Conv2D", "Flatten", "Dropout", "Dense"])
    assert model.count_params() == 991_041


@pytest.mark.parametrize("variant", ["augmented", "fast"])
def test_the_dropout_rate_is_a_setting_and_only_a_changed_one_keys_the_run(variant):
    from catsdogs.model import build_network
    from catsdogs.settings import Settings, variant_defaults

    def rates(settings):
        return [layer.rate for layer in build_network(settings, "float32").layers if type(layer).__name__ == "Dropout"]

    default = Settings(variant=variant, whiten_stem=False)
    assert rates(default) == [variant_defaults(variant)["dropout"]] and "dropout" not in default.changed_from_variant()
    changed = default.model_copy(update={"dropout": 0.3})
    assert rates(changed) == [0.3] and changed.recipe_key()["dropout"] == 0.3
    assert "dropout" not in Settings(variant="augmented").recipe_key()  # the reference's runs keep their folders


def test_a_dropout_rate_for_the_baseline_which_has_no_dropout_is_refused_naming_why():
    from catsdogs.settings import Settings

    with pytest.raises(ValueError, match="the baseline network has no dropout layer.*leave it unset"):
        Settings(variant="baseline", dropout=0.3)
    assert Settings(variant="baseline", dropout=0.5).recipe_key() == {}  # the default, given: nothing changes


def test_reference_math_is_float32_everywhere():
    model = build_model("augmented", 78)
    assert {layer.compute_dtype for layer in model.layers} == {"float32"}


@pytest.mark.parametrize("precision, compute", [("mixed_bfloat16", "bfloat16"), ("mixed_float16", "float16")])
def test_mixed_precision_keeps_weights_and_output_in_float32(precision: str, compute: str):
    model = build_model("augmented", 78, seed=0, precision=precision)
    convs = [layer for layer in model.layers if type(layer).__name__ == "Conv2D"]
    assert {layer.compute_dtype for layer in convs} == {compute}
    assert {w.dtype for w in model.weights} == {"float32"}
    assert model.layers[-1].compute_dtype == "float32" and model.output.dtype == "float32"
    assert model.count_params() == build_model("augmented", 78).count_params()
    scaled = type(model.optimizer).__name__ == "LossScaleOptimizer"
    assert scaled == (precision == "mixed_float16")


def test_a_bfloat16_model_loads_in_float32_where_a_onednn_cap_leaves_no_bfloat16_kernels(tmp_path, monkeypatch):
    trained = build_model("augmented", 78, seed=0, precision="mixed_bfloat16")
    trained.save(tmp_path / "model.keras")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    assert "bfloat16" in {layer.compute_dtype for layer in load_keras_model(tmp_path / "model.keras").layers}
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # as on a CPU without BF16: it must still answer
    loaded = load_keras_model(tmp_path / "model.keras")
    assert {layer.compute_dtype for layer in loaded.layers} == {"float32"}
    assert all(np.array_equal(a, b) for a, b in zip(loaded.get_weights(), trained.get_weights(), strict=True))
    images = np.random.default_rng(0).integers(0, 256, (2, 78, 78, 3)).astype("float32")
    assert np.allclose(loaded.predict(images, verbose=0), in_float32(trained).predict(images, verbose=0))


def test_smallest_size_builds_and_smaller_fails():
    assert build_model("baseline", 78).output_shape == (None, 1)
    with pytest.raises(ValueError):
        build_model("baseline", 77)


def test_summary_is_text():
    text = model_summary(build_model("baseline", 78))
    assert "conv2d" in text.lower() and "Total params" in text


def test_augmentation_layers_draw_independently():
    # One seed shared by the three layers made their draws move in lockstep: every flipped image was also
    # rotated one way and zoomed one way. The draws must be independent, and still fixed by the run seed.
    import numpy as np

    images = np.zeros((256, 32, 32, 3), "float32")

    def draws(seed):
        flip, rotation, zoom = build_augmentation(seed).layers
        flips = np.asarray(flip.get_random_transformation(images, training=True)["flips"]).ravel()
        angles = np.asarray(rotation.get_random_transformation(images, training=True)["angle"]).ravel()
        zooms = np.asarray(zoom.get_random_transformation(images, training=True)["height_zoom"]).ravel()
        return flips.astype("float32"), angles, zooms

    flips, angles, zooms = draws(0)
    assert abs(np.corrcoef(angles, zooms)[0, 1]) < 0.3
    assert abs(np.corrcoef(flips, angles)[0, 1]) < 0.3
    assert all(np.array_equal(a, b) for a, b in zip(draws(0), draws(0), strict=True))
    assert not np.array_equal(draws(1)[1], angles)


def test_layer_seeds_are_distinct_and_repeatable():
    assert layer_seeds(None) == {"flip": None, "rotation": None, "zoom": None, "dropout": None}
    seeds = layer_seeds(0)
    assert len(set(seeds.values())) == 4 and seeds == layer_seeds(0)
    assert not set(seeds.values()) & set(layer_seeds(1).values())


def test_summary_is_a_table_of_every_layer_with_keras_totals():
    from catsdogs.model import build_network
    from catsdogs.settings import Settings

    model = build_network(Settings(variant="xception", image_size=96), "float32")
    text = model_summary(model)
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(rows) == len(model.layers) and all(row.count("|") == 5 for row in rows)
    # Keras numbers auto-named layers per process, so the row is matched by its type, shape and count.
    assert re.search(r"\| `separable_conv2d\w*` \| SeparableConv2D \| \(None, 48, 48, 32\) \| 1,312 \|", text)
    assert "Total params: 723,905" in text  # what Keras' own summary counts


def test_one_warp_rotates_and_zooms_as_keras_layers_do():
    import keras
    from keras import ops

    from catsdogs.model import custom_layers, rotate_zoom_transform

    images = np.random.default_rng(0).uniform(0, 255, (1, 20, 24, 3)).astype("float32")  # not square: x and y

    def warped(turns: float, scale: float) -> np.ndarray:
        transform = rotate_zoom_transform(ops.convert_to_tensor([turns]), ops.convert_to_tensor([scale]), 20, 24)
        return np.asarray(ops.image.affine_transform(images, transform, interpolation="bilinear", fill_mode="reflect"))

    rotated = keras.layers.RandomRotation((0.05, 0.05), fill_mode="reflect")(images, training=True)
    zoomed = keras.layers.RandomZoom((-0.1, -0.1), fill_mode="reflect")(images, training=True)
    np.testing.assert_allclose(warped(0.05, 1.0), rotated, atol=1e-3)
    np.testing.assert_allclose(warped(0.0, 0.9), zoomed, atol=1e-3)
    assert np.abs(warped(-0.05, 1.0) - rotated).max() > 10  # the check can tell directions apart
    layer = custom_layers()["RandomRotateZoom"](0.1, 0.2, seed=1)
    np.testing.assert_array_equal(layer(images, training=False), images)
    moved = [np.asarray(layer(images, training=True)) for _ in range(2)]
    assert moved[0].shape == images.shape and np.abs(moved[0] - moved[1]).max() > 1  # a new draw each call


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_fused_batch_normalization_trains_as_keras_batch_normalization_does(policy):
    """The same outputs, moving averages and gradients as Keras' layer, in training; its own path in inference."""
    import keras
    import tensorflow as tf

    from catsdogs import runtime
    from catsdogs.model import custom_layers

    if policy == "mixed_bfloat16" and (cap := runtime.onednn_cap_without_bf16()):  # read once per process
        pytest.skip(f"ONEDNN_MAX_CPU_ISA={cap} leaves this process without bfloat16 kernels (refused: test_variants)")
    rng = np.random.default_rng(0)
    images = tf.constant(rng.normal(3.0, 2.0, (4, 6, 5, 8)).astype("float32"))
    weights = tf.constant(rng.normal(0.0, 1.0, images.shape).astype("float32"))  # a sum alone has no gradient
    layers = [keras.layers.BatchNormalization(momentum=0.9, dtype=policy),
              custom_layers()["BatchNormalization"](momentum=0.9, dtype=policy)]
    results = []
    for layer in layers:
        layer.build(images.shape)
        layer.gamma.assign(np.linspace(0.5, 2.0, 8, dtype="float32"))
        layer.beta.assign(np.linspace(-1.0, 1.0, 8, dtype="float32"))
        with tf.GradientTape() as tape:
            tape.watch(images)
            outputs = layer(images, training=True)
            loss = tf.reduce_sum(tf.cast(outputs, "float32") * weights)
        gradients = tape.gradient(loss, [images, layer.gamma, layer.beta])
        results.append([tf.cast(outputs, "float32"), layer.moving_mean, layer.moving_variance, *gradients,
                        tf.cast(layer(images, training=False), "float32")])
    assert results[1][0].dtype == results[0][0].dtype
    tolerance = 1e-4 if policy == "float32" else 5e-2  # bfloat16 keeps 8 bits of mantissa
    for keras_value, fused_value in zip(*results, strict=True):
        np.testing.assert_allclose(np.asarray(fused_value), np.asarray(keras_value), rtol=tolerance, atol=tolerance)
    assert float(np.abs(np.asarray(results[0][3])).max()) > 0.1  # the input gradient is not trivially zero


def test_weights_saved_with_keras_batch_normalization_load_into_the_fused_network(tmp_path):
    """A backup written before the from-scratch networks trained fused resumes: weights files name layers by
    their class, and catsdogs' layer keeps Keras' class name."""
    from catsdogs.model import xception_network

    def network(fused: bool):
        import keras

        inputs = keras.Input(shape=(64, 64, 3))
        return keras.Model(inputs, xception_network(inputs, widths=(8, 16), fused=fused))

    keras_layers, fused = network(False), network(True)
    rng = np.random.default_rng(0)
    for variable in keras_layers.weights:  # every variable away from its initial value, moving statistics too
        variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype("float32"))
    keras_layers.save_weights(tmp_path / "backup.weights.h5")
    fused.load_weights(tmp_path / "backup.weights.h5")
    images = rng.uniform(0, 1, (2, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(fused.predict(images, verbose=0), keras_layers.predict(images, verbose=0), rtol=1e-5)


def test_keras_saving_works_out_each_kinds_skipped_attributes_once(tmp_path):
    """Keras' saving (3.15) stores the attributes it skips, for each kind of object, under another name than it
    looks them up by, so it works them out again for every layer of every save; a built network keeps each kind's
    set, the one Keras works out, and saves and loads as before."""
    from keras.src.saving import saving_lib

    model = build_model("baseline", 78)
    skip_set = saving_lib.get_attr_skipset
    assert skip_set("Layer") is skip_set("Layer") and skip_set("Optimizer") is skip_set("Optimizer")
    keras_own = getattr(skip_set, "keras_own", skip_set)  # where Keras keeps them itself, its own
    # Keras skips every dunder before it looks in the set; and a class's __annotations__ is made on first read,
    # so the dunders Keras lists depend on what ran before (a set kept early can lack '__annotations__')
    assert without_dunders(skip_set("Layer")) == without_dunders(keras_own("Layer"))
    assert "trainable_weights" in skip_set("Layer")
    model.save_weights(tmp_path / "w.weights.h5")
    reloaded = build_model("baseline", 78, seed=1)
    reloaded.load_weights(tmp_path / "w.weights.h5")
    images = np.random.default_rng(0).uniform(0, 255, (2, 78, 78, 3)).astype("float32")
    np.testing.assert_array_equal(reloaded.predict(images, verbose=0), model.predict(images, verbose=0))


def without_dunders(names) -> set[str]:
    return {name for name in names if not name.startswith("__")}


def test_a_training_too_large_for_the_memory_is_refused_naming_what_to_lower(monkeypatch):
    from catsdogs import runtime
    from catsdogs.model import check_memory
    from catsdogs.settings import Settings, SettingsError

    gib = 2**30
    monkeypatch.setattr(runtime, "memory_limit_bytes", lambda: 16 * gib)
    for variant in ("baseline", "xception", "fast", "best", "efficientnet"):
        check_memory(Settings(variant=variant))  # every default fits a 16 GiB laptop
    with pytest.raises(SettingsError, match=r"1024 px in batches of 4096 needs at least .* GiB .* allows 16.0 GiB; "
                                            r"lower --image-size or --batch-size"):
        check_memory(Settings(image_size=1024, batch_size=4096))
    big = Settings(image_size=1024, batch_size=32)  # 3,000 images of 3 MiB, twice: more than 16 GiB
    with pytest.raises(SettingsError, match="--train-range"):
        check_memory(big)
    check_memory(big.model_copy(update={"train_range": (0, 99), "validation_range": (100, 149)}))
    four = Settings(image_size=512, batch_size=64)  # fits alone, not four times over (a local Dask cluster)
    check_memory(four)
    with pytest.raises(SettingsError, match=r"4 trainings at once \(--dask-workers\), each at 512 px .* lower "
                                            r"--dask-workers"):
        check_memory(four, at_once=4)


def test_near_the_limit_the_networks_own_layers_are_counted(monkeypatch):
    """The quick count (images, and a batch through the first layer) let 1024 px pass at the default batch on a
    24 GiB machine, where the training needs more (its layers' outputs: 28 GiB by their shapes) and the system
    would kill it. efficientnet's frozen base keeps no inner outputs for the backward pass: it still fits."""
    from catsdogs import runtime
    from catsdogs.model import check_memory, training_memory_floor
    from catsdogs.settings import Settings, SettingsError

    gib = 2**30
    monkeypatch.setattr(runtime, "memory_limit_bytes", lambda: 24 * gib)
    big = Settings(image_size=1024)
    assert training_memory_floor(big) < 24 * gib  # what the quick count says
    with pytest.raises(SettingsError, match=r"1024 px in batches of 32 needs at least 2\d\.\d GiB .* batch through "
                                            r"the network\), and this machine allows 24.0 GiB"):
        check_memory(big)
    check_memory(Settings(variant="efficientnet", image_size=1024, backbone_weights="random"))


def test_the_memory_limit_is_the_lowest_of_the_process_cgroups_where_that_is_lower(monkeypatch, tmp_path):
    from catsdogs import runtime

    machine = runtime.memory_limit_bytes()
    root, groups = tmp_path / "cgroup", tmp_path / "self-cgroup"
    monkeypatch.setattr(runtime, "CGROUP_ROOT", root)
    monkeypatch.setattr(runtime, "PROC_SELF_CGROUP", groups)
    assert runtime.memory_limit_bytes() == machine  # no /proc/self/cgroup: the machine's

    def limit(path: str, text: str) -> None:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text + "\n")

    # cgroup v2 in a container: its own group is the root
    groups.write_text("0::/\n")
    limit("memory.max", "max")
    assert runtime.memory_limit_bytes() == machine
    limit("memory.max", str(2**31))
    assert runtime.memory_limit_bytes() == 2**31
    # v2 on a host (systemd-run -p MemoryMax=...): the process's group, below a root without a limit
    limit("memory.max", "max")
    groups.write_text("0::/system.slice/run-1.scope\n")
    limit("system.slice/run-1.scope/memory.max", str(2**30))
    assert runtime.memory_limit_bytes() == 2**30
    limit("system.slice/memory.max", str(2**29))  # a parent's lower limit holds its children too
    assert runtime.memory_limit_bytes() == 2**29
    # cgroup v1: the memory controller's hierarchy, where "no limit" is a huge number
    groups.write_text("9:cpu,cpuacct:/x\n4:memory:/process_api/abc\n0::/\n")
    limit("memory/memory.limit_in_bytes", "9223372036854771712")
    assert runtime.memory_limit_bytes() == machine
    limit("memory/process_api/abc/memory.limit_in_bytes", str(3 * 2**30))
    assert runtime.memory_limit_bytes() == 3 * 2**30
