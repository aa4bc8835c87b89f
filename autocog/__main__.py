"""``python -m autocog``: the command line of `autocog.cli.app` (see ``python -m autocog --help``)."""

import sys

from autocog.cli.app import main

if __name__ == "__main__":
    sys.exit(main())
