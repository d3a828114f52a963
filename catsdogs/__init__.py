"""catsdogs: cat or dog? The library behind the pipeline: typed functions, no orchestration."""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
