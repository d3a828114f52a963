"""`python -m flows run ...`: the `catsdogs` command without its script."""

import sys

from flows.cli import main

sys.exit(main())
