"""AzureClient.from_options: storage_options, the Azure environment variables, credentials.

Clients pointed at ``*.blob.core.windows.net`` are only built here, never used:
no test may reach a real Azure account.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

import pytest
from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas
from trackpoint_azure import AzureClient

from azurite import Azurite


def _round_trip(client: AzureClient, container: str) -> None:
    client.put(container, "probe", b"ok")
    assert client.get(container, "probe") is not None
    client.close()


def test_connection_string_option(azurite: Azurite, azurite_container: str) -> None:
    _round_trip(AzureClient.from_options({"connection_string": azurite.connection_string}), azurite_container)


def test_account_url_name_and_key(azurite: Azurite, azurite_container: str) -> None:
    opts = {"account_url": azurite.account_url, "account_name": azurite.account_name}
    opts["account_key"] = azurite.account_key
    _round_trip(AzureClient.from_options(opts, request_timeout=5.0), azurite_container)


def test_account_url_and_credential(azurite: Azurite, azurite_container: str) -> None:
    credential = {"account_name": azurite.account_name, "account_key": azurite.account_key}
    opts = {"account_url": azurite.account_url, "credential": credential, "max_connections": 4}
    client = AzureClient.from_options(opts)
    _round_trip(client, azurite_container)


def test_sas_token(azurite: Azurite, azurite_container: str) -> None:
    sas = generate_account_sas(
        azurite.account_name,
        azurite.account_key,
        resource_types=ResourceTypes(container=True, object=True),
        permission=AccountSasPermissions(read=True, write=True, list=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    client = AzureClient.from_options({"account_url": azurite.account_url, "sas_token": "?" + sas})
    _round_trip(client, azurite_container)


def test_connection_string_from_the_environment(
    azurite: Azurite, azurite_container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    _round_trip(AzureClient.from_options(), azurite_container)


@pytest.mark.parametrize(
    ("name_var", "key_var"),
    [("AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_KEY"), ("AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_KEY")],
)
def test_account_name_and_key_from_the_environment(
    name_var: str, key_var: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(name_var, "myaccount")
    monkeypatch.setenv(key_var, "a2V5")
    client = AzureClient.from_options({})
    assert client.service.url == "https://myaccount.blob.core.windows.net/"
    assert client.service.credential.account_name == "myaccount"
    assert client.service.credential.account_key == "a2V5"


def test_sas_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", "myaccount")
    monkeypatch.setenv("AZURE_STORAGE_SAS_TOKEN", "?sv=2024-01-01&sig=abc")
    client = AzureClient.from_options()
    assert client.service.url == "https://myaccount.blob.core.windows.net/?sv=2024-01-01&sig=abc"
    assert client.service.credential is None  # the SAS travels in the URL


def test_options_naming_an_account_ignore_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The environment's key belongs to the environment's account; it must not
    # be sent to another one, so here no credential is left at all.
    monkeypatch.setitem(sys.modules, "azure.identity", None)  # makes the import fail
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", "envaccount")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", "a2V5")
    with pytest.raises(ValueError, match="no credentials"):
        AzureClient.from_options({"account_name": "other"})


def test_entra_id_when_no_key_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    identity = pytest.importorskip("azure.identity", reason="azure-identity (extra 'identity') is not installed")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", "envaccount")
    client = AzureClient.from_options()
    assert client.service.url == "https://envaccount.blob.core.windows.net/"
    assert isinstance(client.service.credential, identity.DefaultAzureCredential)


def test_anonymous_access(azurite: Azurite) -> None:
    client = AzureClient.from_options({"account_url": azurite.account_url, "anon": True})
    assert client.service.credential is None


def test_unknown_option_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown storage_options \['key'\]; valid keys are \['connection_string'"):
        AzureClient.from_options({"account_name": "a", "key": "k"})


def test_no_account_anywhere() -> None:
    with pytest.raises(ValueError, match="no storage account: give storage_options 'connection_string'"):
        AzureClient.from_options({}, environ={})


def test_account_key_needs_the_account_name(azurite: Azurite) -> None:
    with pytest.raises(ValueError, match=r"'account_key'\] needs storage_options\['account_name'\]"):
        AzureClient.from_options({"account_url": azurite.account_url, "account_key": azurite.account_key})


def test_without_azure_identity_missing_credentials_say_what_to_give(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "azure.identity", None)  # makes the import fail
    with pytest.raises(ValueError, match="no credentials: give storage_options 'account_key'.*install azure-identity"):
        AzureClient.from_options({"account_name": "myaccount"})
