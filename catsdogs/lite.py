"""Prediction without TensorFlow: the training's pixels, and a LiteRT interpreter for the model.

`catsdogs predict` starts in a fraction of a second on this path: it imports numpy, simplejpeg, Pillow and
LiteRT, never TensorFlow or Prefect. The pixels must be the training pipeline's own, which decoded with
TensorFlow (libjpeg's fast integer DCT, fancy upsampling) and resized with tf.image.resize (bilinear, half-pixel
centres, no antialiasing) before rounding to whole values:

- JPEG: simplejpeg with the same libjpeg settings; the same bytes out (tests/test_lite.py checks it).
- PNG, GIF, BMP: lossless formats that Pillow and TensorFlow decode to the same values (checked too).
- The resize: a numpy port of TensorFlow's bilinear kernel, in float32 and in its order of operations.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from catsdogs.data import ImageError, pillow_rgb, read_image_file
from catsdogs.runtime import native_noise, native_stderr_without

LITERT_FILE = "model.tflite"


def decode_rgb(path: Path) -> np.ndarray:
    """The file's pixels as uint8 HxWx3, as TensorFlow's decode_image(channels=3) gives them; or ImageError."""
    data, header = read_image_file(path)
    if header.format in ("JPEG", "MPO"):  # MPO: a JPEG with more pictures after it; the first is the photo
        import simplejpeg

        try:
            if header.mode == "CMYK":
                return _cmyk_to_rgb(simplejpeg.decode_jpeg(data, colorspace="CMYK", fastdct=True,
                                                           fastupsample=False), adobe=_has_adobe_segment(data))
            return simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=True, fastupsample=False)
        except ValueError as err:
            raise ImageError(f"corrupt or truncated image: {err}") from None
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
    float32, without TensorFlow."""
    pixels = image.astype(np.float32)
    y_low, y_high, y_lerp = _axis(size, image.shape[-3])
    x_low, x_high, x_lerp = _axis(size, image.shape[-2])
    rows_low, rows_high = np.take(pixels, y_low, axis=-3), np.take(pixels, y_high, axis=-3)
    top_left, top_right = np.take(rows_low, x_low, axis=-2), np.take(rows_low, x_high, axis=-2)
    bottom_left, bottom_right = np.take(rows_high, x_low, axis=-2), np.take(rows_high, x_high, axis=-2)
    x_lerp, y_lerp = x_lerp[:, None], y_lerp[:, None, None]
    top = top_left + (top_right - top_left) * x_lerp
    bottom = bottom_left + (bottom_right - bottom_left) * x_lerp
    return top + (bottom - top) * y_lerp


def load_image(path: Path, image_size: int) -> np.ndarray:
    """One file decoded and resized exactly as the training data was (uint8 HxWx3), or ImageError."""
    resized = resize_bilinear(decode_rgb(path), image_size)
    return np.round(resized).astype(np.uint8)  # round half to even, as tf.round


def centre_crop(images: np.ndarray, fraction: float) -> np.ndarray:
    """The centre FRACTION of each side of every NxHxWx3 image, resized back to HxW with the training's bilinear
    kernel and rounded to whole values, as the training data was."""
    size = images.shape[1]
    side = round(size * fraction)
    start = (size - side) // 2
    return np.round(resize_bilinear(images[:, start:start + side, start:start + side], size))


def test_time_views(images: np.ndarray, tta_flip: bool = False, tta_crop: float = 0.0) -> list[np.ndarray]:
    """The views of a batch that a prediction averages: the images; their mirror images where TTA_FLIP; the
    centre crop of TTA_CROP of each side (and its mirror image where TTA_FLIP) where TTA_CROP is not 0."""
    sources = [images, centre_crop(images, tta_crop)] if tta_crop else [images]
    views = [view for source in sources for view in ([source, source[:, :, ::-1]] if tta_flip else [source])]
    return [np.ascontiguousarray(view, dtype=np.float32) for view in views]


def views_name(prefix: str, tta_flip: bool = False, tta_crop: float = 0.0) -> str:
    """PREFIX named for a set of test-time views: PREFIX (the images alone), PREFIX-tta (with their mirror
    images), PREFIX-crop0.8, PREFIX-tta-crop0.8; evaluations and registered models are kept apart per set by it."""
    return "-".join([prefix] + (["tta"] if tta_flip else []) + ([f"crop{tta_crop:g}"] if tta_crop else []))


def views_averaged(run: Callable[[np.ndarray], Any], images: np.ndarray, tta_flip: bool = False,
                   tta_crop: float = 0.0) -> np.ndarray:
    """Each image's probability of dog from RUN (a batch to an (n, 1) output), averaged over its test-time views
    (test_time_views): what evaluation does, for every predictor."""
    views = test_time_views(np.asarray(images), tta_flip, tta_crop)
    return np.mean([np.asarray(run(view), "float64")[:, 0] for view in views], axis=0)


class LitePredictor:
    """A LiteRT model exported at registration: the same answers as the Keras model, without TensorFlow."""

    def __init__(self, model_path: Path, image_size: int, tta_flip: bool = False, tta_crop: float = 0.0):
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(model_path)
        self.image_size = image_size
        self.tta_flip, self.tta_crop = tta_flip, tta_crop
        with native_stderr_without(native_noise()):  # LiteRT's INFO line on every start
            self.interpreter = Interpreter(model_path=str(self.path), num_threads=os.cpu_count() or 1)
        entry, exit_ = self.interpreter.get_input_details()[0], self.interpreter.get_output_details()[0]
        if tuple(entry["shape"][1:]) != (image_size, image_size, 3) or tuple(exit_["shape"][1:]) != (1,):
            raise ValueError(f"{self.path} takes {tuple(entry['shape'][1:])} and answers {tuple(exit_['shape'][1:])}"
                             f", not the ({image_size}, {image_size}, 3) images and one probability of its card")
        self._input, self._output = entry["index"], exit_["index"]
        self._batch = 0

    def load(self, path: Path) -> np.ndarray:
        """One file decoded and resized as the training data was."""
        return load_image(path, self.image_size)

    def _run(self, images: np.ndarray) -> np.ndarray:
        if images.shape[0] != self._batch:  # the interpreter is sized per batch once, then reused
            self.interpreter.resize_tensor_input(self._input, images.shape)
            with native_stderr_without(native_noise()):  # where the XNNPACK delegate announces itself
                self.interpreter.allocate_tensors()
            self._batch = images.shape[0]
        self.interpreter.set_tensor(self._input, images)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._output)

    def predict_batch(self, images: np.ndarray) -> np.ndarray:
        """Probabilities that each image is a dog (averaged over the test-time views the model's settings name)."""
        return views_averaged(self._run, images, self.tta_flip, self.tta_crop)
