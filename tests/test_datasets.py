from pathlib import Path

import numpy as np
import pytest

from catsdogs.data import make_subsets, unzip_archive
from catsdogs.datasets import build_arrays, load_split, split_steps
from catsdogs.images import decode_image

RANGES = {"train": (0, 5), "validation": (6, 7), "test": (8, 11)}


@pytest.fixture
def arrays(tiny_zip: Path, tmp_path: Path):
    subsets = make_subsets(unzip_archive(tiny_zip, tmp_path / "x", 2**30), tmp_path / "s", RANGES)
    return build_arrays(subsets, tmp_path / "d", image_size=24, batch_size=4)


def test_arrays_hold_every_image_once_with_its_label(arrays):
    assert arrays.counts == {"train": 12, "validation": 4, "test": 8}
    images = np.load(arrays.images("train"))
    labels = np.load(arrays.labels("train"))
    assert images.shape == (12, 24, 24, 3) and images.dtype == np.uint8
    files = arrays.files("train")
    assert [label for label in labels] == [0.0 if "cat" in f else 1.0 for f in files]
    # the generated cats are red, the dogs blue: the label follows the pixels
    red_minus_blue = images[..., 0].mean(axis=(1, 2)) - images[..., 2].mean(axis=(1, 2))
    assert ((red_minus_blue > 0) == (labels == 0)).all()


def test_decode_image_matches_the_dataset_build(arrays, tmp_path: Path):
    files = arrays.files("test")
    images = np.load(arrays.images("test"))
    for row, name in enumerate(files):
        decoded = decode_image((tmp_path / "s" / name).read_bytes(), 24).numpy()
        assert np.array_equal(decoded, images[row]), name


def test_training_split_is_reshuffled_each_epoch_and_seeded(arrays):
    def epoch_labels(dataset):
        return np.concatenate([y.numpy()[:, 0] for _, y in dataset])

    first = load_split(arrays, "train", batch_size=4, shuffle_seed=1)
    again = load_split(arrays, "train", batch_size=4, shuffle_seed=1)
    a1, a2 = epoch_labels(first), epoch_labels(first)
    assert np.array_equal(a1, epoch_labels(again))  # same seed, same order
    x, y = next(iter(first))
    assert x.dtype.name == "float32" and tuple(x.shape) == (4, 24, 24, 3) and tuple(y.shape) == (4, 1)
    assert sorted(a1) == sorted(a2)

    def epoch_images(dataset):  # each image told apart by its pixel sum
        return np.concatenate([x.numpy().reshape(len(x), -1).sum(axis=1) for x, _ in dataset])

    once, twice = epoch_images(first), epoch_images(first)
    assert sorted(once) == sorted(twice) and not np.array_equal(once, twice)  # the same images, in a new order
    plain = load_split(arrays, "validation", batch_size=4)
    assert np.array_equal(epoch_labels(plain), np.load(arrays.labels("validation")))  # not shuffled
    # tf.data's autotuning thread left the CPU idle for seconds at epochs' ends: every split runs without it
    assert first.options().autotune.enabled is False and plain.options().autotune.enabled is False


def test_alternating_flips_mirror_each_image_in_every_other_epoch_and_resume_in_step(arrays):
    originals = np.load(arrays.images("train")).astype(np.float32)
    steps = split_steps(arrays, "train", 4)
    assert steps == 3

    def epochs(dataset, count):  # per epoch, per original image: (times seen, times seen mirrored)
        batches = iter(dataset)
        seen = []
        for _ in range(count):
            views = np.concatenate([next(batches)[0].numpy() for _ in range(steps)])
            plain = [int(np.flatnonzero((originals == view).all(axis=(1, 2, 3)))[0]) if
                     (originals == view).all(axis=(1, 2, 3)).any() else -1 for view in views]
            mirrored = [int(np.flatnonzero((originals[:, :, ::-1] == view).all(axis=(1, 2, 3)))[0]) if
                        plain[i] < 0 else -1 for i, view in enumerate(views)]
            seen.append((views, plain, mirrored))
        return seen

    run = epochs(load_split(arrays, "train", 4, shuffle_seed=3, alternating_flips=True), 3)
    was_mirrored = []
    for _, plain, mirrored in run:
        assert sorted(i for i in plain + mirrored if i >= 0) == list(range(12))  # every image once an epoch
        was_mirrored.append({i for i in mirrored if i >= 0})
    assert 0 < len(was_mirrored[0]) < 12  # a random part of them in the first epoch...
    assert was_mirrored[1] == set(range(12)) - was_mirrored[0]  # ... the others in the next
    assert was_mirrored[2] == was_mirrored[0]
    assert run[0][1] != run[2][1] or run[0][2] != run[2][2]  # each epoch in its own order
    resumed = epochs(load_split(arrays, "train", 4, shuffle_seed=3, alternating_flips=True, first_epoch=1), 2)
    for (views, _, _), (again, _, _) in zip(run[1:], resumed, strict=True):
        assert np.array_equal(views, again)  # a run resumed at epoch 1 sees what the whole run saw there


