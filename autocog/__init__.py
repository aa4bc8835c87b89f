"""autocog: language-model backends behind one small class hierarchy, and prompting programs over them."""

__version__ = "0.1.0"

# Structured output (`autocog.structured`), imported on first use: ``autocog.generate(lm, output_type, prompt)``.
_STRUCTURED = ("generate", "Regex", "Lark", "GBNF")


def __getattr__(name):
    if name in _STRUCTURED:
        from autocog import structured

        return getattr(structured, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
