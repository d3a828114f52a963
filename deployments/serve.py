"""Register the deployments with their schedules and run them from this one long-lived process.

    catsdogs serve            # or: python -m deployments.serve

Needs a persistent Prefect server (PREFECT_API_URL): the temporary one has no scheduler.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tasks import use_prefect_defaults

use_prefect_defaults()  # before Prefect is imported

from prefect import serve  # noqa: E402
from prefect.schedules import Cron  # noqa: E402

from catsdogs.settings import SettingsError, load_settings  # noqa: E402
from deployments.cli import check_workdir  # noqa: E402
from deployments.schedules import PREDICTION, PROMOTION, SWEEP, TIMEZONE, TRAINING  # noqa: E402
from flows.predict import predict_flow  # noqa: E402
from flows.promote import promote_flow  # noqa: E402
from flows.sweep import deployed_sweep_flow  # noqa: E402
from flows.train import deployed_train_flow  # noqa: E402
from tasks.runs import TRAINING_LIMIT  # noqa: E402


def build_deployments() -> list:
    """The training deployments on their cron schedules, and the on-demand prediction and sweep deployments."""
    found = [
        deployed_train_flow.to_deployment(name=spec["name"], description=spec["description"],
                                          schedules=[Cron(spec["cron"], timezone=TIMEZONE)],
                                          parameters=spec["parameters"], tags=["catsdogs"])
        for spec in TRAINING
    ]
    found.append(predict_flow.to_deployment(name=PREDICTION["name"], description=PREDICTION["description"],
                                            parameters=PREDICTION["parameters"], tags=["catsdogs"]))
    found.append(promote_flow.to_deployment(name=PROMOTION["name"], description=PROMOTION["description"],
                                            parameters=PROMOTION["parameters"], tags=["catsdogs"]))
    found.append(deployed_sweep_flow.to_deployment(name=SWEEP["name"], description=SWEEP["description"],
                                                   parameters=SWEEP["parameters"], tags=["catsdogs"]))
    return found


# Served deployments record their flows' entry points relative to the working directory: from the project's
# root they resolve wherever `catsdogs serve` was started.
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def create_training_limit() -> None:
    """The concurrency limit that makes a scheduled training wait while another one runs (one slot), unless
    someone made it already (with more slots, say)."""
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(TRAINING_LIMIT)
        except ObjectNotFound:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=TRAINING_LIMIT, limit=1))


def pin_serving_side() -> None:
    """Make the serving side's workdir and config file absolute, before serve changes into the project: runs
    then train and read where `catsdogs serve` was started (or where CATSDOGS_WORKDIR says), not in the clone."""
    if config := os.environ.get("CATSDOGS_CONFIG"):
        os.environ["CATSDOGS_CONFIG"] = str(Path(config).resolve())
    workdir = Path(load_settings().workdir).resolve()
    check_workdir(workdir)  # a file, or a folder it cannot write in: said now, not at the first scheduled run
    os.environ["CATSDOGS_WORKDIR"] = str(workdir)


NO_SERVER = ("catsdogs serve: needs a Prefect server that keeps running (a temporary one has no scheduler: the "
             "schedules would never fire); start one with `prefect server start` and set "
             "PREFECT_API_URL=http://127.0.0.1:4200/api (README, \"Scheduled deployments\")")


def main() -> int:
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:
        print(NO_SERVER, file=sys.stderr)
        return 2
    try:
        pin_serving_side()
    except SettingsError as err:
        print(f"catsdogs serve: {err}", file=sys.stderr)
        return 2
    os.chdir(PROJECT_ROOT)
    create_training_limit()
    serve(*build_deployments())
    return 0


if __name__ == "__main__":
    sys.exit(main())
