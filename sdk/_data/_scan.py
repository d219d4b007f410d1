"""The streaming scanner behind :func:`anytune._data.validate.validate_file`.

One pass over a byte range of a JSONL file: parse each line (orjson), check it, count its tokens
and fold the result into a :class:`ChunkResult` whose size depends on the number of distinct example
lengths and on the issue cap, never on the file size. Big files are split at line boundaries into
byte ranges scanned by worker processes; the parent merges the chunk results in file order.

Pathological files stay bounded: the file is read in blocks, a line longer than a block is read
once, by the one range it starts in, with a single read of its length (memory: a small multiple of
the longest line); runs of blank lines are counted in bulk; an example nested deeper than
:data:`MAX_DEPTH` is one ``too_deep`` issue, found without recursion.

Nothing here builds pydantic objects: issues travel as plain tuples and the public models are made
only for the issues a report keeps.
"""

from __future__ import annotations

import io
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from anytune._data.formats import PREFERENCE_KEYS, example_format

# (line, field, code, message, severity); line is chunk-local until the parent shifts it.
IssueTuple = tuple[int | None, str | None, str, str, str]
Emit = Callable[[IssueTuple], None]

ROLES: Final = frozenset({"system", "user", "assistant", "tool", "developer"})
EXAMPLE_KEYS: Final = frozenset({"messages", "tools", "parallel_tool_calls", "functions", "metadata"})
MESSAGE_KEYS: Final = frozenset(
    {"role", "content", "name", "weight", "tool_calls", "tool_call_id", "function_call", "refusal"}
)
DPO_KEYS: Final = frozenset({"input", "preferred_output", "non_preferred_output", "metadata"})
DPO_INPUT_KEYS: Final = frozenset({"messages", "tools", "parallel_tool_calls", "functions"})
PC_KEYS: Final = frozenset({"prompt", "completion", "metadata"})
CONTENT_PART_TYPES: Final = frozenset({"text", "image_url"})

# OpenAI cookbook, num_tokens_from_messages.
TOKENS_PER_MESSAGE: Final = 3
TOKENS_PER_NAME: Final = 1
PRIMING_TOKENS: Final = 3

#: Files at least this big are scanned by worker processes (when there is more than one CPU).
PARALLEL_MIN_BYTES = 8 * 1024 * 1024
#: Smallest byte range handed to one worker task.
MIN_CHUNK_BYTES = 2 * 1024 * 1024
#: Byte ranges per worker: more than one evens out chunks of very different example lengths.
CHUNKS_PER_WORKER = 4
#: Most worker processes ever started; ``ANYTUNE_DATA_WORKERS`` overrides the CPU count.
MAX_WORKERS = 8
#: Bytes read from the file at a time. A line longer than this is read by itself, with one read of
#: exactly its length, after its end has been found block by block.
READ_BLOCK = 1024 * 1024

#: Deepest nesting of arrays and objects accepted in an example (the example object is level 1), and
#: in the JSON of a tool call's ``arguments``. Deeper data is rejected (``too_deep``): nothing
#: downstream (token counting, serialisers, chat templates) has to walk it.
MAX_DEPTH: Final = 64

# Keys of the dataset formats: the field a ``too_deep`` issue names follows them from the example
# down to where the free-form part (metadata, arguments, parameters...) starts.
_SCHEMA_KEYS: Final = frozenset(
    {"messages", "tools", "functions", "input", "preferred_output", "non_preferred_output", "prompt", "completion"}
    | {"metadata", "role", "content", "name", "tool_calls", "function_call", "function", "arguments"}
    | {"parameters", "description", "text", "image_url", "type", "id", "tool_call_id", "refusal", "weight"}
)
_SCHEMA_LISTS: Final = frozenset(
    {"messages", "tools", "functions", "preferred_output", "non_preferred_output", "tool_calls", "content"}
)
_FREE_FORM: Final = frozenset({"metadata", "arguments", "parameters"})
# Blank lines (whitespace only, as ``bytes.strip`` sees it) up to the last newline before anything
# else. A single repeated character class: the regex engine keeps no state per line.
_BLANK_RUN: Final = re.compile(rb"[ \t\n\r\x0b\x0c]*\n")

# Counts of repeated short strings (system prompts shared by many examples, role names, tool
# schemas) are remembered; bounded so memory stays constant.
_CACHE_MAX_ENTRIES: Final = 4096
_CACHE_MAX_CHARS: Final = 16384

_BOM: Final = b"\xef\xbb\xbf"
_MISSING: Final[Any] = object()


