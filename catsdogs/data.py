"""From archive to images on disk: safe extraction, layout detection, and the reference subsets."""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

from pydantic import BaseModel, field_validator

from catsdogs import store
from catsdogs.images import image_problem

log = logging.getLogger(__name__)

CLASS_NAMES = ("cat", "dog")  # label 0 is cat, label 1 is dog, as image_dataset_from_directory orders them
SPLITS = ("train", "validation", "test")
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

    @field_validator("counts")
    @classmethod
    def _in_split_order(cls, counts: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
        """train, validation, test, as made: a complete step's record (JSON, keys sorted) lists them A to Z."""
        return dict(sorted(counts.items(), key=lambda item: SPLITS.index(item[0]) if item[0] in SPLITS else 3))


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


# ---------------------------------------------------------------- subsets


def make_subsets(images_root: Path, out_dir: Path, ranges: dict[str, tuple[int, int]]) -> Subsets:
    """Copy (hard-link where possible) each split's images into OUT_DIR/SPLIT/CLASS.

    Ranges are positions among the valid images of a class, in index order, both ends inclusive.
    """
    out_dir = Path(out_dir)
    return store.run_once(out_dir, lambda: _make_subsets(Path(images_root), out_dir, ranges),
                          lambda _: load_subsets(out_dir))


def load_subsets(folder: Path) -> Subsets:
    """The subsets recorded in the complete FOLDER, wherever the workdir is now."""
    return Subsets.model_validate(store.read_marker(folder) | {"root": Path(folder)})


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
