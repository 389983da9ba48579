"""Fixtures for the trackpoint-azure tests: Azurite (tests/azurite.py) and an AzureStore on it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from azurite import Azurite, azurite, azurite_container  # noqa: F401 - fixtures used by the tests here
from trackpoint.backends.stores import TransferOptions
from trackpoint_azure.store import AzureOptions, AzureStore, service_client

#: Quick retries, so that tests of failures finish in well under a second.
FAST = {"retries": 2, "retry_base_delay": 0.01, "retry_max_delay": 0.02, "request_timeout": 10.0}


@pytest.fixture(autouse=True)
def _no_azure_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's real Azure settings must neither leak into a test nor be reached by one.
    for names in AzureOptions._environment_variables().values():
        for name in names:
            monkeypatch.delenv(name, raising=False)
    for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def store(azurite: Azurite) -> Iterator[AzureStore]:  # noqa: F811 - the fixture imported above
    """An :class:`AzureStore` on the Azurite account (connection string, fast retries, 64 KiB parts)."""
    transfer = TransferOptions.from_backend_options({**FAST, "part_size": 64 << 10}, min_part_size=1)
    s = AzureStore(service_client({"connection_string": azurite.connection_string}, timeout=10.0), transfer)
    yield s
    s.close()
