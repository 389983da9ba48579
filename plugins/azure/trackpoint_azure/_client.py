"""The Azure Blob Storage calls an object-store file layer needs, over ``azure-storage-blob``.

Each method is a *single attempt* of one request (the client is built with
the SDK's retries off): retries, deadlines and parallelism belong to the layer
above, which decides what to retry from :func:`classify`. Nothing here imports
trackpoint, so the class can be adapted to whatever base class the public
object-store layer settles on.

Conditional writes are the commit primitive:

* create-only (``If-None-Match: *``): Azure answers ``409 BlobAlreadyExists``;
* compare-and-swap on the ETag (``If-Match``): ``412 ConditionNotMet``, also
  when the blob was deleted meanwhile (S3 says ``404`` there);
* staged uploads (Put Block / Put Block List) take the condition at the
  commit, so a large create-only upload is as safe as a small one.

See ``plugins/azure/NOTES.md`` for the behaviours verified against Azurite.
"""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient, ContainerClient

__all__ = [
    "ENVIRONMENT_VARIABLES",
    "STORAGE_OPTIONS",
    "WRITE_ID_METADATA_KEY",
    "AzureClient",
    "BlobStat",
    "BlockUpload",
    "ErrorKind",
    "classify",
    "split_url",
]

#: How the layer should treat a failed request (the same words as trackpoint's fsspec layer).
ErrorKind = Literal["transient", "not_found", "precondition", "permission", "range", "other"]

#: User-metadata key holding the id of the write that created a blob. Azure
#: metadata names must be C# identifiers, so ``_`` where S3 and GCS use ``-``.
WRITE_ID_METADATA_KEY: Final = "trackpoint_write_id"

#: ``storage_options`` keys :meth:`AzureClient.from_options` understands.
STORAGE_OPTIONS: Final = (
    "connection_string",
    "account_url",
    "account_name",
    "account_key",
    "sas_token",
    "credential",
    "anon",
    "max_connections",
)
#: Environment variables read when ``storage_options`` name no account.
ENVIRONMENT_VARIABLES: Final = (
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_ACCOUNT_NAME",  # also AZURE_STORAGE_ACCOUNT, the Azure CLI's name
    "AZURE_STORAGE_ACCOUNT_KEY",  # also AZURE_STORAGE_KEY
    "AZURE_STORAGE_SAS_TOKEN",
)

# Up to this size a put is one Put Blob request; the service allows 5000 MiB.
_MAX_SINGLE_PUT: Final = 256 << 20
# A ranged read is one GET up to this size (the SDK default would split at 32 MiB).
_MAX_SINGLE_GET: Final = 256 << 20
_TRANSIENT_CODES: Final = frozenset({"ServerBusy", "OperationTimedOut", "InternalError", "ContainerBeingDeleted"})


@dataclass(frozen=True, slots=True)
class BlobStat:
    """What Get Blob Properties tells about one blob."""

    size: int
    #: The ETag, quoted as the service sends it; pass it back unchanged to ``put_if_match``.
    etag: str
    #: Last modification, seconds since the epoch (whole seconds: the header is RFC 1123).
    modified: float
    write_id: str | None


@dataclass(frozen=True, slots=True)
class BlockUpload:
    """A staged (block) upload in progress: blocks are invisible until committed."""

    container: str
    name: str
    #: Random per upload: two uploads to one blob never share block ids.
    upload_id: str

    def block_id(self, number: int) -> str:
        # All block ids of a blob must have the same length (the service
        # rejects mixed lengths); 6 digits cover the 50,000-block limit.
        return base64.b64encode(f"{self.upload_id}-{number:06d}".encode()).decode()


def split_url(url: str) -> tuple[str, str]:
    """``(container, blob name)`` of ``az://container/name`` (or ``container/name``)."""
    rest = url[len("az://") :] if url.startswith("az://") else url
    if "://" in rest:
        raise ValueError(f"azure: cannot address {url!r}: expected az://<container>/<path>")
    container, _, name = rest.partition("/")
    if not container:
        raise ValueError(f"azure: {url!r} names no container; write az://<container>/<path>")
    return container, name


def _code(exc: BaseException) -> str:
    code = getattr(exc, "error_code", None)
    # The SDK gives a StorageErrorCode (a str enum) or a plain string.
    return str(getattr(code, "value", code) or "")


