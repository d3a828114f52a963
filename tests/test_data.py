import io
import os
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from catsdogs import store
from catsdogs.data import ArchiveError, find_class_images, image_problem, make_subsets, unzip_archive
from tests.conftest import jpeg_bytes, make_kaggle_zip

RANGES = {"train": (0, 3), "validation": (4, 5), "test": (6, 7)}
GIB = 2**30


def test_unzip_extracts_and_is_idempotent(tiny_zip: Path, tmp_path: Path):
    out = unzip_archive(tiny_zip, tmp_path / "x", GIB)
    assert (out / "train" / "cat.0.jpg").is_file() and store.is_complete(out)
    marker_time = (out / store.MARKER).stat().st_mtime_ns
    assert unzip_archive(tiny_zip, tmp_path / "x", GIB) == out
    assert (out / store.MARKER).stat().st_mtime_ns == marker_time


@pytest.mark.parametrize("name", ["../evil.txt", "/abs/evil.txt", "train/../../evil.txt", "C:/evil.txt"])
def test_zip_slip_is_refused_and_nothing_is_written(tmp_path: Path, name: str):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("train/cat.0.jpg", b"x")
        zf.writestr(name, b"evil")
    with pytest.raises(ArchiveError, match="outside the target folder"):
        unzip_archive(archive, tmp_path / "out" / "x", GIB)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out" / "x").exists()


def test_symlink_entry_is_refused(tmp_path: Path):
    archive = tmp_path / "link.zip"
    info = zipfile.ZipInfo("train/link")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(ArchiveError, match="symbolic links"):
        unzip_archive(archive, tmp_path / "x", GIB)


def test_archive_over_the_size_limit_is_refused(tiny_zip: Path, tmp_path: Path):
    with pytest.raises(ArchiveError, match="raise max_extract_gib"):
        unzip_archive(tiny_zip, tmp_path / "x", max_bytes=1000)
    assert not (tmp_path / "x").exists()