def _drain(box: list[bytes]) -> Iterator[bytes]:
    """Yield the items of ``box``, keeping no reference to them."""
    while box:
        yield box.pop()


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}.get(
        type(value), type(value).__name__
    )


def deep_path(value: Any, limit: int = MAX_DEPTH) -> list[str | int] | None:
    """Keys and indices down to the first array or object nested deeper than ``limit`` levels.

    ``value`` itself is level 1; None when nothing is that deep. Iterative: any depth is safe.
    """
    if type(value) is not dict and type(value) is not list:
        return None
    keys: list[Any] = []  # keys[i] leads from stack[i] to stack[i + 1]
    stack: list[Iterator[tuple[Any, Any]]] = [_children(value)]
    while stack:
        for key, child in stack[-1]:
            if type(child) is dict or type(child) is list:
                keys.append(key)
                if len(stack) >= limit:
                    return keys
                stack.append(_children(child))
                break
        else:
            stack.pop()
            if keys:
                keys.pop()
    return None


def _children(value: Any) -> Iterator[tuple[Any, Any]]:
    return iter(value.items()) if type(value) is dict else enumerate(value)


def deep_field(path: list[str | int]) -> str:
    """The field a ``too_deep`` issue names: ``path`` followed while it is the dataset's own structure.

    ``messages[1].tool_calls[0].function.arguments[0][0]...`` names
    ``messages[1].tool_calls[0].function.arguments``; ``metadata.a.b...`` names ``metadata``.
    """
    out = ""
    previous: str | int | None = None
    for i, key in enumerate(path):
        if previous in _FREE_FORM:
            break
        if type(key) is int:
            if previous not in _SCHEMA_LISTS:
                break
            out += f"[{key}]"
        else:
            if i > 0 and key not in _SCHEMA_KEYS:
                break
            out += f".{key}" if out else str(key)
        previous = key
    return out


def deep_issue(obj: Any, limit: int = MAX_DEPTH) -> tuple[str, str] | None:
    """(field, message) when ``obj`` nests arrays and objects more than ``limit`` levels deep."""
    path = deep_path(obj, limit)
    if path is None:
        return None
    return deep_field(path), f"nested more than {limit} levels deep (arrays and objects)"


@dataclass
class ScanConfig:
    """What a scan checks; picklable so spawned workers can receive it."""

    method: str = "sft"
    max_tokens: int | None = None
    max_issues: int = 1000
    limit_label: str = ""


@dataclass
class ChunkResult:
    """Everything one byte range contributed. Small: bounded by distinct lengths and the issue cap."""

    lines: int = 0
    examples: int = 0
    valid: int = 0
    errors: int = 0
    warnings: int = 0
    lengths: dict[int, int] = field(default_factory=dict)
    issues: list[IssueTuple] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    formats: dict[str, list[int]] = field(default_factory=dict)  # format -> [first line, count]