def classify(exc: BaseException) -> ErrorKind:
    """How to treat an exception raised by an :class:`AzureClient` method."""
    from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

    if isinstance(exc, HttpResponseError):
        code, status = _code(exc), exc.status_code or 0
        if code == "BlobAlreadyExists" or status == 412:
            return "precondition"
        if status == 404:
            return "not_found"
        if status in (401, 403):
            return "permission"
        if status == 416:
            return "range"
        if code in _TRANSIENT_CODES or status in (408, 429) or status >= 500:
            return "transient"
        return "other"
    # No answer at all: connection refused or reset, timeouts.
    if isinstance(exc, (ServiceRequestError, ServiceResponseError, ConnectionError, TimeoutError)):
        return "transient"
    return "other"


def _environ_options(environ: Mapping[str, str]) -> dict[str, Any]:
    if environ.get("AZURE_STORAGE_CONNECTION_STRING"):
        return {"connection_string": environ["AZURE_STORAGE_CONNECTION_STRING"]}
    name = environ.get("AZURE_STORAGE_ACCOUNT_NAME") or environ.get("AZURE_STORAGE_ACCOUNT")
    if not name:
        return {}
    opts: dict[str, Any] = {"account_name": name}
    key = environ.get("AZURE_STORAGE_ACCOUNT_KEY") or environ.get("AZURE_STORAGE_KEY")
    if key:
        opts["account_key"] = key
    elif environ.get("AZURE_STORAGE_SAS_TOKEN"):
        opts["sas_token"] = environ["AZURE_STORAGE_SAS_TOKEN"]
    return opts


def _credential(opts: Mapping[str, Any], account_name: str | None) -> Any:
    if opts.get("anon"):
        return None
    if "credential" in opts:
        return opts["credential"]
    if opts.get("account_key"):
        if not account_name:
            raise ValueError("azure: storage_options['account_key'] needs storage_options['account_name'] as well")
        return {"account_name": account_name, "account_key": opts["account_key"]}
    if opts.get("sas_token"):
        return str(opts["sas_token"]).lstrip("?")
    try:
        # Service principal (AZURE_CLIENT_ID/_TENANT_ID/_CLIENT_SECRET),
        # workload or managed identity, or an Azure CLI login.
        from azure.identity import DefaultAzureCredential
    except ImportError:
        raise ValueError(
            "azure: no credentials: give storage_options 'account_key', 'sas_token' or 'credential' (or "
            "'anon': True for a public container), set AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_TOKEN, "
            "or install azure-identity to sign in with Microsoft Entra ID"
        ) from None
    return DefaultAzureCredential()