def test_build_is_skipped_when_complete(arrays, tmp_path: Path):
    before = arrays.images("train").stat().st_mtime_ns
    again = build_arrays(None, tmp_path / "d", image_size=24)  # type: ignore[arg-type]
    assert again == arrays and arrays.images("train").stat().st_mtime_ns == before


def test_a_file_broken_after_the_subsets_step_is_named(tmp_path: Path):
    from catsdogs.data import ArchiveError, make_subsets, unzip_archive
    from tests.conftest import make_kaggle_zip
    from tests.test_data import png_with_bad_idat_crc

    root = unzip_archive(make_kaggle_zip(tmp_path / "k.zip", per_class=4), tmp_path / "x", 2**30)
    subsets = make_subsets(root, tmp_path / "s", {"train": (0, 1), "validation": (2, 2), "test": (3, 3)})
    victim = subsets.root / "train" / "dog" / "dog.1.jpg"
    victim.unlink()  # a hard link: replace it, do not write through it
    victim.write_bytes(png_with_bad_idat_crc())
    with pytest.raises(ArchiveError, match=r"train/dog/dog\.1\.jpg \(corrupt"):
        build_arrays(subsets, tmp_path / "d", image_size=24)
    assert not (tmp_path / "d").exists()


def test_a_complete_step_whose_file_was_cut_short_is_rebuilt_naming_the_file(tiny_zip: Path, tmp_path: Path, caplog):
    """The marker records each file's size (and hash, where small): a datasets array truncated after its step
    completed is noticed, named in a warning and rebuilt, instead of failing every later training."""
    import json

    from catsdogs import store

    subsets = make_subsets(unzip_archive(tiny_zip, tmp_path / "x", 2**30), tmp_path / "s",
                           {"train": (0, 7), "validation": (8, 9), "test": (10, 11)})
    arrays = build_arrays(subsets, tmp_path / "d", image_size=78)
    images = arrays.images("train")
    good = images.read_bytes()
    images.write_bytes(good[:1000])
    assert not store.is_complete(tmp_path / "d")
    with caplog.at_level("WARNING"):
        again = build_arrays(subsets, tmp_path / "d", image_size=78)
    assert f"its file train-images.npy is 1,000 bytes where {len(good):,} were written" in caplog.text
    assert images.read_bytes() == good and again.counts == arrays.counts and store.is_complete(tmp_path / "d")
    labels = json.loads((tmp_path / "d" / "train-files.json").read_text())
    (tmp_path / "d" / "train-files.json").write_text(json.dumps(labels[::-1]))  # same size, other content
    assert store.damage(tmp_path / "d") == "its file train-files.json has changed since it was written"


def test_a_marker_that_is_unreadable_or_from_before_file_records(tmp_path: Path, caplog):
    from catsdogs import store

    folder = tmp_path / "step"
    folder.mkdir()
    (folder / store.MARKER).write_text('{"old": true}')  # written before markers recorded files: trusted
    assert store.run_once(folder, lambda: "built", lambda marker: marker) == {"old": True}
    (folder / store.MARKER).write_text("{not json")
    with caplog.at_level("WARNING"):
        assert store.run_once(folder, lambda: "built", lambda marker: marker) == "built"
    assert "marker _COMPLETE.json is unreadable" in caplog.text
