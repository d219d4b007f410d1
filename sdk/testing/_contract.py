"""The contract suite every provider must pass.

Use it from a pytest module::

    from anytune.testing import ProviderContract

    class TestMyCloud(ProviderContract):
        @pytest.fixture
        def provider(self, tmp_path):        # an instance wired to your fake service, offline
            return MyCloudProvider(MyCloudSettings(...), home=tmp_path, client=FakeMyCloud())

        @pytest.fixture
        def spec(self, tmp_path):            # a job your provider accepts
            return JobSpec(base_model="m", training_file=write_examples(tmp_path))

Every ``test_*`` method below then runs on your provider. Override the fixtures ``missing_job_id``
(an id of the right shape that the service does not know) and ``finish_timeout`` (seconds of the
provider's clock a submitted job may take to end) where the defaults do not fit. The base class is
not named ``Test*``, so pytest collects it only through your subclass. Needs pytest.
"""

from __future__ import annotations

import builtins
from typing import Any

import pytest

from anytune._capabilities import Capabilities, check_spec
from anytune._provider import Provider, ProviderSettings, SubmitPlan
from anytune._spec import JobSpec
from anytune._types import Event, JobRecord, JobStatus
from anytune.errors import JobNotFoundError, NotSupportedError

__all__ = ["ProviderContract"]


def _ids(events: builtins.list[Event]) -> builtins.list[str]:
    return [e.id for e in events]