def test_truncated_and_non_zip_archives_are_reported(tiny_zip: Path, tmp_path: Path):
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(tiny_zip.read_bytes()[: tiny_zip.stat().st_size // 2])
    text = tmp_path / "text.zip"
    text.write_text("<html>not found</html>")
    for bad in (truncated, text):
        with pytest.raises(ArchiveError, match="not a valid zip archive"):
            unzip_archive(bad, tmp_path / "x", GIB)
        assert not (tmp_path / "x").exists()


def _zip_with_entry_header(path: Path, flag_bits: int = 0, method: int | None = None) -> Path:
    """A one-entry zip whose local and central headers claim FLAG_BITS and compression METHOD."""
    import struct
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("train/cat.0.jpg", b"x" * 100)
    data = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # flags, then the method, at these
        at = data.index(signature) + offset
        old_flags, old_method = struct.unpack_from("<HH", data, at)
        struct.pack_into("<HH", data, at, old_flags | flag_bits, old_method if method is None else method)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("header, words", [
    ({"flag_bits": 0x1}, "is encrypted (password-protected), which catsdogs cannot read; extract it with its "
                         "password and zip it again without one"),
    ({"method": 9}, "is compressed with Deflate64, which Python's zipfile cannot read; zip it again"),
    ({"method": 93}, "is compressed with Zstandard"),
])
def test_encrypted_or_unreadably_compressed_archives_are_one_line_before_any_extraction(tmp_path: Path, header,
                                                                                         words):
    archive = _zip_with_entry_header(tmp_path / "odd.zip", **header)
    with pytest.raises(ArchiveError) as caught:
        unzip_archive(archive, tmp_path / "x", GIB)
    assert words in str(caught.value) and "train/cat.0.jpg" in str(caught.value) and "\n" not in str(caught.value)
    assert not (tmp_path / "x").exists()


def test_kaggle_layout_in_index_order(tmp_path: Path):
    root = unzip_archive(make_kaggle_zip(tmp_path / "k.zip", per_class=12), tmp_path / "x", GIB)
    layout, images, _ = find_class_images(root)
    assert layout == "kaggle"
    assert [p.name for p in images["cat"][:3]] == ["cat.0.jpg", "cat.1.jpg", "cat.2.jpg"]
    assert images["dog"][10].name == "dog.10.jpg"  # numeric, not text, order


def test_petimages_layout(tmp_path: Path):
    for cls in ("Cat", "Dog"):
        folder = tmp_path / "PetImages" / cls
        folder.mkdir(parents=True)
        for i in (0, 2, 10):
            (folder / f"{i}.jpg").write_bytes(jpeg_bytes((100, 100, 100), seed=i))
        (folder / "Thumbs.db").write_bytes(b"junk")
    layout, images, _ = find_class_images(tmp_path)
    assert layout == "petimages" and [p.name for p in images["dog"]] == ["0.jpg", "2.jpg", "10.jpg"]


def test_an_archive_with_both_layouts_uses_the_one_with_more_images_and_says_so(tmp_path: Path, caplog):
    root = unzip_archive(make_kaggle_zip(tmp_path / "k.zip", per_class=12), tmp_path / "x", GIB)
    for cls in ("Cat", "Dog"):
        folder = root / "PetImages" / cls
        folder.mkdir(parents=True)
        for i in range(3):
            (folder / f"{i}.jpg").write_bytes(jpeg_bytes((100, 100, 100), seed=i))
    with caplog.at_level("WARNING"):
        layout, images, _ = find_class_images(root)
    assert layout == "kaggle" and len(images["cat"]) == 12
    assert "both layouts" in caplog.text and "(24 images)" in caplog.text and "(6)" in caplog.text
    for i in range(3, 40):  # now Microsoft's has more
        for cls in ("Cat", "Dog"):
            (root / "PetImages" / cls / f"{i}.jpg").write_bytes(jpeg_bytes((100, 100, 100), seed=i))
    layout, images, _ = find_class_images(root)
    assert layout == "petimages" and len(images["dog"]) == 40


def test_unknown_layout(tmp_path: Path):
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(ArchiveError, match="train/cat.0.jpg"):
        find_class_images(tmp_path)


def test_subsets_skip_unreadable_images_and_count_by_position(tmp_path: Path):
    archive = make_kaggle_zip(tmp_path / "k.zip", per_class=12, corrupt={"cat": [2, 5]})
    root = unzip_archive(archive, tmp_path / "x", GIB)
    subsets = make_subsets(root, tmp_path / "s", RANGES)
    assert subsets.skipped == {"cat": 2, "dog": 0}
    assert subsets.counts == {"train": {"cat": 4, "dog": 4}, "validation": {"cat": 2, "dog": 2},
                              "test": {"cat": 2, "dog": 2}}
    names = sorted(p.name for p in (tmp_path / "s" / "train" / "cat").iterdir())
    assert names == ["cat.0.jpg", "cat.1.jpg", "cat.3.jpg", "cat.4.jpg"]  # 2 skipped, 5 skipped later
    assert sorted(p.name for p in (tmp_path / "s" / "test" / "cat").iterdir()) == ["cat.8.jpg", "cat.9.jpg"]
    linked = tmp_path / "s" / "train" / "dog" / "dog.0.jpg"
    assert os.stat(linked).st_ino == os.stat(root / "train" / "dog.0.jpg").st_ino  # a hard link, not a copy


def test_subsets_need_enough_readable_images(tmp_path: Path):
    root = unzip_archive(make_kaggle_zip(tmp_path / "k.zip", per_class=8, corrupt={"dog": [1]}), tmp_path / "x", GIB)
    with pytest.raises(ArchiveError, match="7 readable dog images but the subset ranges need 8"):
        make_subsets(root, tmp_path / "s", RANGES)
    assert not (tmp_path / "s").exists()


def _encoded(mode: str, fmt: str, size: int = 20) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (size, size)).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "content, usable",
    [
        (_encoded("RGB", "JPEG"), True),
        (_encoded("L", "JPEG"), True),
        (_encoded("RGBA", "PNG"), True),
        (_encoded("CMYK", "JPEG"), True),  # TensorFlow, the training's decoder, converts CMYK
        (_encoded("RGB", "TIFF"), False),
        (_encoded("RGB", "JPEG")[:200], False),
        (b"", False),
        (b"GIF89a but not really", False),
    ],
)
def test_image_problem(tmp_path: Path, content: bytes, usable: bool):
    path = tmp_path / "x.jpg"
    path.write_bytes(content)
    assert (image_problem(path) is None) is usable