class Scanner:
    """Checks examples and counts their tokens; one per process."""

    def __init__(self, config: ScanConfig, count: Callable[[str], int]) -> None:
        self.config = config
        self._count = count
        # A counter with the model's chat template counts whole chat examples (tokens.ChatCount).
        self._count_chat: Callable[[list[Any], Any], int | None] | None = getattr(count, "chat", None)
        self._cache: dict[str, int] = {}
        self._ids: set[str] = set()
        self.result = ChunkResult()
        self._emit: Emit | None = None

    # -- bookkeeping -----------------------------------------------------------------------------

    def issue(self, line: int | None, where: str | None, code: str, message: str, severity: str = "error") -> None:
        r = self.result
        r.counts[code] = r.counts.get(code, 0) + 1
        if severity == "error":
            r.errors += 1
        else:
            r.warnings += 1
        if len(r.issues) < self.config.max_issues:
            item = (line, where, code, message, severity)
            r.issues.append(item)
            if self._emit is not None:
                self._emit(item)

    def cached_count(self, text: str) -> int:
        n = self._cache.get(text)
        if n is None:
            n = self._count(text)
            if len(text) <= _CACHE_MAX_CHARS and len(self._cache) < _CACHE_MAX_ENTRIES:
                self._cache[text] = n
        return n

    def strings_tokens(self, value: Any) -> int:
        """Tokens of every string value nested in ``value`` (keys and numbers do not count)."""
        t = type(value)
        if t is str:
            return self._count(value) if len(value) > 16 else self.cached_count(value)
        if t is dict:
            return sum(self.strings_tokens(v) for v in value.values())
        if t is list:
            return sum(self.strings_tokens(v) for v in value)
        return 0

    # -- the scan --------------------------------------------------------------------------------

    def scan(self, lines: Iterable[bytes], first_line_of_file: bool, emit: Emit | None = None) -> ChunkResult:
        """Check every line from ``lines``; line numbers start at 1 for the first one."""
        return self.scan_runs(lines, first_line_of_file, emit)

    def scan_runs(self, runs: Iterable[bytes], first_line_of_file: bool, emit: Emit | None = None) -> ChunkResult:
        """Check the lines of ``runs``, each one or more whole lines (see :func:`line_runs`)."""
        self._emit = emit
        ln = 0
        for run in runs:
            if run.find(b"\n", 0, len(run) - 1) == -1:  # a single line, maybe a long one: not copied
                # Handed over: once parsed, the line's bytes are freed before its tokens are counted.
                box = [run]
                del run
                ln = self._lines(_drain(box), b"", ln, first_line_of_file)
            else:
                ln = self._lines(io.BytesIO(run), run, ln, first_line_of_file)
        self.result.lines = ln
        return self.result

    def _lines(self, lines: Iterable[bytes], run: bytes, ln: int, first_line_of_file: bool) -> int:
        """Check the lines of one run; ``ln`` is the number of lines before it. Returns the new count."""
        r = self.result
        method = self.config.method
        limit = self.config.max_tokens
        lengths = r.lengths
        formats = r.formats
        loads = orjson.loads
        decode_error = orjson.JSONDecodeError
        for raw in lines:
            ln += 1
            try:
                obj = loads(raw)
            except decode_error as exc:
                if not raw.strip():
                    ln = self._blank_lines(lines, run, ln)
                    continue
                obj = self._unparsable(raw, ln, first_line_of_file and ln == 1, exc)
                if obj is None:
                    continue
            r.examples += 1
            if type(obj) is not dict:
                self.issue(ln, None, "not_object", f"each line must be a JSON object, got {_type_name(obj)}")
                continue
            # Fewer brackets than MAX_DEPTH cannot nest deeper: most lines skip the walk.
            if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and (deep := deep_issue(obj)) is not None:
                self.issue(ln, deep[0], "too_deep", deep[1])
                continue
            del raw
            errors_before = r.errors
            fmt, n = self._example(obj, ln, method)
            seen = formats.get(fmt)
            if seen is None:
                formats[fmt] = [ln, 1]
            else:
                seen[1] += 1
            if n is not None:
                lengths[n] = lengths.get(n, 0) + 1
                if limit is not None and n > limit:
                    self.issue(
                        ln,
                        None,
                        "too_many_tokens",
                        f"example has {n} tokens, more than the limit of {limit}{self.config.limit_label}",
                    )
            if r.errors == errors_before:
                r.valid += 1
        return ln

    def _blank_lines(self, lines: Iterable[bytes], run: bytes, ln: int) -> int:
        """Line ``ln`` is blank: record it and the blank lines right after it in bulk; return the last."""
        extra = 0
        if isinstance(lines, io.BytesIO):
            pos = lines.tell()
            m = _BLANK_RUN.match(run, pos)
            if m is not None:
                extra = run.count(b"\n", pos, m.end())
                lines.seek(m.end())
        self.repeated_issue(ln, 1 + extra, "blank_line", "blank line (ignored)", "warning")
        return ln + extra

    def repeated_issue(self, first: int, lines: int, code: str, message: str, severity: str) -> None:
        """The same issue on ``lines`` consecutive lines from ``first``: kept up to the cap, all counted."""
        r = self.result
        kept = max(0, min(lines, self.config.max_issues - len(r.issues)))
        for k in range(kept):
            self.issue(first + k, None, code, message, severity)
        rest = lines - kept
        if rest:
            r.counts[code] = r.counts.get(code, 0) + rest
            if severity == "error":
                r.errors += rest
            else:
                r.warnings += rest

    def _unparsable(self, raw: bytes, ln: int, first: bool, exc: Exception) -> Any:
        """Classify a non-blank line orjson rejected; return the parsed object when it was only a BOM."""
        if first and raw.startswith(_BOM):
            try:
                obj = orjson.loads(raw[len(_BOM) :])
            except orjson.JSONDecodeError:
                pass
            else:
                self.issue(ln, None, "utf8_bom", "file starts with a UTF-8 byte order mark", "warning")
                return obj
        self.result.examples += 1  # a broken example is still an example
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as ude:
            self.issue(
                ln, None, "not_utf8", f"line is not valid UTF-8 (byte {ude.start}: {raw[ude.start : ude.start + 1]!r})"
            )
            return None
        self.issue(ln, None, "bad_json", f"line is not valid JSON: {exc}")
        return None

    def _example(self, obj: dict[str, Any], ln: int, method: str) -> tuple[str, int | None]:
        """Check one example; return its format and token count (None when it cannot be counted).

        The method decides which shape wins when an example mixes keys: a DPO dataset reads any
        preference key as a pair, an SFT one reads messages, then prompt/completion.
        """
        if method == "dpo":
            if any(k in obj for k in PREFERENCE_KEYS):
                return "preference", self._preference(obj, ln)
            fmt = example_format(obj, loose=True)
            if fmt in ("chat", "prompt_completion"):
                self.issue(
                    ln,
                    None,
                    "wrong_format",
                    f"{fmt} example in a DPO dataset: DPO examples have input, preferred_output and "
                    "non_preferred_output",
                )
                return fmt, None
            return "preference", self._preference(obj, ln)
        if "messages" in obj:
            return "chat", self._chat(obj, ln)
        if "prompt" in obj or "completion" in obj:
            return "prompt_completion", self._prompt_completion(obj, ln)
        if any(k in obj for k in PREFERENCE_KEYS):
            self.issue(ln, None, "wrong_format", "preference (DPO) example in an SFT dataset: use method='dpo'")
            return "preference", self._preference(obj, ln)
        return "chat", self._chat(obj, ln)

    # -- chat ------------------------------------------------------------------------------------

    def _chat(self, obj: dict[str, Any], ln: int) -> int | None:
        if not obj.keys() <= EXAMPLE_KEYS:
            for k in obj:
                if k not in EXAMPLE_KEYS:
                    self.issue(ln, str(k), "unknown_key", f"unknown key {k!r} in example")
        messages = obj.get("messages", _MISSING)
        n = PRIMING_TOKENS
        if len(obj) > 1:
            n += self._tools(obj, ln, "")
        if type(messages) is not list:
            if messages is _MISSING or messages is None:
                self.issue(ln, "messages", "missing_messages", "example has no messages")
            else:
                self.issue(
                    ln, "messages", "messages_not_list", f"messages must be an array, got {_type_name(messages)}"
                )
            return None
        if not messages:
            self.issue(ln, "messages", "missing_messages", "messages is empty")
            return None
        tokens, assistants, trained = self._messages(messages, ln, "messages")
        if assistants == 0:
            self.issue(ln, "messages", "no_assistant_message", "example has no assistant message to learn from")
        elif trained == 0:
            self.issue(ln, "messages", "no_trainable_message", "every assistant message has weight 0", "warning")
        if self._count_chat is not None and (templated := self._count_chat(messages, obj.get("tools"))) is not None:
            return templated
        return n + tokens

    def _messages(self, messages: list[Any], ln: int, prefix: str) -> tuple[int, int, int]:
        """Check a message list; return (tokens, assistant messages, assistant messages with weight 1)."""
        count = self._count
        cached = self.cached_count
        ids = self._ids
        if ids:
            ids.clear()
        total = 0
        assistants = trained = 0
        for i, m in enumerate(messages):
            if type(m) is not dict:
                self.issue(
                    ln, f"{prefix}[{i}]", "message_not_object", f"message must be an object, got {_type_name(m)}"
                )
                continue
            n = TOKENS_PER_MESSAGE
            role = m.get("role")
            if type(role) is str and role in ROLES:
                n += cached(role)
            elif role is None:
                self.issue(ln, f"{prefix}[{i}].role", "missing_role", "message has no role")
            else:
                self.issue(
                    ln,
                    f"{prefix}[{i}].role",
                    "unknown_role",
                    f"unknown role {role!r}; expected one of {', '.join(sorted(ROLES))}",
                )
                if type(role) is str:
                    n += cached(role)
            content = m.get("content", _MISSING)
            if type(content) is str:
                if not content or content.isspace():
                    self.issue(ln, f"{prefix}[{i}].content", "empty_content", "content is empty")
                    n += count(content)
                elif role == "system" or role == "developer":
                    n += cached(content)
                else:
                    n += count(content)
            else:
                n += self._other_content(m, content, role, ln, prefix, i)
            # Keys beyond role and content (name, weight, tool calls, unknown ones) are rare.
            if len(m) > ("role" in m) + (content is not _MISSING):
                n += self._message_extras(m, role, ln, prefix, i)
            if role == "assistant":
                assistants += 1
                if m.get("weight", 1) != 0:
                    trained += 1
            elif role == "tool":
                self._tool_reply(m, ln, prefix, i)
            total += n
        return total, assistants, trained

    def _other_content(self, m: dict[str, Any], content: Any, role: Any, ln: int, prefix: str, i: int) -> int:
        where = f"{prefix}[{i}].content"
        if content is _MISSING or content is None:
            if role == "assistant" and ("tool_calls" in m or "function_call" in m):
                return 0
            what = "missing" if content is _MISSING else "null"
            self.issue(ln, where, "missing_content", f"content is {what}")
            return 0
        if type(content) is list:
            if not content:
                self.issue(ln, where, "empty_content", "content is an empty array")
                return 0
            n = 0
            for j, part in enumerate(content):
                ptype = part.get("type") if type(part) is dict else None
                if ptype not in CONTENT_PART_TYPES:
                    self.issue(
                        ln,
                        f"{where}[{j}]",
                        "bad_content",
                        'content part must be {"type": "text", "text": ...} or an image_url part',
                    )
                    continue
                if ptype == "text":
                    text = part.get("text")
                    if type(text) is not str or not text or text.isspace():
                        self.issue(ln, f"{where}[{j}].text", "empty_content", "text part is empty or not a string")
                    if type(text) is str:
                        n += self._count(text)
            return n
        self.issue(
            ln, where, "bad_content", f"content must be a string or an array of parts, got {_type_name(content)}"
        )
        return 0

    def _unknown_message_keys(self, m: dict[str, Any], ln: int, prefix: str, i: int) -> None:
        for k in m:
            if k not in MESSAGE_KEYS:
                self.issue(ln, f"{prefix}[{i}].{k}", "unknown_key", f"unknown key {k!r} in message")

    def _message_extras(self, m: dict[str, Any], role: Any, ln: int, prefix: str, i: int) -> int:
        """Keys other than role and content: name, weight, tool calls, refusal, unknown ones."""
        if not m.keys() <= MESSAGE_KEYS:
            self._unknown_message_keys(m, ln, prefix, i)
        n = 0
        at = f"{prefix}[{i}]"
        if "name" in m:
            name = m["name"]
            if type(name) is str and name:
                n += self.cached_count(name) + TOKENS_PER_NAME
            else:
                self.issue(ln, f"{at}.name", "bad_name", "name must be a non-empty string")
        if "weight" in m:
            w = m["weight"]
            if role != "assistant":
                self.issue(ln, f"{at}.weight", "bad_weight", "weight is only allowed on assistant messages")
            elif type(w) is not int or w not in (0, 1):
                self.issue(ln, f"{at}.weight", "bad_weight", f"weight must be 0 or 1, got {w!r}")
        if "tool_calls" in m:
            n += self._tool_calls(m["tool_calls"], role, ln, f"{at}.tool_calls")
        if "function_call" in m:
            fc = m["function_call"]
            if role != "assistant":
                self.issue(
                    ln, f"{at}.function_call", "bad_tool_call", "function_call is only allowed on assistant messages"
                )
            self._function(fc, ln, f"{at}.function_call")
            n += self.strings_tokens(fc)
        if "tool_call_id" in m:
            tid = m["tool_call_id"]
            if type(tid) is str:
                n += self.cached_count(tid)
        if "refusal" in m:
            ref = m["refusal"]
            if type(ref) is str:
                n += self._count(ref)
            elif ref is not None:
                self.issue(ln, f"{at}.refusal", "bad_content", "refusal must be a string or null")
        return n

    def _function(self, fn: Any, ln: int, where: str) -> None:
        """Check ``{"name": str, "arguments": JSON string}``."""
        if type(fn) is not dict:
            self.issue(ln, where, "bad_tool_call", f"must be an object with name and arguments, got {_type_name(fn)}")
            return
        name = fn.get("name")
        if type(name) is not str or not name:
            self.issue(ln, f"{where}.name", "bad_tool_call", "function name must be a non-empty string")
        args = fn.get("arguments")
        if type(args) is not str:
            self.issue(ln, f"{where}.arguments", "bad_tool_call", "arguments must be a JSON string")
        else:
            try:
                parsed = orjson.loads(args)
            except orjson.JSONDecodeError:
                self.issue(ln, f"{where}.arguments", "bad_tool_call", "arguments is not valid JSON")
            else:
                # Chat templates receive the arguments parsed: their nesting has the same limit.
                if args.count("[") + args.count("{") > MAX_DEPTH and deep_path(parsed) is not None:
                    self.issue(
                        ln,
                        f"{where}.arguments",
                        "too_deep",
                        f"arguments JSON is nested more than {MAX_DEPTH} levels deep (arrays and objects)",
                    )

    def _tool_calls(self, calls: Any, role: Any, ln: int, where: str) -> int:
        if role != "assistant":
            self.issue(ln, where, "bad_tool_call", "tool_calls are only allowed on assistant messages")
        if type(calls) is not list or not calls:
            self.issue(ln, where, "bad_tool_call", "tool_calls must be a non-empty array")
            return 0
        for j, call in enumerate(calls):
            at = f"{where}[{j}]"
            if type(call) is not dict:
                self.issue(ln, at, "bad_tool_call", f"tool call must be an object, got {_type_name(call)}")
                continue
            cid = call.get("id")
            if type(cid) is not str or not cid:
                self.issue(ln, f"{at}.id", "bad_tool_call", "tool call id must be a non-empty string")
            else:
                self._ids.add(cid)
            if call.get("type") != "function":
                self.issue(ln, f"{at}.type", "bad_tool_call", 'tool call type must be "function"')
            self._function(call.get("function"), ln, f"{at}.function")
            extra = call.keys() - {"id", "type", "function"}
            for k in sorted(extra):
                self.issue(ln, f"{at}.{k}", "unknown_key", f"unknown key {k!r} in tool call")
        return self.strings_tokens(calls)

    def _tool_reply(self, m: dict[str, Any], ln: int, prefix: str, i: int) -> None:
        tid = m.get("tool_call_id")
        where = f"{prefix}[{i}].tool_call_id"
        if type(tid) is not str or not tid:
            self.issue(ln, where, "bad_tool_call", "tool message needs a tool_call_id")
        elif tid not in self._ids:
            self.issue(ln, where, "bad_tool_call", f"tool_call_id {tid!r} matches no earlier tool call")

    def _tools(self, obj: dict[str, Any], ln: int, prefix: str) -> int:
        """Check ``tools``/``functions``/``parallel_tool_calls``; return the tokens of their JSON."""
        n = 0
        if "tools" in obj:
            tools = obj["tools"]
            where = f"{prefix}tools"
            if type(tools) is not list:
                self.issue(ln, where, "bad_tools", f"tools must be an array, got {_type_name(tools)}")
            else:
                for j, tool in enumerate(tools):
                    at = f"{where}[{j}]"
                    if type(tool) is not dict:
                        self.issue(ln, at, "bad_tools", f"tool must be an object, got {_type_name(tool)}")
                        continue
                    if tool.get("type") != "function":
                        self.issue(ln, f"{at}.type", "bad_tools", 'tool type must be "function"')
                    self._function_def(tool.get("function"), ln, f"{at}.function")
                n += self._json_tokens(tools)
        if "functions" in obj:
            fns = obj["functions"]
            where = f"{prefix}functions"
            if type(fns) is not list:
                self.issue(ln, where, "bad_tools", f"functions must be an array, got {_type_name(fns)}")
            else:
                for j, fn in enumerate(fns):
                    self._function_def(fn, ln, f"{where}[{j}]")
                n += self._json_tokens(fns)
        if "parallel_tool_calls" in obj and type(obj["parallel_tool_calls"]) is not bool:
            self.issue(ln, f"{prefix}parallel_tool_calls", "bad_tools", "parallel_tool_calls must be true or false")
        return n

    def _function_def(self, fn: Any, ln: int, where: str) -> None:
        if type(fn) is not dict:
            self.issue(ln, where, "bad_tools", f"function must be an object, got {_type_name(fn)}")
            return
        name = fn.get("name")
        if type(name) is not str or not name:
            self.issue(ln, f"{where}.name", "bad_tools", "function name must be a non-empty string")
        if "parameters" in fn and type(fn["parameters"]) is not dict:
            self.issue(ln, f"{where}.parameters", "bad_tools", "parameters must be a JSON Schema object")
        if "description" in fn and type(fn["description"]) is not str:
            self.issue(ln, f"{where}.description", "bad_tools", "description must be a string")

    def _json_tokens(self, value: Any) -> int:
        """Tool definitions count as their compact JSON text (examples often repeat the same tools)."""
        try:
            text = orjson.dumps(value).decode()
        except TypeError:  # pragma: no cover - parsed JSON always serialises
            return 0
        return self.cached_count(text)

    # -- prompt / completion ---------------------------------------------------------------------

    def _prompt_completion(self, obj: dict[str, Any], ln: int) -> int | None:
        if not obj.keys() <= PC_KEYS:
            for k in obj:
                if k not in PC_KEYS:
                    self.issue(ln, str(k), "unknown_key", f"unknown key {k!r} in prompt/completion example")
        n = PRIMING_TOKENS
        ok = True
        for key, role in (("prompt", "user"), ("completion", "assistant")):
            value = obj.get(key, _MISSING)
            if value is _MISSING or value is None:
                self.issue(ln, key, "missing_field", f"{key} is missing")
                ok = False
            elif type(value) is not str:
                self.issue(ln, key, "bad_content", f"{key} must be a string, got {_type_name(value)}")
                ok = False
            else:
                if not value or value.isspace():
                    self.issue(ln, key, "empty_content", f"{key} is empty")
                # Counted as the chat example it converts to: one user and one assistant message.
                n += TOKENS_PER_MESSAGE + self.cached_count(role) + self._count(value)
        return n if ok else None

    # -- preference (DPO) ------------------------------------------------------------------------

    def _preference(self, obj: dict[str, Any], ln: int) -> int | None:
        if not obj.keys() <= DPO_KEYS:
            for k in obj:
                if k not in DPO_KEYS:
                    self.issue(ln, str(k), "unknown_key", f"unknown key {k!r} in DPO example")
        counts = [self._dpo_input(obj.get("input", _MISSING), ln)]
        counts += [
            self._dpo_output(obj.get(key, _MISSING), key, ln) for key in ("preferred_output", "non_preferred_output")
        ]
        return None if None in counts else PRIMING_TOKENS + sum(c for c in counts if c is not None)

    def _dpo_input(self, inp: Any, ln: int) -> int | None:
        """Tokens of a DPO example's ``input`` (None: it cannot be counted; the issue is recorded)."""
        if type(inp) is not dict:
            what = "missing" if inp is _MISSING else f"a {_type_name(inp)}, not an object with messages"
            self.issue(ln, "input", "missing_dpo_field", f"input is {what}")
            return None
        if not inp.keys() <= DPO_INPUT_KEYS:
            for k in inp:
                if k not in DPO_INPUT_KEYS:
                    self.issue(ln, f"input.{k}", "unknown_key", f"unknown key {k!r} in input")
        n = self._tools(inp, ln, "input.")
        msgs = inp.get("messages", _MISSING)
        if type(msgs) is not list:
            if msgs is _MISSING or msgs is None:
                self.issue(ln, "input.messages", "missing_messages", "input has no messages")
            else:
                self.issue(ln, "input.messages", "messages_not_list", "input.messages must be an array")
            return None
        if not msgs:
            self.issue(ln, "input.messages", "missing_messages", "input.messages is empty")
            return None
        return n + self._messages(msgs, ln, "input.messages")[0]

    def _dpo_output(self, out: Any, key: str, ln: int) -> int | None:
        """Tokens of a preferred or non-preferred output (None: it cannot be counted)."""
        if out is _MISSING or out is None or (type(out) is list and not out):
            self.issue(ln, key, "missing_dpo_field", f"{key} is missing or empty")
            return None
        if type(out) is not list:
            self.issue(ln, key, "bad_dpo_output", f"{key} must be an array of assistant messages")
            return None
        for j, m in enumerate(out):
            if type(m) is dict and m.get("role") != "assistant":
                self.issue(ln, f"{key}[{j}].role", "wrong_role", f"{key} messages must have role assistant")
        count: int = self._messages(out, ln, key)[0]
        return count


