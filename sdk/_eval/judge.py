"""LLM-as-judge through any OpenAI-compatible chat endpoint (the ``openai`` SDK: OpenAI, Azure
OpenAI's v1 endpoint, vLLM, Ollama, ``anytune serve``...).

The rubric (:data:`RUBRIC`) asks for one integer from 1 to 5 comparing the answer with the
reference: 5 the same meaning and everything the reference says, 4 the same meaning with small
omissions or extra words, 3 partly right, 2 mostly wrong with something right, 1 wrong, empty or
off-topic. The judge answers ``{"score": N, "reason": "..."}``; the score is what counts. Calls are
greedy (temperature 0) and retried on 408/429/5xx and connection failures by anytune's shared
policy (:mod:`anytune._retry`), honouring ``Retry-After``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from anytune._retry import RetryPolicy, is_transient_api_error, retry_after_of, retry_call
from anytune.errors import AuthenticationError, ConfigError, MissingDependencyError, ProviderError

__all__ = ["RUBRIC", "RUBRIC_VERSION", "OpenAIJudge", "parse_score"]

RUBRIC_VERSION = "1"
RUBRIC = """You grade an assistant's answer against a reference answer.
Question (the last user message):
{question}

Reference answer:
{reference}

Answer to grade:
{answer}

Score 1 to 5: 5 = same meaning and everything the reference says; 4 = same meaning, small omissions
or extra words; 3 = partly right; 2 = mostly wrong but something right; 1 = wrong, empty or off-topic.
Reply with JSON only: {{"score": <integer 1-5>, "reason": "<one sentence>"}}"""

_SCORE = re.compile(r'"score"\s*:\s*"?([1-5])\b|^\s*([1-5])\s*$')


def parse_score(text: str) -> float:
    """The 1-5 score of a judge's reply (JSON, or a bare digit).

    Raises:
        ProviderError: the reply holds no score (the judge did not follow the rubric).
    """
    try:
        data = json.loads(text)
        if isinstance(data, Mapping) and int(data.get("score", 0)) in range(1, 6):
            return float(int(data["score"]))
    except (ValueError, TypeError):
        pass
    match = _SCORE.search(text.strip())
    if match is None:
        raise ProviderError(f"the judge's reply holds no score from 1 to 5: {text[:200]!r}")
    return float(match.group(1) or match.group(2))


class OpenAIJudge:
    """Grades answers with ``model`` at ``base_url`` (default: OpenAI). The key comes from
    ``api_key``, else ``ANYTUNE_JUDGE_API_KEY``, else ``OPENAI_API_KEY``."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        client: Any | None = None,
        policy: RetryPolicy | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.model = model
        self.base_url = base_url
        self._policy = policy or RetryPolicy()
        if client is None:
            key = api_key or os.environ.get("ANYTUNE_JUDGE_API_KEY") or os.environ.get("OPENAI_API_KEY")
            if not key:
                raise ConfigError(
                    "the judge needs an API key: set ANYTUNE_JUDGE_API_KEY (or OPENAI_API_KEY)", field="judge"
                )
            try:
                import openai
            except ImportError as exc:
                raise MissingDependencyError("openai", "openai", "the LLM judge") from exc
            # Retries are the shared policy's, below: the SDK's own would multiply them.
            client = openai.OpenAI(api_key=key, base_url=base_url, max_retries=0, timeout=timeout)
        self._client = client

    def __repr__(self) -> str:
        return f"OpenAIJudge({self.model!r}, base_url={self.base_url!r})"

    def describe(self) -> dict[str, Any]:
        """What the report records about the judge (the host only, never a key)."""
        # The host and port only: a URL's user:password@ part is a credential.
        parts = urlsplit(self.base_url) if self.base_url else None
        host = "api.openai.com" if parts is None else f"{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"
        return {"model": self.model, "host": host, "rubric_version": RUBRIC_VERSION, "temperature": 0}

    def grade(self, prompt: Sequence[Mapping[str, Any]], reference: str, answer: str) -> float:
        from anytune._eval.run import _last_user

        content = RUBRIC.format(question=_last_user(prompt), reference=reference, answer=answer)

        def call() -> Any:
            return self._client.chat.completions.create(
                model=self.model, messages=[{"role": "user", "content": content}], temperature=0
            )

        try:
            response = retry_call(
                call,
                policy=self._policy,
                retry_on=is_transient_api_error,
                retry_after=retry_after_of,
                what="judge call",
            )
        except Exception as exc:
            if isinstance(exc, ProviderError):
                raise
            status = getattr(exc, "status_code", None)
            kind = AuthenticationError if status == 401 else ProviderError
            raise kind(
                f"the judge ({self.describe()['host']}) failed: {type(exc).__name__}: {exc}",
                provider="judge",
                status_code=status if isinstance(status, int) else None,
            ) from exc
        return parse_score(str(response.choices[0].message.content or ""))
