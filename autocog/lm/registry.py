"""The one table of backends: names to `LM` classes, read by `load`, the CLI's ``--backend`` and the lm-eval
adapter's ``backend=``.

A backend is registered in one of two ways (the built-in ``tf``, ``llama`` and ``openai`` the first way):

* in code: ``register_backend("mine", MineLM)`` or ``register_backend("mine", "mine_pkg:MineLM")`` (imported
  on first use); ``model_key`` is the keyword that ``load(..., model=X)`` passes X as (default ``model_path``);
* by a package, with an entry point in the group ``autocog.backends`` (name = the backend's name, value =
  ``module:Class``), read once, on the first lookup. In ``pyproject.toml``:
  ``[project.entry-points."autocog.backends"]`` then ``mine = "mine_pkg:MineLM"``.

The first registration of a name wins: an entry point never replaces a backend registered in code.

>>> lm = load("llama")                                      # the embedded SmolLM2 GGUF    # doctest: +SKIP
>>> lm = load("tf", model="path/to/hf_dir", device="cpu")                                   # doctest: +SKIP
>>> lm = load("openai", model="m", base_url="http://127.0.0.1:8000/v1")                     # doctest: +SKIP
>>> "llama" in BACKENDS, BACKENDS["openai"].model_key
(True, 'model')
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import threading
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

from autocog.errors import BackendImportError, InvalidBackendError, UnknownBackendError
from autocog.lm.base import LM

ENTRY_POINT_GROUP = "autocog.backends"
BUILT_IN = "built in"

__all__ = [
    "BACKENDS",
    "ENTRY_POINT_GROUP",
    "Backend",
    "Registry",
    "backend_class",
    "backend_keywords",
    "check_keywords",
    "load",
    "named_keywords",
    "register_backend",
]


@dataclass(frozen=True)
class Backend:
    """One row of the table. ``target``: the class, or ``"module:Class"`` imported by `resolve`;
    ``model_key``: the keyword ``load``'s ``model=`` becomes; ``origin``: where it was declared (for errors)."""

    name: str
    target: Union[type, str]
    model_key: str = "model_path"
    origin: str = "register_backend"

    @property
    def class_name(self) -> str:
        """The class's name, read without importing it."""
        return self.target.__name__ if isinstance(self.target, type) else self.target.rpartition(":")[2]

    def resolve(self) -> type[LM]:
        """The class, imported when the target is a string; typed errors for a bad target or a non-`LM`."""
        cls = self.target if isinstance(self.target, type) else self._import()
        if not (isinstance(cls, type) and issubclass(cls, LM)):
            raise InvalidBackendError(
                f"backend {self.name!r} ({self.origin}) is {cls!r}, not a subclass of autocog.lm.LM"
            )
        return cls

    def _import(self) -> Any:
        assert isinstance(self.target, str)
        module, sep, attribute = self.target.partition(":")
        if not (module and sep and attribute):
            raise InvalidBackendError(
                f"backend {self.name!r} ({self.origin}): expected 'module:Class', got {self.target!r}"
            )
        try:
            value: Any = importlib.import_module(module)
            for part in attribute.split("."):
                value = getattr(value, part)
        except Exception as error:
            raise BackendImportError(
                f"backend {self.name!r} ({self.origin}) cannot be imported: {type(error).__name__}: {error}"
            ) from error
        return value


