"""The reference convnets, exactly as the reference experiment defines them."""

from __future__ import annotations

from typing import Any

import numpy as np

from catsdogs.runtime import tensorflow

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


def build_augmentation(seed: int | None = None) -> Any:
    """RandomFlip("horizontal"), RandomRotation(0.1), RandomZoom(0.2): the augmented variant's first layers."""
    tensorflow()
    import keras

    seeds = layer_seeds(seed)
    return keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal", seed=seeds["flip"]),
            keras.layers.RandomRotation(0.1, seed=seeds["rotation"]),
            keras.layers.RandomZoom(0.2, seed=seeds["zoom"]),
        ],
        name="data_augmentation",
    )


def build_model(variant: str, image_size: int, seed: int | None = None, precision: str = "float32") -> Any:
    """The compiled baseline or augmented model for square RGB images of IMAGE_SIZE pixels.

    PRECISION is a Keras dtype policy for the layers between the augmentation and the output; the output
    layer stays float32 so that the sigmoid and the loss keep their range (Keras' mixed-precision guide).
    """
    tensorflow()
    import keras
    from keras import layers

    inputs = keras.Input(shape=(image_size, image_size, 3))
    x = build_augmentation(seed)(inputs) if variant == "augmented" else inputs
    x = layers.Rescaling(1.0 / 255, dtype=precision)(x)
    for filters in CONV_FILTERS:
        x = layers.Conv2D(filters=filters, kernel_size=3, activation="relu", dtype=precision)(x)
        x = layers.MaxPooling2D(pool_size=2, dtype=precision)(x)
    x = layers.Conv2D(filters=256, kernel_size=3, activation="relu", dtype=precision)(x)
    x = layers.Flatten(dtype=precision)(x)
    if variant == "augmented":
        x = layers.Dropout(0.5, seed=layer_seeds(seed)["dropout"], dtype=precision)(x)
    outputs = layers.Dense(1, activation="sigmoid", dtype="float32")(x)
    model = keras.Model(inputs=inputs, outputs=outputs, name=f"catsdogs_{variant}")
    optimizer = keras.optimizers.RMSprop()
    if precision == "mixed_float16":  # float16 gradients underflow without loss scaling
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(loss="binary_crossentropy", optimizer=optimizer, metrics=["accuracy"])
    return model


def model_summary(model: Any) -> str:
    """Keras' model summary as plain text."""
    lines: list[str] = []
    model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line), line_length=100)
    return "\n".join(lines)
