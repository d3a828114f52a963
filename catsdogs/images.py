"""From an image file to the training's pixels: the checks every file passes, and two decoders that agree.

Every file is read by read_image_file first (size, format and pixel-count limits, Pillow's view of its header).
Then one of two routes makes the uint8 HxWx3 pixels the model was trained on:

- load_with_tensorflow: the training pipeline itself (tf.io.decode_image and tf.image.resize, rounded), with
  Pillow for what TensorFlow does not read (TIFF, AVIF, HEIC through pillow-heif, an animated WebP's first
  frame). KerasPredictor uses it.
- load_without_tensorflow: the same pixels without importing TensorFlow, for `catsdogs predict` on LiteRT,
  which starts in a fraction of a second. TensorFlow decodes JPEG with libjpeg's fast integer DCT and fancy
  upsampling and resizes bilinearly (half-pixel centres, no antialiasing) before rounding; here:
  - JPEG: simplejpeg with the same libjpeg settings; the same bytes out (tests/test_lite.py checks it).
  - PNG, GIF, BMP: lossless formats that Pillow and TensorFlow decode to the same values (checked too).
  - The resize: a numpy port of TensorFlow's bilinear kernel, in float32 and in its order of operations.

A photo whose EXIF orientation says the camera was turned (a phone held upright, say) is turned as every
viewer shows it, after the resize, by both routes alike (as_shown): the model sees the cat the person sees. The
training's decoding keeps image_dataset_from_directory's, which ignores EXIF; the shared archive's images carry
no orientation.

Each failure a file can have is an ImageError whose message says what is wrong with it.
"""

from __future__ import annotations

import contextlib
import functools
import io
import re
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from catsdogs.runtime import tensorflow

# Formats that tf.io.decode_image reads, and so image_dataset_from_directory (by content, whatever the name):
# MPO is a JPEG with more pictures after the first (phone photos), decoded as its first picture.
DECODABLE_FORMATS = {"JPEG", "MPO", "PNG", "GIF", "BMP", "WEBP"}
# Larger images are refused before they are decoded: Pillow's own decompression-bomb threshold (pixels), and
# a file size no photo needs (a multi-gigabyte file named .jpg is not read into memory).
MAX_PIXELS = 89_478_485
MAX_FILE_BYTES = 100 * 2**20