class AzureClient:
    """Single-attempt blob operations on one storage account.

    Thread-safe: the SDK's clients may be shared between threads.

    Parameters
    ----------
    service
        The account's ``BlobServiceClient``, built with ``retry_total=0`` so
        that the caller's retry policy is the only one.
    """

    #: Names per List Blobs page (the service's maximum).
    list_page_size: int = 5000
    #: Deletions per Blob Batch request (the service's maximum).
    delete_batch_size: int = 256

    def __init__(self, service: BlobServiceClient) -> None:
        self.service = service

    @classmethod
    def from_options(
        cls,
        storage_options: Mapping[str, Any] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        request_timeout: float = 60.0,
    ) -> AzureClient:
        """Build a client from ``storage_options``, else from the environment.

        ``storage_options`` (keys in :data:`STORAGE_OPTIONS`) name the account
        with ``connection_string``, ``account_url`` or ``account_name``
        (``https://<name>.blob.core.windows.net``) and its credentials with
        ``account_key``, ``sas_token``, ``credential`` (any credential the SDK
        accepts) or ``anon``. When they name no account, the environment
        variables in :data:`ENVIRONMENT_VARIABLES` are read instead; the two
        sources are never mixed, so a key is never sent to another account.
        Without key or SAS token, ``azure.identity.DefaultAzureCredential``
        signs requests if ``azure-identity`` is installed.

        Raises
        ------
        ValueError
            Unknown option keys, no account anywhere, or no usable credential.
        """
        from azure.core.pipeline.transport import RequestsTransport
        from azure.storage.blob import BlobServiceClient

        opts = dict(storage_options or {})
        unknown = sorted(set(opts) - set(STORAGE_OPTIONS))
        if unknown:
            raise ValueError(f"azure: unknown storage_options {unknown}; valid keys are {list(STORAGE_OPTIONS)}")
        if not {"connection_string", "account_url", "account_name"} & opts.keys():
            opts.update(_environ_options(os.environ if environ is None else environ))
        kwargs: dict[str, Any] = {
            "retry_total": 0,  # the layer above owns retries
            "max_single_put_size": _MAX_SINGLE_PUT,
            "max_single_get_size": _MAX_SINGLE_GET,
            "max_chunk_get_size": _MAX_SINGLE_GET,
        }
        transport: dict[str, Any] = {"connection_timeout": min(10.0, request_timeout), "read_timeout": request_timeout}
        if opts.get("max_connections"):
            import requests

            # requests keeps 10 connections per host by default; parallel
            # part uploads and ranged reads need as many as run at once.
            session = requests.Session()
            adapter = requests.adapters.HTTPAdapter(pool_maxsize=int(opts["max_connections"]))
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            transport.update(session=session, session_owner=True)
        kwargs["transport"] = RequestsTransport(**transport)
        if opts.get("connection_string"):
            return cls(BlobServiceClient.from_connection_string(opts["connection_string"], **kwargs))
        name = opts.get("account_name")
        url = opts.get("account_url") or (f"https://{name}.blob.core.windows.net" if name else None)
        if not url:
            raise ValueError(
                "azure: no storage account: give storage_options 'connection_string', 'account_url' or "
                "'account_name', or set AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT_NAME"
            )
        return cls(BlobServiceClient(account_url=url, credential=_credential(opts, name), **kwargs))

    def _container(self, container: str) -> ContainerClient:
        return self.service.get_container_client(container)

    # ------------------------------------------------------------ reads
    def stat(self, container: str, name: str) -> BlobStat | None:
        """Size, ETag, modification time and write id of a blob; ``None`` if it does not exist."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            p = self._container(container).get_blob_client(name).get_blob_properties()
        except ResourceNotFoundError as exc:
            if _code(exc) == "BlobNotFound":
                return None
            raise  # ContainerNotFound: the caller must hear about the container
        return BlobStat(p.size, str(p.etag), p.last_modified.timestamp(), (p.metadata or {}).get(WRITE_ID_METADATA_KEY))

    def modified(self, container: str, name: str) -> float | None:
        """Last modification in seconds since the epoch; ``None`` if the blob does not exist."""
        stat = self.stat(container, name)
        return None if stat is None else stat.modified

    def get(self, container: str, name: str) -> tuple[bytes, str] | None:
        """Whole blob and the ETag of exactly those bytes; ``None`` if it does not exist."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            download = self._container(container).get_blob_client(name).download_blob(max_concurrency=1)
        except ResourceNotFoundError as exc:
            if _code(exc) == "BlobNotFound":
                return None
            raise
        return download.readall(), str(download.properties.etag)

    def get_range_into(self, container: str, name: str, start: int, out: memoryview) -> int:
        """Fill ``out`` with the bytes from ``start``; return how many there were.

        Fewer than ``len(out)`` means the blob ends early (the caller decides
        whether that is data loss). A ``start`` past the end raises the
        service's ``416 InvalidRange`` (:func:`classify` says ``"range"``).
        """
        if out.nbytes == 0:
            return 0
        blob = self._container(container).get_blob_client(name)
        download = blob.download_blob(offset=start, length=out.nbytes, max_concurrency=1)
        pos = 0
        for chunk in download.chunks():
            out[pos : pos + len(chunk)] = chunk
            pos += len(chunk)
        return pos

    def list(self, container: str, prefix: str, *, recursive: bool = False) -> list[str]:
        """Names of the blobs under ``prefix``: directly under it, or at any depth if ``recursive``.

        ``prefix`` is a name prefix (``"run/"`` for the "directory" ``run``);
        all pages are fetched.
        """
        from azure.storage.blob import BlobPrefix

        c = self._container(container)
        start, per_page = prefix or None, self.list_page_size
        if recursive:
            return [b.name for b in c.list_blobs(name_starts_with=start, results_per_page=per_page)]
        found = c.walk_blobs(name_starts_with=start, delimiter="/", results_per_page=per_page)
        return [b.name for b in found if not isinstance(b, BlobPrefix)]

    # ------------------------------------------------------------ writes
    def _upload(self, container: str, name: str, data: bytes | memoryview, write_id: str | None, **cond: Any) -> str:
        blob = self._container(container).get_blob_client(name)
        meta = {WRITE_ID_METADATA_KEY: write_id} if write_id else None
        r = blob.upload_blob(bytes(data), length=len(data), overwrite=True, metadata=meta, max_concurrency=1, **cond)
        return str(r["etag"])

    def put(self, container: str, name: str, data: bytes | memoryview, *, write_id: str | None = None) -> str:
        """Create or replace a blob unconditionally in one request; return its new ETag."""
        return self._upload(container, name, data, write_id)

    def put_if_absent(self, container: str, name: str, data: bytes | memoryview, *, write_id: str | None = None) -> str:
        """Create a blob only if none exists (``If-None-Match: *``); return its ETag.

        An existing blob raises ``ResourceExistsError`` (409 ``BlobAlreadyExists``).
        """
        from azure.core import MatchConditions

        return self._upload(container, name, data, write_id, match_condition=MatchConditions.IfMissing)

    def put_if_match(
        self, container: str, name: str, data: bytes | memoryview, etag: str, *, write_id: str | None = None
    ) -> str:
        """Replace a blob only if it still has ``etag`` (``If-Match``); return the new ETag.

        A changed or deleted blob raises ``ResourceModifiedError`` (412 ``ConditionNotMet``).
        """
        from azure.core import MatchConditions

        return self._upload(container, name, data, write_id, etag=etag, match_condition=MatchConditions.IfNotModified)

    def begin_upload(self, container: str, name: str) -> BlockUpload:
        """Start a staged upload. No request is made: Azure has no upload session."""
        return BlockUpload(container, name, uuid.uuid4().hex)

    def stage_block(self, upload: BlockUpload, number: int, data: bytes | memoryview) -> str:
        """Upload block ``number`` (0-based, any order, in parallel); return its block id.

        Raises ``ValueError`` on empty ``data``: the caller commits the blocks
        it has instead.
        """
        if len(data) == 0:
            raise ValueError(f"azure: block {number} of {upload.container}/{upload.name} is empty")
        block_id = upload.block_id(number)
        blob = self._container(upload.container).get_blob_client(upload.name)
        blob.stage_block(block_id, bytes(data), length=len(data))
        return block_id

    def commit_upload(
        self,
        upload: BlockUpload,
        block_ids: Sequence[str],
        *,
        if_absent: bool = False,
        if_match: str | None = None,
        write_id: str | None = None,
    ) -> str:
        """Make the staged blocks the blob's content, under an optional condition; return the ETag.

        The condition is checked here, atomically with the commit: an existing
        blob with ``if_absent`` raises 409 ``BlobAlreadyExists``, a changed one
        with ``if_match`` 412 ``ConditionNotMet``. Blocks staged by this upload
        that another writer's commit discarded meanwhile raise 400
        ``InvalidBlockList`` (:func:`classify` says ``"other"``).
        """
        from azure.core import MatchConditions
        from azure.storage.blob import BlobBlock

        if if_absent and if_match is not None:
            raise ValueError("azure: a commit is either create-only (if_absent) or conditional on an ETag, not both")
        cond: dict[str, Any] = {}
        if if_absent:
            cond = {"match_condition": MatchConditions.IfMissing}
        elif if_match is not None:
            cond = {"etag": if_match, "match_condition": MatchConditions.IfNotModified}
        blob = self._container(upload.container).get_blob_client(upload.name)
        meta = {WRITE_ID_METADATA_KEY: write_id} if write_id else None
        r = blob.commit_block_list([BlobBlock(block_id=b) for b in block_ids], metadata=meta, **cond)
        return str(r["etag"])

    def abort_upload(self, upload: BlockUpload) -> None:
        """Forget a staged upload.

        Azure cannot discard uncommitted blocks on their own: they disappear
        at the blob's next commit or after 7 days, and never become visible.
        Deleting the blob instead would destroy another writer's data.
        """

    def delete(self, container: str, names: Sequence[str]) -> None:
        """Delete blobs (Blob Batch, 256 per request); missing ones are not an error."""
        from azure.core.exceptions import HttpResponseError

        c = self._container(container)
        for i in range(0, len(names), self.delete_batch_size):
            batch = list(names[i : i + self.delete_batch_size])
            for name, r in zip(batch, c.delete_blobs(*batch, raise_on_any_failure=False), strict=True):
                if r.status_code not in (200, 202, 404):
                    raise HttpResponseError(
                        message=f"deleting {container}/{name} failed with HTTP {r.status_code}", response=r
                    )

    def close(self) -> None:
        """Close the connection pool."""
        self.service.close()
