"""From archive to images on disk: safe extraction, layout detection, and the reference subsets."""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import stat
import warnings
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel

from catsdogs import store
from catsdogs.runtime import tensorflow

log = logging.getLogger(__name__)

CLASS_NAMES = ("cat", "dog")  # label 0 is cat, label 1 is dog, as image_dataset_from_directory orders them
SPLITS = ("train", "validation", "test")
# Formats that tf.io.decode_image reads, and so image_dataset_from_directory (by content, whatever the name):
# MPO is a JPEG with more pictures after the first (phone photos), decoded as its first picture.
DECODABLE_FORMATS = {"JPEG", "MPO", "PNG", "GIF", "BMP", "WEBP"}
# Larger images are refused before they are decoded: Pillow's own decompression-bomb threshold (pixels), and
# a file size no photo needs (a multi-gigabyte file named .jpg is not read into memory).
MAX_PIXELS = 89_478_485
MAX_FILE_BYTES = 100 * 2**20
KAGGLE_NAME = re.compile(r"^(cat|dog)\.(\d+)\.(jpe?g|png)$", re.IGNORECASE)
PETIMAGES_NAME = re.compile(r"^(\d+)\.(jpe?g|png)$", re.IGNORECASE)


class ArchiveError(RuntimeError):
    """The archive is corrupt, unsafe, too large, or not one of the known layouts."""


class Subsets(BaseModel):
    """train/, validation/ and test/ folders with one folder per class, plus what went into them."""

    root: Path
    layout: str
    counts: dict[str, dict[str, int]]  # split -> class -> images
    skipped: dict[str, int]  # class -> unreadable images skipped before the last one used
    duplicates: dict[str, int] = {}  # class -> files left out for claiming an index another file has


# ---------------------------------------------------------------- extraction


def unzip_archive(archive: Path, out_dir: Path, max_bytes: int) -> Path:
    """Extract ARCHIVE into OUT_DIR safely; a no-op when OUT_DIR already holds a complete extraction."""
    out_dir = Path(out_dir)
    return store.run_once(out_dir, lambda: _extract(Path(archive), out_dir, max_bytes), lambda _: out_dir)


def _extract(archive: Path, out_dir: Path, max_bytes: int) -> Path:
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            _check_members(members, max_bytes)
            with store.fresh_dir(out_dir) as tmp:
                for member in members:
                    zf.extract(member, tmp)
                store.mark_complete(tmp, {"archive": str(archive), "entries": len(members)})
    except zipfile.BadZipFile as err:
        raise ArchiveError(
            f"{archive} is not a valid zip archive ({err}); it may be truncated or not a zip at all. "
            "Delete it and download again, or check --data-url."
        ) from None
    except OSError as err:
        raise ArchiveError(f"could not extract {archive} into {out_dir}: {err}") from err
    log.info("extracted %d entries into %s", len(members), out_dir)
    return out_dir


READABLE_COMPRESSION = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
COMPRESSION_NAMES = {9: "Deflate64", 10: "PKWARE DCL Implode", 6: "Implode", 93: "Zstandard", 95: "XZ",
                     96: "JPEG (WinZip)", 97: "WavPack", 98: "PPMd", 99: "AES encryption"}


def _check_members(members: list[zipfile.ZipInfo], max_bytes: int) -> None:
    total = 0
    for member in members:
        name = member.filename
        path = PurePosixPath(name.replace("\\", "/"))
        if path.is_absolute() or ".." in path.parts or re.match(r"^[A-Za-z]:", name):
            raise ArchiveError(f"refusing archive entry {name!r}: it would be written outside the target folder")
        if stat.S_ISLNK(member.external_attr >> 16):
            raise ArchiveError(f"refusing archive entry {name!r}: symbolic links are not allowed in the archive")
        if member.flag_bits & 0x1:
            raise ArchiveError(f"archive entry {name!r} is encrypted (password-protected), which catsdogs cannot "
                               "read; extract it with its password and zip it again without one")
        if member.compress_type not in READABLE_COMPRESSION:
            method = COMPRESSION_NAMES.get(member.compress_type, f"method {member.compress_type}")
            raise ArchiveError(f"archive entry {name!r} is compressed with {method}, which Python's zipfile cannot "
                               "read; zip it again with the usual Deflate (zip -r train.zip train)")
        total += member.file_size
    if total > max_bytes:
        raise ArchiveError(
            f"the archive unpacks to {total:,} bytes, more than the limit of {max_bytes:,}; "
            "raise max_extract_gib if this archive is expected"
        )


