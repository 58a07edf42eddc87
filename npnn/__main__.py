"""``python -m npnn``: the command line (see ``npnn.training.cli``)."""

import sys

from .training.cli import main

sys.exit(main())
