"""The training flow: download, unzip, subsets, datasets, train, plot, evaluate, register, compare with the
champion, report."""

from __future__ import annotations

from prefect import flow

from catsdogs import runtime
from catsdogs.model import check_backbone_weights
from catsdogs.results import Metrics
from catsdogs.settings import RunChoices, Settings, settings_for_choices
from tasks.champion import compare_with_champion, settle_champion
from tasks.data import (
    build_datasets,
    download_archive,
    make_subsets,
    publish_dataset_summary,
    resolve_data_url,
    unzip_archive,
)
from tasks.runs import chosen_run_name, one_training_at_a_time, tag_run, train_run_name
from tasks.training import (
    evaluate_model,
    plot_augmentations,
    plot_curves,
    publish_leaderboard,
    publish_metrics,
    publish_report,
    publish_training,
    register_model,
    train_model,
)


@flow(name="catsdogs-train", flow_run_name=train_run_name, log_prints=False)
def train_flow(settings: Settings | None = None) -> Metrics:
    """Train and evaluate the cat/dog convnet that SETTINGS describes."""
    settings = settings or Settings()
    # Flow parameters hold the data URL with its credentials masked; the full one comes from a secret.
    settings = settings.model_copy(update={"data_url": resolve_data_url(settings)})
    check_backbone_weights(settings)  # before any work: efficientnet needs its base's weights
    runtime.configure(settings.threads, settings.onednn)  # before any task starts TensorFlow
    # precision auto becomes the policy this machine will train in, so the model's key names what it is
    settings = settings.model_copy(update={"precision": runtime.resolve_precision(str(settings.precision))})
    tag_run(settings)
    backoff = [settings.download_backoff_s * 2**i for i in range(settings.download_retries)]
    download = download_archive.with_options(retries=settings.download_retries, retry_delay_seconds=backoff or 0)
    with one_training_at_a_time():  # a scheduled run waits for the training that holds the cores
        archive = download(settings)
        images = unzip_archive(archive, settings)
        subsets = make_subsets(images, settings)
        arrays = build_datasets(subsets, settings)
        links = publish_dataset_summary(subsets, arrays)
        trained = train_model(arrays, settings)
        links |= publish_training(trained)
        curves, curve_links = plot_curves(trained)
        links |= curve_links
        if settings.spec.augments:
            links |= plot_augmentations(trained, arrays, settings)
        metrics = evaluate_model(trained, arrays, settings)
        links |= publish_metrics(metrics, settings)
        model_path = register_model(trained, metrics, archive, settings)
        comparison, comparison_link = compare_with_champion(model_path, subsets, settings)
        links |= comparison_link
        settle_champion(comparison, settings.workdir)
        links |= publish_leaderboard(settings)
        data_steps = {"download": archive.path.parent, "unzip": images, "subsets": subsets.root,
                      "datasets": arrays.root}
        publish_report(trained, metrics, subsets, curves, links, settings, data_steps)
        return metrics



@flow(name="catsdogs-train", flow_run_name=chosen_run_name, log_prints=False)
def deployed_train_flow(choices: RunChoices | None = None) -> Metrics:
    """The training flow as its deployments run it: CHOICES from the Run form (or the schedule) over the
    serving side's settings, which alone say where the run trains and which data it reads."""
    return train_flow.fn(settings_for_choices(choices))
