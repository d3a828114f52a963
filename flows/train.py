"""The training flow: download, unzip, subsets, datasets, train, plot, evaluate."""

from __future__ import annotations

import sys

from prefect import flow

from catsdogs import runtime
from catsdogs.model import check_backbone_weights
from catsdogs.settings import Settings
from catsdogs.train import Metrics
from tasks.data import build_datasets, download_archive, make_subsets, resolve_data_url, unzip_archive
from tasks.training import (
    evaluate_model,
    plot_augmentations,
    plot_curves,
    publish_report,
    register_model,
    train_model,
)


@flow(name="catsdogs-train", log_prints=False)
def train_flow(settings: Settings | None = None) -> Metrics:
    """Train and evaluate the cat/dog convnet that SETTINGS describes."""
    settings = settings or Settings()
    # Flow parameters hold the data URL with its credentials masked; the full one comes from a secret.
    settings = settings.model_copy(update={"data_url": resolve_data_url(settings)})
    check_backbone_weights(settings)  # before any work: efficientnet needs its base's weights
    runtime.configure(settings.threads, settings.onednn)  # before any task starts TensorFlow
    # precision auto becomes the policy this machine will train in, so the model's key names what it is
    settings = settings.model_copy(update={"precision": runtime.resolve_precision(str(settings.precision))})
    download = download_archive.with_options(
        retries=settings.download_retries,
        retry_delay_seconds=[settings.download_backoff_s * 2**i for i in range(settings.download_retries)] or 0,
    )
    archive = download(settings)
    images = unzip_archive(archive, settings)
    subsets = make_subsets(images, settings)
    arrays = build_datasets(subsets, settings)
    trained = train_model(arrays, settings)
    curves = plot_curves(trained)
    if settings.variant != "baseline":  # every other variant augments
        plot_augmentations(trained, arrays, settings)
    metrics = evaluate_model(trained, arrays, settings)
    publish_report(trained, metrics, subsets, curves)
    register_model(trained, metrics, archive, settings)
    return metrics


if __name__ == "__main__":
    from flows.cli import main

    sys.exit(main(["run", *sys.argv[1:]]))
