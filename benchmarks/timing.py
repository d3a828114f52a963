"""What the in-memory throughput benchmarks share: a fixed batch of random images, timed steps, a fresh process.

Each benchmark that times training on images held in memory builds its model its own way, then times it here,
so that every one warms up, counts and divides the same way and their images/s can be compared."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import numpy as np

BATCH = 32
HERE = Path(__file__).resolve().parent


def random_batch(size: int, batch: int = BATCH) -> tuple[np.ndarray, np.ndarray]:
    """BATCH random 0-255 RGB images of SIZE px and random 0/1 labels, the same on every call."""
    images = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3)).astype("float32")
    labels = np.random.default_rng(1).integers(0, 2, (batch, 1)).astype("float32")
    return images, labels


def images_per_s(step: Callable[[], object], steps: int, batch: int = BATCH, warmup: int = 3) -> float:
    """Images a second over STEPS calls of STEP (one batch each), after WARMUP untimed calls (tracing)."""
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - start)


def training_images_per_s(model, size: int, steps: int, batch: int = BATCH, warmup: int = 3) -> float:
    """MODEL's training speed on one random batch of SIZE px images, held in memory."""
    images, labels = random_batch(size, batch)
    return images_per_s(lambda: model.train_on_batch(images, labels), steps, batch, warmup)


def run_fresh(script: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """SCRIPT run by this Python in a fresh process with ARGS, the project and this folder importable."""
    return run_fresh_together(script, *args, env=env, copies=1)[0]


def run_fresh_together(script: str, *args: str, env: dict[str, str] | None = None, copies: int = 2
                       ) -> list[subprocess.CompletedProcess]:
    """COPIES of run_fresh's process, started at once; each one's outcome."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH", ""), str(HERE), str(HERE.parent)]))
    command = [sys.executable, "-c", script, *args]
    with ExitStack() as files:  # files, not pipes: a copy never waits on a pipe the others are not reading yet
        streams = [tuple(files.enter_context(tempfile.TemporaryFile("w+")) for _ in "oe") for _ in range(copies)]
        started = [subprocess.Popen(command, stdout=out, stderr=err, text=True, env=env) for out, err in streams]
        codes = [process.wait() for process in started]
        for out, err in streams:
            out.seek(0)
            err.seek(0)
        return [subprocess.CompletedProcess(command, code, out.read(), err.read())
                for code, (out, err) in zip(codes, streams, strict=True)]


def fast_training_pipeline(count: int = 2000):
    """catsdogs' own input pipeline as a fast run feeds its training (shuffled, cast, fast's MixUp), over COUNT
    random uint8 images of fast's image_size saved to a temporary folder; with fast's settings and its steps an
    epoch. For benchmarks that train the fast model in a fresh process."""
    from catsdogs.datasets import DatasetArrays, load_split
    from catsdogs.settings import Settings

    fast = Settings(variant="fast")
    full, batch = int(fast.image_size), int(fast.batch_size)
    root = Path(tempfile.mkdtemp())
    rng = np.random.default_rng(0)
    np.save(root / "train-images.npy", rng.integers(0, 256, (count, full, full, 3), dtype=np.uint8))
    np.save(root / "train-labels.npy", rng.integers(0, 2, count).astype("float32"))
    arrays = DatasetArrays(root=root, image_size=full, counts={"train": count})
    pipeline = load_split(arrays, "train", batch, shuffle_seed=0, mixup=float(fast.mixup))
    return fast, pipeline, -(-count // batch)
