"""Dataset shapes: which one an example is in, and prompt/completion as chat, written once.

Every reader (validation, the trainer's data pipeline, the adapters that convert before upload)
asks these functions, so a shape is recognised the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import orjson

__all__ = [
    "PREFERENCE_KEYS",
    "DatasetFormat",
    "example_format",
    "file_format",
    "prompt_completion_messages",
]

DatasetFormat = Literal["chat", "prompt_completion", "preference", "unknown"]

#: Keys of a DPO preference pair (OpenAI's preference format).
PREFERENCE_KEYS = ("input", "preferred_output", "non_preferred_output")


def example_format(obj: Mapping[str, Any], *, loose: bool = False) -> DatasetFormat:
    """The shape of one example.

    Strict (the default) asks for what makes an example usable in that shape: ``messages``; a
    preferred or non-preferred output; both ``prompt`` and ``completion``. ``loose`` takes any
    one of a shape's keys, for validation, which then reports what is missing with its field.
    """
    if "messages" in obj:
        return "chat"
    preference = PREFERENCE_KEYS if loose else PREFERENCE_KEYS[1:]
    if any(k in obj for k in preference):
        return "preference"
    pc = ("prompt" in obj or "completion" in obj) if loose else ("prompt" in obj and "completion" in obj)
    return "prompt_completion" if pc else "unknown"


def file_format(path: Path) -> DatasetFormat:
    """The shape of a JSONL file, from its first example (``unknown`` if it has none or is not JSON)."""
    with Path(path).open("rb") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                return "unknown"
            return example_format(obj) if isinstance(obj, dict) else "unknown"
    return "unknown"


def prompt_completion_messages(prompt: Any, completion: Any, *, system: str | None = None) -> list[dict[str, Any]]:
    """A prompt/completion pair as chat: an optional system message, the user's prompt, the assistant's answer."""
    head = [{"role": "system", "content": system}] if system is not None else []
    return [*head, {"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
