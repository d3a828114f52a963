"""Thin Prefect tasks over the catsdogs library: retries, caching and artifacts, no logic of their own."""

import logging
import os

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
    # Prefect attaches its handlers to the extra loggers but leaves their level at the root's WARNING.
    logging.getLogger("catsdogs").setLevel(logging.INFO)
