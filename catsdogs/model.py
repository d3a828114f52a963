"""The convnets: the reference experiment's two, exactly as it defines them, and the stronger variants.

- baseline, augmented: the reference (RMSprop, binary cross-entropy), unchanged.
- xception: a from-scratch residual network after the book's mini-Xception (ch. 9), reshaped for CPUs.
- efficientnet: an ImageNet-pretrained EfficientNetV2B0 backbone with a new head (the book's ch. 8 recipe).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from catsdogs.runtime import onednn_cap_without_bf16, tensorflow
from catsdogs.settings import Settings, SettingsError
from catsdogs.variants import variant_spec

log = logging.getLogger(__name__)

EFFICIENTNET_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/efficientnet_v2/"

CONV_FILTERS = (32, 64, 128, 256)


RANDOM_LAYERS = ("flip", "rotation", "zoom", "dropout")


def layer_seeds(seed: int | None) -> dict[str, int | None]:
    """One independent seed per random layer, all derived from SEED.

    Layers given the same seed draw the same numbers: flip, rotation and zoom would then move in lockstep
    (every flipped image also rotated one way and zoomed one way), which leaves little augmentation.
    """
    if seed is None:
        return dict.fromkeys(RANDOM_LAYERS)
    values = np.random.SeedSequence(seed).generate_state(len(RANDOM_LAYERS))
    return {name: int(value) for name, value in zip(RANDOM_LAYERS, values, strict=True)}


def build_augmentation(seed: int | None = None, translate: float = 0.0, one_warp: bool = False,
                       flip: bool = True) -> Any:
    """RandomFlip("horizontal"), RandomRotation(0.1), RandomZoom(0.2): the augmented variant's first layers.

    TRANSLATE > 0 adds RandomTranslation by up to that fraction of the image each way (not in the reference).
    ONE_WARP rotates and zooms in one affine warp (RandomRotateZoom) instead of two (not in the reference).
    FLIP false leaves the flips out (alternating_flips: the input pipeline mirrors the images instead).
    """
    tensorflow()
    import keras

    seeds = layer_seeds(seed)
    flips = [keras.layers.RandomFlip("horizontal", seed=seeds["flip"])] if flip else []
    layers = [*flips, custom_layers()["RandomRotateZoom"](0.1, 0.2, seed=seeds["rotation"])] if one_warp else [
        *flips,
        keras.layers.RandomRotation(0.1, seed=seeds["rotation"]),
        keras.layers.RandomZoom(0.2, seed=seeds["zoom"]),
    ]
    if translate:  # its seed is derived apart, so the reference layers' seeds stay what they were
        shift_seed = None if seed is None else int(np.random.SeedSequence([seed, 1]).generate_state(1)[0])
        layers.append(keras.layers.RandomTranslation(translate, translate, seed=shift_seed))
    return keras.Sequential(layers, name="data_augmentation")


def augmentation_for(settings: Settings) -> Any:
    """The random layers a run of SETTINGS trains through (its model's first layers; its plots show the same)."""
    return build_augmentation(settings.seed, float(settings.translate or 0.0), bool(settings.one_warp),
                              flip=not settings.alternating_flips)


def augmentation_text(settings: Settings) -> str:
    """The random layers a run of SETTINGS trains through, named: "RandomFlip, RandomRotateZoom", say."""
    names = ", ".join(type(layer).__name__ for layer in augmentation_for(settings).layers)
    return names + ("; mirrored on alternate epochs by the input pipeline" if settings.alternating_flips else "")


def build_model(variant: str, image_size: int, seed: int | None = None, precision: str = "float32") -> Any:
    """The compiled baseline or augmented model for square RGB images of IMAGE_SIZE pixels.

    PRECISION is a Keras dtype policy for the layers between the augmentation and the output; the output
    layer stays float32 so that the sigmoid and the loss keep their range (Keras' mixed-precision guide).
    """
    settings = Settings(variant=variant, image_size=image_size, seed=seed or 0)
    return build_for(settings.model_copy(update={"seed": seed}), precision, steps_per_epoch=1)


def _reference_network(variant: str, image_size: int, seed: int | None, precision: str, dropout: float) -> Any:
    """The reference experiment's convnet, uncompiled (DROPOUT: the augmented one's rate)."""
    import keras
    from keras import layers

    augments = variant_spec(variant).augments
    inputs = keras.Input(shape=(image_size, image_size, 3))
    x = build_augmentation(seed)(inputs) if augments else inputs
    x = layers.Rescaling(1.0 / 255, dtype=precision)(x)
    for filters in CONV_FILTERS:
        x = layers.Conv2D(filters=filters, kernel_size=3, activation="relu", dtype=precision)(x)
        x = layers.MaxPooling2D(pool_size=2, dtype=precision)(x)
    x = layers.Conv2D(filters=256, kernel_size=3, activation="relu", dtype=precision)(x)
    x = layers.Flatten(dtype=precision)(x)
    if augments:
        x = layers.Dropout(dropout, seed=layer_seeds(seed)["dropout"], dtype=precision)(x)
    outputs = layers.Dense(1, activation="sigmoid", dtype="float32")(x)
    return keras.Model(inputs=inputs, outputs=outputs, name=f"catsdogs_{variant}")


# xception: the book's five residual blocks of separable convolutions, widths 32 to 512. One change makes it
# fit a CPU: the 5x5 stem convolution has stride 2, so the first block works on a quarter of the pixels.
# benchmarks/xception_throughput.py measured it 4.4x faster than the book's shape (stride 1, 180 px), and
# faster than plain 3x3 convolutions in the same place (which have 7x the weights).
XCEPTION_WIDTHS = (32, 64, 128, 256, 512)
STEM, STEM_KERNEL = "stem", 5
PATCH = 4  # patch_stem's kernel and stride: the first block's 2x2 pooling folded into the stem
TRAINING_RESIZE = "training_resize"


def xception_network(x: Any, widths: tuple[int, ...] = XCEPTION_WIDTHS, separable: bool = True,
                     stem_strides: int = 2, precision: str = "float32", patch_stem: bool = False,
                     fused: bool = True, single_conv_blocks: int = 0) -> Any:
    """Stem, then per width: BN, ReLU, conv twice, max-pool(3, 2) plus a strided 1x1 residual; then pooled.
    With PATCH_STEM, a PATCHxPATCH stride-PATCH stem of the first width replaces the stem and the first block.
    FUSED: batch normalisation through TensorFlow's fused kernel in training (else Keras' own layer).
    The first SINGLE_CONV_BLOCKS blocks have one BN, ReLU, conv instead of two."""
    from keras import layers

    conv = layers.SeparableConv2D if separable else layers.Conv2D
    batch_normalization = custom_layers()["BatchNormalization"] if fused else layers.BatchNormalization
    kernel, strides = (PATCH, PATCH) if patch_stem else (STEM_KERNEL, stem_strides)
    x = layers.Conv2D(widths[0], kernel, strides=strides, padding="same", use_bias=False, name=STEM,
                      dtype=precision)(x)
    for block, width in enumerate(widths[1:] if patch_stem else widths):
        residual = x
        for _ in range(1 if block < single_conv_blocks else 2):
            x = batch_normalization(dtype=precision)(x)
            x = layers.Activation("relu", dtype=precision)(x)
            x = conv(width, 3, padding="same", use_bias=False, dtype=precision)(x)
        x = layers.MaxPooling2D(3, strides=2, padding="same", dtype=precision)(x)
        residual = layers.Conv2D(width, 1, strides=2, padding="same", use_bias=False, dtype=precision)(residual)
        x = layers.add([x, residual], dtype=precision)
    x = batch_normalization(dtype=precision)(x)  # the blocks end on an addition: normalise before pooling
    x = layers.Activation("relu", dtype=precision)(x)
    return layers.GlobalAveragePooling2D(dtype=precision)(x)


def build_network(settings: Settings, precision: str) -> Any:
    """The uncompiled network SETTINGS.variant names, for square RGB images of settings.image_size."""
    tensorflow()
    keras_saving_keeps_its_skip_sets()
    spec = variant_spec(settings.variant)
    if spec.network not in NETWORKS:  # a declared variant without a builder must not train as another one
        raise ValueError(f"variant {spec.name!r} declares network {spec.network!r}, which catsdogs.model.NETWORKS "
                         f"does not build (it builds {', '.join(NETWORKS)})")
    return NETWORKS[spec.network](settings, precision)


def _reference(settings: Settings, precision: str) -> Any:
    return _reference_network(settings.variant, int(settings.image_size), settings.seed, precision,  # type: ignore[arg-type]
                              float(settings.dropout))  # type: ignore[arg-type]


def _with_head(settings: Settings, precision: str, body: Callable[[Any, int], Any]) -> Any:
    """Input, the training-only resize and augmentation, BODY (features), dropout and the sigmoid output."""
    import keras
    from keras import layers

    size = int(settings.image_size)  # type: ignore[arg-type]
    inputs = keras.Input(shape=(size, size, 3))
    x = custom_layers()["TrainingResize"](name=TRAINING_RESIZE)(inputs) if settings.resize_from else inputs
    if settings.spec.augments:
        x = augmentation_for(settings)(x)
    x = body(x, size)
    x = layers.Dropout(float(settings.dropout), seed=layer_seeds(settings.seed)["dropout"],  # type: ignore[arg-type]
                       dtype=precision)(x)
    outputs = layers.Dense(1, activation="sigmoid", dtype="float32")(x)
    return keras.Model(inputs=inputs, outputs=outputs, name=f"catsdogs_{settings.variant}")


def _xception(settings: Settings, precision: str) -> Any:
    from keras import layers

    return _with_head(settings, precision, lambda x, size: xception_network(
        layers.Rescaling(1.0 / 255, dtype=precision)(x), precision=precision, patch_stem=bool(settings.patch_stem),
        single_conv_blocks=int(settings.single_conv_blocks or 0)))


def _efficientnet(settings: Settings, precision: str) -> Any:
    from keras import layers

    def body(x: Any, size: int) -> Any:
        base = efficientnet_base(size, settings.backbone_weights, precision)
        x = base(x, training=False)  # its BatchNorm layers stay in inference mode, even when fine-tuned
        return layers.GlobalAveragePooling2D(dtype=precision)(x)

    return _with_head(settings, precision, body)


# The network families the variants' declarations name (catsdogs/variants.py), each a builder of
# (settings, precision) -> an uncompiled Keras model.
NETWORKS: dict[str, Callable[[Settings, str], Any]] = {
    "reference": _reference, "xception": _xception, "efficientnet": _efficientnet}


def _training_resize_class() -> Any:
    import keras

    @keras.saving.register_keras_serializable(package="catsdogs")
    class TrainingResize(keras.layers.Layer):
        """Progressive resizing: in training, images are resized to the size in its variable (set each epoch by
        the training loop); in inference the layer passes them through, so the model takes image_size."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.size = self.add_weight(shape=(), dtype="int32", initializer="zeros", trainable=False, name="size")

        def call(self, images: Any, training: bool = False) -> Any:
            if not training:
                return images
            import tensorflow as tf

            size = tf.where(self.size > 0, self.size, tf.shape(images)[1])  # 0: not set, the full size
            return tf.image.resize(images, tf.stack([size, size]), method="bilinear")

        def compute_output_shape(self, input_shape: Any) -> Any:
            return input_shape

    return TrainingResize


def rotate_zoom_transform(turns: Any, scale: Any, height: Any, width: Any) -> Any:
    """Per image, the affine map from an output pixel (x, y) to where it samples the input: scale * R (p - c) + c,
    with R a rotation by TURNS of a full turn about the centre c (Keras' RandomRotation, then RandomZoom)."""
    from keras import ops

    angle = turns * 2 * np.pi
    cos, sin = scale * ops.cos(angle), scale * ops.sin(angle)
    cx, cy = (ops.cast(width, "float32") - 1) / 2, (ops.cast(height, "float32") - 1) / 2
    zeros = ops.zeros_like(cos)
    return ops.stack([cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy, zeros, zeros], axis=1)


def _rotate_zoom_class() -> Any:
    import keras

    @keras.saving.register_keras_serializable(package="catsdogs")
    class RandomRotateZoom(keras.layers.Layer):
        """RandomRotation(ROTATION) then RandomZoom(ZOOM) as one affine warp: the same random rotations (up to
        ROTATION of a full turn each way) and zooms (by 1 +- ZOOM, both sides alike), the same bilinear sampling
        and reflected borders, in one pass over the pixels instead of two. Inference passes images through."""

        def __init__(self, rotation: float = 0.1, zoom: float = 0.2, seed: int | None = None, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.rotation, self.zoom, self.seed = rotation, zoom, seed
            self.seed_generator = keras.random.SeedGenerator(seed)

        def call(self, images: Any, training: bool = False) -> Any:
            if not training:
                return images
            from keras import ops

            shape = ops.shape(images)
            batch = shape[0]
            turns = keras.random.uniform((batch,), -self.rotation, self.rotation, seed=self.seed_generator)
            scale = keras.random.uniform((batch,), 1 - self.zoom, 1 + self.zoom, seed=self.seed_generator)
            transform = rotate_zoom_transform(turns, scale, shape[1], shape[2])
            warped = ops.image.affine_transform(ops.cast(images, "float32"), transform, interpolation="bilinear",
                                                fill_mode="reflect")
            return ops.cast(warped, images.dtype)

        def compute_output_shape(self, input_shape: Any) -> Any:
            return input_shape

        def get_config(self) -> dict[str, Any]:
            return super().get_config() | {"rotation": self.rotation, "zoom": self.zoom, "seed": self.seed}

    return RandomRotateZoom


def _fused_batch_normalization_class() -> Any:
    import keras

    @keras.saving.register_keras_serializable(package="catsdogs")
    class BatchNormalization(keras.layers.BatchNormalization):
        """Keras' BatchNormalization, trained through TensorFlow's fused kernel: one op each way instead of the
        dozen Keras 3 runs (in float32, whatever the policy). The same statistics and moving averages; outside
        training, and for what the kernel does not take, Keras' own path, so inference and export are Keras'.
        Keras' class name too: weights files name layers by their class, so a network's weights saved with
        Keras' layer (a backup of an interrupted run) load into this one."""

        def call(self, inputs: Any, training: bool | None = None, mask: Any = None) -> Any:
            if not (training and self.trainable) or mask is not None or len(inputs.shape) != 4 or self.renorm \
                    or self.axis not in (-1, 3) or keras.backend.backend() != "tensorflow":
                return super().call(inputs, training=training, mask=mask)
            import tensorflow as tf

            channels = inputs.shape[-1]
            gamma = tf.cast(self.gamma, "float32") if self.scale else tf.ones((channels,), "float32")
            beta = tf.cast(self.beta, "float32") if self.center else tf.zeros((channels,), "float32")
            outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                inputs, gamma, beta, epsilon=self.epsilon, data_format="NHWC", is_training=True)
            count = tf.cast(tf.size(inputs) // channels, "float32")
            variance *= (count - 1.0) / count  # the kernel returns the unbiased variance; Keras keeps the biased
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
            return tf.cast(outputs, self.compute_dtype)

    return BatchNormalization


@functools.cache
def keras_saving_keeps_its_skip_sets() -> None:
    """Keras' saving (3.15) walks every layer's attributes, skipping those that every object of its kind has; it
    works that set out again for each layer of each save and load (building a reference object and listing its
    attributes), as it stores the set under another name than it looks it up by ("saving_attr_skipset_" against
    "saving_attr_skiplist_"). The set depends only on the kind, so each kind's is kept: a model's save and load
    then run 1.3-1.7 times as fast (docs/results.md, "Keras' saving, and the LiteRT export"). Nothing changes
    where Keras keeps them itself or no longer has that function."""
    from keras.src.saving import saving_lib

    keras_own = getattr(saving_lib, "get_attr_skipset", None)
    if not callable(keras_own) or hasattr(keras_own, "keras_own") or keras_own("Layer") is keras_own("Layer"):
        return

    @functools.cache
    def kept(kind: str) -> frozenset[str]:  # frozen: one set shared by every thread's saves
        return frozenset(keras_own(kind))

    kept.keras_own = keras_own  # type: ignore[attr-defined]
    saving_lib.get_attr_skipset = kept


@functools.cache
def custom_layers() -> dict[str, Any]:
    """catsdogs' own Keras layers, registered with Keras: call before loading a saved model that may hold them.
    Defined on first use, so that importing this module does not start TensorFlow."""
    tensorflow()
    keras_saving_keeps_its_skip_sets()
    return {"TrainingResize": _training_resize_class(), "RandomRotateZoom": _rotate_zoom_class(),
            "BatchNormalization": _fused_batch_normalization_class()}


def load_keras_model(path: Path) -> Any:
    """A saved catsdogs model (any variant), without its optimizer: inference and export need none. A model
    trained in bfloat16 computes in float32 where a oneDNN cap leaves this process without bfloat16 kernels."""
    import keras

    custom_layers()
    model = keras.models.load_model(path, compile=False)
    if onednn_cap_without_bf16() and any(layer.compute_dtype == "bfloat16" for layer in model.layers):
        model = in_float32(model)
    return model


def in_float32(model: Any) -> Any:
    """MODEL with every layer computing in float32 and the same weights (mixed precision keeps them in float32)."""
    import keras

    def float32_policies(node: Any) -> Any:
        if isinstance(node, dict):
            if node.get("class_name") == "DTypePolicy":
                return node | {"config": node["config"] | {"name": "float32"}}
            return {key: float32_policies(value) for key, value in node.items()}
        return [float32_policies(value) for value in node] if isinstance(node, list) else node

    float32 = keras.saving.deserialize_keras_object(float32_policies(keras.saving.serialize_keras_object(model)))
    float32.set_weights(model.get_weights())
    return float32


# Progressive resizing's schedule, as fractions of the run: the first size until HOLD, then growing linearly to
# the full size by RAMP_END, then the full size (fast.ai trains most epochs small and the last ones large).
HOLD, RAMP_END = 0.5, 0.85


def training_sizes(first: int, last: int, epochs: int) -> list[int]:
    """Progressive resizing's image size for each epoch: FIRST, then growing to LAST (HOLD, RAMP_END above), in
    multiples of 8 (the sizes oneDNN's kernels suit best); the last epoch always at LAST."""
    hold, ramp_end = round(HOLD * epochs), max(round(HOLD * epochs) + 1, round(RAMP_END * epochs))
    sizes = [first + (last - first) * min(1.0, max(0, epoch - hold + 1) / (ramp_end - hold))
             for epoch in range(epochs - 1)]
    return [last if size >= last else max(8, int(size) // 8 * 8) for size in sizes] + [last]


def whitening_kernel(images: np.ndarray, filters: int, kernel: int = STEM_KERNEL, patches: int = 20_000,
                     seed: int = 0, eps: float = 1e-2) -> np.ndarray:
    """A KERNEL x KERNEL x 3 x FILTERS convolution kernel that whitens the patches of IMAGES (uint8, NHWC; scaled
    to 0-1 as Rescaling does): the covariance's top FILTERS/2 eigenvectors, each divided by the square root of its
    eigenvalue, and their negatives (after airbench's patch-whitening first layer)."""
    rng = np.random.default_rng(seed)
    n, height, width, channels = images.shape
    rows, cols = rng.integers(0, height - kernel + 1, patches), rng.integers(0, width - kernel + 1, patches)
    which = rng.integers(0, n, patches)
    windows = np.stack([images[i, r:r + kernel, c:c + kernel] for i, r, c in zip(which, rows, cols, strict=True)])
    flat = windows.reshape(patches, -1).astype(np.float64) / 255.0
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(flat, rowvar=False))
    order = np.argsort(eigenvalues)[::-1][:filters // 2]
    scaled = eigenvectors[:, order] / np.sqrt(eigenvalues[order] + eps)
    columns = np.concatenate([scaled, -scaled], axis=1)[:, :filters]
    if columns.shape[1] < filters:  # an odd FILTERS: one more
        columns = np.concatenate([columns, scaled[:, :1]], axis=1)
    return columns.reshape(kernel, kernel, channels, filters).astype(np.float32)


def whiten_stem(model: Any, images: np.ndarray, seed: int) -> None:
    """Set the xception stem's kernel to whiten the patches of IMAGES."""
    stem = model.get_layer(STEM)
    kernel = stem.kernel
    stem.kernel.assign(whitening_kernel(images, int(kernel.shape[-1]), int(kernel.shape[0]), seed=seed))
    log.info("stem initialised to whiten %dx%d patches of the training images", kernel.shape[0], kernel.shape[1])


EFFICIENTNET_WEIGHTS = "efficientnetv2-b0_notop.h5"  # Keras' file name in its cache and at its download URL


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"  # how an .h5 file, such as Keras' weights files, begins


def check_backbone_weights(settings: Settings, timeout_s: float = 5.0) -> None:
    """Raise SettingsError before any work when efficientnet's base weights can be had neither way."""
    weights = settings.backbone_weights
    if not settings.spec.pretrained_base or weights == "random":
        return
    if weights != "imagenet":
        if not Path(weights).is_file():
            raise SettingsError(f"invalid setting backbone_weights: no file at {weights}; give the path of "
                                f"Keras' {EFFICIENTNET_WEIGHTS}, or imagenet to download it")
        with open(weights, "rb") as file:
            if file.read(len(HDF5_SIGNATURE)) != HDF5_SIGNATURE:  # Keras reads the weights only after the data steps
                raise SettingsError(f"invalid setting backbone_weights: {weights} is not a Keras weights file "
                                    f"(HDF5); give the path of Keras' {EFFICIENTNET_WEIGHTS}, or imagenet")
        return
    cached = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "models" / EFFICIENTNET_WEIGHTS
    if cached.is_file():
        return
    import requests  # here: a prediction, which imports this module, needs no network

    url = EFFICIENTNET_WEIGHTS_URL + EFFICIENTNET_WEIGHTS
    try:  # a GET that reads no body: some servers refuse HEAD
        with requests.get(url, timeout=timeout_s, stream=True) as response:
            reachable = response.status_code < 400
    except requests.RequestException:
        reachable = False
    if not reachable:
        raise SettingsError(
            f"invalid setting backbone_weights: the ImageNet weights of efficientnet are not in Keras' cache "
            f"({cached}) and {url} cannot be reached; either run once where the network allows Keras' "
            f"download, or pass --backbone-weights /path/to/{EFFICIENTNET_WEIGHTS}")


def training_memory_floor(settings: Settings, network_bytes: int | None = None) -> int:
    """Bytes a training of SETTINGS holds at the least: its training and validation images twice (the decoded
    arrays and TensorFlow's copy), one batch in float32 before and after augmentation, and the batch through the
    network: NETWORK_BYTES per image where counted (network_output_bytes), else only the first layer's output
    (32 channels; at full size in the reference convnet, at half size behind the others' strided stems). The
    real need is larger: this only tells settings that cannot fit from those that might."""
    size, batch = int(settings.image_size), settings.batch_size  # type: ignore[arg-type]
    images = sum(2 * (last - first + 1) for first, last in (settings.train_range, settings.validation_range))
    if network_bytes is None:
        network_bytes = 4 * 32 * (size if settings.spec.network == "reference" else size // 2) ** 2
    return 2 * images * size * size * 3 + batch * (4 * 2 * size * size * 3 + network_bytes)


def network_output_bytes(settings: Settings) -> int:
    """Bytes of the layer outputs that one image's training step keeps for the backward pass, from the network
    SETTINGS builds (each layer's output shape and dtype). A frozen nested model (efficientnet's base) counts
    as its output alone: no gradient flows through it, so its inner outputs are not kept."""
    tf = tensorflow(settings.threads, settings.onednn)  # as the training will start it
    from catsdogs.runtime import resolve_precision

    def outputs_of(model: Any) -> int:
        total = 0
        for layer in model.layers:
            if getattr(layer, "layers", None) and layer.trainable:
                total += outputs_of(layer)
                continue
            try:
                outputs = tf.nest.flatten(layer.output)
            except (AttributeError, ValueError):  # a layer called more than once has no single output
                continue
            total += sum(int(np.prod([d or 0 for d in out.shape[1:]])) * tf.as_dtype(out.dtype).size
                         for out in outputs)
        return total

    return outputs_of(build_network(settings, resolve_precision(str(settings.precision))))


def check_memory(settings: Settings, at_once: int = 1) -> None:
    """Raise SettingsError before any work when SETTINGS' training, AT_ONCE of them side by side (a local Dask
    cluster's workers), cannot fit in this machine's memory: the system would otherwise kill it, after the data
    steps, with no line saying why. Where the quick count comes within a quarter of the limit, the network's own
    layers are counted (TensorFlow starts for it, a few seconds that the training would spend anyway)."""
    from catsdogs.runtime import memory_limit_bytes

    need, have = at_once * training_memory_floor(settings), memory_limit_bytes()
    if have // 4 < need <= have:
        need = at_once * training_memory_floor(settings, network_output_bytes(settings))
    if need > have:
        gib = 2 ** 30
        shape = f"at {settings.image_size} px in batches of {settings.batch_size}"
        trainings = (f"{at_once} trainings at once (--dask-workers), each {shape}, need" if at_once > 1 else
                     f"training {shape} needs")
        fixes = "--dask-workers, --image-size or --batch-size" if at_once > 1 else "--image-size or --batch-size"
        raise SettingsError(
            f"invalid settings: {trainings} at least {need / gib:.1f} GiB of memory (the images, and a batch "
            f"through the network), and this machine allows {have / gib:.1f} GiB; lower {fixes}, or train on "
            "fewer images (--train-range, --validation-range)")


def check_before_work(settings: Settings) -> None:
    """Raise SettingsError for what would stop SETTINGS' training later, before any work starts: efficientnet's
    weights that can be had neither way, a training too large for the memory, bfloat16 under a oneDNN cap, a
    file:// archive that is not there."""
    from catsdogs.download import local_source_problem
    from catsdogs.runtime import check_precision

    if problem := local_source_problem(settings.data_url):
        raise SettingsError(f"invalid setting data_url: {problem}")
    check_backbone_weights(settings)
    check_memory(settings)
    check_precision(str(settings.precision))


def efficientnet_base(image_size: int, weights: str, precision: str) -> Any:
    """EfficientNetV2B0 without its top, frozen; it rescales 0-255 pixels itself."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)  # Keras applications take their layers' policy from the global one
    try:
        base = keras.applications.EfficientNetV2B0(
            include_top=False, weights=None if weights == "random" else weights,
            input_shape=(image_size, image_size, 3), include_preprocessing=True)
    finally:
        keras.config.set_dtype_policy(previous)
    base.trainable = False
    return base


def compile_model(model: Any, settings: Settings, precision: str, steps_per_epoch: int,
                  learning_rate: float | None = None, epochs: int | None = None) -> Any:
    """Compile with the recipe's optimizer, schedule and loss (RMSprop and binary cross-entropy for the reference)."""
    import keras

    rate = learning_rate or float(settings.learning_rate)  # type: ignore[arg-type]
    total = max(1, (epochs or settings.epochs_to_run) * steps_per_epoch)  # the steps of this fit
    if settings.lr_schedule == "cosine":
        warmup = min(total - 1, int(settings.warmup_epochs or 0) * steps_per_epoch)
        rate = keras.optimizers.schedules.CosineDecay(
            0.0 if warmup else rate, decay_steps=total - warmup, warmup_target=rate if warmup else None,
            warmup_steps=warmup)
    # With ema, the optimizer keeps the moving average; train.py swaps it in for validation and checkpoints.
    average = {"use_ema": True, "ema_momentum": ema_momentum(float(settings.ema), total)} if settings.ema else {}
    optimizer = {
        "rmsprop": lambda: keras.optimizers.RMSprop(rate, **average),
        "adam": lambda: keras.optimizers.Adam(rate, **average),
        "adamw": lambda: keras.optimizers.AdamW(rate, weight_decay=float(settings.weight_decay or 0.0), **average),
    }[str(settings.optimizer)]()
    if precision == "mixed_float16":  # float16 gradients underflow without loss scaling
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    loss: Any = "binary_crossentropy"
    if settings.label_smoothing:
        loss = keras.losses.BinaryCrossentropy(label_smoothing=float(settings.label_smoothing))
    # MixUp's and CutMix's labels are blends such as 0.7; Keras' binary accuracy would count every blend as wrong, so
    # training accuracy is measured against each blend's larger part (validation labels are whole anyway).
    accuracy: Any = keras.metrics.MeanMetricWrapper(dominant_label_accuracy, name="accuracy") \
        if settings.mixup or settings.cutmix else keras.metrics.BinaryAccuracy(name="accuracy")
    model.compile(loss=loss, optimizer=optimizer, metrics=[accuracy])
    # Every variable made now, not in the first training step: binary accuracy as an object (its counts exist from
    # here, where the name "accuracy" would make them in the step) and the optimizer built. A tf.function whose
    # first trace makes variables is traced a second time, the whole network's step again (docs/results.md,
    # "Tracing the training step once").
    optimizer.build(model.trainable_variables)
    return model


def ema_momentum(ema: float, steps: int) -> float:
    """The ema setting, capped so that the average spans at most a tenth of the run's STEPS.

    Keras' average starts from the initial weights: in a short run (a trial with a few epochs, a test) a
    momentum meant for thousands of steps would leave the model close to where it started.
    """
    momentum = min(ema, max(0.0, 1 - 10 / steps))
    if momentum < ema:
        log.info("ema: momentum %.4g instead of %g, so that the average spans at most a tenth of the run's %d "
                 "steps", momentum, ema, steps)
    return momentum


def dominant_label_accuracy(labels: Any, probabilities: Any) -> Any:
    """Binary accuracy against the rounded labels: a blend of 0.7 cat counts as cat."""
    import keras

    return keras.metrics.binary_accuracy(keras.ops.round(labels), probabilities)


def build_for(settings: Settings, precision: str, steps_per_epoch: int) -> Any:
    """The compiled model SETTINGS describes, in PRECISION (a concrete policy, not auto)."""
    return compile_model(build_network(settings, precision), settings, precision, steps_per_epoch)


def unfreeze_top(model: Any, layers_to_train: int) -> None:
    """Let the top LAYERS_TO_TRAIN layers of the pretrained base train (BatchNorm layers stay frozen)."""
    base = next(layer for layer in model.layers if layer.name.startswith("efficientnet"))
    base.trainable = True
    for index, layer in enumerate(base.layers):
        top = index >= len(base.layers) - layers_to_train
        layer.trainable = top and type(layer).__name__ != "BatchNormalization"


def model_summary(model: Any) -> str:
    """The model's layers as a Markdown table (name, type, output shape, parameters), then its totals: narrow
    enough for the Prefect UI's artifact pane, which cuts off Keras' own 150-column text."""
    rows = ["| layer | type | output shape | parameters |", "|---|---|---|---:|"]
    for layer in model.layers:
        try:
            shape = str(tuple(layer.output.shape))
        except (AttributeError, ValueError):  # a layer called more than once has no single output
            shape = "–"
        rows.append(f"| `{layer.name}` | {type(layer).__name__} | {shape} | {layer.count_params():,} |")
    total = model.count_params()
    trainable = sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)
    return "\n".join(rows) + (f"\n\nTotal params: {total:,} (trainable {trainable:,}, "
                              f"non-trainable {total - trainable:,})")
