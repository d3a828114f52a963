"""The reference convnets, exactly as the reference experiment defines them."""

from __future__ import annotations

from typing import Any

import numpy as np

from catsdogs.runtime import tensorflow

CONV_FILTERS = (32, 64, 128, 256)


def layer_seeds(seed: int | None, count: int) -> list[int | None]:
    """COUNT independent seeds derived from SEED, one per random layer.

    Layers given the same seed draw the same numbers: flip, rotation and zoom would then move in lockstep
    (every flipped image also rotated one way and zoomed one way), which leaves little augmentation.
    """
    if seed is None:
        return [None] * count
    return [int(value) for value in np.random.SeedSequence(seed).generate_state(count)]


def build_augmentation(seed: int | None = None) -> Any:
    """RandomFlip("horizontal"), RandomRotation(0.1), RandomZoom(0.2): the augmented variant's first layers."""
    tensorflow()
    import keras

    flip_seed, rotation_seed, zoom_seed = layer_seeds(seed, 3)
    return keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal", seed=flip_seed),
            keras.layers.RandomRotation(0.1, seed=rotation_seed),
            keras.layers.RandomZoom(0.2, seed=zoom_seed),
        ],
        name="data_augmentation",
    )


def build_model(variant: str, image_size: int, seed: int | None = None) -> Any:
    """The compiled baseline or augmented model for square RGB images of IMAGE_SIZE pixels."""
    tensorflow()
    import keras
    from keras import layers

    inputs = keras.Input(shape=(image_size, image_size, 3))
    x = build_augmentation(seed)(inputs) if variant == "augmented" else inputs
    x = layers.Rescaling(1.0 / 255)(x)
    for filters in CONV_FILTERS:
        x = layers.Conv2D(filters=filters, kernel_size=3, activation="relu")(x)
        x = layers.MaxPooling2D(pool_size=2)(x)
    x = layers.Conv2D(filters=256, kernel_size=3, activation="relu")(x)
    x = layers.Flatten()(x)
    if variant == "augmented":
        # A fourth seed: the Dropout mask stays independent of the augmentation draws.
        x = layers.Dropout(0.5, seed=layer_seeds(seed, 4)[3])(x)
    outputs = layers.Dense(1, activation="sigmoid")(x)
    model = keras.Model(inputs=inputs, outputs=outputs, name=f"catsdogs_{variant}")
    model.compile(loss="binary_crossentropy", optimizer="rmsprop", metrics=["accuracy"])
    return model


def model_summary(model: Any) -> str:
    """Keras' model summary as plain text."""
    lines: list[str] = []
    model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line), line_length=100)
    return "\n".join(lines)
