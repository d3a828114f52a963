"""The training flow: download, unzip, subsets, datasets, train, plot, evaluate, register, compare with the
champion, report."""

from __future__ import annotations

from prefect import flow

from catsdogs import runtime
from catsdogs.model import check_before_work
from catsdogs.pipeline import Pipeline
from catsdogs.results import Metrics
from catsdogs.settings import RunChoices, Settings, settings_for_choices
from catsdogs.steps import DATASETS, EVALUATE, REGISTER, SUBSETS, TRAIN
from tasks.champion import compare_with_champion, settle_champion
from tasks.data import publish_dataset_summary, resolve_data_url
from tasks.runs import chosen_run_name, one_training_at_a_time, tag_run, train_run_name
from tasks.steps import step_task
from tasks.training import (
    plot_augmentations,
    plot_curves,
    publish_leaderboard,
    publish_metrics,
    publish_report,
    publish_training,
)


@flow(name="catsdogs-train", flow_run_name=train_run_name, log_prints=False)
def train_flow(settings: Settings | None = None) -> Metrics:
    """Train and evaluate the cat/dog convnet that SETTINGS describes."""
    settings = settings or Settings()
    # Flow parameters hold the data URL with its credentials masked; the full one comes from a secret.
    settings = settings.model_copy(update={"data_url": resolve_data_url(settings)})
    check_before_work(settings)  # weights, memory, precision: a clear line now, not a failure later
    runtime.configure(settings.threads, settings.onednn)  # before any task starts TensorFlow
    # precision auto becomes the policy this machine will train in, so the model's key names what it is
    settings = settings.model_copy(update={"precision": runtime.resolve_precision(str(settings.precision))})
    tag_run(settings)
    with one_training_at_a_time():  # a scheduled run waits for the training that holds the cores
        made = Pipeline(settings, run=step_task)  # each step a cached task, run when first needed
        subsets, arrays = made.get(SUBSETS), made.get(DATASETS)  # download, unzip, subsets, datasets
        links = publish_dataset_summary(subsets, arrays)
        trained = made.get(TRAIN)
        links |= publish_training(trained)
        curves, curve_links = plot_curves(trained)
        links |= curve_links
        if settings.spec.augments:
            links |= plot_augmentations(trained, arrays, settings)
        metrics = made.get(EVALUATE)
        links |= publish_metrics(metrics, settings)
        card = made.get(REGISTER)
        comparison, comparison_link = compare_with_champion(card.path, subsets, settings)
        links |= comparison_link
        settle_champion(comparison, settings.workdir)
        links |= publish_leaderboard(settings)
        publish_report(trained, metrics, subsets, curves, links, settings, made.folders, card.name)
        return metrics


@flow(name="catsdogs-train", flow_run_name=chosen_run_name, log_prints=False)
def deployed_train_flow(choices: RunChoices | None = None) -> Metrics:
    """The training flow as its deployments run it: CHOICES from the Run form (or the schedule) over the
    serving side's settings, which alone say where the run trains and which data it reads."""
    return train_flow.fn(settings_for_choices(choices))
