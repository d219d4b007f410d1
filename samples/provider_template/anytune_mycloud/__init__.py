"""MyCloud fine-tuning for anytune: a template of a provider written outside anytune.

Everything comes from :mod:`anytune.provider_kit`; the tests in ``test_mycloud.py`` run anytune's
contract suite (:class:`anytune.testing.ProviderContract`) on it.
"""

from anytune_mycloud.provider import MyCloudOptions, MyCloudProvider, MyCloudSettings
from anytune_mycloud.service import FileMyCloud, MyCloudClient, MyCloudError

__all__ = ["FileMyCloud", "MyCloudClient", "MyCloudError", "MyCloudOptions", "MyCloudProvider", "MyCloudSettings"]
