"""The shapes datasets come in, recognised row by row and converted into the canonical examples.

A *row* is one record of a source (a JSONL line, a CSV row, a Parquet row...) as a mapping of column
names to values. Its *shape* is one of :data:`SHAPES`, tried in that order (first match wins):

=================== ====== =====================================================================
shape               method columns
=================== ====== =====================================================================
``chat``            sft    ``messages`` (OpenAI chat; TRL's conversational format is the same)
``preference``      dpo    ``input`` / ``preferred_output`` / ``non_preferred_output`` (OpenAI DPO)
``trl_preference``  dpo    ``chosen`` / ``rejected``, with ``prompt`` (explicit) or without
                           (implicit: full conversations sharing the prompt as a prefix)
``sharegpt``        sft    ``conversations``: a list of ``{"from", "value"}``
``alpaca``          sft    ``instruction`` / ``input`` (optional) / ``output``
``prompt_completion`` sft  ``prompt`` / ``completion``: both text, or both message lists (TRL)
=================== ====== =====================================================================

A column whose value is null counts as absent (Arrow-backed sources, Parquet and ``datasets``, give
every row every column of the table and fill the missing ones with null).

SFT shapes become OpenAI chat examples (``{"messages": [...]}``), preference shapes OpenAI DPO
examples (``{"input": {"messages": [...]}, "preferred_output": [...], "non_preferred_output":
[...]}``): the formats :func:`anytune._data.validate.validate_file` checks. The canonical shapes
(``chat``, ``preference``) pass through with their own keys; the checks on their content are the
validator's. Other columns are dropped (:meth:`RowConverter.used_columns` says which are read).

Any columns can be read through a mapping (``columns={"prompt": "question"}``: the shape's field ←
the row's column) or templates (:class:`RowConverter`). Everything here is pure: no I/O.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, cast, get_args

from anytune.errors import ConfigError

__all__ = [
    "SHAPES",
    "RowConverter",
    "RowError",
    "Shape",
    "ShapeInfo",
    "describe_mismatch",
    "detect_shape",
    "is_canonical",
    "parse_columns",
    "split_text_template",
    "template_fields",
]

Shape = Literal["chat", "prompt_completion", "preference", "trl_preference", "alpaca", "sharegpt"]
FORMATS: Final = ("auto", *get_args(Shape))


class RowError(Exception):
    """One row cannot be converted. The caller adds where the row is.

    Attributes:
        message: what is wrong, naming the field and, for a missing one, the row's columns.
        field: the column or path inside the row (``"conversations[2].from"``), when there is one.
        code: stable snake_case code (``"missing_column"``, ``"mixed_shapes"``, ``"bad_value"`` ...).
    """

    def __init__(self, message: str, *, field: str | None = None, code: str = "bad_value") -> None:
        self.message = message
        self.field = field
        self.code = code
        super().__init__(message)


class UnknownShapeError(RowError):
    """The first row matches no known shape (``format="auto"``): the whole source is unreadable."""


# -- small helpers -------------------------------------------------------------------------------


def _present(row: Mapping[str, Any], key: str) -> bool:
    return row.get(key) is not None


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    names = {dict: "an object", list: "a list", str: "text", bool: "a boolean", int: "a number", float: "a number"}
    return names.get(type(value), type(value).__name__)


def _columns(row: Mapping[str, Any]) -> str:
    return ", ".join(str(k) for k in row) or "none"


def _missing(row: Mapping[str, Any], key: str, what: str = "column") -> RowError:
    return RowError(f"{what} {key!r} is missing; this row's columns: {_columns(row)}", field=key, code="missing_column")


def _text(row: Mapping[str, Any], key: str) -> str:
    value = row.get(key)
    if value is None:
        raise _missing(row, key)
    if not isinstance(value, str):
        raise RowError(f"{key} must be text, got {_type_name(value)}", field=key)
    return value


def _clean(value: Any) -> Any:
    """An object with its null-valued keys dropped (Arrow fills the keys a struct lacks with null)."""
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if v is not None}
    return value


def _message_list(value: Any, field: str) -> list[Any]:
    """A list of messages as given, each object without its null keys; the validator checks the rest."""
    if not isinstance(value, list):
        raise RowError(f"{field} must be a list of messages, got {_type_name(value)}", field=field)
    return [_clean(m) for m in value]


def _with_system(messages: list[Any], system: str | None) -> list[Any]:
    """``system`` first, unless the conversation opens with a system (or developer) message of its own."""
    if system is None:
        return messages
    first = messages[0] if messages else None
    if isinstance(first, dict) and first.get("role") in ("system", "developer"):
        return messages
    return [{"role": "system", "content": system}, *messages]


def _keep(row: Mapping[str, Any], example: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    for key in keys:
        if _present(row, key):
            example[key] = row[key]
    return example


# -- the shapes ----------------------------------------------------------------------------------

_CHAT_EXTRAS: Final = ("tools", "parallel_tool_calls", "functions", "metadata")


def _chat(row: Mapping[str, Any], system: str | None) -> dict[str, Any]:
    messages = row["messages"]
    if isinstance(messages, list):
        messages = _with_system([_clean(m) for m in messages], system)
    return _keep(row, {"messages": messages}, _CHAT_EXTRAS)


def _preference(row: Mapping[str, Any], system: str | None) -> dict[str, Any]:
    example: dict[str, Any] = {}
    inp = row.get("input")
    if isinstance(inp, dict):
        inp = _clean(inp)
        if isinstance(inp.get("messages"), list):
            inp["messages"] = _with_system([_clean(m) for m in inp["messages"]], system)
    if inp is not None:
        example["input"] = inp
    for key in ("preferred_output", "non_preferred_output"):
        value = row.get(key)
        if value is not None:
            example[key] = [_clean(m) for m in value] if isinstance(value, list) else value
    return _keep(row, example, ("metadata",))


def _prompt_completion(row: Mapping[str, Any], system: str | None) -> dict[str, Any]:
    prompt, completion = row.get("prompt"), row.get("completion")
    for key, value in (("prompt", prompt), ("completion", completion)):
        if value is None:
            raise _missing(row, key)
    if isinstance(prompt, list) and isinstance(completion, list):
        messages = _message_list(prompt, "prompt") + _message_list(completion, "completion")
    elif isinstance(prompt, str) and isinstance(completion, str):
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
    else:
        bad = "completion" if isinstance(prompt, str | list) else "prompt"
        raise RowError(
            f"prompt and completion must both be text or both be message lists; got prompt as "
            f"{_type_name(prompt)} and completion as {_type_name(completion)}",
            field=bad,
        )
    return _keep(row, {"messages": _with_system(messages, system)}, ("metadata",))


def _output(value: Any, field: str) -> list[Any]:
    """A chosen or rejected answer as preference output: text becomes one assistant message."""
    if isinstance(value, str):
        return [{"role": "assistant", "content": value}]
    return _message_list(value, field)


def _common_prefix(a: list[Any], b: list[Any]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _trl_preference(row: Mapping[str, Any], system: str | None) -> dict[str, Any]:
    chosen, rejected = row["chosen"], row["rejected"]
    prompt = row.get("prompt")
    if prompt is not None:  # explicit prompt
        if isinstance(prompt, str):
            messages: list[Any] = [{"role": "user", "content": prompt}]
        else:
            messages = _message_list(prompt, "prompt")
        preferred, rejected_out = _output(chosen, "chosen"), _output(rejected, "rejected")
    else:  # implicit prompt: two whole conversations that share it
        if not isinstance(chosen, list) or not isinstance(rejected, list):
            raise RowError(
                "chosen and rejected are text and there is no prompt column, so the prompt cannot be told "
                f"apart; add a prompt column or map one (--columns prompt=COL); this row's columns: {_columns(row)}",
                field="prompt",
                code="missing_column",
            )
        chosen, rejected = _message_list(chosen, "chosen"), _message_list(rejected, "rejected")
        k = _common_prefix(chosen, rejected)
        if k == 0:
            raise RowError(
                "chosen and rejected share no prompt: their first messages differ (implicit-prompt rows hold "
                "the same conversation up to the answers)",
                field="chosen[0]",
            )
        if k == len(chosen) or k == len(rejected):
            raise RowError("chosen and rejected do not differ after their shared prompt", field="rejected")
        messages, preferred, rejected_out = chosen[:k], chosen[k:], rejected[k:]
    example = {
        "input": {"messages": _with_system(messages, system)},
        "preferred_output": preferred,
        "non_preferred_output": rejected_out,
    }
    return _keep(row, example, ("metadata",))


def _alpaca(row: Mapping[str, Any], system: str | None) -> dict[str, Any]:
    instruction, output = _text(row, "instruction"), _text(row, "output")
    extra = row.get("input")
    if extra is not None and not isinstance(extra, str):
        raise RowError(f"input must be text, got {_type_name(extra)}", field="input")
    # Alpaca's own prompt puts the input after the instruction; an empty input adds nothing.
    user = f"{instruction}\n\n{extra}" if extra and not extra.isspace() else instruction
    return {
        "messages": _with_system([{"role": "user", "content": user}, {"role": "assistant", "content": output}], system)
    }


#: ShareGPT speakers and the chat roles they become.
SHAREGPT_ROLES: Final = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
}


def _sharegpt(row: Mapping[str, Any], system: str | None) -> dict[str, Any]:
    turns = row["conversations"]
    if not isinstance(turns, list):
        raise RowError(f"conversations must be a list of turns, got {_type_name(turns)}", field="conversations")
    messages = []
    for i, turn in enumerate(turns):
        where = f"conversations[{i}]"
        if not isinstance(turn, dict):
            raise RowError(f"a turn must be an object with from and value, got {_type_name(turn)}", field=where)
        speaker, value = turn.get("from"), turn.get("value")
        role = SHAREGPT_ROLES.get(speaker) if isinstance(speaker, str) else None
        if role is None:
            raise RowError(
                f"unknown speaker {speaker!r}; expected one of {', '.join(SHAREGPT_ROLES)}",
                field=f"{where}.from",
                code="unknown_role",
            )
        if not isinstance(value, str):
            raise RowError(f"value must be text, got {_type_name(value)}", field=f"{where}.value")
        messages.append({"role": role, "content": value})
    return {"messages": _with_system(messages, system)}


@dataclass(frozen=True)
class ShapeInfo:
    """One row of :data:`SHAPES`.

    Attributes:
        name: the ``format`` value that selects it.
        label: its name for people ("Alpaca").
        keys: its columns, as people know them ("instruction/input/output").
        method: ``"sft"`` or ``"dpo"``: what the examples train.
        fields: the columns it reads.
        matches: whether a row is in this shape (by its non-null columns).
        convert: the row as a canonical example, given an optional system message.
    """

    name: Shape
    label: str
    keys: str
    method: Literal["sft", "dpo"]
    fields: tuple[str, ...]
    matches: Callable[[Mapping[str, Any]], bool]
    convert: Callable[[Mapping[str, Any], str | None], dict[str, Any]]

    def describe(self) -> str:
        """``"Alpaca (instruction/input/output)"``."""
        return self.label if self.label == self.keys else f"{self.label} ({self.keys})"


#: The shapes, in the order detection tries them.
SHAPES: Final[dict[Shape, ShapeInfo]] = {
    s.name: s
    for s in (
        ShapeInfo(
            "chat",
            "OpenAI chat",
            "messages",
            "sft",
            ("messages", *_CHAT_EXTRAS),
            lambda r: _present(r, "messages"),
            _chat,
        ),
        ShapeInfo(
            "preference",
            "OpenAI DPO",
            "input/preferred_output/non_preferred_output",
            "dpo",
            ("input", "preferred_output", "non_preferred_output", "metadata"),
            lambda r: _present(r, "preferred_output") or _present(r, "non_preferred_output"),
            _preference,
        ),
        ShapeInfo(
            "trl_preference",
            "TRL preference",
            "prompt/chosen/rejected",
            "dpo",
            ("prompt", "chosen", "rejected", "metadata"),
            lambda r: _present(r, "chosen") and _present(r, "rejected"),
            _trl_preference,
        ),
        ShapeInfo(
            "sharegpt",
            "ShareGPT",
            "conversations of from/value",
            "sft",
            ("conversations",),
            lambda r: _present(r, "conversations"),
            _sharegpt,
        ),
        ShapeInfo(
            "alpaca",
            "Alpaca",
            "instruction/input/output",
            "sft",
            ("instruction", "input", "output"),
            lambda r: _present(r, "instruction") and _present(r, "output"),
            _alpaca,
        ),
        ShapeInfo(
            "prompt_completion",
            "prompt/completion",
            "prompt/completion",
            "sft",
            ("prompt", "completion", "metadata"),
            lambda r: _present(r, "prompt") and _present(r, "completion"),
            _prompt_completion,
        ),
    )
}


def detect_shape(row: Mapping[str, Any]) -> Shape | None:
    """The first shape of :data:`SHAPES` the row matches, or None."""
    return next((name for name, info in SHAPES.items() if info.matches(row)), None)


def is_canonical(row: Mapping[str, Any], shape: Shape) -> bool:
    """Whether the validator reads a row of this shape as it is (OpenAI chat, DPO, text prompt/completion)."""
    if shape == "prompt_completion":
        return not isinstance(row.get("prompt"), list) and not isinstance(row.get("completion"), list)
    return shape in ("chat", "preference")


def normalise_format(value: str) -> Shape | Literal["auto"]:
    """``value`` as a format name (``prompt-completion`` and ``Alpaca`` are accepted too).

    Raises:
        ConfigError: not a known format; the message lists them.
    """
    name = value.strip().lower().replace("-", "_")
    if name not in FORMATS:
        raise ConfigError(f"unknown format {value!r}; expected one of {', '.join(FORMATS)}", field="format")
    return cast("Shape | Literal['auto']", name)


# -- explaining a mismatch -----------------------------------------------------------------------

#: Column names people give prompts and answers, for suggesting a ``--columns`` mapping.
_LIKELY: Final = {
    "prompt": ("question", "query", "instruction", "input", "problem", "source", "context", "text"),
    "completion": ("answer", "response", "output", "target", "solution", "reply", "label"),
}


def suggest_columns(row: Mapping[str, Any]) -> str | None:
    """A ``prompt=COL,completion=COL`` mapping for a row whose column names say which is which."""
    lowered = {str(k).lower(): str(k) for k in row}
    found: dict[str, str] = {}
    for field, names in _LIKELY.items():
        col = next((lowered[n] for n in names if n in lowered and lowered[n] not in found.values()), None)
        if col is None:
            return None
        found[field] = col
    return ",".join(f"{field}={col}" for field, col in found.items())


def unknown_shape_advice(row: Mapping[str, Any], source: str | None = None) -> str:
    """What to do about a row that matches no shape: the options that read it, exact when possible."""
    src = source or "FILE"
    guess = suggest_columns(row)
    if guess is not None:
        fix = (
            f"map them: --columns {guess} (or `anytune data convert {src} OUT --columns {guess}`)"
            if " " not in src
            else f"map them: --columns {guess}"
        )
    else:
        fix = "map yours with --columns prompt=COL,completion=COL, or build the text with a --template"
    shapes = "; ".join(f"{s.name}: {s.keys}" for s in SHAPES.values())
    return f"its columns ({_columns(row)}) match no known shape; {fix}, or name the shape with --format ({shapes})"


def describe_mismatch(row: Mapping[str, Any], wanted_shape: Shape, *, source: str | None = None) -> str | None:
    """Why ``row`` is not in ``wanted_shape`` and the option that reads it; None when it is.

    For example, for an Alpaca row and ``wanted_shape="chat"``: "this looks like Alpaca
    (instruction/input/output), not OpenAI chat (messages): use --format alpaca, or `anytune data
    convert FILE OUT --format alpaca`" (``source`` replaces ``FILE``).
    """
    if SHAPES[wanted_shape].matches(row):
        return None
    seen = detect_shape(row)
    wanted = SHAPES[wanted_shape].describe()
    if seen is None:
        return f"this is not {wanted}: " + unknown_shape_advice(row, source)
    src = source or "FILE"
    return (
        f"this looks like {SHAPES[seen].describe()}, not {wanted}: use --format {seen}, "
        f"or `anytune data convert {src} OUT --format {seen}`"
    )


# -- columns and templates -----------------------------------------------------------------------


def parse_columns(text: str) -> dict[str, str]:
    """``"prompt=question,completion=answer"`` as ``{"prompt": "question", "completion": "answer"}``.

    Raises:
        ConfigError: a pair is not ``FIELD=COLUMN`` or names a field twice.
    """
    mapping: dict[str, str] = {}
    for pair in text.split(","):
        field, eq, column = (p.strip() for p in pair.partition("="))
        if not eq or not field or not column:
            raise ConfigError(f"expected FIELD=COLUMN pairs separated by commas, got {pair.strip()!r}", field="columns")
        if field in mapping:
            raise ConfigError(f"field {field!r} is mapped twice", field="columns")
        mapping[field] = column
    return mapping


_ROOT = re.compile(r"[.\[]")


def _parse(template: str, option: str) -> list[tuple[str, str | None, str | None, str | None]]:
    try:
        pieces = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"{template!r} is not a valid template: {exc}", field=option) from exc
    for _, name, _, _ in pieces:
        if name is not None and (not name or name.isdigit()):
            raise ConfigError(f"template fields must name columns, as in {{question}}; got {{{name}}}", field=option)
    return pieces


def _field_names(template: str, option: str) -> list[str]:
    fields = [_ROOT.split(name, maxsplit=1)[0] for _, name, _, _ in _parse(template, option) if name is not None]
    return list(dict.fromkeys(fields))


def template_fields(template: str, option: str = "template") -> list[str]:
    """The columns a ``str.format`` template reads, in order (``{a.b}`` and ``{a[0]}`` read ``a``).

    Raises:
        ConfigError: the template does not parse, has a positional field (``{}``, ``{0}``) or none.
    """
    fields = _field_names(template, option)
    if not fields:
        raise ConfigError(f"template {template!r} has no {{field}} to fill from the row", field=option)
    return fields


def _unparse(literal: str, name: str | None, spec: str | None, conversion: str | None) -> str:
    out = literal.replace("{", "{{").replace("}", "}}")
    if name is not None:
        out += "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
    return out


def split_text_template(template: str) -> tuple[str, str]:
    """A ``text_template`` cut into its prompt and completion templates.

    The rule: the completion is what the template renders from its last field onward (the field
    itself and any text after it); the prompt is everything before that field. So
    ``"### Question: {prompt} ### Answer: {response}"`` splits into ``"### Question: {prompt} ###
    Answer: "`` and ``"{response}"``, and the prompt and completion rendered from a row always join
    back into the text the whole template renders. A template whose only field opens it
    (``"{text}"``) has an empty prompt: the whole text is the completion.

    Raises:
        ConfigError: the template does not parse, or has no field.
    """
    pieces = _parse(template, "text_template")
    fields = [i for i, piece in enumerate(pieces) if piece[1] is not None]
    if not fields:
        raise ConfigError(f"template {template!r} has no {{field}} to fill from the row", field="text_template")
    last = fields[-1]
    head = "".join(_unparse(*p) for p in pieces[:last]) + _unparse(pieces[last][0], None, None, None)
    tail = _unparse("", *pieces[last][1:]) + "".join(_unparse(*p) for p in pieces[last + 1 :])
    return head, tail


def render(template: str, row: Mapping[str, Any], option: str) -> str:
    """``template`` filled from ``row``.

    Raises:
        RowError: a field is not a column of the row (the message lists the row's columns), is null,
            or cannot be formatted as the template asks.
    """
    for name in _field_names(template, option):
        if name not in row:
            raise RowError(
                f"{option} field {{{name}}} is not a column of this row; its columns: {_columns(row)}",
                field=name,
                code="missing_column",
            )
        if row[name] is None:
            raise RowError(f"{option} field {{{name}}} is null in this row", field=name, code="missing_column")
    try:
        return template.format_map(row)
    except (KeyError, IndexError, AttributeError, ValueError, TypeError) as exc:
        raise RowError(f"{option} cannot be filled from this row: {exc}", code="template_error") from exc


# -- the converter -------------------------------------------------------------------------------


class RowConverter:
    """Turns the rows of one source into canonical examples, one call per row, in source order.

    The steps, for each row: rename columns (``columns``: the shape's field ← the row's column,
    e.g. ``{"prompt": "question", "completion": "answer"}``, usable for any shape's fields, e.g.
    ``{"instruction": "q"}``); with templates, build the prompt and completion from them; find the
    shape (``format="auto"``: the first row's, which every later row must share); convert.

    Templates are ``str.format`` strings whose ``{field}`` names a column (after the mapping):
    ``prompt_template`` and ``completion_template`` build a prompt/completion pair (a side without
    a template reads the column named ``prompt`` or ``completion``); ``text_template`` builds both
    at once, split by :func:`split_text_template` so the loss falls on the completion.

    Attributes:
        shape: the shape rows are read as; None until the first row when ``format="auto"``.
        method: ``"sft"`` or ``"dpo"`` once the shape is known.

    Raises:
        ConfigError: from the constructor, when the options do not fit together.
    """

    def __init__(
        self,
        format: str = "auto",
        *,
        columns: Mapping[str, str] | None = None,
        prompt_template: str | None = None,
        completion_template: str | None = None,
        text_template: str | None = None,
        system: str | None = None,
    ) -> None:
        fmt = normalise_format(format)
        templated = prompt_template is not None or completion_template is not None or text_template is not None
        if text_template is not None and (prompt_template is not None or completion_template is not None):
            raise ConfigError(
                "give either text_template (--template) or prompt_template/completion_template, not both",
                field="text_template",
            )
        if templated and fmt not in ("auto", "prompt_completion"):
            raise ConfigError(
                f"templates build prompt/completion rows; format {fmt!r} does not take them (leave --format out)",
                field="format",
            )
        if system is not None and (not system or system.isspace()):
            raise ConfigError("the system message is empty", field="system")
        for key, value in (columns or {}).items():
            if not isinstance(key, str) or not isinstance(value, str) or not key or not value:
                raise ConfigError(f"columns maps field names to column names; got {key!r}: {value!r}", field="columns")
        self.columns = dict(columns or {})
        self.system = system
        self.templates: dict[str, str] = {}
        if text_template is not None:
            self.templates["prompt"], self.templates["completion"] = split_text_template(text_template)
            self._text_template = True
        else:
            self._text_template = False
            for side, template, option in (
                ("prompt", prompt_template, "prompt_template"),
                ("completion", completion_template, "completion_template"),
            ):
                if template is not None:
                    template_fields(template, option)  # refuses a bad template before any row is read
                    self.templates[side] = template
        self.shape: Shape | None = "prompt_completion" if templated else (None if fmt == "auto" else fmt)
        self._explicit = fmt != "auto" or templated

    @property
    def method(self) -> Literal["sft", "dpo"] | None:
        return None if self.shape is None else SHAPES[self.shape].method

    def renamed(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """``row`` with the columns mapping applied (a copy).

        Raises:
            RowError: a mapped column is not in the row (the message lists its columns).
        """
        if not self.columns:
            return dict(row)
        values = {}
        for field, column in self.columns.items():
            if column not in row:
                raise RowError(
                    f"column {column!r} (mapped to {field}) is not in this row; its columns: {_columns(row)}",
                    field=column,
                    code="missing_column",
                )
            values[field] = row[column]
        out = {k: v for k, v in row.items() if k not in self.columns.values()}
        out.update(values)
        return out

    def _templated(self, row: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for side in ("prompt", "completion"):
            template = self.templates.get(side)
            if template is None:
                if row.get(side) is None:
                    raise RowError(
                        f"no {side}_template and no {side} column; this row's columns: {_columns(row)}",
                        field=side,
                        code="missing_column",
                    )
                out[side] = row[side]
            else:
                out[side] = render(template, row, "text_template" if self._text_template else f"{side}_template")
        if "metadata" in row:
            out["metadata"] = row["metadata"]
        return out

    def __call__(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """The canonical example for ``row``.

        Raises:
            UnknownShapeError: the first row matches no shape (``format="auto"``).
            RowError: the row cannot be converted: a mapped column or template field is missing, a
                value has the wrong type, or the row is in another shape than the rows before it
                (``mixed_shapes``, naming both).
        """
        data = self.renamed(row)
        if self.templates:
            data = self._templated(data)
            prompt = data["prompt"]
            if self._text_template and isinstance(prompt, str) and (not prompt or prompt.isspace()):
                # No text before the template's last field: the whole text is learned.
                answer = [{"role": "assistant", "content": data["completion"]}]
                example = {"messages": _with_system(answer, self.system)}
                return _keep(data, example, ("metadata",))
            return _prompt_completion(data, self.system)
        if self.shape is None:
            found = detect_shape(data)
            if found is None:
                raise UnknownShapeError(unknown_shape_advice(data), code="unknown_shape")
            self.shape = found
        info = SHAPES[self.shape]
        if not info.matches(data):
            seen = detect_shape(data)
            if seen is not None:
                raise RowError(
                    f"this row is {SHAPES[seen].describe()} but the source is read as {info.describe()}"
                    + ("" if self._explicit else " (its first row)")
                    + ": one source holds one shape",
                    code="mixed_shapes",
                )
            missing = next((f for f in info.fields if not _present(data, f)), info.fields[0])
            raise RowError(
                f"not {info.describe()}: {missing!r} is missing; this row's columns: {_columns(data)}",
                field=missing,
                code="missing_column",
            )
        return info.convert(data, self.system)

    def used_columns(self) -> set[str]:
        """The source columns this converter reads (once the shape is known)."""
        if self.templates:
            fields: set[str] = set()
            for template in self.templates.values():
                fields.update(_field_names(template, "template"))
            fields.update(side for side in ("prompt", "completion") if side not in self.templates)
            fields.add("metadata")
        elif self.shape is not None:
            fields = set(SHAPES[self.shape].fields)
        else:
            fields = set()
        return {self.columns.get(f, f) for f in fields} | set(self.columns.values())
