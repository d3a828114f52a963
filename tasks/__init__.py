"""Thin Prefect tasks over the catsdogs library: retries, caching and artifacts, no logic of their own."""

import logging
import os
import sys

# Prefect reads these when it is imported, so entry points call use_prefect_defaults() before importing it.
PREFECT_DEFAULTS = {
    # A temporary local server takes about 20 s to start on a small machine: Prefect's default timeout is 20 s.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    # The server's telemetry locks its SQLite database when it cannot phone home (offline machines).
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # The library logs through `logging`; this sends its records to the Prefect run logs too.
    "PREFECT_LOGGING_EXTRA_LOGGERS": "catsdogs",
    # Library calls outside a flow run (prediction, tests) log locally; there is no run to send them to.
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
}


def use_prefect_defaults() -> None:
    """catsdogs' Prefect settings, where the environment does not set them; call before importing Prefect."""
    for name, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    extra = [name.strip() for name in os.environ["PREFECT_LOGGING_EXTRA_LOGGERS"].split(",") if name.strip()]
    if "catsdogs" not in extra:  # a user's own extra loggers, and the library's
        os.environ["PREFECT_LOGGING_EXTRA_LOGGERS"] = ",".join([*extra, "catsdogs"])
    send_library_logs_to_prefect()


def send_library_logs_to_prefect() -> None:
    """The library's INFO lines go to the run's log and terminal, however the flow was started or loaded."""
    library = logging.getLogger("catsdogs")
    # Prefect attaches its handlers to the extra loggers but leaves their level at the root's WARNING.
    library.setLevel(logging.INFO)
    if "prefect" in sys.modules:  # too late for the environment: a worker or `serve` loaded the flow from its file
        for handler in logging.getLogger("prefect.extra").handlers:
            if handler not in library.handlers:
                library.addHandler(handler)


# A deployment run imports the flow's file after Prefect has started, never running the entry points' setup.
use_prefect_defaults()
