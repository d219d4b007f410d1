"""The model catalog and Azure Marketplace: resolving a base model, subscribing to its offer.

A base model given by name is looked up in its registry (its latest version unless one is pinned)
and checked for the task.  Serverless fine-tuning of a third-party registry's model (Meta,
Mistral...) is billed through an Azure Marketplace subscription in the workspace; anytune creates
one only with ``accept_marketplace_terms``, and waits until it is active.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from anytune._boundary import boundary
from anytune._waiting import wait_until
from anytune.errors import AnytuneError, ModelNotAvailableError
from anytune.providers.azureml.errors import NAME
from anytune.providers.azureml.mapping import CATALOG_TASKS, Submission, subscription_name
from anytune.providers.azureml.workspace import Connection

#: Marketplace subscription states after which waiting is pointless.
_REFUSED = ("unsubscribed", "suspended")
#: Seconds between checks of a new subscription.
MARKETPLACE_POLL = 5.0


def resolve_model(conn: Connection, sub: Submission) -> str:
    """The asset id of the submission's base model, checked for its task.

    Raises:
        ModelNotAvailableError: the registry does not have it, or it cannot be fine-tuned for the task.
    """
    model = sub.model
    if model.asset_id:
        return model.asset_id
    assert model.registry is not None

    def invalid() -> AnytuneError:
        which = f"version {model.version}" if model.version else "any version"
        return ModelNotAvailableError(
            f"model {model.name!r} ({which}) is not in registry {model.registry!r}; check the name in "
            "the Azure AI model catalog, or pass its full asset id",
            provider=NAME,
            status_code=404,
        )

    client = conn.registry(model.registry)
    with boundary(conn.errors(f"look up model {model.name!r}", not_found=invalid)):
        entity = (
            client.models.get(model.name, version=model.version)
            if model.version
            else client.models.get(model.name, label="latest")
        )
    tasks = str((getattr(entity, "properties", None) or {}).get("finetuning-tasks", "") or "")
    listed = [t.strip().lower() for t in tasks.split(",") if t.strip()]
    if listed and CATALOG_TASKS[sub.task] not in listed and sub.task not in listed:
        raise ModelNotAvailableError(
            f"model {model.name!r} cannot be fine-tuned for {sub.task} (it lists: {', '.join(listed)})",
            provider=NAME,
        )
    return str(entity.id)


def _state(subscription: Any) -> str:
    return str(getattr(subscription, "status", "") or "").lower()


def ensure_marketplace(
    conn: Connection, sub: Submission, *, sleep: Callable[[float], None], clock: Callable[[], float]
) -> None:
    """Make sure the workspace has an active marketplace subscription to the model.

    Raises:
        ModelNotAvailableError: none is active and ``accept_marketplace_terms`` is not set, or the
            new one was refused or did not become active within ``marketplace_wait`` seconds.
    """
    from azure.ai.ml.entities import MarketplaceSubscription

    name = subscription_name(sub.model.name)
    ml = conn.ml()
    current = conn.find("look up marketplace subscription", lambda: ml.marketplace_subscriptions.get(name))
    if current is not None and _state(current) == "subscribed":
        return
    if not sub.accept_marketplace_terms:
        state = f" (its subscription {name!r} is {current.status})" if current is not None else ""
        raise ModelNotAvailableError(
            f"model {sub.model.marketplace_id} is billed through Azure Marketplace and this workspace "
            f"has no active subscription to it{state}. Review its terms, then set "
            f"accept_marketplace_terms=true (setting or {sub.section} section) to subscribe, or subscribe in "
            "Azure AI Foundry",
            provider=NAME,
        )
    with boundary(conn.errors(f"subscribe to {sub.model.marketplace_id}")):
        ml.marketplace_subscriptions.begin_create_or_update(
            MarketplaceSubscription(name=name, model_id=sub.model.marketplace_id), polling=False
        ).result()

    def given_up(state: str) -> AnytuneError:
        return ModelNotAvailableError(
            f"marketplace subscription {name!r} for {sub.model.marketplace_id} is {state or 'pending'}",
            provider=NAME,
        )

    def poll() -> str:
        with boundary(conn.errors("check marketplace subscription")):
            state = _state(ml.marketplace_subscriptions.get(name))
        if state in _REFUSED:
            raise given_up(state)
        return state

    wait_until(
        poll,
        lambda state: state == "subscribed",
        timeout=conn.settings.marketplace_wait,
        on_timeout=given_up,
        initial=MARKETPLACE_POLL,
        factor=1.0,
        maximum=MARKETPLACE_POLL,
        sleep=sleep,
        clock=clock,
    )
