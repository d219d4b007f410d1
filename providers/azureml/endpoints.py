"""Chat with a model deployed to an Azure ML endpoint (evaluation's way of calling a hosted model).

A fine-tuning job registers a model in the workspace; it answers only once deployed (the deploy
hints of :meth:`AzureMLProvider.result` show how). ``anytune eval REF --deployment NAME`` then names
the endpoint, and the kind of endpoint decides how it is called:

* **serverless endpoint** (MaaS): it speaks OpenAI's chat-completions shape at
  ``<inference uri>/v1/chat/completions``; its key comes from ``serverless_endpoints.get_keys``
  (an endpoint with Entra ID auth only gets a token for Azure ML's audience instead) and the call
  goes through the ``openai`` SDK, retried by anytune's shared policy.
* **managed online endpoint** (MaaP): its scoring URI (``online_endpoints.get``) with its key or
  token (``online_endpoints.get_keys``), posted the model catalog's chat-completion scoring schema,
  ``{"input_data": {"input_string": messages, "parameters": {...}}}``, answered
  ``{"output": "..."}``. ``NAME`` may be ``endpoint/deployment`` to address one deployment behind
  the endpoint's traffic split. The scoring schema has no seed.

The serverless endpoint is looked up first; a name that is neither is a :class:`ConfigError`
before any model is called.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from anytune._boundary import boundary
from anytune._retry import RetryPolicy, is_transient_api_error, retry_after_of, retry_call
from anytune.errors import AnytuneError, ConfigError, ProviderError
from anytune.providers.azureml.errors import NAME
from anytune.providers.azureml.workspace import Connection

__all__ = ["EndpointChat", "score_answer", "score_request", "split_endpoint"]

#: The audience of an Entra ID token for a serverless endpoint without key auth.
ML_SCOPE = "https://ml.azure.com/.default"


#: Azure ML's rule for endpoint and deployment names: a letter, then letters, digits and dashes.
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]{1,31}")


def split_endpoint(name: str) -> tuple[str, str | None]:
    """``endpoint`` or ``endpoint/deployment`` → (endpoint, deployment or None).

    Raises:
        ConfigError: not that shape (a registered model's id, a registry asset URI...).
    """
    parts = name.strip().split("/")
    if len(parts) > 2 or not all(_NAME.fullmatch(p) for p in parts):
        raise ConfigError(
            f"{name!r} is not an Azure ML endpoint name: a registered model answers only once deployed to an "
            "endpoint; deploy it (its result's extra['deploy'] shows how) and name the endpoint as ENDPOINT or "
            "ENDPOINT/DEPLOYMENT (anytune eval --deployment / --base-deployment, or call_as)",
            field="deployment",
        )
    return parts[0], parts[1] if len(parts) == 2 else None


def score_request(messages: Sequence[Mapping[str, Any]], *, max_tokens: int, temperature: float) -> dict[str, Any]:
    """The chat-completion scoring body of a managed online endpoint. Greedy decoding (temperature
    0) is ``do_sample: false``: the catalog's container refuses a zero temperature with sampling on."""
    parameters: dict[str, Any] = {"max_new_tokens": max_tokens, "do_sample": temperature > 0}
    if temperature > 0:
        parameters["temperature"] = temperature
    return {
        "input_data": {
            "input_string": [{"role": str(m["role"]), "content": str(m.get("content") or "")} for m in messages],
            "parameters": parameters,
        }
    }


def score_answer(text: str, *, endpoint: str) -> str:
    """The reply in a managed online endpoint's answer (``{"output": "..."}``).

    Raises:
        ProviderError: the answer is not that shape (the deployment is not a chat-completion model).
    """
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, Mapping) and isinstance(data.get("output"), str):
        return str(data["output"])
    raise ProviderError(
        f"endpoint {endpoint!r} did not answer in the chat-completion scoring shape ({{'output': ...}}): "
        f"{text[:200]!r}; deploy the model with the chat-completion task",
        provider=NAME,
    )


