"""autocog: language-model backends behind one small class hierarchy, and prompting programs over them."""

__version__ = "0.1.0"
