"""TensorFlow, started with the speed settings applied (they only take effect before it starts)."""

from __future__ import annotations

import logging
import os
import threading
from types import ModuleType

log = logging.getLogger(__name__)
_wanted: dict[str, object] = {"threads": None, "onednn": True}
_applied: dict[str, object] = {}


def cpu_cores() -> int:
    """The cores TensorFlow uses when threads is not set: all of them."""
    return os.cpu_count() or 1


def configure(threads: int | None = None, onednn: bool = True) -> None:
    """Choose the speed settings that TensorFlow will start with; call before anything uses it."""
    if _applied and (threads or cpu_cores(), onednn) != (_applied["threads"], _applied["onednn"]):
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
        cores = int(_wanted["threads"] or cpu_cores())  # type: ignore[call-overload]
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


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """True when the CPU has bfloat16 units (AVX-512 BF16 or AMX), where mixed_bfloat16 is fast."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as handle:
                cpuinfo = handle.read()
        except OSError:  # not Linux: no way to tell, so no claim
            return False
    flags = {flag for line in cpuinfo.splitlines() if line.startswith("flags") for flag in line.split()}
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve_precision(precision: str) -> str:
    """A concrete Keras dtype policy: auto is mixed_float16 on a GPU, mixed_bfloat16 on a BF16 CPU, else float32."""
    if precision != "auto":
        return precision
    if tensorflow().config.list_physical_devices("GPU"):
        return "mixed_float16"
    return "mixed_bfloat16" if cpu_has_bf16() else "float32"


# A stop asked for by a signal: SIGINT or SIGTERM reach only the main thread, but training may run in another
# (a sweep's configurations run in a task runner's threads). Training checks this after every batch.
_stop = threading.Event()


def request_stop() -> None:
    """Ask every training in this process to stop after its current batch (the command's signal handler)."""
    _stop.set()


def stop_requested() -> bool:
    return _stop.is_set()