class Registry(Mapping):
    """``name -> Backend``. Entry points of ``group`` join on the first lookup (``in``, ``[]``, iteration), once.

    `backend` (and `backend_class`, `load`) raise `UnknownBackendError` for a name not in the table; the
    Mapping interface itself keeps Python's KeyError.
    """

    def __init__(
        self,
        group: str = ENTRY_POINT_GROUP,
        entry_points: Callable[..., Any] = importlib.metadata.entry_points,
    ):
        self.group = group
        self.entry_points = entry_points
        self.backends: dict[str, Backend] = {}
        self.discovered = False
        self.lock = threading.RLock()

    # --- registration ------------------------------------------------------------------------------------
    def register(
        self,
        name: str,
        target: Union[type, str],
        model_key: str = "model_path",
        replace: bool = False,
        origin: str = "register_backend",
    ) -> Backend:
        """Add ``name``; a name already taken by another target is a ValueError unless ``replace=True``."""
        if not isinstance(name, str) or not name or ":" in name or "," in name or "=" in name:
            raise ValueError(f"a backend name is a non-empty string without ':', ',' or '=', got {name!r}")
        if not isinstance(target, (type, str)):
            raise InvalidBackendError(f"backend {name!r}: expected a class or 'module:Class', got {target!r}")
        if isinstance(target, type):
            Backend(name, target).resolve()  # an error now rather than at the first load
        entry = Backend(name, target, model_key, origin)
        with self.lock:
            old = self.backends.get(name)
            if old is not None and old.target != target and not replace:
                raise ValueError(
                    f"backend {name!r} is already registered ({old.origin}: {old.target!r}); pass replace=True"
                )
            self.backends[name] = entry
        return entry

    def discover(self) -> None:
        """Read the entry points of ``group`` (once; later calls do nothing)."""
        with self.lock:
            if self.discovered:
                return
            self.discovered = True
            for point in self.entry_points(group=self.group):
                dist = getattr(point, "dist", None)
                origin = f"entry point {point.name} = {point.value} in group {self.group}" + (
                    f", distribution {dist.name}" if dist is not None else ""
                )
                old = self.backends.get(point.name)
                if old is None:
                    self.register(point.name, point.value, origin=origin)
                elif old.target != point.value:
                    warnings.warn(f"{origin} is ignored: {point.name!r} is already {old.origin}", stacklevel=2)

    # --- lookups -------------------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> Backend:
        self.discover()
        return self.backends[name]

    def __iter__(self) -> Iterator[str]:
        self.discover()
        return iter(list(self.backends))

    def __len__(self) -> int:
        self.discover()
        return len(self.backends)

    def backend(self, name: str) -> Backend:
        """The row of ``name``, or an `UnknownBackendError` that lists the known names and how to add one."""
        if name in self:
            return self[name]
        raise UnknownBackendError(
            f"unknown backend {name!r}: expected one of {', '.join(self)} (register one with "
            f"autocog.lm.register_backend(name, 'module:Class') or an entry point in the group {self.group!r})"
        )

    def backend_class(self, name: str) -> type[LM]:
        """The class registered under ``name`` (imported on first use)."""
        return self.backend(name).resolve()

    def builtin(self, class_name: str) -> Optional[Backend]:
        """The built-in row whose class is called ``class_name`` (no import, no entry-point scan)."""
        return next(
            (b for b in self.backends.values() if b.origin == BUILT_IN and b.class_name == class_name),
            None,
        )

    def split_prefix(self, text: str) -> tuple[Optional[str], str]:
        """``"llama:m.gguf"`` -> ``("llama", "m.gguf")`` when the part before the first colon is a registered
        name and something follows it; else ``(None, text)`` (``"http://x"`` stays whole)."""
        prefix, sep, rest = text.partition(":")
        if sep and rest and prefix in self:
            return prefix, rest
        return None, text

    # --- building ------------------------------------------------------------------------------------------
    def load(self, backend: str, model: Optional[str] = None, **kwargs: Any) -> LM:
        """An `LM` of the named backend; see the module-level `load`."""
        row = self.backend(backend)
        cls = row.resolve()
        create = getattr(cls, "create", None)
        model_kwargs: dict[str, Any] = {} if model is None else {row.model_key: model}
        if create is None:  # no ``create``: every keyword goes to the constructor
            return cls(**model_kwargs, **kwargs)
        create_params, init_params = named_keywords(create), named_keywords(cls.__init__)
        open_create = _takes_any_keyword(create)
        init_kwargs: dict[str, Any] = {}
        for key, value in kwargs.items():
            if key in create_params or (open_create and key not in init_params):
                model_kwargs[key] = value
            elif key in init_params:
                init_kwargs[key] = value
            else:
                raise TypeError(f"backend {backend!r} takes no argument {key!r}")
        return cls(**create(**model_kwargs), **init_kwargs)

    def keywords(self, backend: str) -> set[str]:
        """The keywords ``load(backend, ...)`` takes by name: those of ``create`` and of the constructor, and
        the ones the class lists in `LM.option_names` (what its ``create`` passes on to its library)."""
        cls = self.backend_class(backend)
        create = getattr(cls, "create", None)
        known = named_keywords(cls.__init__) | (named_keywords(create) if create is not None else set())
        return known | set(cls.option_names() or ())

    def check_keywords(self, backend: str, kwargs: Mapping[str, Any]) -> None:
        """A TypeError naming the keywords of ``kwargs`` that ``backend`` does not take, when it can tell:
        a backend whose ``create`` takes ``**kwargs`` without listing them in `LM.option_names` passes
        anything on (its library then decides)."""
        cls = self.backend_class(backend)
        create = getattr(cls, "create", None)
        if not kwargs or (create is not None and _takes_any_keyword(create) and cls.option_names() is None):
            return
        known = self.keywords(backend) - {"model", "tokenizer", self.backend(backend).model_key}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(
                f"backend {backend!r} takes no argument {', '.join(map(repr, unknown))} "
                f"(known: {', '.join(sorted(known))})"
            )


