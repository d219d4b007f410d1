"""What each Azure OpenAI api-version's fine-tuning API has, as data (pure).

From Azure's published OpenAPI descriptions (Azure/azure-rest-api-specs):

* ``v1`` / ``preview``: ``specification/ai/data-plane/OpenAI.v1`` - the ``{endpoint}/openai/v1/``
  surface with OpenAI's shapes (``OpenAI.CreateFineTuningJobRequest``, ``OpenAI.FineTuningJob``),
  job ``metadata`` and ``method`` included; ``api-version`` optional (``v1`` when absent).
* ``2025-04-01-preview``: ``.../AzureOpenAI/authoring/preview/2025-04-01-preview/azureopenai.json`` -
  ``FineTuningJobCreation`` has model, training_file, validation_file, hyperparameters, suffix,
  seed, integrations, method; ``FineTuningJob`` keeps ``suffix`` but has no ``metadata``.  Its
  methods are those of ``FineTuningMethodType`` (supervised, DPO: no reinforcement), and
  ``SupervisedMethodRequest`` holds only ``type``: supervised hyperparameters go in the top-level
  ``hyperparameters`` (DPO's under ``method.dpo``).  Jobs pause and resume.
* ``2024-10-21``: ``.../AzureOpenAI/authoring/stable/2024-10-21/azureopenai.json`` - the same
  without ``integrations`` and ``method`` (hyperparameters top-level; no DPO), and no pause or
  resume (``FineTuningState`` has no paused state).

None of them lists ``trainingType``, which the service requires in practice; it is sent on every
version.  A dated version not in the table takes the shape of the newest table entry not newer
than it (before 2025-04-01: 2024-10-21's).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AZURE_SURFACES", "V1_VERSIONS", "AzureSurface", "azure_surface"]

#: The api-versions that select the ``/openai/v1/`` surface.
V1_VERSIONS = frozenset({"v1", "preview"})

_OPENAI_CREATE = frozenset(
    {
        "model",
        "training_file",
        "validation_file",
        "hyperparameters",
        "suffix",
        "seed",
        "integrations",
        "method",
        "metadata",
    }
)
_DATED_CREATE = frozenset({"model", "training_file", "validation_file", "hyperparameters", "suffix", "seed"})


@dataclass(frozen=True)
class AzureSurface:
    """One api-version's fine-tuning API: where it lives and what its create body may hold."""

    name: str
    v1: bool
    create_fields: frozenset[str]
    #: Whether jobs pause and resume (the operations exist and the job states include paused).
    pauses: bool = True

    @property
    def keeps_metadata(self) -> bool:
        """Whether jobs keep ``metadata`` (else they are identified by their ``suffix``)."""
        return "metadata" in self.create_fields

    @property
    def has_method(self) -> bool:
        """Whether the body takes ``method`` (else hyperparameters go top-level and DPO is absent)."""
        return "method" in self.create_fields

    @property
    def supervised_hyperparameters_in_method(self) -> bool:
        """Whether supervised hyperparameters go under ``method.supervised`` (v1: OpenAI's shape);
        the dated versions' supervised method holds only ``type``."""
        return self.v1

    @property
    def methods(self) -> frozenset[str]:
        """The ``method.type`` values the create body takes."""
        if self.v1:
            return frozenset({"supervised", "dpo", "reinforcement"})
        return frozenset({"supervised", "dpo"}) if self.has_method else frozenset({"supervised"})


AZURE_SURFACES: dict[str, AzureSurface] = {
    "v1": AzureSurface("v1", v1=True, create_fields=_OPENAI_CREATE),
    "preview": AzureSurface("preview", v1=True, create_fields=_OPENAI_CREATE),
    "2025-04-01-preview": AzureSurface(
        "2025-04-01-preview", v1=False, create_fields=_DATED_CREATE | {"integrations", "method"}
    ),
    "2024-10-21": AzureSurface("2024-10-21", v1=False, create_fields=_DATED_CREATE, pauses=False),
}


def azure_surface(api_version: str | None) -> AzureSurface:
    """The surface ``api_version`` selects (``v1`` when None)."""
    version = (api_version or "v1").strip()
    known = AZURE_SURFACES.get(version.lower())
    if known is not None:
        return known
    dated = sorted((k, s) for k, s in AZURE_SURFACES.items() if not s.v1)
    older = [s for k, s in dated if k[:10] <= version[:10]]
    base = older[-1] if older else dated[0][1]
    return AzureSurface(version, v1=False, create_fields=base.create_fields, pauses=base.pauses)
