"""What Azure failures tell the person on call: one line each, in Azure's terms, with the option or flag to fix.

Every test goes through the public entry points (a save, the command line) against Azurite, or against an
address where nothing listens or a host name no resolver knows.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from azurite import Azurite
from servers import free_port
from trackpoint.cli import main
from trackpoint.errors import BackendOptionError, CheckpointNotFoundError, StoragePermissionError, TransientStorageError
from trackpoint.storage import CheckpointOptions
from trackpoint_azure.store import service_client

pytestmark = [pytest.mark.azure, pytest.mark.timeout(60)]

FAST = {"retries": 1, "retry_base_delay": 0.01, "retry_max_delay": 0.02, "request_timeout": 10.0}
#: The Azure SDK's logger of every request, at INFO.
SDK_REQUEST_LOG = "azure.core.pipeline.policies.http_logging_policy"


def _save(url: str, storage_options: dict[str, Any]) -> str:
    options = CheckpointOptions(storage_options=storage_options, backend_options=FAST)
    return tp.Checkpoint(w=tp.Variable(np.ones(3, np.float32))).save(url, options=options)


def _one_line_without_the_sdk_dump(message: str) -> None:
    assert "\n" not in message
    for dumped in ("RequestId", "Time:", "Content:", "<?xml", "<Error>"):
        assert dumped not in message


# ---------------------------------------------------------------------- answers of the service
def test_a_missing_container_is_called_a_container_in_one_line(azurite: Azurite) -> None:
    with pytest.raises(CheckpointNotFoundError) as info:
        _save("az://no-such-container/run/ckpt", {"connection_string": azurite.connection_string})
    message = str(info.value)
    assert message.startswith("azure: writing 'az://no-such-container/run/ckpt-1")
    assert "ContainerNotFound: The specified container does not exist.)" in message  # Azure's code, first line
    assert message.endswith("the container in the URL does not exist: create it or correct the URL")
    assert "bucket" not in message
    _one_line_without_the_sdk_dump(message)


def test_a_missing_container_found_by_a_read_is_called_a_container(
    azurite: Azurite, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    with pytest.raises(CheckpointNotFoundError) as info:
        tp.latest_checkpoint("az://no-such-container/run")
    message = str(info.value)
    assert "the container in the URL does not exist: create it or correct the URL" in message
    assert "bucket" not in message
    _one_line_without_the_sdk_dump(message)


def test_a_wrong_key_names_the_credentials_to_check(azurite: Azurite, azurite_container: str) -> None:
    wrong = "A" * 4 + azurite.account_key[4:]  # base64 still, so it is sent and refused
    options = {"account_url": azurite.account_url, "account_name": azurite.account_name, "account_key": wrong}
    with pytest.raises(StoragePermissionError) as info:
        _save(f"az://{azurite_container}/run/ckpt", options)
    message = str(info.value)
    assert "the request was refused: check the credentials (storage_options['connection_string']" in message
    assert message.endswith("and the permissions on the container")
    assert "bucket" not in message and wrong not in message
    _one_line_without_the_sdk_dump(message)


# ---------------------------------------------------------------------- malformed credentials
@pytest.mark.parametrize("token", ["bogus", "?sv=2024-01-01&sp=r"])
def test_a_malformed_sas_token_is_a_bad_option_and_is_never_shown(
    azurite: Azurite, azurite_container: str, token: str
) -> None:
    # Before, the SDK took it for an account key: every request failed with "Invalid base64-encoded string".
    with pytest.raises(BackendOptionError) as info:
        _save(f"az://{azurite_container}/run/ckpt", {"account_url": azurite.account_url, "sas_token": token})
    message = str(info.value)
    assert message.startswith("azure: storage_options['sas_token'] is refused: the SAS token is malformed")
    assert "not shown: it is secret" in message
    assert token.lstrip("?") not in message


def test_a_malformed_sas_token_from_the_environment_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", "myaccount")
    monkeypatch.setenv("AZURE_STORAGE_SAS_TOKEN", "not-a-token")
    with pytest.raises(BackendOptionError) as info:
        service_client({})
    message = str(info.value)
    assert "storage_options['sas_token'] (from the environment variable AZURE_STORAGE_SAS_TOKEN) is refused" in message
    assert "not-a-token" not in message


def test_an_account_key_that_is_not_base64_is_a_bad_option() -> None:
    with pytest.raises(BackendOptionError) as info:
        service_client({"account_name": "myaccount", "account_key": "my-secret-key!"})
    message = str(info.value)
    assert "storage_options['account_key'] is refused: the account key is not base64" in message
    assert "my-secret-key!" not in message


@pytest.mark.parametrize(
    ("setting", "reason"),
    [("SharedAccessSignature", "the SAS token is malformed"), ("AccountKey", "the account key is not base64")],
)
def test_a_connection_string_with_a_malformed_credential_is_a_bad_option(
    azurite: Azurite, setting: str, reason: str
) -> None:
    # The SDK took either for an account key and failed every request with "Invalid base64-encoded string".
    text = f"AccountName=devstoreaccount1;{setting}=bogus;BlobEndpoint={azurite.account_url};"
    with pytest.raises(BackendOptionError) as info:
        service_client({"connection_string": text})
    message = str(info.value)
    assert f"storage_options['connection_string'] is refused: {reason}" in message
    assert "bogus" not in message and "devstoreaccount1" not in message


# ---------------------------------------------------------------------- the command line's terms
def test_the_command_line_names_flags_not_storage_options(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["ls", "az://c/run"]) == 4
    assert "give -o connection_string, -o account_url or -o account_name, or set" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "azure.identity", None)  # makes the import fail
    assert main(["ls", "az://c/run", "-o", "account_name=myaccount"]) == 4
    err = capsys.readouterr().err
    assert "no credentials: give -o account_key, -o sas_token or -o credential, or -o anon=true for a public" in err
    assert "storage_options" not in err


# ---------------------------------------------------------------------- no connection
def test_a_refused_connection_points_at_the_endpoint(azurite: Azurite) -> None:
    url = f"http://127.0.0.1:{free_port()}/{azurite.account_name}"
    options = {"account_url": url, "account_name": azurite.account_name, "account_key": azurite.account_key}
    with pytest.raises(TransientStorageError) as info:
        _save("az://c/run/ckpt", options)
    message = str(info.value)
    assert "Failed to establish a new connection" in message  # urllib3's words, with the host, not the URL
    assert "nothing accepted a connection there: check that the store's endpoint is right" in message
    assert "overloaded" not in message


def test_an_unknown_host_is_named_and_a_sas_in_the_url_is_not_shown() -> None:
    # .invalid is reserved (RFC 2606): no resolver answers it, so the lookup fails at once.
    token = "sv=2024-01-01&sp=rl&sig=SECRETSIGNATURE"
    options = {"account_url": "http://no-such-host.invalid:10000/acct", "sas_token": token}
    with pytest.raises(TransientStorageError) as info:
        _save("az://c/run/ckpt", options)
    message = str(info.value)
    assert "the host name 'no-such-host.invalid' could not be resolved (DNS)" in message
    assert "SECRETSIGNATURE" not in message
    assert "nothing accepted a connection" not in message and "overloaded" not in message


# ---------------------------------------------------------------------- logging
@pytest.fixture
def sdk_request_log() -> Iterator[logging.Logger]:
    """The SDK's request logger with no level of its own, as in a fresh process; restored afterwards."""
    logger = logging.getLogger(SDK_REQUEST_LOG)
    level = logger.level
    logger.setLevel(logging.NOTSET)
    yield logger
    logger.setLevel(level)


def test_the_sdk_logs_no_request_at_info_unless_the_application_asks(
    azurite: Azurite, azurite_container: str, sdk_request_log: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):  # as logging.basicConfig(level=logging.INFO) sets the root logger
        _save(f"az://{azurite_container}/run/ckpt", {"connection_string": azurite.connection_string})
    assert [r.getMessage() for r in caplog.records if r.name == SDK_REQUEST_LOG] == []
    assert sdk_request_log.level == logging.WARNING
    # A level the application set is its choice: left alone.
    sdk_request_log.setLevel(logging.INFO)
    service_client({"connection_string": azurite.connection_string})
    assert sdk_request_log.level == logging.INFO
