"""What a provider author (or an application) needs to test against anytune, offline.

* :class:`ProviderContract`: the contract suite every provider must pass. Subclass it in a pytest
  test module, give it a ``provider`` fixture (an instance wired to your fake service) and a
  ``spec`` fixture (a job it accepts), and pytest runs every check on your provider.
* :class:`FakeClock`: a clock that moves only when slept on; hand its ``clock`` and ``sleep`` to a
  provider's constructor and retries, back-offs and waits run in microseconds.
* :class:`FaultScript`: wrap a fake service's call so it fails as scripted (a dropped connection, a
  429, a 5xx), to prove a create happens once and reads retry.
* :class:`FakeProvider`: the no-network provider (``provider="fake"``) for applications' own tests.

The helpers for *writing* a provider are in :mod:`anytune.provider_kit`.
"""

from __future__ import annotations

from anytune.providers.fake import FakeProvider, FakeSettings
from anytune.testing._contract import ProviderContract
from anytune.testing._fakes import FakeClock, FaultScript

__all__ = ["FakeClock", "FakeProvider", "FakeSettings", "FaultScript", "ProviderContract"]
