"""Azure Blob Storage calls for trackpoint's public object-store layer, each one attempt of one request.

:class:`~trackpoint.backends.stores.ObjectStore` adds retries, write-id checks, streaming and parallel reads."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs

import requests
from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError, ServiceRequestError, ServiceResponseError
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import BlobBlock, BlobPrefix, BlobServiceClient

from trackpoint.backends.stores import Condition, ErrorKind, ObjectStat, ObjectStore, TransferOptions, fill_views_from
from trackpoint.errors import BackendError, BackendOptionError, DataLossError
from trackpoint.plugins import StorageOptions, option
from trackpoint.storage import CheckpointOptions, VersionedBytes

#: Metadata names must be C# identifiers: ``_`` where S3 and GCS use ``-``.
WRITE_ID_KEY = "trackpoint_write_id"
#: The SDK's logger of every request and answer, at INFO: set to WARNING unless the application set its level.
REQUEST_LOGGER = "azure.core.pipeline.policies.http_logging_policy"


# The SDK takes a key that is not base64, or a credential that does not read as a SAS token (which it then takes
# for a key), and fails every request with "Invalid base64-encoded string", naming neither: refused when given.
def _account_key(key: str) -> str:
    if len(key) % 4 or not re.fullmatch(r"[A-Za-z0-9+/]*={0,2}", key):
        raise ValueError("the account key is not base64: copy it from the storage account's Access keys")
    return key


def _sas_token(token: str) -> str:
    if "sig" not in parse_qs(token := token.strip().lstrip("?")):
        raise ValueError("the SAS token is malformed: it is the query of a SAS URL (after '?'), with a 'sig' parameter")
    return token


def _account_url(url: str) -> str:
    if not url.startswith(("http://", "https://")):  # the SDK takes "127.0.0.1:10000" for a host and fails each request
        raise ValueError(f"it has no scheme: give the whole URL, http://{url} (Azurite) or https://{url}")
    return url


def _connection_string(text: str) -> str:
    parts = {k.strip().lower(): v for k, _, v in (part.partition("=") for part in text.split(";"))}
    if "accountkey" in parts:
        _account_key(parts["accountkey"])
    if "sharedaccesssignature" in parts:
        _sas_token(parts["sharedaccesssignature"])
    return text


class AzureOptions(StorageOptions, store="azure", env_unless=("connection_string", "account_url", "account_name")):
    """``storage_options``; the environment (the Azure CLI's names too) is read when they name no account."""

    connection_string: str | None = option(
        default=None, env="AZURE_STORAGE_CONNECTION_STRING", secret=True, check=_connection_string
    )
    account_url: str | None = option(default=None, check=_account_url)
    account_name: str | None = option(default=None, env=("AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT"))
    account_key: str | None = option(
        default=None, env=("AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_KEY"), secret=True, check=_account_key
    )
    sas_token: str | None = option(default=None, env="AZURE_STORAGE_SAS_TOKEN", secret=True, check=_sas_token)
    credential: Any = option(default=None, secret=True)
    anon: bool = False


_KINDS: dict[int, ErrorKind] = {401: "permission", 403: "permission", 404: "not_found", 412: "precondition"}
_KINDS.update({416: "range", 408: "transient", 429: "transient"})
_ONE_REQUEST = 256 << 20  # puts and ranged gets up to this size stay one request (SDK: 64 and 32 MiB)


def _credential(opts: AzureOptions) -> Any:
    if opts.anon or opts.credential is not None:
        return opts.credential
    if opts.account_key:
        if not opts.account_name:
            raise BackendOptionError("azure: storage_options['account_key'] needs storage_options['account_name'] too")
        return {"account_name": opts.account_name, "account_key": opts.account_key}
    if opts.sas_token:
        return opts.sas_token
    try:  # Microsoft Entra ID: a service principal, a workload or managed identity, an `az login`
        from azure.identity import DefaultAzureCredential
    except ImportError:
        raise BackendError(
            "azure: no credentials: give storage_options['account_key'], storage_options['sas_token'] or "
            "storage_options['credential'], or storage_options={'anon': True} for a public container, set "
            "AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_TOKEN, or pip install 'trackpoint-azure[identity]'"
        ) from None
    return DefaultAzureCredential()


def service_client(storage_options: Mapping[str, Any], *, timeout: float = 60.0, pool: int = 16) -> BlobServiceClient:
    """The account's client from ``storage_options``, or else from the environment (see :class:`AzureOptions`)."""
    opts = AzureOptions.from_storage_options(storage_options)
    url = opts.account_url or (opts.account_name and f"https://{opts.account_name}.blob.core.windows.net")
    if not (url or opts.connection_string):
        raise BackendError(
            "azure: no storage account: give storage_options['connection_string'], storage_options['account_url'] or "
            "storage_options['account_name'], or set AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT_NAME"
        )
    if (log := logging.getLogger(REQUEST_LOGGER)).level == logging.NOTSET:  # 2,600 lines in 3 s of saves at INFO
        log.setLevel(logging.WARNING)
    session, adapter = requests.Session(), requests.adapters.HTTPAdapter(pool_maxsize=pool)  # requests keeps 10
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    transport = RequestsTransport(session=session, connection_timeout=min(10.0, timeout), read_timeout=timeout)
    kw: dict[str, Any] = {"retry_total": 0, "transport": transport}
    kw.update(max_single_put_size=_ONE_REQUEST, max_single_get_size=_ONE_REQUEST, max_chunk_get_size=_ONE_REQUEST)
    if opts.connection_string:
        return BlobServiceClient.from_connection_string(opts.connection_string, **kw)
    return BlobServiceClient(str(url), credential=_credential(opts), **kw)


def _conditions(cond: Condition) -> dict[str, Any]:
    if_match = {"etag": cond.version, "match_condition": MatchConditions.IfNotModified} if cond.version else {}
    return {"match_condition": MatchConditions.IfMissing} if cond.create_only else if_match  # If-None-Match: *


class AzureStore(ObjectStore):
    """The blobs of one storage account, addressed ``az://<container>/<name>``."""

    store_name = "azure"
    schemes = ("az", "abfs")
    min_part_size = 1  # blocks have no minimum size

    def __init__(self, service: BlobServiceClient, transfer: TransferOptions | None = None) -> None:
        super().__init__(transfer)
        self.service = service

    @classmethod
    def from_options(cls, options: CheckpointOptions) -> AzureStore:
        t = cls.transfer_options(options)
        return cls(service_client(options.storage_options, timeout=t.request_timeout, pool=t.max_concurrency), t)

    def classify(self, exc: BaseException) -> ErrorKind:
        if getattr(exc, "error_code", None) == "BlobAlreadyExists":  # If-None-Match: * gets 409, If-Match 412
            return "precondition"
        if status := getattr(exc, "status_code", None) or 0:
            return _KINDS.get(status, "transient" if status >= 500 else "other")
        return "transient" if isinstance(exc, (ServiceRequestError, ServiceResponseError)) else "other"

    def describe_error(self, exc: BaseException) -> str | None:
        # Azure's error code first (a StorageErrorCode: its str() is its Python name); str(exc) says the rest.
        return f"{getattr(code, 'value', code)}: {exc}" if (code := getattr(exc, "error_code", None)) else None

    def explain_error(self, exc: BaseException, kind: ErrorKind) -> str | None:
        if getattr(exc, "error_code", None) == "ContainerNotFound":
            return "the container in the URL does not exist: create it or correct the URL"
        if kind != "permission":
            return None
        return (
            "the request was refused: check the credentials (storage_options['connection_string'], "
            "storage_options['account_key'], storage_options['sas_token'] or storage_options['credential'], or the "
            "environment) and the permissions on the container"
        )

    def object_stat(self, bucket: str, key: str) -> ObjectStat | None:
        try:
            p = self.service.get_blob_client(bucket, key).get_blob_properties()
        except ResourceNotFoundError:
            return None
        return ObjectStat(p.size, str(p.etag), (p.metadata or {}).get(WRITE_ID_KEY), p.last_modified.timestamp())

    def object_get_range(self, bucket: str, key: str, start: int, out: memoryview) -> None:
        self.object_get_range_vectored(bucket, key, start, [out])

    def object_get_range_vectored(self, bucket: str, key: str, start: int, outs: Sequence[memoryview]) -> None:
        total = sum(out.nbytes for out in outs)
        got = fill_views_from(self.service.get_blob_client(bucket, key).download_blob(start, total).chunks(), outs)
        if got < total:  # a range running past the end is answered with the bytes that exist
            raise DataLossError(f"azure: {self.url(bucket, key)!r} ends at {start + got}, before {start + total}")

    def object_get(self, bucket: str, key: str) -> VersionedBytes | None:
        try:
            download = self.service.get_blob_client(bucket, key).download_blob()
        except ResourceNotFoundError:
            return None
        return VersionedBytes(download.readall(), str(download.properties.etag))

    def object_put(self, bucket: str, key: str, data: memoryview, condition: Condition, write_id: str) -> str:
        blob, meta = self.service.get_blob_client(bucket, key), {WRITE_ID_KEY: write_id}
        return str(blob.upload_blob(bytes(data), overwrite=True, metadata=meta, **_conditions(condition))["etag"])

    def object_list(self, bucket: str, prefix: str) -> list[str]:
        found = self.service.get_container_client(bucket).walk_blobs(prefix or None, results_per_page=5000)
        return [b.name for b in found if not isinstance(b, BlobPrefix)]

    def object_find(self, bucket: str, prefix: str) -> list[str]:
        return [b.name for b in self.service.get_container_client(bucket).list_blobs(prefix, results_per_page=5000)]

    def object_delete(self, bucket: str, keys: Sequence[str]) -> None:
        container = self.service.get_container_client(bucket)
        for i in range(0, len(keys), 256):  # Blob Batch: at most 256 deletions per request
            answers = container.delete_blobs(*keys[i : i + 256], raise_on_any_failure=False)
            if failed := [r.status_code for r in answers if r.status_code not in (202, 404)]:  # 404: already gone
                raise HttpResponseError(f"deleting {len(failed)} blobs in {bucket!r} failed with HTTP {failed}")

    def upload_begin(self, bucket: str, key: str, condition: Condition, write_id: str) -> Any:
        # Uncommitted blocks belong to the blob's name: each upload needs block ids of its own.
        return self.service.get_blob_client(bucket, key), uuid.uuid4().hex, condition, write_id

    def upload_part(self, state: Any, number: int, offset: int, data: memoryview, total: int | None) -> Any:
        if not data.nbytes:
            return None
        state[0].stage_block(block_id := f"{state[1]}-{number:06d}", bytes(data))  # ids of one length per blob
        return block_id

    def upload_finish(self, state: Any, parts: list[Any], total: int) -> str:
        blob, _, condition, write_id = state
        blocks = [BlobBlock(block_id) for block_id in parts if block_id is not None]
        return str(blob.commit_block_list(blocks, metadata={WRITE_ID_KEY: write_id}, **_conditions(condition))["etag"])

    # No upload_abort: Azure cannot drop staged blocks on their own; they stay invisible and the
    # blob's next commit (or, on the service, 7 days) discards them.

    def close_client(self) -> None:
        self.service.close()