class EndpointChat:
    """One chat reply from a deployed endpoint; see the module docstring.

    Args:
        connection: the provider's workspace connection (MLClient, credential, error mapping).
        http_client: the ``httpx2.Client`` the ``openai`` SDK sends through (tests pass a fake).
        policy: retries of the chat and scoring calls.
        sleep: how retries wait.
    """

    def __init__(
        self,
        connection: Connection,
        *,
        http_client: Any = None,
        policy: RetryPolicy | None = None,
        sleep: Any = None,
    ) -> None:
        self.connection = connection
        self.http_client = http_client
        self.policy = policy or RetryPolicy()
        self._sleep = sleep
        #: name -> how to ask it: the endpoint, its kind and its key are looked up once per name,
        #: not once per example of an evaluation.
        self._targets: dict[str, Callable[[list[dict[str, Any]], int, float, int], str]] = {}

    def __call__(
        self, name: str, messages: list[dict[str, Any]], *, max_tokens: int, temperature: float, seed: int
    ) -> str:
        target = self._targets.get(name)
        if target is None:
            target = self._targets[name] = self._resolve(name)
        return target(messages, max_tokens, temperature, seed)

    def forget(self, name: str) -> None:
        """Drop what was looked up for ``name`` (its endpoint was deleted: a new one has new keys)."""
        self._targets.pop(name, None)

    def _resolve(self, name: str) -> Callable[[list[dict[str, Any]], int, float, int], str]:
        endpoint, deployment = split_endpoint(name)
        ml = self.connection.ml()
        if deployment is None:
            serverless = self.connection.find(
                f"get serverless endpoint {endpoint}", lambda: ml.serverless_endpoints.get(endpoint)
            )
            if serverless is not None:
                client = self._serverless_client(endpoint, serverless)
                return lambda messages, max_tokens, temperature, seed: self._serverless_chat(
                    client, endpoint, messages, max_tokens, temperature, seed
                )
        online = self.connection.find(f"get online endpoint {endpoint}", lambda: ml.online_endpoints.get(endpoint))
        if online is None:
            ws = self.connection.workspace(required=False)
            where = f" in workspace {ws.name!r}" if ws is not None else ""
            kinds = "managed online endpoint" if deployment else "serverless or managed online endpoint"
            raise ConfigError(
                f"no {kinds} named {endpoint!r}{where}: deploy the fine-tuned model first (its result's "
                "extra['deploy'] shows how) and name that endpoint",
                field="deployment",
            )
        post = self._scorer(endpoint, online, deployment)
        return lambda messages, max_tokens, temperature, _seed: score_answer(
            post(score_request(messages, max_tokens=max_tokens, temperature=temperature)), endpoint=endpoint
        )

    # -- serverless (MaaS) ----------------------------------------------------------------------
    def _serverless_client(self, endpoint: str, entity: Any) -> Any:
        uri = str(getattr(entity, "scoring_uri", None) or "")
        if not uri:
            raise ProviderError(
                f"serverless endpoint {endpoint!r} has no inference URI yet (still creating?)", provider=NAME
            )
        mode = str(getattr(entity, "auth_mode", None) or "key").lower()
        if "key" in mode:
            with boundary(self.connection.errors(f"get keys of serverless endpoint {endpoint}")):
                keys = self.connection.ml().serverless_endpoints.get_keys(endpoint)
            key = str(keys.primary_key or keys.secondary_key or "")
        else:  # Entra ID only
            key = self.connection.credential().get_token(ML_SCOPE).token
        try:
            import openai
        except ImportError as exc:  # pragma: no cover - the azure extra brings it
            from anytune.errors import MissingDependencyError

            raise MissingDependencyError("openai", "azure", "chat with an Azure ML serverless endpoint") from exc
        # Retries are the shared policy's (below): the SDK's own would multiply them.
        return openai.OpenAI(
            api_key=key,
            base_url=uri.rstrip("/") + "/v1",
            max_retries=0,
            timeout=self.connection.settings.timeout,
            http_client=self.http_client,
        )

    def _serverless_chat(
        self, client: Any, endpoint: str, messages: list[dict[str, Any]], max_tokens: int, temperature: float, seed: int
    ) -> str:
        def call() -> Any:
            return client.chat.completions.create(
                model=endpoint,  # a serverless endpoint serves one model; the field is required
                messages=messages,
                max_tokens=max_tokens,
                temperature=temperature,
                seed=seed,
            )

        try:
            response = self._retry(call, is_transient_api_error, f"chat with {endpoint}")
        except AnytuneError:
            raise
        except Exception as exc:
            status = getattr(exc, "status_code", None)
            from anytune.errors import AuthenticationError

            kind = AuthenticationError if status in (401, 403) else ProviderError
            raise kind(
                f"serverless endpoint {endpoint!r} failed: {type(exc).__name__}: {exc}",
                provider=NAME,
                status_code=status if isinstance(status, int) else None,
            ) from exc
        choices = getattr(response, "choices", None) or []
        return str(choices[0].message.content or "") if choices else ""

    # -- managed online (MaaP) ------------------------------------------------------------------
    def _scorer(self, endpoint: str, entity: Any, deployment: str | None) -> Callable[[Mapping[str, Any]], str]:
        """How to POST a scoring body to the endpoint's scoring URI with its key (or token).

        Not ``online_endpoints.invoke``: azure-ai-ml hands one retry-policy instance to every
        pipeline of an ``MLClient``, and azure-core links policies through the instance, so invoke's
        request ends in another client's ARM bearer policy, which replaces the endpoint key (the
        fake's 401 showed it). The key still comes from the SDK (``get_keys``), the request goes
        through an azure-core pipeline of its own on the same transport, and the shared policy
        retries it (a scoring call changes nothing: safe to repeat)."""
        from azure.core import PipelineClient
        from azure.core.pipeline.policies import HeadersPolicy, UserAgentPolicy
        from azure.core.rest import HttpRequest

        uri = str(getattr(entity, "scoring_uri", None) or "")
        if not uri:
            raise ProviderError(f"online endpoint {endpoint!r} has no scoring URI yet (still creating?)", provider=NAME)
        with boundary(self.connection.errors(f"get keys of online endpoint {endpoint}")):
            keys = self.connection.ml().online_endpoints.get_keys(endpoint)
        token = str(getattr(keys, "primary_key", None) or getattr(keys, "access_token", None) or "")
        extra = {"transport": self.connection.transport} if self.connection.transport is not None else {}
        client = PipelineClient(uri, policies=[HeadersPolicy(), UserAgentPolicy("anytune")], **extra)
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        if deployment:
            headers["azureml-model-deployment"] = deployment

        def post(body: Mapping[str, Any]) -> str:
            def call() -> str:
                response = client.send_request(HttpRequest("POST", uri, json=dict(body), headers=headers))
                response.raise_for_status()
                return str(response.text())

            with boundary(self.connection.errors(f"score with online endpoint {endpoint}")):
                return str(self._retry(call, _transient_azure, f"score with {endpoint}"))

        return post

    def _retry(self, call: Any, retry_on: Any, what: str) -> Any:
        """``call()`` under the shared policy (a chat or scoring call changes nothing: safe to repeat)."""
        wait = {"sleep": self._sleep} if self._sleep is not None else {}
        return retry_call(call, policy=self.policy, retry_on=retry_on, retry_after=retry_after_of, what=what, **wait)


def _transient_azure(exc: BaseException) -> bool:
    """A 408/429/5xx answer, or an answer lost after the request went out (azure-core's names)."""
    return is_transient_api_error(exc) or type(exc).__name__ in ("ServiceResponseError", "ServiceResponseTimeoutError")
