"""``python -m npnn``: the command line (see ``npnn.cli``)."""

import sys

from .cli import main

sys.exit(main())
