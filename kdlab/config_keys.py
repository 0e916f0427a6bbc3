"""Every key of a composed config must be declared by the schema (kdlab/config.py).

OmegaConf's struct flag rejects a misspelt key at composition (``trainer.lerning_rate=1``,
or one in a YAML file), but Hydra lifts that flag for an addition: ``+trainer.lerning_rate=1``
and ``++trainer.lerning_rate=1`` (the form Hydra itself suggests for an unknown key) add the
key to the typed node, and nothing would ever read it. This check walks the composed config
against the dataclasses of the schema instead, so such a key stops the run before any work.
Free-form nodes (``Dict[str, Any]``: ``*.params``, ``teacher.overrides``,
``student.overrides``) take any key; ``objective.terms`` takes any name, each entry a
``TermConfig`` checked in turn.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import typing
from typing import Any, Dict, Optional, Union

from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from kdlab.config import Config
from kdlab.errors import ConfigError

# Keys a composed config may hold beyond the schema: Hydra's own node, present when the
# config is composed with ``return_hydra_config=True``.
ROOT_EXTRAS = ("hydra",)


@functools.cache
def _fields(schema: type) -> Dict[str, Any]:
    """Field name -> resolved type hint (config.py uses postponed annotations)."""
    hints = typing.get_type_hints(schema)
    return {f.name: hints[f.name] for f in dataclasses.fields(schema)}


def _without_optional(hint: Any) -> Any:
    if typing.get_origin(hint) is Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _unknown(path: str, key: str, valid: list) -> ConfigError:
    """The one message of an unknown key: where, a close valid key, every valid key there."""
    full = f"{path}.{key}" if path else key
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    where = f"of {path}" if path else "at the top level"
    return ConfigError(f"unknown config key '{full}'{hint}: not in the schema (kdlab/config.py), "
                       f"nothing would read it; valid keys {where}: {', '.join(valid)}")


def _check(value: Any, hint: Any, path: str) -> None:
    hint = _without_optional(hint)
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        fields = _fields(hint)
        for key, item in value.items():
            if key not in fields:
                if not path and key in ROOT_EXTRAS:
                    continue
                raise _unknown(path, str(key), list(fields))
            _check(item, fields[key], f"{path}.{key}" if path else str(key))
    elif origin in (dict, Dict) and isinstance(value, dict):
        item_hint = typing.get_args(hint)[1] if typing.get_args(hint) else Any
        for key, item in value.items():
            _check(item, item_hint, f"{path}.{key}")
    elif origin in (list, typing.List) and isinstance(value, list):
        item_hint = typing.get_args(hint)[0] if typing.get_args(hint) else Any
        for i, item in enumerate(value):
            _check(item, item_hint, f"{path}[{i}]")
    # anything else (Any, a scalar): free-form or typed by OmegaConf already


def check_known_keys(cfg: Union[DictConfig, ListConfig, Any], schema: type = Config) -> None:
    """Raise ``ConfigError`` naming the first key of ``cfg`` that ``schema`` does not declare,
    with the valid keys at that place."""
    # Unresolved: interpolations (``${hydra:...}``) need not resolve to check the keys.
    container = OmegaConf.to_container(cfg, resolve=False) if OmegaConf.is_config(cfg) else cfg
    _check(container, schema, "")


def composition_key_error(error: BaseException) -> Optional[ConfigError]:
    """The ``ConfigError`` of an unknown key or of a value outside a closed choice
    (``kdlab.choices``) behind a Hydra composition error (a plain override
    ``trainer.lerning_rate=1`` or ``hardware.device=cdua``, a key in a YAML file), or None
    for any other error."""
    if not isinstance(error, ConfigCompositionException):
        return None
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        schema = getattr(error, "object_type", None)
        key = getattr(error, "key", None)
        if isinstance(error, (ConfigKeyError, ConfigAttributeError)) and dataclasses.is_dataclass(schema) \
                and isinstance(key, str) and key not in _fields(schema):
            full_key = str(getattr(error, "full_key", None) or key)
            path = full_key[: -len(key)].rstrip(".") if full_key.endswith(key) else ""
            return _unknown(path, key, list(_fields(schema)))
        choice = _fields(schema).get(key) if dataclasses.is_dataclass(schema) and isinstance(key, str) else None
        if isinstance(error, ValidationError) and isinstance(choice, type) and issubclass(choice, enum.Enum):
            full_key = str(getattr(error, "full_key", None) or key)
            valid = ", ".join(m.name for m in choice)
            return ConfigError(f"{full_key}={getattr(error, 'value', '?')!r}: valid values are {valid}")
        error = error.__cause__ or error.__context__
    return None
