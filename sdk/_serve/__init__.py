"""``anytune serve``: OpenAI's fine-tuning and chat-completions API in front of anytune (``anytune[serve]``).

See :mod:`anytune._serve.app`.
"""

from __future__ import annotations

from anytune._serve.app import ServeOptions, create_app
from anytune._serve.keys import ENV_KEYS, KeyRing, keys_from
from anytune._serve.state import ServeState

__all__ = ["ENV_KEYS", "KeyRing", "ServeOptions", "ServeState", "create_app", "keys_from"]
