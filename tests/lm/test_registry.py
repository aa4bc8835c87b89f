"""The one backend table (`autocog.lm.registry`): built-ins, `register_backend`, entry points, typed errors."""

import argparse
import importlib.metadata

import pytest
from plugin import CLASS, MODULE, NAME, build_plugin
from toy import ToyLM

import autocog.lm
from autocog.cli.base import UsageError, backend_options
from autocog.errors import BackendImportError, InvalidBackendError, UnknownBackendError
from autocog.lm import registry
from autocog.lm.registry import BACKENDS, ENTRY_POINT_GROUP, Registry


def entry_point(name, value):
    return importlib.metadata.EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)


class FakeEntryPoints:
    """An ``importlib.metadata.entry_points`` that lists ``points`` and counts its calls."""

    def __init__(self, *points):
        self.points, self.calls = list(points), 0

    def __call__(self, group):
        self.calls += 1
        assert group == ENTRY_POINT_GROUP
        return self.points


@pytest.fixture
def global_table(monkeypatch):
    """The global table, restored after the test (registrations made in it do not leak)."""
    monkeypatch.setattr(BACKENDS, "backends", dict(BACKENDS.backends))
    return BACKENDS


def test_the_built_ins_are_rows_of_the_one_table():
    assert {"tf", "llama", "openai"} <= set(BACKENDS)
    assert autocog.lm.BACKENDS is BACKENDS and autocog.lm.register_backend is registry.register_backend
    for backend, cls in (("tf", "TfLM"), ("llama", "LLaMa"), ("openai", "OpenAI")):
        assert registry.backend_class(backend) is getattr(autocog.lm, cls)
        assert BACKENDS[backend].origin == registry.BUILT_IN
    assert BACKENDS["openai"].model_key == "model" and BACKENDS["tf"].model_key == "model_path"


def test_unknown_backend_names_the_known_ones_and_how_to_register():
    with pytest.raises(UnknownBackendError) as error:
        autocog.lm.load("gpt")
    message = str(error.value)
    assert "'gpt'" in message and "tf, llama, openai" in message
    assert "register_backend" in message and ENTRY_POINT_GROUP in message
    assert isinstance(error.value, ValueError)
    with pytest.raises(AttributeError):
        autocog.lm.NoSuchBackendLM  # noqa: B018 - the lazy names are the table's built-in classes only


def test_register_a_class_and_load_it_by_name(global_table):
    autocog.lm.register_backend("toy", ToyLM, model_key="seed")
    lm = autocog.lm.load("toy", model=3, n_ctx=64)
    reference = ToyLM(seed=3, n_ctx=64)
    assert isinstance(lm, ToyLM) and lm.n_ctx == 64
    assert lm.choice_logprobs("go:", [" a", " b"]) == reference.choice_logprobs("go:", [" a", " b"])
    assert "toy" in global_table and registry.backend_keywords("toy") >= {"seed", "n_ctx"}
    with pytest.raises(TypeError, match="'colour'"):
        autocog.lm.load("toy", colour="red")
    with pytest.raises(TypeError, match="'colour'"):
        registry.check_keywords("toy", {"colour": "red"})


def test_register_a_string_target_imports_it_on_first_use(global_table):
    autocog.lm.register_backend("toy-lazy", "toy:ToyLM")
    assert registry.backend_class("toy-lazy") is ToyLM
    with pytest.raises(ValueError, match="already registered"):
        autocog.lm.register_backend("toy-lazy", "toy:TextOnlyLM")
    autocog.lm.register_backend("toy-lazy", "toy:ToyLM")  # the same target again: nothing changes
    autocog.lm.register_backend("tf", ToyLM, replace=True)
    assert registry.backend_class("tf") is ToyLM


def test_a_class_that_is_not_an_lm_is_refused():
    table = Registry(entry_points=FakeEntryPoints())
    with pytest.raises(InvalidBackendError, match="not a subclass of autocog.lm.LM"):
        table.register("dict", dict)
    table.register("odict", "collections:OrderedDict")
    with pytest.raises(InvalidBackendError, match="'odict'.*not a subclass of autocog.lm.LM"):
        table.backend_class("odict")
    table.register("nocolon", "toy.ToyLM")
    with pytest.raises(InvalidBackendError, match="'module:Class'"):
        table.backend_class("nocolon")
    with pytest.raises(ValueError, match="backend name"):
        table.register("a:b", ToyLM)


def test_a_plugin_that_fails_to_import_names_the_entry_point_and_the_cause():
    table = Registry(entry_points=FakeEntryPoints(entry_point("broken", "no_such_module_xyz:Broken")))
    assert "broken" in table  # listed without importing it
    with pytest.raises(BackendImportError) as error:
        table.load("broken")
    message = str(error.value)
    assert "entry point broken = no_such_module_xyz:Broken" in message and "ModuleNotFoundError" in message
    assert "no_such_module_xyz" in message and isinstance(error.value, ImportError)


def test_entry_points_are_read_once_and_never_replace_a_name():
    points = FakeEntryPoints(entry_point("toy", "toy:ToyLM"), entry_point("spy", "toy:SpyLM"))
    table = Registry(entry_points=points)
    table.register("spy", ToyLM)
    assert points.calls == 0  # registering reads no entry point
    with pytest.warns(UserWarning, match="entry point spy = toy:SpyLM .* is ignored"):
        assert list(table) == ["spy", "toy"]
    assert "toy" in table and table.backend_class("spy") is ToyLM and table.backend_class("toy") is ToyLM
    assert points.calls == 1


def test_a_dist_info_on_the_path_declares_a_backend(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(build_plugin(tmp_path)))
    table = Registry()  # a fresh table: the global one may have read the entry points before this test
    assert NAME in table
    assert table[NAME].target == f"{MODULE}:{CLASS}" and f"distribution {MODULE}" in table[NAME].origin
    lm = table.load(NAME, seed=2)
    assert type(lm).__name__ == CLASS and isinstance(lm, autocog.lm.ChoiceLM)
    assert table.keywords(NAME) >= {"model_path", "seed", "n_ctx"}


def test_model_options_go_to_the_backends_that_take_them(global_table):
    autocog.lm.register_backend("toy", ToyLM)
    args = argparse.Namespace(backend="toy", device="cpu", threads=2, base_url=None, api_key=None)
    assert backend_options(args) == {}  # --device and --threads: ignored where a backend has no such setting
    args.base_url = "http://127.0.0.1:1/v1"
    with pytest.raises(UsageError, match="--base-url is not an option of --backend toy: it is for --backend openai"):
        backend_options(args)
    assert backend_options(args, strict=False) == {}
    args.backend = "openai"
    assert backend_options(args) == {"base_url": "http://127.0.0.1:1/v1"}


def test_default_token_vocabulary_is_detokenize_as_utf8():
    lm = ToyLM()
    vocab = lm.token_vocabulary()
    assert vocab.native is None and vocab.size == lm.n_vocab == len(lm.greedy("a"))
    assert vocab.eos == sorted(lm.eos_token_ids)
    assert vocab.token_bytes() == [lm.detokenize([i]).encode("utf-8") for i in range(vocab.size)]
