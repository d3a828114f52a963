"""Training, plotting and evaluation tasks, each publishing what it produced as Prefect artifacts."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.settings import PREFECT_UI_URL

from catsdogs import plots, registry, store, train
from catsdogs.data import CLASS_NAMES, Subsets
from catsdogs.datasets import DatasetArrays
from catsdogs.download import Archive
from catsdogs.settings import Settings
from catsdogs.train import Metrics, TrainedModel
from tasks._cache import cache_while_complete, remember_cache_key


def run_dir(arrays: DatasetArrays, settings: Settings) -> Path:
    inputs = {"datasets": arrays.root, "variant": settings.variant, "epochs": settings.epochs_to_run,
              "batch_size": settings.batch_size, "seed": settings.seed}
    if settings.precision != "float32":  # only then, so float32 runs keep the keys they had
        inputs["precision"] = settings.precision
    return store.step_dir(settings.workdir, "runs", inputs | settings.recipe_key())


def evaluation_dir(trained: TrainedModel, arrays: DatasetArrays, settings: Settings) -> Path:
    return trained.run_dir / ("evaluation-tta" if settings.tta_flip else "evaluation")


@task(name="train", cache_key_fn=cache_while_complete(run_dir))
def train_model(arrays: DatasetArrays, settings: Settings) -> TrainedModel:
    """Train the selected variant, logging each epoch and moving a progress artifact as epochs finish."""
    logger = get_run_logger()
    progress = create_progress_artifact(0.0, key="training-progress",
                                        description=f"Epochs finished, {settings.variant} model (%)")

    def on_epoch(epoch: int, epochs: int, row: dict[str, float]) -> None:
        update_progress_artifact(progress, 100.0 * epoch / epochs)

    trained = train.train_model(settings, arrays, run_dir(arrays, settings), on_epoch=on_epoch)
    remember_cache_key(trained.run_dir)
    logger.info("best epoch %d of %d", trained.best_epoch, trained.epochs)
    create_markdown_artifact(f"# Model summary ({trained.variant})\n\n```\n{trained.summary}\n```",
                             key="model-summary", description="Keras model summary")
    create_table_artifact(trained.history(), key="training-history",
                          description="Loss and accuracy per epoch, training and validation")
    return trained


@task(name="plot-curves")
def plot_curves(trained: TrainedModel) -> Path:
    """Plot training and validation accuracy and loss per epoch."""
    path = plots.plot_history(trained.history(), trained.run_dir / "curves.png", title=trained.variant)
    create_markdown_artifact(
        f"# Training curves ({trained.variant})\n\nBest checkpoint: epoch {trained.best_epoch} of "
        f"{trained.epochs}.\n\n![training curves]({plots.png_data_uri(path)})",
        key="training-curves", description="Accuracy and loss per epoch")
    return path


@task(name="plot-augmentations")
def plot_augmentations(trained: TrainedModel, arrays: DatasetArrays, settings: Settings) -> Path:
    """Show a 3x3 grid of one training image through the augmentation layers."""
    path = plots.plot_augmentations(arrays, trained.run_dir / "augmentations.png", seed=settings.seed)
    create_markdown_artifact(f"# Augmented samples\n\n![augmented samples]({plots.png_data_uri(path)})",
                             key="augmentation-grid", description="RandomFlip, RandomRotation, RandomZoom")
    return path


@task(name="evaluate", cache_key_fn=cache_while_complete(evaluation_dir))
def evaluate_model(trained: TrainedModel, arrays: DatasetArrays, settings: Settings) -> Metrics:
    """Measure the best checkpoint's loss and accuracy on the test subset."""
    metrics = train.evaluate_model(trained, arrays, settings.batch_size,
                                   evaluation_dir(trained, arrays, settings), bool(settings.tta_flip))
    remember_cache_key(evaluation_dir(trained, arrays, settings))
    create_markdown_artifact(
        "# Test metrics\n\n| metric | value |\n|---|---|\n"
        f"| variant | {metrics.variant} |\n| test accuracy | {metrics.test_accuracy:.4f} |\n"
        f"| test loss | {metrics.test_loss:.4f} |\n| test images | {metrics.test_images} |\n"
        f"| test-time flip averaging | {'on' if metrics.tta_flip else 'off'} |\n"
        f"| best epoch | {metrics.best_epoch} of {metrics.epochs} |\n| model | `{metrics.model_path}` |",
        key="test-metrics", description="Best checkpoint on the test subset")
    return metrics


@task(name="register")
def register_model(trained: TrainedModel, metrics: Metrics, archive: Archive, settings: Settings) -> Path:
    """Add the evaluated model to the registry that `catsdogs predict` reads."""
    card = registry.register_model(trained, metrics, settings, archive.sha256)
    get_run_logger().info("registered model %s at %s", card.name, card.path)
    return card.path


@task(name="report")
def publish_report(trained: TrainedModel, metrics: Metrics, subsets: Subsets, curves: Path) -> str:
    """Publish the confusion matrix, the most confident mistakes and one report that ties the run together."""
    folder = metrics.predictions_path.parent
    confusion = plots.plot_confusion(metrics.confusion, folder / "confusion.png")
    create_markdown_artifact(f"# Confusion matrix (test set)\n\n![confusion matrix]({plots.png_data_uri(confusion)})",
                             key="confusion-matrix", description="Rows: true class; columns: predicted class")
    mistakes = train.most_wrong(metrics)
    gallery_md = "No test image was misclassified."
    if mistakes:
        items = [(subsets.root / r["file"], f"{CLASS_NAMES[r['label']]}, p(dog)={r['dog_probability']:.2f}")
                 for r in mistakes]
        gallery = plots.plot_gallery(items, folder / "most-wrong.png")
        gallery_md = f"![most confident mistakes]({plots.png_data_uri(gallery)})"
    create_markdown_artifact(f"# Most confident mistakes\n\nTrue label and predicted probability of dog.\n\n"
                             f"{gallery_md}", key="most-wrong", description="Test images the model got most wrong")
    (tn, fp), (fn, tp) = metrics.confusion
    ui = PREFECT_UI_URL.value()
    links = ", ".join(f"[{key}]({ui}/artifacts/key/{key})" if ui else f"`{key}`" for key in REPORT_KEYS)
    report = (
        f"# catsdogs run: {metrics.variant}\n\n"
        f"| test accuracy | test loss | best epoch | test images |\n|---|---|---|---|\n"
        f"| {metrics.test_accuracy:.4f} | {metrics.test_loss:.4f} | {metrics.best_epoch} of {metrics.epochs} "
        f"| {metrics.test_images} |\n\n"
        f"| true \\ predicted | cat | dog |\n|---|---|---|\n| cat | {tn} | {fp} |\n| dog | {fn} | {tp} |\n\n"
        f"![training curves]({plots.png_data_uri(curves)})\n\nModel: `{metrics.model_path}`\n\n"
        f"More on this run: {links}."
    )
    create_markdown_artifact(report, key="run-report", description="Metrics, curves and links for this run")
    return report


REPORT_KEYS = ["test-metrics", "training-curves", "augmentation-grid", "confusion-matrix", "most-wrong",
               "model-summary", "dataset-summary", "training-history"]
