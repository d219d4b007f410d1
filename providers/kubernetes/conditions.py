"""Small pure helpers the Kaito and Kubeflow mappings share: object names and status conditions.

Kubernetes objects come back from the API as plain mappings (the custom resources have no typed
client), so these read them as such and never assume a field is present.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from anytune.errors import ConfigError

__all__ = ["check_dns_label", "condition", "condition_true", "conditions", "is_deleting"]

# RFC 1035 label: what the Kubeflow webhooks and the TrainJob CRD's CEL rule ask of a job's name.
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# RFC 1123 label: what a container name must be (Kaito names its tuning container after the workspace).
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def check_dns_label(name: str, *, field: str, kind: str, rfc1035: bool = True) -> None:
    """Refuse ``name`` unless it is a DNS label (at most 63 lower-case letters, digits and '-').

    Raises:
        ConfigError: naming ``field`` and the rule, before anything is created.
    """
    pattern = _DNS1035 if rfc1035 else _DNS1123
    start = "a letter" if rfc1035 else "a letter or digit"
    if len(name) > 63 or not pattern.match(name):
        raise ConfigError(
            f"{kind} name {name!r} must be at most 63 lower-case letters, digits or '-', "
            f"start with {start} and end with a letter or digit",
            field=field,
        )


def conditions(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The object's ``status.conditions`` (an empty list when it has none yet)."""
    status = obj.get("status") or {}
    found = status.get("conditions") if isinstance(status, Mapping) else None
    if not isinstance(found, Sequence):
        return []
    return [c for c in found if isinstance(c, Mapping)]


def condition(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    """The condition of type ``kind``; the last one when a controller left duplicates."""
    found = None
    for cond in conditions(obj):
        if cond.get("type") == kind:
            found = cond
    return found


def condition_true(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    """The condition of type ``kind`` when its status is ``"True"``, else ``None``."""
    cond = condition(obj, kind)
    return cond if cond is not None and str(cond.get("status", "")).lower() == "true" else None


def is_deleting(obj: Mapping[str, Any]) -> bool:
    """Whether the object is being deleted (``metadata.deletionTimestamp`` is set)."""
    meta = obj.get("metadata") or {}
    return isinstance(meta, Mapping) and bool(meta.get("deletionTimestamp"))
