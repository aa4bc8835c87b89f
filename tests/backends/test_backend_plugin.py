"""The scoring contract on a backend written outside the package and found by its entry point
(tests/support/plugin.py): what a new backend's one test subclass looks like."""

import sys

import pytest
from contract import ScoringContract
from plugin import NAME, build_plugin
from toy import brute_force

from autocog.lm.registry import Registry


class TestPluginBackend(ScoringContract):
    atol = 1e-12
    batch_atol = 1e-12
    hostile_refusable = ("tokenizes to nothing", "tokenize to the same tokens")  # an ASCII-only vocabulary

    @pytest.fixture(scope="class")
    @classmethod
    def lm(cls, tmp_path_factory):
        root = str(build_plugin(tmp_path_factory.mktemp("plugin")))
        sys.path.insert(0, root)
        try:
            yield Registry().load(NAME, seed=1)  # a fresh table reads the entry point on the path now
        finally:
            sys.path.remove(root)

    @pytest.fixture(scope="class")
    @classmethod
    def reference(cls, lm):
        return lambda prompt, choices: brute_force(lm, prompt, choices)

    def model_calls(self, lm):
        return lm.calls
