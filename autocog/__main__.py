"""``python -m autocog``: the command line of `autocog.cli` (see ``python -m autocog --help``)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
