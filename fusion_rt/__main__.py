"""`python -m fusion_rt` is `fusion-rt`."""

import sys

from fusion_rt.cli import main

sys.exit(main())
