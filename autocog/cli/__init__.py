"""The ``autocog`` command line: `main` (the entry point) in `app`, one module per command group (`lm`: choose,
complete, chat, run; `eval`: eval, lm-eval, search; `gguf`: convert, quantize, perplexity, card; `bench`), and the
shared pieces in `base` (the parser, ``--backend``/``--model`` and `load_lm`)."""

from autocog.cli.app import main

__all__ = ["main"]
