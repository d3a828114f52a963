"""Batch scoring tasks: classify a folder of images and publish the answers."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from catsdogs import plots
from catsdogs.predict import Prediction, collect_inputs, open_predictor, predict_files


@task(name="classify")
def classify_images(paths: list[str], model: str, workdir: Path, batch_size: int = 32) -> list[Prediction]:
    """Classify every image under PATHS with the chosen model (best, latest, a name or a .keras file)."""
    predictor = open_predictor(model, workdir)
    predictions = list(predict_files(predictor, collect_inputs(paths), batch_size=batch_size))
    failed = sum(1 for p in predictions if p.error)
    get_run_logger().info("classified %d images with %s (%s); %d could not be read", len(predictions) - failed,
                          predictor.name, predictor.runtime, failed)
    create_table_artifact([p.model_dump() for p in predictions], key="predictions",
                          description="Label and probability per image, or why it could not be read")
    return predictions


@task(name="prediction-gallery")
def publish_gallery(predictions: list[Prediction], size: int = 12, seed: int = 0) -> str:
    """Show thumbnails of a random sample of the classified images with their answers."""
    good = [p for p in predictions if p.error is None]
    sample = random.Random(seed).sample(good, min(size, len(good)))
    if not sample:
        markdown = "# Predictions\n\nNo image could be classified."
    else:
        items = [(Path(p.path), f"{p.label} {p.probability:.2f}") for p in sample]
        with tempfile.TemporaryDirectory() as tmp:
            gallery = plots.plot_gallery(items, Path(tmp) / "gallery.png")
            markdown = f"# Predictions (sample of {len(sample)})\n\n![sample]({plots.png_data_uri(gallery)})"
    create_markdown_artifact(markdown, key="prediction-gallery", description="A sample of the answers")
    return markdown
