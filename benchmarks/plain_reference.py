"""The plain reference script: the notebook's code unchanged, default TensorFlow settings.

Kept as the baseline that catsdogs' training path is measured against. Usage:
    python benchmarks/plain_reference.py SUBSETS_DIR EPOCHS TIMES_JSON
SUBSETS_DIR holds train/ and validation/ with cat/ and dog/ folders (the notebook's make_subset output).
Only the last argument is an addition: a callback that writes each epoch's wall time to TIMES_JSON.
"""

import json
import pathlib
import sys
import time

from tensorflow import keras
from tensorflow.keras import layers
from tensorflow.keras.utils import image_dataset_from_directory

new_base_dir = pathlib.Path(sys.argv[1])
epochs = int(sys.argv[2])
times_path = pathlib.Path(sys.argv[3])

train_dataset = image_dataset_from_directory(new_base_dir / "train", image_size=(180, 180), batch_size=32)
validation_dataset = image_dataset_from_directory(new_base_dir / "validation", image_size=(180, 180), batch_size=32)

inputs = keras.Input(shape=(180, 180, 3))
x = layers.Rescaling(1.0 / 255)(inputs)
x = layers.Conv2D(filters=32, kernel_size=3, activation="relu")(x)
x = layers.MaxPooling2D(pool_size=2)(x)
x = layers.Conv2D(filters=64, kernel_size=3, activation="relu")(x)
x = layers.MaxPooling2D(pool_size=2)(x)
x = layers.Conv2D(filters=128, kernel_size=3, activation="relu")(x)
x = layers.MaxPooling2D(pool_size=2)(x)
x = layers.Conv2D(filters=256, kernel_size=3, activation="relu")(x)
x = layers.MaxPooling2D(pool_size=2)(x)
x = layers.Conv2D(filters=256, kernel_size=3, activation="relu")(x)
x = layers.Flatten()(x)
outputs = layers.Dense(1, activation="sigmoid")(x)
model = keras.Model(inputs=inputs, outputs=outputs)
model.compile(loss="binary_crossentropy", optimizer="rmsprop", metrics=["accuracy"])


class EpochTimes(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        rows = json.loads(times_path.read_text()) if times_path.exists() else []
        rows.append({"epoch": epoch + 1, "seconds": time.monotonic() - self.start,
                     **{k: float(v) for k, v in (logs or {}).items()}})
        times_path.write_text(json.dumps(rows))


callbacks = [
    keras.callbacks.ModelCheckpoint(
        filepath=str(times_path.with_suffix(".keras")), save_best_only=True, monitor="val_loss"),
    EpochTimes(),
]
history = model.fit(train_dataset, epochs=epochs, validation_data=validation_dataset, callbacks=callbacks,
                    verbose=2)
