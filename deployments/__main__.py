"""`python -m deployments run ...`: the `catsdogs` command without its script."""

import sys

from deployments.cli import main

sys.exit(main())