# --- byte ranges ----------------------------------------------------------------------------------


def iter_range(f: Any, start: int, end: int | None) -> Iterator[bytes]:
    """Lines that *start* in ``[start, end)`` of the binary file ``f``.

    The line straddling ``start`` belongs to the previous range, so every line is read exactly once.
    """
    for run in line_runs(f, start, end):
        if run.find(b"\n", 0, len(run) - 1) == -1:
            yield run
        else:
            yield from io.BytesIO(run)


def line_runs(f: Any, start: int, end: int | None) -> Iterator[bytes]:
    """The lines that start in ``[start, end)`` of the binary file ``f``, in runs of whole lines.

    Each run holds the whole lines of one :data:`READ_BLOCK`, or is one line longer than that, read
    with a single read of its exact length. The end of the line straddling ``start`` (which belongs
    to the previous range) is found block by block and only inside the range: memory stays bounded
    by the block and the longest line, and no line is read by two ranges.
    """
    if start > 0:
        # A line starts in the range after a newline at start - 1 .. end - 2.
        found = _after_newline(f, start - 1, None if end is None else end - 1)
        if found is None:
            return
        pos = found
    else:
        pos = 0
    while end is None or pos < end:
        f.seek(pos)
        block: bytes = f.read(READ_BLOCK)
        if not block:
            return
        cut = block.rfind(b"\n") + 1
        if len(block) < READ_BLOCK:  # the end of the file: its last line may lack a newline
            cut = len(block)
        elif cut == 0:  # a line longer than a block: find its end, then read it once
            del block
            stop = _after_newline(f, pos + READ_BLOCK, None)
            if stop is None:
                stop = f.seek(0, os.SEEK_END)
            f.seek(pos)
            yield _read_exact(f, stop - pos)
            pos = stop
            continue
        if end is not None and pos + cut > end:  # stop after the line that straddles end
            k = block.find(b"\n", end - 1 - pos)
            if k != -1:
                cut = k + 1
        yield block if cut == len(block) else block[:cut]
        pos += cut


