"""Fixtures for the trackpoint-azure tests: Azurite (tests/azurite.py) and a client on it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from trackpoint_azure import ENVIRONMENT_VARIABLES, AzureClient

from azurite import Azurite, azurite, azurite_container  # noqa: F401 - fixtures used by the tests here

# The Azure CLI's names for the same settings.
_ALL_ENVIRONMENT = (*ENVIRONMENT_VARIABLES, "AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_KEY")


@pytest.fixture(autouse=True)
def _no_azure_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's real Azure settings must neither leak into a test nor be reached by one.
    for name in _ALL_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def client(azurite: Azurite) -> Iterator[AzureClient]:  # noqa: F811 - the fixture imported above
    """An :class:`AzureClient` on the Azurite account (connection string, no retries)."""
    c = AzureClient.from_options({"connection_string": azurite.connection_string}, request_timeout=10.0)
    yield c
    c.close()
