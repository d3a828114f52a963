"""Datasets: images decoded once by image_dataset_from_directory, kept as arrays, served by tf.data.

The reference script decodes every JPEG again in every epoch; on a small CPU that costs as much as the
training step. Here each split is decoded and resized once, stored as uint8 arrays (the resized values
rounded to whole numbers, at most 0.5/255 from the float ones) and fed from memory.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from catsdogs import store
from catsdogs.data import CLASS_NAMES, SPLITS, ArchiveError, Subsets
from catsdogs.images import image_problem
from catsdogs.runtime import tensorflow

log = logging.getLogger(__name__)


class DatasetArrays(BaseModel):
    """Decoded, resized images and labels of each split, as .npy files."""

    root: Path
    image_size: int
    counts: dict[str, int]  # split -> images

    def images(self, split: str) -> Path:
        return self.root / f"{split}-images.npy"

    def labels(self, split: str) -> Path:
        return self.root / f"{split}-labels.npy"

    def files(self, split: str) -> list[str]:
        """The source image of each row, relative to the subsets folder."""
        return json.loads((self.root / f"{split}-files.json").read_text())


def build_arrays(subsets: Subsets, out_dir: Path, image_size: int, batch_size: int = 32) -> DatasetArrays:
    """Decode every split with image_dataset_from_directory and save it as arrays in OUT_DIR."""
    out_dir = Path(out_dir)
    # Paths recorded in a marker are those of where the folder was made: a moved workdir uses where it is now.
    return store.run_once(out_dir, lambda: _build_arrays(subsets, out_dir, image_size, batch_size),
                          lambda _: load_arrays(out_dir))


def load_arrays(folder: Path) -> DatasetArrays:
    """The arrays recorded in the complete FOLDER, wherever the workdir is now."""
    return DatasetArrays.model_validate(store.read_marker(folder) | {"root": Path(folder)})


def _build_arrays(subsets: Subsets, out_dir: Path, image_size: int, batch_size: int) -> DatasetArrays:
    tf = tensorflow()
    import keras

    counts: dict[str, int] = {}
    with store.fresh_dir(out_dir) as tmp:
        for split in SPLITS:
            dataset = keras.utils.image_dataset_from_directory(
                subsets.root / split, labels="inferred", label_mode="binary", class_names=list(CLASS_NAMES),
                image_size=(image_size, image_size), batch_size=batch_size, shuffle=False, verbose=False,
            )
            files = [str(Path(p).relative_to(subsets.root)) for p in dataset.file_paths]
            images = np.empty((len(files), image_size, image_size, 3), np.uint8)
            labels = np.empty((len(files),), np.float32)
            row = 0
            try:
                for batch_images, batch_labels in dataset:
                    n = len(batch_labels)
                    images[row:row + n] = tf.cast(tf.round(batch_images), tf.uint8).numpy()
                    labels[row:row + n] = batch_labels.numpy()[:, 0]
                    row += n
            except tf.errors.OpError as err:  # a file changed since the subsets step checked it
                raise ArchiveError(_undecodable(subsets.root, files, err)) from None
            np.save(tmp / f"{split}-images.npy", images)
            np.save(tmp / f"{split}-labels.npy", labels)
            (tmp / f"{split}-files.json").write_text(json.dumps(files))
            counts[split] = len(files)
        result = DatasetArrays(root=out_dir, image_size=image_size, counts=counts)
        store.mark_complete(tmp, result.model_dump(mode="json"))
    log.info("decoded datasets at %dx%d into %s: %s", image_size, image_size, out_dir, counts)
    return result


def _undecodable(root: Path, files: list[str], err: Exception) -> str:
    """Name the files TensorFlow cannot decode, and the fix."""
    bad = [f"{name} ({problem})" for name in files if (problem := image_problem(root / name))]
    return (f"cannot decode {', '.join(bad) or 'an image'} in {root}: {err.__class__.__name__}; "
            "the file changed after the subsets step checked it: delete that subsets folder and run again")


def load_split(arrays: DatasetArrays, split: str, batch_size: int, shuffle_seed: int | None = None,
               mixup: float = 0.0, alternating_flips: bool = False, first_epoch: int = 0,
               cutmix: float = 0.0) -> Any:
    """A batched tf.data.Dataset of (float32 images, labels); reshuffled each epoch when a seed is given, and
    with each batch's images and labels blended pairwise (Keras' MixUp of that alpha) when MIXUP is not 0, or
    boxes pasted between them (Keras' CutMix of that factor) when CUTMIX is not 0: with both, each batch takes
    one of the two at random.

    ALTERNATING_FLIPS (with a seed): each image is mirrored in every other epoch, from FIRST_EPOCH on, starting
    from a random half of them (airbench's derandomized flip); the dataset then runs through every epoch from
    FIRST_EPOCH on, so fit needs steps_per_epoch (split_steps)."""
    tf = tensorflow()
    images = np.load(arrays.images(split))
    labels = np.load(arrays.labels(split))
    if alternating_flips and shuffle_seed is not None:
        dataset = _alternating_flips(tf, images, labels, batch_size, shuffle_seed, first_epoch)
    else:
        dataset = tf.data.Dataset.from_tensor_slices((images, labels))
        if shuffle_seed is not None:
            dataset = dataset.shuffle(len(labels), seed=shuffle_seed, reshuffle_each_iteration=True)
        dataset = dataset.batch(batch_size)
    dataset = dataset.map(
        lambda x, y: (tf.cast(x, tf.float32), tf.reshape(y, (-1, 1))), num_parallel_calls=tf.data.AUTOTUNE
    )
    if mixup or cutmix:
        dataset = dataset.map(_blending(mixup, cutmix, shuffle_seed))
    return dataset.prefetch(2).with_options(_without_autotuning(tf))


def _blending(mixup: float, cutmix: float, seed: int | None) -> Any:
    """A batch -> batch function that blends images and labels with Keras' MixUp and/or CutMix layers."""
    import keras

    blends = ([keras.layers.MixUp(alpha=mixup, seed=seed)] if mixup else []) + (
        # its own seed, derived apart: MixUp's draws stay what they were
        [keras.layers.CutMix(factor=cutmix, seed=None if seed is None else seed + 1)] if cutmix else [])

    def blended(layer: Any, images: Any, labels: Any) -> tuple[Any, Any]:
        batch = layer({"images": images, "labels": labels})
        return batch["images"], batch["labels"]

    if len(blends) == 1:
        return lambda images, labels: blended(blends[0], images, labels)
    tf = tensorflow()
    switch = keras.random.SeedGenerator(None if seed is None else seed + 2)
    return lambda images, labels: tf.cond(keras.random.uniform((), seed=switch) < 0.5,
                                          lambda: blended(blends[0], images, labels),
                                          lambda: blended(blends[1], images, labels))


def _without_autotuning(tf: Any) -> Any:
    """tf.data options without its autotuning thread. With it, the CPU sat idle for seconds at some epochs' ends
    while an iterator waited for that thread (docs/results.md: "Idle seconds between epochs"); the arrays are in
    memory, so the default parallelism and two batches ahead keep the model fed."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return options


def split_steps(arrays: DatasetArrays, split: str, batch_size: int) -> int:
    """The batches of one epoch over SPLIT."""
    return -(-arrays.counts[split] // batch_size)


def _alternating_flips(tf: Any, images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int,
                       first_epoch: int) -> Any:
    """Batches of every epoch from FIRST_EPOCH on: each epoch shuffled by its own seed, and each image mirrored
    where its random first flip, toggled every epoch, says so. The epoch number lives in the dataset, not in
    a callback, so a resumed run flips as the uninterrupted one would."""
    mirrored_in_even_epochs = tf.constant(np.random.default_rng([seed, 2]).integers(0, 2, len(labels)) > 0)
    images_t, labels_t = tf.constant(images), tf.constant(labels)  # captured by reference, not copied per epoch

    def epoch(number: Any) -> Any:
        order = tf.random.experimental.stateless_shuffle(tf.range(len(labels), dtype=tf.int64),
                                                         seed=tf.stack([tf.constant(seed, tf.int64), number]))

        def pick(rows: Any) -> tuple[Any, Any]:
            batch = tf.gather(images_t, rows)
            mirror = tf.math.logical_xor(tf.gather(mirrored_in_even_epochs, rows), tf.math.floormod(number, 2) == 1)
            return tf.where(mirror[:, None, None, None], tf.reverse(batch, [2]), batch), tf.gather(labels_t, rows)

        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size).map(pick)

    return tf.data.Dataset.range(first_epoch, 1 << 62).flat_map(epoch)
