"""The typed errors, importable from here as before; they live in `autocog.errors`."""

from autocog.errors import *  # noqa: F403
from autocog.errors import __all__  # noqa: F401
