"""TensorFlow, started with the speed settings applied (they only take effect before it starts)."""

from __future__ import annotations

import logging
import os
from types import ModuleType

log = logging.getLogger(__name__)
_wanted: dict[str, object] = {"threads": None, "onednn": True}
_applied: dict[str, object] = {}


def configure(threads: int | None = None, onednn: bool = True) -> None:
    """Choose the speed settings that TensorFlow will start with; call before anything uses it."""
    if _applied and (threads or os.cpu_count() or 1, onednn) != (_applied["threads"], _applied["onednn"]):
        log.warning("TensorFlow already started with %s; threads=%s onednn=%s apply from the next process",
                    _applied, threads, onednn)
    _wanted.update(threads=threads, onednn=onednn)


def tensorflow(threads: int | None = None, onednn: bool | None = None) -> ModuleType:
    """Import TensorFlow, applying the thread and oneDNN settings the first time it is called."""
    if threads is not None or onednn is not None:
        configure(threads if threads is not None else _wanted["threads"],  # type: ignore[arg-type]
                  onednn if onednn is not None else bool(_wanted["onednn"]))
    if not _applied:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep C++ start-up chatter out of the logs
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1" if _wanted["onednn"] else "0"
    import tensorflow as tf

    if not _applied:
        cores = int(_wanted["threads"] or os.cpu_count() or 1)  # type: ignore[call-overload]
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
