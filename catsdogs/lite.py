"""Prediction without TensorFlow: a LiteRT interpreter for the model exported at registration.

`catsdogs predict` starts in a fraction of a second on this path: it imports numpy, simplejpeg, Pillow and
LiteRT, never TensorFlow or Prefect. The pixels are the training's own, made without TensorFlow
(catsdogs.images.load_without_tensorflow); the test-time views are the evaluation's (catsdogs.views).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from catsdogs.images import load_without_tensorflow
from catsdogs.runtime import native_noise, native_stderr_without
from catsdogs.views import views_averaged

LITERT_FILE = "model.tflite"


class LitePredictor:
    """A LiteRT model exported at registration: the same answers as the Keras model, without TensorFlow."""

    runtime = "litert"

    def __init__(self, model_path: Path, image_size: int, tta_flip: bool = False, tta_crop: float = 0.0,
                 tta_zoom_out: float = 0.0, name: str | None = None):
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(model_path)
        self.name = name or self.path.name
        self.image_size = image_size
        self.tta_flip, self.tta_crop, self.tta_zoom_out = tta_flip, tta_crop, tta_zoom_out
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
        return load_without_tensorflow(path, self.image_size)

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
        return views_averaged(self._run, images, self.tta_flip, self.tta_crop, self.tta_zoom_out)
