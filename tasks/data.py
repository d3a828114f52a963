"""Data tasks: download, unzip, subset copy and dataset build."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.blocks.system import Secret
from prefect.runtime import task_run

from catsdogs import data, datasets, download, steps, store
from catsdogs.data import Subsets
from catsdogs.datasets import DatasetArrays
from catsdogs.download import Archive
from catsdogs.settings import Settings, SettingsError, unmask_data_url
from tasks._cache import cache_while_complete, remember_result, reused_from

MAX_RETRY_AFTER_S = 300.0


def resolve_data_url(settings: Settings) -> str:
    """The full data URL: flow parameters hold it with credentials masked; the secret comes from a Prefect
    Secret block (data_url_secret) or the CATSDOGS_DATA_URL environment variable."""
    secret = None
    if settings.data_url_secret:
        try:
            secret = str(Secret.load(settings.data_url_secret, _sync=True).get())
        except ValueError:
            raise SettingsError(f"invalid setting data_url_secret: no Prefect Secret block named "
                                f"{settings.data_url_secret!r}; create it (prefect block create secret) or leave "
                                "the setting out") from None
    return unmask_data_url(settings.data_url, secret)


def _transient(_task: Any, _run: Any, state: Any) -> bool:
    """Retry only failures a retry may fix: connection errors, timeouts, HTTP 429 and 5xx."""
    return isinstance(state.data, download.TransientDownloadError)


@task(name="download", retries=3, retry_delay_seconds=[2, 4, 8], retry_condition_fn=_transient,
      cache_key_fn=cache_while_complete(steps.download_folder))
def download_archive(settings: Settings) -> Archive:
    """Download the data archive into the working directory, resuming and verifying it."""
    out = steps.download_folder(settings)
    try:
        archive = download.download_archive(settings.data_url, out / "archive.zip", settings.data_sha256,
                                            settings.download_timeout_s)
    except download.TransientDownloadError as err:
        attempt, attempts = max(1, task_run.run_count), settings.download_retries + 1
        if attempt >= attempts:  # the last try: say so, rather than a retry that will not come
            tries = f"{attempts} tries" if attempts > 1 else "one try (download_retries is 0)"
            raise download.DownloadError(f"{err}; gave up after {tries}: try again later, or raise "
                                         "--download-retries") from None
        get_run_logger().warning("download try %d of %d failed: %s; will retry", attempt, attempts, err)
        if err.retry_after:  # the server said when to come back: honour it before Prefect's own delay
            time.sleep(min(err.retry_after, MAX_RETRY_AFTER_S))
        raise
    store.mark_complete(out, archive.model_dump(mode="json"))
    return remember_result(out, archive)


@task(name="unzip", cache_key_fn=cache_while_complete(steps.extract_folder))
def unzip_archive(archive: Archive, settings: Settings) -> Path:
    """Extract the archive safely; returns the folder of extracted files."""
    limit = int(settings.max_extract_gib * 2**30)
    images = data.unzip_archive(archive.path, steps.extract_folder(archive, settings), limit)
    return remember_result(images, images)


@task(name="subsets", cache_key_fn=cache_while_complete(steps.subsets_folder))
def make_subsets(images: Path, settings: Settings) -> Subsets:
    """Copy the train, validation and test subsets of each class into their own folders."""
    ranges = {"train": settings.train_range, "validation": settings.validation_range,
              "test": settings.test_range}
    subsets = data.make_subsets(images, steps.subsets_folder(images, settings), ranges)
    return remember_result(subsets.root, subsets)


@task(name="datasets", cache_key_fn=cache_while_complete(steps.datasets_folder))
def build_datasets(subsets: Subsets, settings: Settings) -> DatasetArrays:
    """Decode and resize every subset once into arrays the training reads from memory."""
    arrays = datasets.build_arrays(subsets, steps.datasets_folder(subsets, settings), settings.image_size,
                                   settings.batch_size)
    return remember_result(arrays.root, arrays)


@task(name="publish-dataset")
def publish_dataset_summary(subsets: Subsets, arrays: DatasetArrays) -> dict[str, str]:
    """Publish the images per split and class, in every run (the steps behind it may come from the cache)."""
    reused = {step: source for step, folder in (("subsets", subsets.root), ("datasets", arrays.root))
              if (source := reused_from(folder))}
    for step, source in reused.items():
        get_run_logger().info("%s: reused from %s", step, source)
    note = "".join(f"\n\nThe {step} step was reused from {source}." for step, source in reused.items())
    artifact = create_markdown_artifact(dataset_summary(subsets, arrays) + note, key="dataset-summary",
                                        description=f"{sum(arrays.counts.values())} images in all, by split and class")
    return {"dataset-summary": str(artifact)}


def dataset_summary(subsets: Subsets, arrays: DatasetArrays) -> str:
    """Markdown table of images per split and class, and the unreadable images skipped."""
    lines = ["# Dataset", "", f"Archive layout: **{subsets.layout}**; images {arrays.image_size}×"
             f"{arrays.image_size} RGB.", "", "| split | cat | dog | total |", "|---|---:|---:|---:|"]
    for split, per_class in subsets.counts.items():
        lines.append(f"| {split} | {per_class['cat']} | {per_class['dog']} | {sum(per_class.values())} |")
    skipped = ", ".join(f"{cls}: {n}" for cls, n in subsets.skipped.items())
    duplicates = ", ".join(f"{cls}: {n}" for cls, n in subsets.duplicates.items()) or "none"
    lines += ["", f"Unreadable images skipped: {skipped}. Duplicates left out (a class and index claimed twice; "
              f"the first file in path order is used): {duplicates}."]
    return "\n".join(lines)
