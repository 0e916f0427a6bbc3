"""One small registry class: builders registered by name, looked up by name.

Every buildable thing in kdlab (teachers, students, datasets, divergences) lives in a
``Registry``. Unknown names and duplicate registrations are errors, and parameters are
checked against the builder's signature before anything is built, so a typo in a config
fails before any model is loaded.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import logging
import pkgutil
import typing
from collections.abc import Mapping as MappingABC
from collections.abc import Sequence as SequenceABC
from typing import Any, Callable, Dict, Generic, Iterator, List, Mapping, TypeVar, Union

from kdlab.errors import ConfigError

T = TypeVar("T", bound=Callable[..., Any])
log = logging.getLogger(__name__)


def _fits(value: Any, hint: Any) -> bool:
    """Whether a config value fits a simple annotation; hints it cannot read pass."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union:
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint in (dict, MappingABC) or origin in (dict, MappingABC):
        return isinstance(value, MappingABC)
    if hint in (list, tuple, SequenceABC) or origin in (list, tuple, SequenceABC):
        return isinstance(value, SequenceABC) and not isinstance(value, str)
    return True


def _hint_name(hint: Any) -> str:
    if typing.get_origin(hint) is None and hasattr(hint, "__name__"):
        return hint.__name__
    return str(hint).replace("typing.", "")


def check_types(where: str, params: Mapping[str, Any], hints: Mapping[str, Any]) -> None:
    """Raise ConfigError naming the first value of ``params`` that does not fit its type hint."""
    for key, value in params.items():
        if key in hints and not _fits(value, hints[key]):
            raise ConfigError(f"{where}: {key}={value!r} must be of type {_hint_name(hints[key])}")


def type_hints(obj: Any) -> Dict[str, Any]:
    """The resolved annotations of a function, or of a class's ``__init__``.

    An annotation naming something its module does not define at run time (a forward
    reference, a name imported only for type checkers) is left out, and only that one:
    the builder's other parameters are still checked. Any other failure (an annotation
    that is not a valid type) is a bug of the builder and is raised, never turned into a
    silent "no type check".
    """
    fn = obj.__init__ if inspect.isclass(obj) else obj
    try:
        return typing.get_type_hints(fn)
    except NameError:
        pass
    hints: Dict[str, Any] = {}
    namespace = getattr(fn, "__globals__", {})
    for key, annotation in getattr(fn, "__annotations__", {}).items():
        try:  # what get_type_hints does, one annotation at a time
            hints[key] = eval(annotation, namespace) if isinstance(annotation, str) else annotation
        except NameError as e:
            log.debug("%r: parameter %r not type-checked (%s)", obj, key, e)
    return hints


class Registry(Generic[T]):
    """A named collection of builders (classes or functions)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: Dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@registry.register("name")``. Registering a name twice is an error."""

        def deco(obj: T) -> T:
            if name in self._entries:
                raise ValueError(
                    f"{self.kind} {name!r} is already registered (by {self._entries[name]!r}); "
                    "choose another name"
                )
            self._entries[name] = obj
            return obj

        return deco

    def names(self) -> List[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> T:
        """Return the builder registered as ``name``; an unknown name lists the valid ones."""
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(str(name), self._entries, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"unknown {self.kind} {name!r}. Valid {self.kind} names: "
                f"{', '.join(self.names())}.{hint}"
            ) from None

    def check_params(self, name: str, params: Mapping[str, Any]) -> None:
        """Raise ConfigError if ``params`` do not fit the signature of builder ``name``: an
        unknown parameter, or a value whose type does not fit a simple annotation (bool,
        int, float, str, mappings, sequences, ``Optional`` of these)."""
        builder = self.get(name)
        sig = inspect.signature(builder)
        accepted = [
            p.name
            for p in sig.parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
        if not takes_kwargs:
            unknown = sorted(set(params) - set(accepted))
            if unknown:
                raise ConfigError(
                    f"{self.kind} {name!r} has no parameter(s) {', '.join(map(repr, unknown))}. "
                    f"Valid parameters: {', '.join(accepted) or '(none)'}."
                )
        check_types(f"{self.kind} {name!r}", params, type_hints(builder))

    def build(self, name: str, /, *args: Any, **params: Any) -> Any:
        """Check ``params`` against the builder's signature, then call it."""
        self.check_params(name, params)
        return self.get(name)(*args, **params)


def discover(package: str) -> List[str]:
    """Import every public module of ``package`` (a file ``name.py`` or a folder, names
    without a leading underscore), so that what they register is there: a new divergence
    or method is one new file, found without editing a list of imports."""
    pkg = importlib.import_module(package)
    names = [m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_")]
    for name in sorted(names):
        importlib.import_module(f"{package}.{name}")
    return sorted(names)