class ImageError(ValueError):
    """This file can not be used as an image; the message says why, in one line (a decoder's own message may
    run over several)."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


@contextlib.contextmanager
def decoding() -> Iterator[None]:
    """A decoder's failure as the file's ImageError, whatever it raises: each format's plugin fails its own way
    (Pillow's AVIF a RuntimeError, simplejpeg a ValueError). Running out of memory stays what it is."""
    try:
        yield
    except (ImageError, MemoryError):
        raise
    except Exception as err:  # noqa: BLE001  see above
        raise ImageError(f"corrupt or truncated image: {err}") from None


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
    _formats_for(data)
    with decoding():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                header = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise ImageError("not an image file (unrecognised format)") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            found = re.search(r"\((\d+) pixels\)", str(err))  # Pillow's message names the count (and its limits)
            pixels = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
            raise ImageError(f"image holds {pixels}, more than the {MAX_PIXELS:,} allowed (a decompression "
                             "bomb?); resize it first") from None
    width, height = header.size
    if width * height > MAX_PIXELS:
        raise ImageError(f"image is {width}×{height} pixels, more than the {MAX_PIXELS:,} allowed "
                         "(a decompression bomb?); resize it first")
    if header.format == "BMP" and header.mode in ("P", "1"):  # TensorFlow reads palette indices as grey levels
        raise ImageError(f"{'palette' if header.mode == 'P' else '1-bit'} BMP: TensorFlow, which the training "
                         "decodes with, does not read its colours; save it as PNG or as a 24-bit BMP")
    return data, header


EXIF_ORIENTATION = 0x0112
# A photo's broken EXIF block is its metadata, not its picture: Pillow's parser warns about it (two lines of
# "Corrupt EXIF data" on the terminal, for a photo that is answered); the orientation then reads as stored.
warnings.filterwarnings("ignore", category=UserWarning, module="PIL.TiffImagePlugin")
# EXIF orientation (2-8) -> the turn or mirror that shows the stored pixels upright, as Pillow's
# ImageOps.exif_transpose does (tests/test_lite.py checks each); 1 and unknown values leave them as stored.
_TURNS = {
    2: lambda a: a[:, ::-1],  # mirrored left to right
    3: lambda a: a[::-1, ::-1],  # upside down
    4: lambda a: a[::-1, :],  # mirrored top to bottom
    5: lambda a: np.swapaxes(a, 0, 1),  # mirrored along the main diagonal
    6: lambda a: np.rot90(a, -1),  # camera turned right: a quarter turn clockwise shows it
    7: lambda a: np.swapaxes(a[::-1, ::-1], 0, 1),  # mirrored along the other diagonal
    8: lambda a: np.rot90(a, 1),  # camera turned left: a quarter turn counter-clockwise
}


def orientation(header: Image.Image) -> int:
    """The EXIF orientation the file's header names (1, as stored, where it names none or cannot be read)."""
    if header.format == "PNG" and "exif" not in header.info:
        return 1  # an eXIf chunk after the pixels: Pillow would decode the whole image to find it; cameras write JPEG
    try:
        return int(header.getexif().get(EXIF_ORIENTATION, 1))
    except Exception:  # noqa: BLE001  a broken EXIF block is the file's metadata, not its picture
        return 1


def as_shown(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """HxWx3 PIXELS turned as a viewer shows the photo, by its EXIF ORIENTATION."""
    turn = _TURNS.get(orientation)
    return pixels if turn is None else np.ascontiguousarray(turn(pixels))


def thumbnail(path: Path, size: int) -> Image.Image:
    """The picture in the file at PATH as a viewer shows it (turned by its EXIF), at most SIZE pixels a side: the
    prediction gallery's, and the page's preview of a photo the browser cannot draw (HEIC, TIFF). Or ImageError."""
    header = read_image_file(path)[1]  # the checks every input passes
    turned = orientation(header)
    image = Image.fromarray(as_shown(pillow_rgb(header), turned))
    image.thumbnail((size, size))
    return image


def _formats_for(head: bytes) -> None:
    """Make sure Pillow can open a file that begins with HEAD: an ISO media file may be an iPhone's HEIC photo."""
    if head[4:8] == b"ftyp":
        _read_heif()


@functools.cache
def _read_heif() -> None:
    """Teach Pillow HEIF, the format iPhones take photos in (pillow-heif), when the first such file comes: the
    30 ms it takes to load are not spent on any other. It applies the photo's turn itself (EXIF then says 1)."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:  # an environment without it: such a file is "not an image file", as before
        return
    register_heif_opener()


def pixel_count(path: Path) -> int:
    """The pixels the image file at PATH holds, from its header (nothing decoded); 0 for what will not be decoded:
    not an image, a broken one, or one over MAX_PIXELS (reading each says what is wrong, later)."""
    try:
        with open(path, "rb") as file:
            _formats_for(file.read(12))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as header:
                pixels = header.width * header.height
        return pixels if pixels <= MAX_PIXELS else 0
    except Exception:  # noqa: BLE001  not an image, or a broken one
        return 0


def image_problem(path: Path) -> str | None:
    """Why an image can not be used for training, or None when TensorFlow, which the training uses, decodes it."""
    try:
        data, header = read_image_file(path)
        if header.format not in DECODABLE_FORMATS:
            return f"unsupported format {header.format}: training reads {', '.join(sorted(DECODABLE_FORMATS))}"
        if _animated_webp(header):
            return ("animated WebP: training reads still images (TensorFlow decodes no animated WebP in RGB); save "
                    "a frame of it as PNG or JPEG")
        tf_decode(data)
    except ImageError as err:
        return str(err)
    except OSError as err:
        return f"could not read: {err.strerror or err}"
    return None


def pillow_rgb(header: Image.Image) -> np.ndarray:
    """Pillow's RGB pixels of an image read_image_file opened (its first frame), then closed; or ImageError."""
    with decoding(), header:
        header.seek(0)  # GIF: the first frame, as TensorFlow's expand_animations=False
        if header.format == "PNG" and header.mode in ("I;16", "I;16B", "I;16L", "I"):
            # 16-bit grey: TensorFlow keeps each value's high byte, where Pillow's RGB would clip at 255
            grey = (np.asarray(header).astype(np.uint32) >> 8).astype(np.uint8)
            return np.repeat(grey[..., None], 3, axis=-1)
        return np.asarray(header if header.mode == "RGB" else header.convert("RGB"))  # no copy to spare


# ---------------------------------------------------------------- with TensorFlow: the training's own route


def tf_decode(data: bytes) -> Any:
    """Decode with TensorFlow exactly as image_dataset_from_directory does (uint8 HxWx3), or raise ImageError."""
    tf = tensorflow()
    try:
        return tf.io.decode_image(data, channels=3, expand_animations=False)
    except tf.errors.OpError as err:
        reason = (err.message or str(err)).strip().splitlines()[-1]
        reason = TF_OP_NOISE.sub("", reason).strip()[:200]  # the graph node and op names say nothing to a user
        raise ImageError(f"corrupt or truncated image: TensorFlow cannot decode it ({reason})") from None


TF_OP_NOISE = re.compile(r"\{\{function_node [^}]*\}\}|\[Op:\w+\]")


def _animated_webp(header: Image.Image) -> bool:
    """An animated WebP, which TensorFlow refuses in RGB: prediction reads its first frame with Pillow (both routes)."""
    return header.format == "WEBP" and bool(getattr(header, "is_animated", False))


def resize_like_training(image: Any, image_size: int) -> Any:
    """An HxWx3 image resized as image_dataset_from_directory does, rounded to whole uint8 values."""
    tf = tensorflow()
    image = tf.image.resize(image, (image_size, image_size), method="bilinear")
    return tf.cast(tf.round(image), tf.uint8)


def decode_image(data: Any, image_size: int) -> Any:
    """Bytes of an image file to a uint8 HxWx3 tensor exactly as the dataset build makes them (or ImageError)."""
    return resize_like_training(tf_decode(data), image_size)


def load_with_tensorflow(path: Path, image_size: int) -> np.ndarray:
    """Decode and resize one file exactly as the training data was (uint8 HxWx3), turned as it is shown; or
    raise ImageError.

    One decoder decides per file: TensorFlow, the training's own, for the formats it reads (JPEG, PNG, GIF,
    BMP, still WebP); Pillow, converting to RGB, for the rest (TIFF, AVIF, HEIC, an animated WebP's first frame).
    """
    data, header = read_image_file(path)
    turned = orientation(header)
    if header.format in DECODABLE_FORMATS and not _animated_webp(header):
        return as_shown(decode_image(data, image_size).numpy(), turned)  # the training path itself, then turned
    return as_shown(resize_like_training(pillow_rgb(header), image_size).numpy(), turned)


# ---------------------------------------------------------------- without TensorFlow: the same pixels


def decode_rgb(path: Path) -> np.ndarray:
    """The file's pixels as uint8 HxWx3, as TensorFlow's decode_image(channels=3) gives them; or ImageError."""
    return _decode_rgb(*read_image_file(path))


def _decode_rgb(data: bytes, header: Image.Image) -> np.ndarray:
    if header.format in ("JPEG", "MPO"):  # MPO: a JPEG with more pictures after it; the first is the photo
        import simplejpeg

        with decoding():
            if header.mode == "CMYK":
                return _cmyk_to_rgb(simplejpeg.decode_jpeg(data, colorspace="CMYK", fastdct=True,
                                                           fastupsample=False), adobe=_has_adobe_segment(data))
            return simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=True, fastupsample=False)
    if header.format == "PNG":
        _check_png_checksums(data)
    return pillow_rgb(header)  # PNG, GIF, BMP, lossless WebP: the same values; TIFF: Pillow's only


PNG_CRITICAL = {b"IHDR", b"PLTE", b"IDAT", b"IEND"}


def _check_png_checksums(data: bytes) -> None:
    """Refuse what TensorFlow's libpng refuses and Pillow lets through: a critical chunk with a wrong CRC."""
    position = 8  # after the signature
    while position + 12 <= len(data):
        length = int.from_bytes(data[position:position + 4], "big")
        kind = data[position + 4:position + 8]
        end = position + 8 + length
        if end + 4 > len(data):
            raise ImageError("corrupt or truncated image: a PNG chunk runs past the end of the file")
        if kind in PNG_CRITICAL and zlib.crc32(data[position + 4:end]) != int.from_bytes(data[end:end + 4], "big"):
            raise ImageError(f"corrupt or truncated image: TensorFlow cannot decode it (the PNG's {kind.decode()} "
                             "chunk fails its checksum)")
        if kind == b"IEND":
            return
        position = end + 4


def _has_adobe_segment(data: bytes) -> bool:
    """True when the JPEG's header has an APP14 "Adobe" segment (read segment by segment, up to the scan)."""
    position = 2  # after SOI
    while position + 4 <= len(data) and data[position] == 0xFF:
        marker, length = data[position + 1], int.from_bytes(data[position + 2:position + 4], "big")
        if marker == 0xDA:  # start of scan: no more header segments
            return False
        if marker == 0xEE and data[position + 4:position + 9] == b"Adobe":
            return True
        position += 2 + length
    return False


def _cmyk_to_rgb(cmyk: np.ndarray, adobe: bool) -> np.ndarray:
    """TensorFlow's own CMYK conversion (jpeg_mem.cc), integer arithmetic and all; Adobe files store it inverted."""
    channels = cmyk.astype(np.int32)
    key = channels[..., 3:4]
    rgb = key * channels[..., :3] // 255 if adobe else (255 - key) * (255 - channels[..., :3]) // 255
    return rgb.astype(np.uint8)


def _axis(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TensorFlow's bilinear weights along one axis: lower and upper source indices and the lerp."""
    scale = np.float32(in_size) / np.float32(out_size)
    centre = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    floor = np.floor(centre)
    lower = np.maximum(floor.astype(np.int64), 0)
    upper = np.minimum(np.ceil(centre).astype(np.int64), in_size - 1)
    return lower, upper, (centre - floor).astype(np.float32)


def resize_bilinear(image: np.ndarray, size: int) -> np.ndarray:
    """tf.image.resize(image, (size, size), "bilinear") for an HxWxC image or a batch of them (NxHxWxC), in
    float32, without TensorFlow. Only the rows and columns the kernel reads become float32: a 9000x9000 photo
    costs its few hundred sampled lines, not a float copy of itself (a gigabyte)."""
    y_low, y_high, y_lerp = _axis(size, image.shape[-3])
    x_low, x_high, x_lerp = _axis(size, image.shape[-2])
    rows_low, rows_high = np.take(image, y_low, axis=-3), np.take(image, y_high, axis=-3)
    top_left, top_right = (np.take(rows_low, x, axis=-2).astype(np.float32) for x in (x_low, x_high))
    bottom_left, bottom_right = (np.take(rows_high, x, axis=-2).astype(np.float32) for x in (x_low, x_high))
    x_lerp, y_lerp = x_lerp[:, None], y_lerp[:, None, None]
    top = top_left + (top_right - top_left) * x_lerp
    bottom = bottom_left + (bottom_right - bottom_left) * x_lerp
    return top + (bottom - top) * y_lerp


def load_without_tensorflow(path: Path, image_size: int) -> np.ndarray:
    """One file decoded and resized exactly as the training data was (uint8 HxWx3), turned as it is shown;
    or ImageError."""
    data, header = read_image_file(path)
    turned = orientation(header)
    resized = resize_bilinear(_decode_rgb(data, header), image_size)
    return as_shown(np.round(resized).astype(np.uint8), turned)  # round half to even, as tf.round
