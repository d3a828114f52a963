"""Thin Prefect tasks over the catsdogs library: retries, caching and artifacts, no logic of their own."""

import os

# Prefect reads these when it is imported, so they are set here, before any task module imports it.
# A temporary local server takes about 20 s to start on a small machine: Prefect's default timeout is 20 s.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
# The server's telemetry locks its SQLite database when it cannot phone home (offline machines).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# The library logs through `logging`; this sends its records to the Prefect run logs too.
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "catsdogs")
# Library calls outside a flow run (prediction, tests) log locally; there is no run to send them to.
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")

import logging  # noqa: E402

# Prefect attaches its handlers to the extra loggers but leaves their level at the root's WARNING.
logging.getLogger("catsdogs").setLevel(logging.INFO)
