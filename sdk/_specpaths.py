"""Spec fields by dotted path: ``--set section.key=value`` and "did you mean" for misspelt fields.

Pure functions over :class:`~anytune._spec.JobSpec`'s model fields, so that the CLI reaches every
field without a spec file, and an unknown field is answered with the closest real one wherever
spec validation errors surface (a spec file, ``--set``, Python keyword arguments, profile defaults).
"""

from __future__ import annotations

import datetime
import difflib
import enum
import json
import types
from collections.abc import Iterable, Mapping, Sequence
from pathlib import PurePath
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from anytune._spec import JobSpec
from anytune.errors import ConfigError

__all__ = ["apply_sets", "parse_set", "parse_value", "suggest_field", "unknown_field_message"]

#: ``FineTuneJob.create``'s own keywords and the spec file's extra keys: ``--set`` cannot reach
#: them (they are not spec fields), and says which option does.
_NOT_FIELDS = {
    "provider": "--provider",
    "profile": "--profile",
    "settings": "a spec file's [settings] table or anytune.toml",
    "spec": "--file",
    "validate_data": "--no-validate-data",
    "store": "ANYTUNE_HOME",
    "idempotency_key": None,
}


def _unwrap(annotation: Any) -> list[Any]:
    """The alternatives of a union (``None`` left out); ``[annotation]`` for anything else."""
    if get_origin(annotation) in (Union, types.UnionType):
        return [a for a in get_args(annotation) if a is not type(None)]
    return [annotation]


def _step(annotation: Any, key: str | int) -> Any | None:
    """The annotation of ``key`` inside a value of type ``annotation`` (None: not known)."""
    for option in _unwrap(annotation):
        origin = get_origin(option)
        if isinstance(option, type) and issubclass(option, BaseModel):
            field = option.model_fields.get(str(key))
            if field is not None:
                return field.annotation
        elif origin in (dict, Mapping) and get_args(option):
            return get_args(option)[1]
        elif origin in (list, Sequence) and isinstance(key, int) and get_args(option):
            return get_args(option)[0]
    return None


def annotation_at(path: Sequence[str | int], model: type[BaseModel] = JobSpec) -> Any | None:
    """The type annotation of the field at ``path`` (``("hyperparameters", "epochs")``), or None."""
    annotation: Any = model
    for key in path:
        annotation = _step(annotation, key)
        if annotation is None:
            return None
    return annotation


def _text_only(annotation: Any) -> bool:
    """Whether every value the annotation takes is text (``str``, a path, a string enum or literal)."""
    options = _unwrap(annotation)
    if not options or annotation is Any:
        return False
    for option in options:
        if get_origin(option) is Literal:
            if not all(isinstance(a, str) for a in get_args(option)):
                return False
        elif not (isinstance(option, type) and issubclass(option, str | PurePath | enum.Enum)):
            return False
    return True


def _literal(text: str) -> tuple[bool, Any]:
    """(True, value) when ``text`` is a JSON or TOML literal; (False, None) otherwise."""
    try:
        return True, json.loads(text)
    except ValueError:
        pass
    from anytune._compat import tomllib

    try:
        parsed = tomllib.loads(f"v = {text}")
    except tomllib.TOMLDecodeError:
        return False, None
    value = parsed.get("v")
    # One value only (no smuggled second key), and no dates: "2024-01-01" stays text.
    if len(parsed) != 1 or isinstance(value, datetime.date | datetime.time):
        return False, None
    return True, value


def parse_value(text: str, annotation: Any = None) -> Any:
    """The value ``text`` stands for in ``--set KEY=TEXT``.

    A field that only takes text (a name, a path, a choice) gets ``text`` as it is, so ``tags.v=2``
    is the string ``"2"``. Anything else gets the JSON or TOML literal ``text`` spells (``10``,
    ``1e-4``, ``true``, ``[1, 2]``, ``{"r": 8}``, ``{r = 8}``), else ``text`` itself.
    """
    if annotation is not None and _text_only(annotation):
        return text
    ok, value = _literal(text.strip())
    return value if ok else text


