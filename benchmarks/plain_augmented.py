"""The plain reference script's augmented variant: the notebook's code unchanged, default TensorFlow settings.

Answers "what does the reference itself get on this archive?", the yardstick for catsdogs' augmented run.
Usage (SUBSETS_DIR holds train/, validation/ and test/ with cat/ and dog/ folders):
    python benchmarks/plain_augmented.py SUBSETS_DIR EPOCHS OUT_DIR [SEED]
Additions to the notebook's code, and nothing else: keras.utils.set_random_seed(SEED) first, a callback that
writes each epoch's wall time and metrics to OUT_DIR/history.json, and one JSON line with the test result.
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
out_dir = pathlib.Path(sys.argv[3])
seed = int(sys.argv[4]) if len(sys.argv) > 4 else 0
out_dir.mkdir(parents=True, exist_ok=True)
keras.utils.set_random_seed(seed)

train_dataset = image_dataset_from_directory(new_base_dir / "train", image_size=(180, 180), batch_size=32)
validation_dataset = image_dataset_from_directory(new_base_dir / "validation", image_size=(180, 180), batch_size=32)
test_dataset = image_dataset_from_directory(new_base_dir / "test", image_size=(180, 180), batch_size=32)

data_augmentation = keras.Sequential(
    [
        layers.RandomFlip("horizontal"),
        layers.RandomRotation(0.1),
        layers.RandomZoom(0.2),
    ]
)
inputs = keras.Input(shape=(180, 180, 3))
x = data_augmentation(inputs)
x = layers.Rescaling(1.0 / 255)(x)
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
x = layers.Dropout(0.5)(x)
outputs = layers.Dense(1, activation="sigmoid")(x)
model = keras.Model(inputs=inputs, outputs=outputs)
model.compile(loss="binary_crossentropy", optimizer="rmsprop", metrics=["accuracy"])


class EpochTimes(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        path = out_dir / "history.json"
        rows = json.loads(path.read_text()) if path.exists() else []
        rows.append({"epoch": epoch + 1, "seconds": time.monotonic() - self.start,
                     **{k: float(v) for k, v in (logs or {}).items()}})
        path.write_text(json.dumps(rows))


checkpoint = out_dir / "convnet_from_scratch_with_augmentation.keras"
callbacks = [
    keras.callbacks.ModelCheckpoint(filepath=str(checkpoint), save_best_only=True, monitor="val_loss"),
    EpochTimes(),
]
history = model.fit(train_dataset, epochs=epochs, validation_data=validation_dataset, callbacks=callbacks,
                    verbose=2)

test_model = keras.models.load_model(checkpoint)
test_loss, test_acc = test_model.evaluate(test_dataset, verbose=0)
rows = json.loads((out_dir / "history.json").read_text())
best = min(rows, key=lambda row: row["val_loss"])
print(json.dumps({"seed": seed, "epochs": epochs, "test_accuracy": round(test_acc, 4), "test_loss": round(test_loss, 4),
                  "best_epoch": best["epoch"], "best_val_loss": round(best["val_loss"], 4)}))