# ---------------------------------------------------------------- layouts


def find_class_images(root: Path) -> tuple[str, dict[str, list[Path]], dict[str, int]]:
    """Detect the archive's layout and list each class's images in index order.

    Kaggle's train.zip holds ``train/cat.N.jpg``; Microsoft's copy holds ``PetImages/Cat/N.jpg``. Files that
    claim a class and index another file already has (``train/cat.3.jpg`` and ``extra/cat.3.png``) are
    duplicates: the first in path order is used, the others are left out and counted (third value).
    """
    kaggle: dict[str, dict[int, Path]] = {c: {} for c in CLASS_NAMES}
    petimages: dict[str, dict[int, Path]] = {c: {} for c in CLASS_NAMES}
    duplicates = {layout: dict.fromkeys(CLASS_NAMES, 0) for layout in ("kaggle", "petimages")}
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()  # path order, the same on every file system
        folder = Path(dirpath)
        for name in sorted(files):
            if match := KAGGLE_NAME.match(name):
                layout, found, cls, index = "kaggle", kaggle, match[1].lower(), int(match[2])
            elif (match := PETIMAGES_NAME.match(name)) and folder.name.lower() in CLASS_NAMES:
                layout, found, cls, index = "petimages", petimages, folder.name.lower(), int(match[1])
            else:
                continue
            if index in found[cls]:
                duplicates[layout][cls] += 1
                log.warning("leaving out %s: %s has %s index %d already", folder / name, found[cls][index], cls,
                            index)
            else:
                found[cls][index] = folder / name
    complete = {layout: found for layout, found in (("kaggle", kaggle), ("petimages", petimages))
                if all(found.values())}
    if complete:  # both layouts in one archive: the one with more images, and say so
        layout = max(complete, key=lambda name: sum(map(len, complete[name].values())))
        if len(complete) == 2:
            log.warning("%s holds both layouts: Kaggle's (%d images) and Microsoft's PetImages (%d); using %s's",
                        root, sum(map(len, kaggle.values())), sum(map(len, petimages.values())),
                        "Kaggle" if layout == "kaggle" else "PetImages")
        found = complete[layout]
        return layout, {c: [found[c][i] for i in sorted(found[c])] for c in CLASS_NAMES}, duplicates[layout]
    raise ArchiveError(
        f"no cat and dog images found under {root}: expected Kaggle's layout (train/cat.0.jpg, train/dog.0.jpg) "
        "or Microsoft's (PetImages/Cat/0.jpg, PetImages/Dog/0.jpg)"
    )


class ImageError(ValueError):
    """This file can not be used as an image; the message says why."""


