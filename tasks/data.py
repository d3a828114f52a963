"""The data steps' Prefect side: the data URL's secret, and the dataset summary (the steps themselves run as
tasks.steps' one task)."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.blocks.system import Secret

from catsdogs.data import Subsets
from catsdogs.datasets import DatasetArrays
from catsdogs.settings import Settings, SettingsError, unmask_data_url
from tasks._cache import reused_from


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
