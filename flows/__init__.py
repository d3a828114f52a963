"""Prefect flows that wire the catsdogs tasks together."""

from tasks import use_prefect_defaults

use_prefect_defaults()  # before any flow module imports Prefect
