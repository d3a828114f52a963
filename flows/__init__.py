"""Prefect flows that wire the catsdogs tasks together."""

import tasks  # noqa: F401  (sets Prefect's defaults before Prefect is imported)