def read_image_file(path: Path) -> tuple[bytes, Image.Image]:
    """The file's bytes and Pillow's view of its header (format, size, mode; nothing decoded yet).

    Refuses, before reading or decoding, files too large to handle safely: over MAX_FILE_BYTES on disk or
    MAX_PIXELS in their header.
    """
    size = Path(path).stat().st_size
    if size > MAX_FILE_BYTES:
        raise ImageError(f"file is {size:,} bytes, more than the {MAX_FILE_BYTES:,} allowed for an image; "
                         "resize it first")
    if size == 0:
        raise ImageError("empty file (0 bytes)")
    data = Path(path).read_bytes()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            header = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError("not an image file (unrecognised format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageError(f"refused as a possible decompression bomb (too many pixels): {err}") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"corrupt or truncated image: {err}") from None
    width, height = header.size
    if width * height > MAX_PIXELS:
        raise ImageError(f"image is {width}×{height} pixels, more than the {MAX_PIXELS:,} allowed "
                         "(a decompression bomb?); resize it first")
    if header.format == "BMP" and header.mode in ("P", "1"):  # TensorFlow reads palette indices as grey levels
        raise ImageError(f"{'palette' if header.mode == 'P' else '1-bit'} BMP: TensorFlow, which the training "
                         "decodes with, does not read its colours; save it as PNG or as a 24-bit BMP")
    return data, header


def tf_decode(data: bytes) -> Any:
    """Decode with TensorFlow exactly as image_dataset_from_directory does (uint8 HxWx3), or raise ImageError."""
    tf = tensorflow()
    try:
        return tf.io.decode_image(data, channels=3, expand_animations=False)
    except tf.errors.OpError as err:
        reason = (err.message or str(err)).strip().splitlines()[-1][:200]
        raise ImageError(f"corrupt or truncated image: TensorFlow cannot decode it ({reason})") from None


def pillow_rgb(header: Image.Image) -> np.ndarray:
    """Pillow's RGB pixels of an image read_image_file opened (its first frame), then closed; or ImageError."""
    try:
        with header:
            header.seek(0)  # GIF: the first frame, as TensorFlow's expand_animations=False
            if header.format == "PNG" and header.mode in ("I;16", "I;16B", "I;16L", "I"):
                # 16-bit grey: TensorFlow keeps each value's high byte, where Pillow's RGB would clip at 255
                grey = (np.asarray(header).astype(np.uint32) >> 8).astype(np.uint8)
                return np.repeat(grey[..., None], 3, axis=-1)
            return np.asarray(header.convert("RGB"))
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ImageError(f"corrupt or truncated image: {err}") from None


def image_problem(path: Path) -> str | None:
    """Why an image can not be used for training, or None when TensorFlow, which the training uses, decodes it."""
    try:
        data, header = read_image_file(path)
        if header.format not in DECODABLE_FORMATS:
            return f"unsupported format {header.format}: training reads {', '.join(sorted(DECODABLE_FORMATS))}"
        tf_decode(data)
    except ImageError as err:
        return str(err)
    except OSError as err:
        return f"could not read: {err.strerror or err}"
    return None


# ---------------------------------------------------------------- subsets


def make_subsets(images_root: Path, out_dir: Path, ranges: dict[str, tuple[int, int]]) -> Subsets:
    """Copy (hard-link where possible) each split's images into OUT_DIR/SPLIT/CLASS.

    Ranges are positions among the valid images of a class, in index order, both ends inclusive.
    """
    out_dir = Path(out_dir)
    return store.run_once(out_dir, lambda: _make_subsets(Path(images_root), out_dir, ranges),
                          lambda marker: Subsets.model_validate(marker | {"root": out_dir}))


def _make_subsets(images_root: Path, out_dir: Path, ranges: dict[str, tuple[int, int]]) -> Subsets:
    layout, images, duplicates = find_class_images(images_root)
    needed = max(last for _, last in ranges.values()) + 1
    counts: dict[str, dict[str, int]] = {split: {} for split in ranges}
    skipped: dict[str, int] = {}
    with store.fresh_dir(out_dir) as tmp:
        for cls in CLASS_NAMES:
            valid, skipped[cls] = _first_valid(images[cls], needed, cls)
            for split, (first, last) in ranges.items():
                target = tmp / split / cls
                target.mkdir(parents=True)
                for source in valid[first:last + 1]:
                    _link_or_copy(source, target / f"{cls}.{_index(source)}{source.suffix.lower()}")
                counts[split][cls] = last - first + 1
        result = Subsets(root=out_dir, layout=layout, counts=counts, skipped=skipped, duplicates=duplicates)
        store.mark_complete(tmp, result.model_dump(mode="json"))
    log.info("subsets ready in %s (%s layout): %s; unreadable images skipped: %s; duplicates left out: %s",
             out_dir, layout, counts, skipped, duplicates)
    return result


def _first_valid(candidates: list[Path], needed: int, cls: str) -> tuple[list[Path], int]:
    valid: list[Path] = []
    skipped = 0
    for path in candidates:
        if len(valid) == needed:
            break
        problem = image_problem(path)
        if problem:
            skipped += 1
            log.warning("skipping unreadable image %s: %s", path.name, problem)
        else:
            valid.append(path)
    if len(valid) < needed:
        raise ArchiveError(
            f"the archive has {len(valid)} readable {cls} images but the subset ranges need {needed}; "
            "shrink train_range, validation_range or test_range"
        )
    return valid, skipped


def _index(path: Path) -> str:
    return re.findall(r"\d+", path.name)[-1]


def _link_or_copy(source: Path, dest: Path) -> None:
    """Hard-link SOURCE as DEST, or copy it where links are impossible; never writes into an existing file
    (DEST may be a link to another extracted image, whose content a copy would overwrite)."""
    if not source.is_file():
        raise ArchiveError(f"source image {source} is missing; delete its extraction folder and run again")
    if dest.exists():
        raise ArchiveError(f"{dest.name} would be written twice, from {source} too; report this as a bug")
    try:
        os.link(source, dest)
    except OSError:
        with store.atomic_path(dest) as tmp:
            shutil.copyfile(source, tmp)