def png_with_bad_idat_crc(size: int = 20) -> bytes:
    """A PNG that Pillow decodes (it does not check IDAT checksums) and TensorFlow's libpng rejects."""
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    start = data.index(b"IDAT")
    length = int.from_bytes(data[start - 4:start], "big")
    data[start + 4 + length] ^= 0xFF  # first byte of the IDAT chunk's CRC
    return bytes(data)


def bomb_header_jpeg() -> bytes:
    """A small JPEG whose header claims 20,000×20,000 pixels."""
    data = bytearray(_encoded("RGB", "JPEG", 16))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = (20000).to_bytes(2, "big") * 2
    return bytes(data)


def test_training_decoder_decides_what_is_usable(tmp_path: Path):
    """A file Pillow accepts but TensorFlow rejects is unusable, and the reason names TensorFlow."""
    path = tmp_path / "cat.3.png"
    path.write_bytes(png_with_bad_idat_crc())
    with Image.open(path) as image:
        image.load()  # Pillow is content
    assert "TensorFlow cannot decode" in image_problem(path)
    path.write_bytes(bomb_header_jpeg())
    assert "decompression bomb" in image_problem(path)


def test_files_the_decoder_rejects_are_skipped_and_counted_and_the_datasets_build(tmp_path: Path):
    archive = make_kaggle_zip(tmp_path / "k.zip", per_class=6)
    with zipfile.ZipFile(archive, "a") as zf:  # index 6 of each class is bad, index 7 good
        zf.writestr("train/cat.6.png", png_with_bad_idat_crc())
        zf.writestr("train/dog.6.jpg", bomb_header_jpeg())
        zf.writestr("train/cat.7.jpg", jpeg_bytes((200, 60, 60), seed=7))
        zf.writestr("train/dog.7.jpg", jpeg_bytes((60, 60, 200), seed=7))
    root = unzip_archive(archive, tmp_path / "x", GIB)
    subsets = make_subsets(root, tmp_path / "s", {"train": (0, 3), "validation": (4, 5), "test": (6, 6)})
    assert subsets.skipped == {"cat": 1, "dog": 1}
    assert sorted(p.name for p in (subsets.root / "test").rglob("*.*")) == ["cat.7.jpg", "dog.7.jpg"]
    from catsdogs.datasets import build_arrays

    arrays = build_arrays(subsets, tmp_path / "d", image_size=24)
    assert arrays.counts == {"train": 8, "validation": 4, "test": 2}


def test_duplicate_indices_are_left_out_counted_and_never_overwrite_an_extracted_file(tmp_path: Path):
    import hashlib

    archive = make_kaggle_zip(tmp_path / "k.zip", per_class=6)
    with zipfile.ZipFile(archive, "a") as zf:  # cat 3 and dog 0 claimed again, in folders after train/
        zf.writestr("zextra/cat.3.jpg", jpeg_bytes((0, 255, 0), seed=99))
        zf.writestr("zextra/more/dog.0.png", _encoded("RGB", "PNG"))
    root = unzip_archive(archive, tmp_path / "x", GIB)

    def fingerprint() -> dict[str, str]:
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*.*")) if not p.name.startswith("_")}

    before = fingerprint()
    subsets = make_subsets(root, tmp_path / "s", {"train": (0, 3), "validation": (4, 4), "test": (5, 5)})
    assert fingerprint() == before  # the completed extraction is untouched
    assert subsets.duplicates == {"cat": 1, "dog": 1}
    assert subsets.counts["train"] == {"cat": 4, "dog": 4}
    used = subsets.root / "train" / "cat" / "cat.3.jpg"
    assert used.read_bytes() == (root / "train" / "cat.3.jpg").read_bytes()  # the first in path order
    assert len(list((subsets.root / "train" / "dog").iterdir())) == 4
