"""A third-party backend built outside the package: ``build_plugin(root)`` writes a module with a `ChoiceLM`
subclass and the ``*.dist-info`` folder that declares it in the entry-point group ``autocog.backends``, as
``pip install`` would. Put ``root`` on ``sys.path`` / ``PYTHONPATH`` and ``autocog --backend mine`` finds it.

The backend is what the README says a new backend is: one file (``mine_pkg.py``), one registry line (the
entry point) and, in tests/backends/test_backend_plugin.py, one test subclass of the contract suite.
"""

import importlib.util
from pathlib import Path

NAME = "mine"
MODULE = "mine_pkg"
CLASS = "MineLM"

# A character-level model in numpy (like tests/support/toy.py): printable ASCII and the newline; next-token
# logits depend on the last two tokens through tables seeded by ``seed``, or by the integer in ``model_path``.
SOURCE = '''"""mine_pkg: an autocog backend from outside autocog (one file)."""

from pathlib import Path

import numpy as np

from autocog.core.normalization import log_softmax
from autocog.lm import ChoiceLM

ALPHABET = "".join(chr(i) for i in range(32, 127)) + "\\n"
BOS, EOS = len(ALPHABET), len(ALPHABET) + 1


class MineLM(ChoiceLM):
    def __init__(self, model_path=None, seed=0, n_ctx=512, **kwargs):
        super().__init__(**kwargs)
        if model_path is not None:
            seed = int(Path(model_path).read_text())
        rng = np.random.default_rng(seed)
        vocab = len(ALPHABET) + 2
        self.last = rng.normal(0, 2.0, (vocab, vocab))
        self.before = rng.normal(0, 1.0, (vocab, vocab))
        self._n_ctx = n_ctx
        self.calls = 0

    def tokenize(self, text, bos=False):
        ids = [ALPHABET.index(c) for c in text if c in ALPHABET]
        return [BOS] + ids if bos else ids

    def detokenize(self, tokens):
        return "".join(ALPHABET[t] for t in tokens if t < len(ALPHABET))

    def greedy_impl(self, tokens):
        self.calls += 1
        before = tokens[-2] if len(tokens) > 1 else BOS
        return log_softmax(self.last[tokens[-1]] + self.before[before])

    @property
    def eos_token_ids(self):
        return {EOS}

    @property
    def bos_token_id(self):
        return BOS

    @property
    def n_ctx(self):
        return self._n_ctx
'''


def build_plugin(root: Path) -> Path:
    """Write the plugin under ``root`` (the folder to put on the path) and return ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{MODULE}.py").write_text(SOURCE)
    info = root / f"{MODULE}-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {MODULE}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[autocog.backends]\n{NAME} = {MODULE}:{CLASS}\n")
    return root


def plugin_class(root: Path) -> type:
    """The plugin's class, imported from its file under a private name (no registry, no ``sys.path``): the
    in-process reference the runs through the registry are compared with."""
    spec = importlib.util.spec_from_file_location(f"_reference_{MODULE}", root / f"{MODULE}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, CLASS)


def plugin_program():
    """The `Program` the plugin tests run: a completion, then a choice."""
    from autocog.fta import END, Choose, Complete, Program, Text

    return Program(
        [
            Text("Question: {q}\nAnswer:"),
            Complete("a", stop="\n", max_tokens=6),
            Text("\nSure?"),
            Choose("sure", {" yes": END, " no": END}),
        ]
    )
