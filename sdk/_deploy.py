"""Deploying a fine-tuned model and calling it: the uniform :class:`Deployment` and the pure rules
every provider's ``deploy`` shares (the default name, the settings check).

A provider implements three methods (see :class:`~anytune._provider.Provider`): ``deploy`` (find the
deployment of that name or create it; never a second one), ``deployment`` (look it up) and
``undeploy`` (delete it; nothing to delete is not an error). Its deployment's chat goes through the
provider's own ``chat`` with :attr:`Deployment.target` as the model, the same call evaluation makes.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

DeploymentStatus = Literal["creating", "ready", "failed", "deleting", "deleted"]

#: A chat call: (messages, max_tokens, temperature, seed) -> the reply's text.
Answerer = Callable[[list[dict[str, Any]], int, float, int], str]

#: Names every service takes: Azure ML endpoint names (3-32, a letter first, letters, digits and
#: '-'), Hugging Face Inference Endpoint names (lowercase, at most 32), Azure OpenAI deployment names.
_NAME = re.compile(r"^[a-z][a-z0-9-]{1,30}[a-z0-9]$")
DEFAULT_TIMEOUT = 3600.0


class Deployment(BaseModel):
    """A fine-tuned model made callable: an Azure OpenAI deployment, an Azure ML endpoint, a Hugging
    Face Inference Endpoint, OpenAI's own model id, or a model loaded in this process.

    ``target`` is what the provider's chat API is called with (a deployment or endpoint name, a
    model id); ``cost_notes`` says what keeps being billed while it exists and how to stop it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    provider: str
    job_ref: str
    name: str
    kind: str = Field(description="what the service calls it: deployment, serverless-endpoint, ...")
    target: str
    model: str = Field(description="what is served: a fine-tuned model id, a registered model, a Hub repo")
    status: DeploymentStatus
    url: str | None = None
    created: bool = Field(False, description="True when this call created it (False: it existed)")
    cost_notes: tuple[str, ...] = ()
    extra: dict[str, Any] = Field(default_factory=dict)

    _answer: Answerer | None = PrivateAttr(default=None)
    _remove: Callable[[], Deployment | None] | None = PrivateAttr(default=None)

    def bind(self, answer: Answerer | None, remove: Callable[[], Deployment | None] | None) -> Deployment:
        """Attach how to call and remove it (providers do this; the fields stay plain data)."""
        self._answer, self._remove = answer, remove
        return self

    @property
    def ready(self) -> bool:
        return self.status == "ready"

    def chat(
        self,
        messages: str | Sequence[Mapping[str, Any]],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        seed: int = 0,
    ) -> str:
        """The deployed model's reply to ``messages`` (chat messages, or one user message as text).

        Raises:
            UsageError: the deployment is not ready, or this object was not made by ``deploy()``.
            ProviderError: the service refused or failed (retried first where that is safe).
        """
        from anytune.errors import UsageError

        if self._answer is None:
            raise UsageError(
                "this Deployment was not made by deploy() or deployment(): call it through one", field="chat"
            )
        if not self.ready:
            raise UsageError(
                f"deployment {self.name!r} is {self.status}: wait for it to be ready (deploy(wait=True))",
                field="chat",
            )
        return self._answer(as_messages(messages), max_tokens, temperature, seed)

    def undeploy(self) -> Deployment | None:
        """Delete it (see :meth:`FineTunedModel.undeploy`): what was deleted, or None if it was gone."""
        from anytune.errors import UsageError

        if self._remove is None:
            raise UsageError("this Deployment was not made by deploy(): undeploy through its model", field="undeploy")
        return self._remove()


