"""TensorFlow, started with the speed settings applied (they only take effect before it starts)."""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
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
    if "tensorflow" in sys.modules:
        import tensorflow as tf
    else:
        with native_stderr_without(native_noise()):
            import tensorflow as tf

            tf.config.list_physical_devices()  # the CUDA probe prints here on a machine without a GPU

    if not _applied:
        cores = int(_wanted["threads"] or cpu_cores())  # type: ignore[call-overload]
        try:
            tf.config.threading.set_intra_op_parallelism_threads(cores)
            tf.config.threading.set_inter_op_parallelism_threads(cores)
        except RuntimeError:
            log.warning("TensorFlow was already running; its thread settings are left as they are")
        _applied.update(threads=cores, onednn=os.environ["TF_ENABLE_ONEDNN_OPTS"] == "1")
    return tf


def native_noise() -> re.Pattern[str]:
    """The start-up lines of TensorFlow's C++ libraries that TF_CPP_MIN_LOG_LEVEL asks to hide.

    Those libraries log through absl before anything initialises it, and then absl ignores the level: each
    import printed its INFO block twice, and a CPU-only machine got an `E0000 ... failed call to cuInit` line
    that is no error at all.
    """
    level = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")  # catsdogs' default, as tensorflow() sets it
    level_n = int(level) if level.isdigit() else 0
    hidden = [r"INFO: ", r"I\d{4} "][: 2 if level_n >= 1 else 0]
    if level_n >= 2:
        hidden += [r"W\d{4} ", r"WARNING: All log messages before absl::InitializeLog",
                   r"E\d{4} .*(cuInit|cuda_|CUDA|cuDNN|cuFFT|cuBLAS)"]
    return re.compile(f"^(?:{'|'.join(hidden)})" if hidden else r"(?!)")


@contextmanager
def native_stderr_without(noise: re.Pattern[str]) -> Iterator[None]:
    """Run the block with file descriptor 2 captured, then write back every line but NOISE's.

    C++ libraries write to the descriptor directly, where no Python logging setting reaches them.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no descriptor 2 (a service without one): nothing to keep clean
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            kept = "".join(line for line in lines if not noise.match(line))
            if kept:
                os.write(2, kept.encode())


def speed_settings() -> dict[str, object]:
    """The speed settings in force in this process (empty before TensorFlow started)."""
    return dict(_applied)


# Lines of TensorFlow's multi-line errors that say where, not what: the graph node, the Python stack.
_WHERE_LINES = ("File ", "Detected at node", "[[", "<stack traces")


def error_line(err: Exception, limit: int = 240) -> str:
    """ERR's type and message in one line: a multi-line message (TensorFlow's graph errors) keeps its first
    line and its last line that says what went wrong."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    what = [line for line in lines if not line.startswith(_WHERE_LINES)]
    message = " ".join(dict.fromkeys(what[:1] + what[-1:]))  # one line twice only once
    text = f"{type(err).__name__}: {message}" if message else type(err).__name__
    return text if len(text) <= limit else text[:limit - 1] + "…"


# oneDNN's instruction-set caps (ONEDNN_MAX_CPU_ISA) that keep its bfloat16 kernels; a lower cap, such as
# AVX2 to run as a machine without BF16 does, leaves TensorFlow's bfloat16 convolutions without a kernel.
BF16_ISAS = {"AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16", "AVX10_1_512",
             "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "AVX10_2_512", "AVX10_2_512_AMX_2", "ALL", "DEFAULT"}


# Where Linux states a process's memory limits: the cgroup file system, and the process's own groups in it.
CGROUP_ROOT, PROC_SELF_CGROUP = Path("/sys/fs/cgroup"), Path("/proc/self/cgroup")


def memory_limit_bytes() -> int:
    """The memory this process may use: the machine's, or the lowest limit of its cgroups where that is lower."""
    machine = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        groups = PROC_SELF_CGROUP.read_text()
    except OSError:
        groups = ""
    return min([machine, *cgroup_memory_limits(groups, CGROUP_ROOT)])


def cgroup_memory_limits(groups: str, root: Path) -> list[int]:
    """The memory limits set on the cgroups that GROUPS (the text of /proc/self/cgroup) names and on each of
    their ancestors: cgroup v2's memory.max, v1's memory.limit_in_bytes (where "no limit" is a huge number). A
    container sees its own group as the root; a group made on a host (systemd-run -p MemoryMax=..., a v1
    memory group) is found by its path."""
    limits = []
    for line in groups.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and not controllers:
            base, name = root, "memory.max"
        elif "memory" in controllers.split(","):
            base, name = root / "memory", "memory.limit_in_bytes"
        else:
            continue
        group = base / path.strip().lstrip("/")
        for folder in (group, *group.parents):
            if not folder.is_relative_to(base):
                break
            try:
                text = (folder / name).read_text().strip()
            except OSError:
                continue
            if text.isdigit():
                limits.append(int(text))
    return limits


def onednn_cap_without_bf16() -> str | None:
    """The ONEDNN_MAX_CPU_ISA in force when it leaves oneDNN without bfloat16 kernels (such as AVX2), else None."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    return cap if cap and cap not in BF16_ISAS else None


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """True when the CPU has bfloat16 units (AVX-512 BF16 or AMX), where mixed_bfloat16 is fast, and
    ONEDNN_MAX_CPU_ISA does not keep oneDNN from them."""
    if onednn_cap_without_bf16():
        return False
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as handle:
                cpuinfo = handle.read()
        except OSError:  # not Linux: no way to tell, so no claim
            return False
    flags = {flag for line in cpuinfo.splitlines() if line.startswith("flags") for flag in line.split()}
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def check_precision(precision: str) -> None:
    """A SettingsError naming the fix where PRECISION cannot train in this process: mixed_bfloat16 under a
    oneDNN cap without bfloat16 kernels would otherwise fail at the first convolution with TensorFlow's error."""
    cap = onednn_cap_without_bf16()
    if precision == "mixed_bfloat16" and cap:
        from catsdogs.settings import SettingsError

        raise SettingsError(f"invalid setting precision: mixed_bfloat16 cannot run with ONEDNN_MAX_CPU_ISA={cap}, "
                            "which leaves oneDNN without bfloat16 kernels; use --precision auto or float32, or "
                            "unset ONEDNN_MAX_CPU_ISA")


# The device files a GPU's driver makes (NVIDIA's, ROCm's, WSL's). On Linux, TensorFlow sees no GPU without one
# of them, so a process that only names or checks a run (a sweep's coordinator, a run whose download fails) knows
# its precision without the seconds of starting TensorFlow.
DEV_ROOT = Path("/dev")
GPU_DEVICE_FILES = ("nvidia[0-9]*", "kfd", "dxg")


def gpu_visible() -> bool:
    """Whether TensorFlow sees a GPU; on Linux without a GPU driver's device files, known without starting it."""
    if sys.platform.startswith("linux") and not any(any(DEV_ROOT.glob(name)) for name in GPU_DEVICE_FILES):
        return False
    return bool(tensorflow().config.list_physical_devices("GPU"))


def resolve_precision(precision: str) -> str:
    """A concrete Keras dtype policy: auto is mixed_float16 on a GPU, mixed_bfloat16 on a BF16 CPU, else float32."""
    if precision != "auto":
        check_precision(precision)
        return precision
    if gpu_visible():
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


def clear_stop_request() -> None:
    """Forget a stop asked for earlier: a new command in the same process (a test session's) starts afresh."""
    _stop.clear()