def _after_newline(f: Any, pos: int, stop: int | None) -> int | None:
    """The offset after the first newline in ``[pos, stop)`` of ``f`` (None: there is none).

    Reads block by block, so a long line is skipped in bounded memory.
    """
    f.seek(pos)
    while stop is None or pos < stop:
        block: bytes = f.read(READ_BLOCK if stop is None else min(READ_BLOCK, stop - pos))
        if not block:
            return None
        k = block.find(b"\n")
        if k != -1:
            return pos + k + 1
        pos += len(block)
    return None


def _read_exact(f: Any, n: int) -> bytes:
    data: bytes = f.read(n)
    if len(data) >= n or not data:
        return data
    parts = [data]  # a read returns at most about 2 GiB at once
    got = len(data)
    while got < n:
        more = f.read(n - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def scan_range(
    path: str, start: int, end: int | None, config: ScanConfig, count: Callable[[str], int], emit: Emit | None = None
) -> ChunkResult:
    """Scan the lines starting in ``[start, end)`` of ``path``; local line numbers start at 1."""
    scanner = Scanner(config, count)
    with open(path, "rb", buffering=0) as f:
        return scanner.scan_runs(line_runs(f, start, end), start == 0, emit)


def plan_chunks(size: int, workers: int) -> list[tuple[int, int]]:
    """Split ``[0, size)`` into contiguous byte ranges for ``workers`` processes."""
    n = max(1, min(workers * CHUNKS_PER_WORKER, size // MIN_CHUNK_BYTES))
    bounds = [size * k // n for k in range(n + 1)]
    return [(bounds[k], bounds[k + 1]) for k in range(n)]


def available_cpus() -> int:
    env = os.environ.get("ANYTUNE_DATA_WORKERS")
    if env and env.isdigit():
        return max(1, int(env))
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def plan_workers(size: int, fork_safe: bool) -> int:
    """How many worker processes to use for a file of ``size`` bytes (1: scan in-process)."""
    if size < PARALLEL_MIN_BYTES:
        return 1
    cpus = min(available_cpus(), MAX_WORKERS)
    if cpus <= 1:
        return 1
    # Forking shares the tokenizer's tables; spawned workers each load their own copy, which is
    # only worth it for files big enough to amortise the start-up.
    if not fork_safe and size < 8 * PARALLEL_MIN_BYTES:
        return 1
    return min(cpus, max(1, size // MIN_CHUNK_BYTES))


# --- worker-process side --------------------------------------------------------------------------

_worker_state: tuple[str, ScanConfig, Callable[[str], int]] | None = None


def init_worker(path: str, config: ScanConfig, provider: str | None, model: str | None) -> None:
    """Pool initializer: find the counter (inherited when forked, loaded once when spawned)."""
    global _worker_state
    from anytune._data.tokens import counter_for, fast_count

    _worker_state = (path, config, fast_count(counter_for(provider, model)))


def scan_chunk(bounds: tuple[int, int]) -> ChunkResult:
    """Pool task: scan one byte range with the state :func:`init_worker` set up."""
    if _worker_state is None:  # pragma: no cover - misuse
        raise RuntimeError("scan_chunk called outside a worker")
    path, config, count = _worker_state
    return scan_range(path, bounds[0], bounds[1], config, count)


def fork_is_safe() -> bool:
    """Fork only a single-threaded Linux process (threads + fork can deadlock the child)."""
    import threading

    return sys.platform.startswith("linux") and threading.active_count() == 1