def as_messages(messages: str | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Chat messages from text or messages, checked: a clear error instead of the service's 400."""
    from anytune.errors import UsageError

    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise UsageError(f"messages[{i}] needs a 'role' and a 'content'", field=f"messages[{i}]")
        if message["role"] not in ("system", "developer", "user", "assistant"):
            raise UsageError(f"messages[{i}].role {message['role']!r} is not a chat role", field=f"messages[{i}].role")
        if not isinstance(message.get("content"), str):
            raise UsageError(f"messages[{i}].content must be text", field=f"messages[{i}].content")
        out.append({"role": message["role"], "content": message["content"]})
    if not out or out[-1]["role"] != "user":
        raise UsageError("the last message must be the user's", field="messages")
    return out


def default_name(job_ref: str) -> str:
    """The deployment name a job's result gets unless one is given: the same for the same job, so a
    repeated ``deploy()`` finds the first instead of making a second (pure).

    Lowercase letters, digits and '-', a letter first, at most 32 characters: every service takes it.
    """
    _, _, job_id = job_ref.partition(":")
    tail = re.sub(r"[^a-z0-9]+", "-", (job_id or job_ref).lower()).strip("-")
    digest = hashlib.sha256(job_ref.encode()).hexdigest()[:6]
    return f"ft-{tail[-20:].strip('-') or 'model'}-{digest}".replace("--", "-")


def check_name(name: str) -> str:
    """Refuse a name some service would refuse, before anything is sent (pure).

    Raises:
        UsageError: naming the rule.
    """
    if not _NAME.match(name) or "--" in name:
        from anytune.errors import UsageError

        raise UsageError(
            f"deployment name {name!r}: use 3-32 lowercase letters, digits and single '-', starting with a letter "
            "and ending with a letter or digit",
            field="name",
        )
    return name


def check_settings(model: type[BaseModel], given: Mapping[str, Any], provider: str) -> Any:
    """A provider's deploy settings, validated: an unknown or bad one names itself (pure).

    Raises:
        UsageError: naming the setting and what is allowed.
    """
    try:
        return model.model_validate(dict(given))
    except ValidationError as exc:
        from anytune.errors import UsageError

        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        known = ", ".join(sorted(model.model_fields))
        takes = f"{provider} takes: {known}" if known else f"{provider} takes no deploy settings"
        hint = f" ({takes})" if first["type"] == "extra_forbidden" else ""
        raise UsageError(f"deploy setting {where}: {first['msg']}{hint}", field=where) from None


def check_timeout(timeout: float) -> float:
    """A wait's limit: a number of seconds, 0 or more (infinity waits for ever) (pure).

    Raises:
        UsageError: NaN or a negative number (nothing is created).
    """
    if math.isnan(timeout) or timeout < 0:
        from anytune.errors import UsageError

        raise UsageError(f"timeout must be 0 or more seconds, not {timeout!r}", field="timeout")
    return timeout


def wait_until(
    read: Callable[[], Deployment | None],
    *,
    settled: Callable[[Deployment | None], bool],
    sleep: Callable[[float], None],
    clock: Callable[[], float],
    timeout: float,
    what: str,
    interval: float = 10.0,
) -> Deployment | None:
    """Read until ``settled`` holds (a deploy: ready or failed; an undeploy: gone), sleeping
    ``interval`` between reads with the provider's injected ``sleep``/``clock`` (the project's
    :func:`~anytune._waiting.wait_until` at a steady pace, its last sleep cut at the deadline).

    Raises:
        WaitTimeoutError: not settled after ``timeout`` seconds (the service carries on).
    """
    from anytune._waiting import wait_until as poll_until
    from anytune.errors import WaitTimeoutError

    deadline = clock() + timeout

    def late(current: Deployment | None) -> WaitTimeoutError:
        status = current.status if current is not None else "gone"
        message = f"{what}: still {status} after {timeout:g} s (it carries on; look again later)"
        return WaitTimeoutError(what, timeout, message=message)

    return poll_until(
        read,
        settled,
        timeout=timeout,
        on_timeout=late,
        initial=interval,
        factor=1.0,
        maximum=interval,
        sleep=lambda seconds: sleep(min(seconds, deadline - clock())),
        clock=clock,
    )


def is_settled(deployment: Deployment | None) -> bool:
    """A deploy's wait ends: ready or failed (or gone, which the caller reports)."""
    return deployment is None or deployment.status in ("ready", "failed")


def is_gone(deployment: Deployment | None) -> bool:
    """An undeploy's wait ends: nothing left under the name."""
    return deployment is None or deployment.status == "deleted"


class NoSettings(BaseModel):
    """Deploy settings of a provider that takes none."""

    model_config = ConfigDict(extra="forbid")
