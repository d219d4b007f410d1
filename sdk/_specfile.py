"""Building a :class:`JobSpec` from layers (profile, file, arguments) with errors that name the field."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from anytune._base_model import looks_like_path
from anytune._spec import JobSpec
from anytune._specpaths import unknown_field_message
from anytune.errors import ConfigError

#: Keys a spec file may hold besides JobSpec's fields.
FILE_KEYS = ("provider", "profile", "settings")


def deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``, merging nested mappings (so a profile's hyperparameters survive
    an argument that sets only one of them)."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def build_spec(*layers: tuple[str, Mapping[str, Any]]) -> JobSpec:
    """Merge ``(source, fields)`` layers, lowest first, and validate.

    Raises:
        ConfigError: naming the first bad field and the layer it came from.
    """
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for source, fields in layers:
        cleaned = {k: v for k, v in fields.items() if v is not None}
        merged = deep_merge(merged, cleaned)
        for key in cleaned:
            origin[key] = source
    try:
        return JobSpec.model_validate(merged)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        msg = unknown_field_message(err["loc"]) if err["type"] == "extra_forbidden" else err["msg"]
        if err["type"] == "missing":
            msg = "is required"
        more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        top = str(err["loc"][0]) if err["loc"] else ""
        raise ConfigError(msg + more, field=loc or None, source=origin.get(top)) from exc


def load_spec_file(path: Path) -> dict[str, Any]:
    """Read a TOML or YAML spec file into a dict; relative paths resolve against its folder
    (:func:`relative_to_file`).

    Raises:
        ConfigError: unreadable file or syntax error, naming the file and line.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read spec file: {exc.strerror}", source=str(path)) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError("spec file is not UTF-8 text", source=str(path)) from exc
    data: Any
    if path.suffix.lower() == ".toml":
        from anytune._compat import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"invalid TOML: {exc}", source=str(path)) from exc
    elif path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            problem = getattr(exc, "problem", None) or str(exc)
            raise ConfigError(f"invalid YAML: {problem}", source=where) from exc
    else:
        raise ConfigError("spec files must end in .toml, .yaml or .yml", source=str(path))
    if not isinstance(data, dict):
        raise ConfigError("a spec file must hold a table/mapping of fields", source=str(path))
    return relative_to_file(data, path.parent.absolute())


def _under(folder: Path, value: Any) -> Path | None:
    """``folder / value`` for a relative path written as a string (None for anything else)."""
    if not isinstance(value, str) or not value or Path(value).expanduser().is_absolute():
        return None
    return folder / value


def _data_extension(name: str) -> bool:
    from anytune._data.sources import KINDS

    return os.path.splitext(name)[1].lower() in KINDS


def relative_to_file(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """``data`` with every relative path taken relative to ``folder`` (the spec file's), whichever
    folder anytune runs from.

    Data files, ``local.output_dir``, ``local.deepspeed_config`` (as a string: a table is the config
    itself) and ``local.accelerate_config`` are paths whatever they hold. ``base_model`` is a path
    when it exists under ``folder`` or is written as one (``./models/tiny``); otherwise it stays
    as given (``Qwen/Qwen2.5-0.5B`` is a Hub id). ``local.chat_template`` is a path when a file of
    that name is there (else it is the template itself). ``data.source`` is a path when it exists
    under ``folder`` or is written as one (``./train.csv``, or ends in a data file's extension);
    otherwise it stays as given: ``org/name`` is a Hub dataset id.
    """
    for key in ("training_file", "validation_file"):
        if (joined := _under(folder, data.get(key))) is not None:
            data[key] = str(joined)
    base = data.get("base_model")
    if (joined := _under(folder, base)) is not None and (os.path.exists(joined) or looks_like_path(str(base))):
        data["base_model"] = str(joined)
    section = data.get("data")
    if isinstance(section, dict):
        source = section.get("source")
        if (joined := _under(folder, source)) is not None and (
            os.path.exists(joined) or looks_like_path(str(source)) or _data_extension(str(source))
        ):
            section["source"] = str(joined)
    local = data.get("local")
    if isinstance(local, dict):
        for key in ("output_dir", "deepspeed_config", "accelerate_config"):
            if (joined := _under(folder, local.get(key))) is not None:
                local[key] = str(joined)
        template = local.get("chat_template")
        if (joined := _under(folder, template)) is not None and "{" not in str(template) and os.path.isfile(joined):
            local["chat_template"] = str(joined)
    return data