def named_keywords(fn: Any) -> set[str]:
    """The parameters of ``fn`` that a keyword argument can name (``self``/``cls`` and ``*args/**kwargs`` left out)."""
    return {
        name
        for name, p in inspect.signature(fn).parameters.items()
        if name not in ("self", "cls") and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def _takes_any_keyword(fn: Any) -> bool:
    return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(fn).parameters.values())


BACKENDS = Registry()
BACKENDS.register("tf", "autocog.lm.tf:TfLM", origin=BUILT_IN)
BACKENDS.register("llama", "autocog.lm.llama:LLaMa", origin=BUILT_IN)
BACKENDS.register("openai", "autocog.lm.openai:OpenAI", model_key="model", origin=BUILT_IN)


def register_backend(
    name: str, target: Union[type, str], model_key: str = "model_path", replace: bool = False
) -> Backend:
    """Register an `LM` subclass (or ``"module:Class"``, imported on first use) under ``name``, for `load`,
    ``autocog --backend NAME`` and lm-eval's ``model_args="backend=NAME"``. ``model_key``: the keyword that
    ``model=`` becomes (``model_path`` by default).

    >>> register_backend("mine", "mine_pkg:MineLM")                                         # doctest: +SKIP
    >>> load("mine", model="weights.bin")      # MineLM(**MineLM.create(model_path="weights.bin"))  # doctest: +SKIP
    """
    return BACKENDS.register(name, target, model_key=model_key, replace=replace)


def backend_class(backend: str) -> type[LM]:
    """The class registered under ``backend``; an `UnknownBackendError` names the known backends."""
    return BACKENDS.backend_class(backend)


def backend_keywords(backend: str) -> set[str]:
    """The keywords `load` takes by name for ``backend`` (see `Registry.keywords`)."""
    return BACKENDS.keywords(backend)


def check_keywords(backend: str, kwargs: Mapping[str, Any]) -> None:
    """A TypeError for keywords ``backend`` does not take (see `Registry.check_keywords`)."""
    BACKENDS.check_keywords(backend, kwargs)


def load(backend: str, model: Optional[str] = None, **kwargs: Any) -> LM:
    """An `LM` of the named backend. ``model``: a path (``tf``: a transformers directory or a GGUF file;
    ``llama``: a GGUF file; both default to the embedded SmolLM2) or a model name (``openai``), passed as the
    backend's ``model_key``.

    Keyword arguments go to the class's constructor when it takes them (``completion_kwargs``,
    ``n_seq_max``, ``concurrency``...), else to its ``create`` (``device``, ``dtype``, ``n_ctx``,
    ``base_url``...); a class without ``create`` gets them all in its constructor. An argument neither takes
    is a TypeError that names it.
    """
    return BACKENDS.load(backend, model, **kwargs)
