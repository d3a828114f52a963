"""TensorFlow, started with the speed settings applied (they only take effect before it starts)."""

from __future__ import annotations

import logging
import os
from types import ModuleType

log = logging.getLogger(__name__)
_applied: dict[str, object] = {}


def tensorflow(threads: int | None = None, onednn: bool = True) -> ModuleType:
    """Import TensorFlow, applying thread and oneDNN settings the first time it is called."""
    if not _applied:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep C++ start-up chatter out of the logs
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1" if onednn else "0"
    import tensorflow as tf

    if not _applied:
        cores = threads or os.cpu_count() or 1
        try:
            tf.config.threading.set_intra_op_parallelism_threads(cores)
            tf.config.threading.set_inter_op_parallelism_threads(cores)
        except RuntimeError:
            log.warning("TensorFlow was already running; its thread settings are left as they are")
        _applied.update(threads=cores, onednn=os.environ["TF_ENABLE_ONEDNN_OPTS"] == "1")
    return tf


def speed_settings() -> dict[str, object]:
    """The speed settings in force in this process (empty before TensorFlow started)."""
    return dict(_applied)
