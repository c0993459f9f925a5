"""``python -m astropt``: the command line (same as ``astropt``)."""

import sys

from astropt.cli import main

sys.exit(main())
