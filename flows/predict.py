"""The batch prediction flow: classify images, publish a table and a gallery."""

from __future__ import annotations

from prefect import flow

from catsdogs.predict import Prediction
from catsdogs.settings import load_settings
from tasks.predict import classify_images, publish_gallery
from tasks.runs import score_run_name


@flow(name="catsdogs-predict", flow_run_name=score_run_name)
def predict_flow(paths: list[str], model: str = "champion", gallery_size: int = 12) -> list[Prediction]:
    """Classify the images under PATHS (relative ones are under the workdir) as cat or dog with a registered
    model; the workdir is the serving side's (CATSDOGS_WORKDIR where it runs), never the form's."""
    workdir = load_settings().workdir
    predictions = classify_images([str(workdir / path) for path in paths], model, workdir)
    publish_gallery(predictions, gallery_size)
    return predictions