class ProviderContract:
    """Checks of the provider contract; see the module docstring for how to use them."""

    # -- what the provider declares --------------------------------------------------------------
    def test_declares_a_name_capabilities_and_settings(self, provider: Provider[Any]) -> None:
        assert isinstance(provider.name, str) and provider.name and ":" not in provider.name
        assert isinstance(provider.capabilities, Capabilities)
        assert issubclass(provider.Settings, ProviderSettings)
        assert isinstance(provider.settings, provider.Settings)

    def test_accepts_the_spec_it_is_given(self, provider: Provider[Any], spec: JobSpec) -> None:
        provider.options(spec)
        provider.validate(spec)
        check_spec(spec, provider.name, provider.capabilities)

    def test_repr_shows_no_secret(self, provider: Provider[Any]) -> None:
        text = repr(provider)
        for value in provider.settings.model_dump().values():
            secret = value.get_secret_value() if hasattr(value, "get_secret_value") else None
            if secret:
                assert secret not in text

    # -- plan -----------------------------------------------------------------------------------
    def test_plan_has_no_side_effect(self, provider: Provider[Any], spec: JobSpec) -> None:
        before = {r.id for r in provider.list()}
        plan = provider.plan(spec, idempotency_key="contract-plan")
        assert isinstance(plan, SubmitPlan)
        assert plan.provider == provider.name
        assert {r.id for r in provider.list()} == before

    # -- submit and track -----------------------------------------------------------------------
    def test_submit_returns_a_record_get_finds_again(self, provider: Provider[Any], spec: JobSpec) -> None:
        record = provider.submit(spec, idempotency_key="contract-submit")
        assert isinstance(record, JobRecord)
        assert record.provider == provider.name and record.id
        assert isinstance(record.status, JobStatus)
        again = provider.get(record.id)
        assert again.id == record.id and again.provider == provider.name

    def test_submit_twice_with_one_key_creates_one_job(self, provider: Provider[Any], spec: JobSpec) -> None:
        first = provider.submit(spec, idempotency_key="contract-once")
        second = provider.submit(spec, idempotency_key="contract-once")
        assert second.id == first.id
        assert [r.id for r in provider.list(limit=100)].count(first.id) == 1

    def test_find_answers_for_a_key(self, provider: Provider[Any], spec: JobSpec) -> None:
        """``find`` is optional; where offered, it finds what a key made and nothing for a new key."""
        record = provider.submit(spec, idempotency_key="contract-find")
        try:
            found = provider.find("contract-find", spec=spec)
        except NotSupportedError:
            pytest.skip(f"{provider.name} does not offer find()")
        assert found is not None and found.id == record.id
        assert provider.find("contract-never-used", spec=spec) is None

    def test_list_shows_the_submitted_job(self, provider: Provider[Any], spec: JobSpec) -> None:
        record = provider.submit(spec, idempotency_key="contract-list")
        assert record.id in {r.id for r in provider.list(limit=100)}

    def test_events_resume_after_a_cursor_without_gap_or_repeat(
        self, provider: Provider[Any], spec: JobSpec, finish_timeout: float
    ) -> None:
        record = provider.submit(spec, idempotency_key="contract-events")
        self._follow(provider, record, finish_timeout)
        events = list(provider.events(record.id))
        assert events, "a job has at least one event"
        assert len(set(_ids(events))) == len(events)
        for i, event in enumerate(events):
            assert _ids(list(provider.events(record.id, after=event.id))) == _ids(events[i + 1 :])

    def test_cancel_ends_the_job(self, provider: Provider[Any], spec: JobSpec, finish_timeout: float) -> None:
        record = provider.submit(spec, idempotency_key="contract-cancel")
        after = provider.cancel(record.id)
        assert after.id == record.id
        final = self._follow(provider, after, finish_timeout)
        # Cancelled, unless the job had already ended on its own before the request arrived.
        assert final.done, f"{final.ref} still {final.status.value} after cancel"

    def test_unknown_job_is_job_not_found(self, provider: Provider[Any], missing_job_id: str) -> None:
        with pytest.raises(JobNotFoundError):
            provider.get(missing_job_id)

    def test_a_job_followed_to_its_end_gives_a_result(
        self, provider: Provider[Any], spec: JobSpec, finish_timeout: float
    ) -> None:
        record = provider.submit(spec, idempotency_key="contract-result")
        final = self._follow(provider, record, finish_timeout)
        assert final.done, f"{final.ref} still {final.status.value} after {finish_timeout} s"
        if final.status is JobStatus.SUCCEEDED:
            model = provider.result(final)
            assert model.provider == provider.name and model.job_ref == final.ref

    def test_metrics_and_checkpoints_come_one_per_step_in_step_order(
        self, provider: Provider[Any], spec: JobSpec, finish_timeout: float
    ) -> None:
        """The loss curve a user plots: each step once (a step reported again after a resume counts
        once), ascending; the result's final metrics are its last point."""
        record = provider.submit(spec, idempotency_key="contract-metrics")
        final = self._follow(provider, record, finish_timeout)
        points = provider.metrics(record.id)
        steps = [p.step for p in points]
        assert steps == sorted(set(steps)), f"metrics steps {steps}: want each step once, ascending"
        saved = [c.step for c in provider.checkpoints(record.id)]
        assert saved == sorted(set(saved)), f"checkpoint steps {saved}: want each step once, ascending"
        if final.status is JobStatus.SUCCEEDED and steps:
            model = provider.result(final)
            assert model.final_metrics is not None and model.final_metrics.step == steps[-1]
            last = points[-1]
            got = (model.final_metrics.train_loss, model.final_metrics.valid_loss)
            assert got == (last.train_loss, last.valid_loss), f"final metrics {got}: want the last point's"

    # -- fixtures a subclass may override --------------------------------------------------------
    @pytest.fixture
    def missing_job_id(self) -> str:
        return "anytune-contract-missing"

    @pytest.fixture
    def finish_timeout(self) -> float:
        return 30.0

    @staticmethod
    def _follow(provider: Provider[Any], record: JobRecord, timeout: float) -> JobRecord:
        """Poll until the job ends or ``timeout`` seconds of the provider's own clock have passed."""
        deadline = provider.clock() + timeout
        current = record
        while not current.done and provider.clock() < deadline:
            provider.sleep(min(provider.poll_interval, 0.05))
            current = provider.get(record.id)
        return current
