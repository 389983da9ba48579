"""trackpoint_azure.store.service_client: storage_options, the Azure environment variables, credentials.

Clients pointed at ``*.blob.core.windows.net`` are only built here, never used:
no test may reach a real Azure account.
"""

from __future__ import annotations

import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.storage.blob import AccountSasPermissions, BlobServiceClient, ResourceTypes, generate_account_sas

from azurite import Azurite
from trackpoint.backends.stores import Condition
from trackpoint.errors import BackendError, BackendOptionError
from trackpoint_azure.store import AzureOptions, AzureStore, service_client


def _round_trip(service: BlobServiceClient, container: str) -> None:
    store = AzureStore(service)
    store.object_put(container, "probe", memoryview(b"ok"), Condition.NONE, "w")
    got = store.object_get(container, "probe")
    assert got is not None and got.data == b"ok"
    store.close()


def test_connection_string_option(azurite: Azurite, azurite_container: str) -> None:
    _round_trip(service_client({"connection_string": azurite.connection_string}), azurite_container)


def test_account_url_name_and_key(azurite: Azurite, azurite_container: str) -> None:
    opts = {"account_url": azurite.account_url, "account_name": azurite.account_name}
    opts["account_key"] = azurite.account_key
    _round_trip(service_client(opts, timeout=5.0), azurite_container)


def test_account_url_and_credential(azurite: Azurite, azurite_container: str) -> None:
    credential = {"account_name": azurite.account_name, "account_key": azurite.account_key}
    _round_trip(service_client({"account_url": azurite.account_url, "credential": credential}), azurite_container)


def test_sas_token(azurite: Azurite, azurite_container: str) -> None:
    sas = generate_account_sas(
        azurite.account_name,
        azurite.account_key,
        resource_types=ResourceTypes(container=True, object=True),
        permission=AccountSasPermissions(read=True, write=True, list=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    _round_trip(service_client({"account_url": azurite.account_url, "sas_token": "?" + sas}), azurite_container)


def test_connection_string_from_the_environment(
    azurite: Azurite, azurite_container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    _round_trip(service_client({}), azurite_container)


@pytest.mark.parametrize(
    ("name_var", "key_var"),
    [("AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_KEY"), ("AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_KEY")],
)
def test_account_name_and_key_from_the_environment(
    name_var: str, key_var: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(name_var, "myaccount")
    monkeypatch.setenv(key_var, "a2V5")
    service = service_client({})
    assert service.url == "https://myaccount.blob.core.windows.net/"
    assert service.credential.account_name == "myaccount"
    assert service.credential.account_key == "a2V5"


def test_sas_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", "myaccount")
    monkeypatch.setenv("AZURE_STORAGE_SAS_TOKEN", "?sv=2024-01-01&sig=abc")
    service = service_client({})
    assert service.url == "https://myaccount.blob.core.windows.net/?sv=2024-01-01&sig=abc"
    assert service.credential is None  # the SAS travels in the URL


def test_options_without_an_account_keep_their_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    # The account comes from the environment; a credential choice made in code still wins.
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", "envaccount")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", "a2V5")
    service = service_client({"anon": True})
    assert service.url == "https://envaccount.blob.core.windows.net/"
    assert service.credential is None


def test_options_naming_an_account_ignore_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The environment's key belongs to the environment's account; it must not
    # be sent to another one, so here no credential is left at all.
    monkeypatch.setitem(sys.modules, "azure.identity", None)  # makes the import fail
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", "envaccount")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", "a2V5")
    with pytest.raises(BackendError, match="no credentials"):
        service_client({"account_name": "other"})


def test_entra_id_when_no_key_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    identity = pytest.importorskip("azure.identity", reason="azure-identity (extra 'identity') is not installed")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", "envaccount")
    service = service_client({})
    assert service.url == "https://envaccount.blob.core.windows.net/"
    assert isinstance(service.credential, identity.DefaultAzureCredential)


def test_anonymous_access(azurite: Azurite) -> None:
    assert service_client({"account_url": azurite.account_url, "anon": True}).credential is None


def test_unknown_option_names_the_closest_valid_one_and_lists_them() -> None:
    with pytest.raises(BackendOptionError) as refused:
        service_client({"account_name": "a", "key": "k"})
    assert str(refused.value) == (
        "azure: unknown storage_options 'key'; the azure store takes account_key, account_name, account_url, anon, "
        "connection_string, credential, sas_token: correct the names or leave them out"
    )
    with pytest.raises(BackendOptionError, match=r"'acount_name' \(did you mean 'account_name'\?\)"):
        service_client({"acount_name": "a"})
    # The pool is sized from backend_options['max_concurrency'] instead.
    with pytest.raises(BackendOptionError, match="unknown storage_options 'max_connections'"):
        service_client({"account_name": "a", "max_connections": 4})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"account_name": "a", "anon": "yes"},
            r"azure: storage_options\['anon'\] is refused: must be a bool \(got str 'yes'\)",
        ),
        ({"account_name": 7}, r"azure: storage_options\['account_name'\] is refused: must be a str \(got int 7\)"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_naming_the_option(options: dict[str, Any], message: str) -> None:
    # Before, a string "yes" for anon was merely truthy and an int account name reached the SDK's URL.
    with pytest.raises(BackendOptionError, match=message):
        service_client(options)


def test_a_secret_of_the_wrong_type_is_refused_without_being_shown() -> None:
    with pytest.raises(BackendOptionError) as refused:
        service_client({"account_name": "a", "account_key": b"c2VjcmV0LWtleQ=="})
    assert str(refused.value) == (
        "azure: storage_options['account_key'] is refused: must be a str (got a value of type bytes, not shown: it is "
        "secret); give a valid value or leave it out"
    )
    assert "c2VjcmV0" not in str(refused.value)


def test_the_options_show_no_secret() -> None:
    opts = AzureOptions.from_storage_options({"account_name": "acct", "account_key": "c2VjcmV0"}, environ={})
    assert repr(opts) == "AzureOptions(account_name='acct', account_key=<redacted>, anon=False)"


def test_no_account_anywhere() -> None:
    with pytest.raises(BackendError, match=r"no storage account: give storage_options\['connection_string'\]"):
        service_client({})


def test_account_key_needs_the_account_name(azurite: Azurite) -> None:
    with pytest.raises(BackendError, match=r"'account_key'\] needs storage_options\['account_name'\]"):
        service_client({"account_url": azurite.account_url, "account_key": azurite.account_key})


def test_without_azure_identity_missing_credentials_say_what_to_give(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "azure.identity", None)  # makes the import fail
    with pytest.raises(BackendError, match=r"no credentials: give storage_options\['account_key'\].*\[identity\]"):
        service_client({"account_name": "myaccount"})


def test_the_connection_pool_holds_as_many_connections_as_run_at_once(
    azurite: Azurite, azurite_container: str, caplog: pytest.LogCaptureFixture
) -> None:
    # requests keeps 10 connections per host; with more requests at once, urllib3
    # discards connections and warns "Connection pool is full".
    store = AzureStore(service_client({"connection_string": azurite.connection_string}, pool=24))
    store.object_put(azurite_container, "p", memoryview(b"x" * 1000), Condition.NONE, "w")

    def read(_: Any) -> None:
        for _ in range(3):
            store.object_get_range(azurite_container, "p", 0, memoryview(bytearray(1000)))

    with caplog.at_level(logging.WARNING, logger="urllib3.connectionpool"), ThreadPoolExecutor(24) as pool:
        list(pool.map(read, range(24)))
    assert "Connection pool is full" not in caplog.text
    store.close()