def _split_path(key: str, item: str) -> list[str]:
    parts = key.strip().split(".")
    if not key.strip() or any(not p.strip() for p in parts):
        raise ConfigError(f"expected KEY=VALUE with a dotted field name, got {item!r}", source="--set")
    parts = [p.strip() for p in parts]
    if parts[0] in _NOT_FIELDS:
        use = _NOT_FIELDS[parts[0]]
        instead = f"; use {use}" if use else ""
        raise ConfigError(f"{parts[0]} is not a spec field{instead}", field=parts[0], source="--set")
    return parts


def parse_set(item: str) -> tuple[list[str], Any]:
    """``"section.key=value"`` as (path, value); see :func:`parse_value` for the value.

    Raises:
        ConfigError: no ``=``, an empty name or part of one, or a name that is not a spec field.
    """
    key, sep, text = item.partition("=")
    if not sep:
        raise ConfigError(f"expected KEY=VALUE, got {item!r}", source="--set")
    path = _split_path(key, item)
    return path, parse_value(text, annotation_at(path))


def apply_sets(items: Iterable[str], base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``base`` (a spec mapping) with every ``--set`` applied in order; later ones win.

    Raises:
        ConfigError: a malformed item, or one that goes through a field already set to a value
            that is not a table (``--set lora=8 --set lora.r=4``).
    """
    out: dict[str, Any] = _copy(base or {})
    for item in items:
        path, value = parse_set(item)
        node = out
        for depth, key in enumerate(path[:-1]):
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            elif not isinstance(child, dict):
                where = ".".join(path[: depth + 1])
                raise ConfigError(f"{where} is set to {child!r}, not a table", field=".".join(path), source="--set")
            node = child
        node[path[-1]] = value
    return out


def _copy(value: Mapping[str, Any]) -> dict[str, Any]:
    """Nested mappings copied to dicts (lists and values shared): sets never edit the caller's."""
    return {k: _copy(v) if isinstance(v, Mapping) else v for k, v in value.items()}


def leaf_paths(value: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Every dotted path to a non-table value in ``value`` (tables are walked, lists are leaves)."""
    paths: set[tuple[str, ...]] = set()
    for key, item in value.items():
        here = (*prefix, str(key))
        if isinstance(item, Mapping) and item:
            paths |= leaf_paths(item, here)
        else:
            paths.add(here)
    return paths


def _fields_of(annotation: Any) -> list[str]:
    for option in _unwrap(annotation):
        if isinstance(option, type) and issubclass(option, BaseModel):
            return list(option.model_fields)
    return []


def suggest_field(loc: Sequence[str | int], model: type[BaseModel] = JobSpec) -> str | None:
    """The field meant by the unknown one at ``loc``: a section one level down holding that name
    (``warmup_steps`` at the top -> ``hyperparameters.warmup_steps``), else a close spelling among
    its neighbours (``warmup_step`` -> ``warmup_steps``); None when nothing fits."""
    if not loc:
        return None
    name = str(loc[-1])
    parent = annotation_at(loc[:-1], model) if len(loc) > 1 else model
    fields = _fields_of(parent)
    # The exact name one level down first: "flavor" at the top is hf.flavor, not a look-alike.
    for field in fields:
        inner = annotation_at([*loc[:-1], field], model)
        if name in _fields_of(inner):
            return f"{field}.{name}"
    close = difflib.get_close_matches(name, fields, n=1, cutoff=0.6)
    return close[0] if close else None


def unknown_field_message(loc: Sequence[str | int], model: type[BaseModel] = JobSpec) -> str:
    """``"unknown field"``, with ``" (did you mean warmup_steps?)"`` when a field fits."""
    guess = suggest_field(loc, model)
    return f"unknown field (did you mean {guess}?)" if guess else "unknown field"
