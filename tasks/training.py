"""What training and evaluation produced, published as Prefect artifacts (the steps themselves run as
tasks.steps' one task): plots, tables, the leaderboard and the run report."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact
from prefect.settings import PREFECT_UI_URL

from catsdogs import plots, registry, train
from catsdogs.data import CLASS_NAMES, Subsets
from catsdogs.datasets import DatasetArrays
from catsdogs.model import augmentation_for, augmentation_text
from catsdogs.results import Metrics, TrainedModel
from catsdogs.settings import Settings
from tasks._cache import reused_from
from tasks.runs import run_label, tag_reused_model


@task(name="publish-training")
def publish_training(trained: TrainedModel) -> dict[str, str]:
    """Publish the model summary and the history per epoch, in every run, trained here or reused."""
    source = reused_from(trained.run_dir)
    ids: dict[str, str] = {}
    if source:  # the train step came from the cache: its progress artifact belongs to that earlier run
        get_run_logger().info("train: reused the model trained by %s", source)
        tag_reused_model()  # in the runs list, a rerun that trained nothing is told from the run that did
        create_progress_artifact(100.0, key="training-progress",
                                 description=f"Epochs finished: reused from {source}")
    summary = f"# Model summary ({trained.variant})\n\n{trained.summary}"
    ids["model-summary"] = str(create_markdown_artifact(summary, key="model-summary",
                                                        description=f"Keras model summary, {trained.variant}"))
    history = trained.history()
    best = train.best_row(history)
    table = (f"# Training history ({trained.variant})\n\nBest checkpoint: epoch {trained.best_epoch} "
             f"(lowest validation loss).{f' Reused from {source}.' if source else ''}\n\n"
             f"{train.history_table(history)}")
    ids["training-history"] = str(create_markdown_artifact(
        table, key="training-history", description=f"{len(history)} epoch{'s' * (len(history) != 1)}; best "
        f"{trained.best_epoch}: validation accuracy {best['val_accuracy']:.4f}"))
    return ids


@task(name="plot-curves")
def plot_curves(trained: TrainedModel) -> tuple[Path, dict[str, str]]:
    """Plot training and validation accuracy and loss per epoch."""
    path = plots.plot_history(trained.history(), trained.run_dir / "curves.png", title=trained.variant)
    best = train.best_row(trained.history())
    artifact = create_markdown_artifact(
        f"# Training curves ({trained.variant})\n\nBest checkpoint: epoch {trained.best_epoch} of "
        f"{trained.epochs_run or trained.epochs}.\n\n![training curves]({plots.png_data_uri(path)})",
        key="training-curves", description=f"best epoch {trained.best_epoch}: validation accuracy "
        f"{best['val_accuracy']:.4f}, loss {best['val_loss']:.4f}")
    return path, {"training-curves": str(artifact)}


@task(name="plot-augmentations")
def plot_augmentations(trained: TrainedModel, arrays: DatasetArrays, settings: Settings) -> dict[str, str]:
    """Show a 3x3 grid of one training image through the augmentation layers, and one of MixUp or CutMix blends."""
    mixup, cutmix = float(settings.mixup or 0.0), float(settings.cutmix or 0.0)
    path, blends = trained.run_dir / "augmentations.png", trained.run_dir / "blends.png"
    drawn = path.is_file() and (blends.is_file() or not (mixup or cutmix))
    # A model reused from the cache keeps the pictures its run drew (written whole, beside it): the same
    # layers, and a rerun does no TensorFlow work for them.
    if not (drawn and reused_from(trained.run_dir)):
        augmentation = augmentation_for(settings)  # the layers this run's model trained through
        plots.plot_augmentations(arrays, path, augmentation)
        if mixup or cutmix:
            plots.plot_blends(arrays, blends, mixup, seed=settings.seed, augmentation=augmentation, cutmix=cutmix)
    layers = augmentation_text(settings)
    markdown = f"# Augmented samples\n\n{layers}.\n\n![augmented samples]({plots.png_data_uri(path)})"
    if mixup or cutmix:
        name = plots.blends_name(mixup, cutmix)
        layers += f"; {name}"
        markdown += (f"\n\n{name} blends pairs of training images and their labels before the layers above; "
                     f"each title is the blended label.\n\n![blends]({plots.png_data_uri(blends)})")
    artifact = create_markdown_artifact(markdown, key="augmentation-grid", description=layers)
    return {"augmentation-grid": str(artifact)}


@task(name="publish-metrics")
def publish_metrics(metrics: Metrics, settings: Settings) -> dict[str, str]:
    """Publish the test metrics, in every run; the description carries the accuracy for the key's history."""
    source = reused_from(metrics.predictions_path.parent)
    if source:
        get_run_logger().info("evaluate: reused the evaluation by %s", source)
    artifact = create_markdown_artifact(
        "# Test metrics\n\n| metric | value |\n|---|---|\n"
        f"| variant | {metrics.variant} |\n| test accuracy | {metrics.test_accuracy:.4f} |\n"
        f"| test loss | {metrics.test_loss:.4f} |\n| test images | {metrics.test_images} |\n"
        f"| test-time flip averaging | {'on' if metrics.tta_flip else 'off'} |\n"
        f"| test-time centre crop | {f'{metrics.tta_crop:g} of each side' if metrics.tta_crop else 'off'} |\n"
        f"| test-time zoom out | {f'to {metrics.tta_zoom_out:g} of each side' if metrics.tta_zoom_out else 'off'} |\n"
        f"| best epoch | {metrics.best_epoch} of {metrics.epochs} |\n| seed | {settings.seed} |\n\n"
        f"Checkpoint: `{metrics.model_path}`",  # below the table: the UI shows a cell on one line
        key="test-metrics", description=f"test accuracy {metrics.test_accuracy:.4f}, loss {metrics.test_loss:.4f} "
        f"({run_label(settings)})")
    return {"test-metrics": str(artifact)}


