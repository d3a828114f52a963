"""The batch prediction flow: classify images, publish a table and a gallery."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from catsdogs.predict import Prediction
from tasks.predict import classify_images, publish_gallery
from tasks.runs import score_run_name


@flow(name="catsdogs-predict", flow_run_name=score_run_name)
def predict_flow(paths: list[str], model: str = "champion", workdir: Path = Path("catsdogs-work"),
                 gallery_size: int = 12) -> list[Prediction]:
    """Classify the images under PATHS as cat or dog with a registered model."""
    predictions = classify_images(paths, model, workdir)
    publish_gallery(predictions, gallery_size)
    return predictions