@task(name="publish-leaderboard")
def publish_leaderboard(settings: Settings) -> dict[str, str]:
    """Publish every registered model, best first, and their test accuracy over time."""
    rows = registry.leaderboard(settings.workdir)
    ids = {"leaderboard": str(create_table_artifact(
        rows, key="leaderboard",
        description=f"{len(rows)} registered model{'s' if len(rows) != 1 else ''}; best test accuracy "
        f"{rows[0]['test accuracy']} ({rows[0]['model']}); times UTC" if rows else "no registered model"))}
    path = plots.plot_accuracy_over_time(registry.list_models(settings.workdir),
                                         registry.models_dir(settings.workdir) / "accuracy-over-time.png")
    ids["accuracy-history"] = str(create_markdown_artifact(
        f"# Test accuracy of the registered models over time\n\n![accuracy over time]({plots.png_data_uri(path)})",
        key="accuracy-history", description="One line per variant, one point per registered model"))
    return ids


@task(name="report")
def publish_report(trained: TrainedModel, metrics: Metrics, subsets: Subsets, curves: Path,
                   links: dict[str, str], settings: Settings, step_folders: dict[str, Path],
                   registered: str | None = None) -> str:
    """Publish the confusion matrix, the most confident mistakes and one report that ties the run together;
    STEP_FOLDERS are the folders of the pipeline's steps, by step name; REGISTERED the model's registered name."""
    folder = metrics.predictions_path.parent
    confusion = plots.plot_confusion(metrics.confusion, folder / "confusion.png")
    links = dict(links)
    links["confusion-matrix"] = str(create_markdown_artifact(
        f"# Confusion matrix (test set)\n\n![confusion matrix]({plots.png_data_uri(confusion)})",
        key="confusion-matrix", description="Rows: true class; columns: predicted class"))
    mistakes = train.most_wrong(metrics)
    gallery_md = "No test image was misclassified."
    if mistakes:
        items = [(subsets.root / r["file"], f"{CLASS_NAMES[r['label']]}, p(dog)={r['dog_probability']:.2f}")
                 for r in mistakes]
        gallery = plots.plot_gallery(items, folder / "most-wrong.png")
        gallery_md = f"![most confident mistakes]({plots.png_data_uri(gallery)})"
    links["most-wrong"] = str(create_markdown_artifact(
        f"# Most confident mistakes\n\nTrue label and predicted probability of dog.\n\n{gallery_md}",
        key="most-wrong", description=f"{len(mistakes)} test images the model got most wrong"))
    (tn, fp), (fn, tp) = metrics.confusion
    reused = {step: source for step, path in step_folders.items() if (source := reused_from(path))}
    reused_md = "".join(f"\n- `{step}`: reused from {source}" for step, source in reused.items())
    report = (
        f"# catsdogs run: {run_label(settings)}\n\n"
        f"| test accuracy | test loss | best epoch | test images |\n|---|---|---|---|\n"
        f"| {metrics.test_accuracy:.4f} | {metrics.test_loss:.4f} | {metrics.best_epoch} of {metrics.epochs} "
        f"| {metrics.test_images} |\n\n"
        f"| true \\ predicted | cat | dog |\n|---|---|---|\n| cat | {tn} | {fp} |\n| dog | {fn} | {tp} |\n\n"
        f"![training curves]({plots.png_data_uri(curves)})\n\nModel: `{metrics.model_path}`\n\n"
        + (f"Registered as `{registered}`; ask it: `catsdogs predict --workdir {settings.workdir} --model "
           f"{registered} photo.jpg` (or `catsdogs web`, which answers with the champion).\n\n" if registered else "")
        + f"This run's artifacts: {artifact_links(links)}.\n\n"
        + (f"Steps taken from earlier runs:{reused_md}\n" if reused else "Every step ran in this run.\n")
    )
    create_markdown_artifact(report, key="run-report",
                             description=f"test accuracy {metrics.test_accuracy:.4f} ({run_label(settings)})")
    return report


def artifact_links(ids: dict[str, str]) -> str:
    """Markdown links to this run's own artifacts (by id, not to a key's history across runs)."""
    ui = PREFECT_UI_URL.value()
    ordered = [key for key in REPORT_KEYS if key in ids] + sorted(set(ids) - set(REPORT_KEYS))
    return ", ".join(f"[{key}]({ui}/artifacts/artifact/{ids[key]})" if ui else f"`{key}`" for key in ordered)


REPORT_KEYS = ["test-metrics", "training-curves", "augmentation-grid", "confusion-matrix", "most-wrong",
               "model-summary", "dataset-summary", "training-history", "leaderboard", "accuracy-history"]
