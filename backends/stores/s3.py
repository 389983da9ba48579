"""Amazon S3 (and S3-compatible stores) as an :class:`~trackpoint.backends.stores.ObjectStore`.

:class:`S3Files` speaks to S3 through s3fs' aiobotocore client. The ``s3``
backend (registered by :mod:`trackpoint.backends._builtin`) is the bundle
format over it: its commit point is a create-only
``PutObject``/``CompleteMultipartUpload`` (``If-None-Match: *``) of the
checkpoint's ``.index``; see ``docs/backends/s3.md``.

s3fs is imported only when a store is created, so ``import trackpoint``
stays light.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any, Final

from trackpoint.backends.stores._fsspec import accepted_options, filesystem
from trackpoint.backends.stores.objectstore import (
    WRITE_ID_METADATA_KEY,
    Condition,
    ErrorKind,
    HTTPStatusError,
    ObjectStat,
    ObjectStore,
    TransferOptions,
    UploadStat,
    _body_bytes,
    fill_views,
)
from trackpoint.errors import DataLossError
from trackpoint.plugins import StorageOptions
from trackpoint.storage import CheckpointOptions, VersionedBytes

__all__ = ["S3Files", "S3Options", "create_files"]

_MIN_PART: Final = 5 * (1 << 20)  # S3's smallest non-final multipart part
_DELETE_BATCH: Final = 1000  # DeleteObjects accepts at most 1,000 keys
_READ_CHUNK: Final = 1 << 20
_LIST_PAGE: Final = 1000  # ListObjectsV2's largest page

_TRANSIENT_CODES: Final = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "InternalError",
        "ServiceUnavailable",
        "OperationAborted",
        # Another conditional write on the same key was in progress: S3 asks to retry.
        "ConditionalRequestConflict",
    }
)

#: How to give credentials, for the message of a request that found none.
_GIVE_CREDENTIALS: Final = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in the environment, pass "
    "storage_options={'key': ..., 'secret': ...} (or 'profile'), or storage_options={'anon': True} for a public bucket"
)


class _Body(io.BytesIO):
    """A request body over ``bytes``, read by the HTTP client without a copy of the whole.

    Given ``bytes``, botocore wraps them in a ``BytesIO`` (which shares the buffer until it is
    written to or its buffer is exported), and aiohttp's payload for a ``BytesIO`` measures it through
    ``getbuffer()``, which makes the ``BytesIO`` copy the whole body first: every part in flight was
    held twice. Handing botocore a ``BytesIO`` whose ``getbuffer`` exports the original bytes keeps
    the one buffer; everything else (checksums, retries rewinding it, aiohttp's chunked reads) reads
    it as any ``BytesIO``.
    """

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self._data = data

    def getbuffer(self) -> memoryview:
        return memoryview(self._data)


#: The error codes of S3's "not found" answers: what is missing, named (``"404"``: a HEAD, which has no body).
_S3_NOT_FOUND_CODES: Final = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchUpload", "NotFound", "404"})


def _error_info(exc: BaseException) -> tuple[str, int]:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return "", 0
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


class S3Options(StorageOptions, store="s3"):
    """The ``storage_options`` of S3: the keywords of ``s3fs.S3FileSystem``, checked by name only.

    None is declared: every option, credentials included, is a keyword passed to s3fs unchanged (see
    ``docs/backends/s3.md``). s3fs, botocore's session it hands them to and fsspec's listing cache accept
    more than any list here would keep up with, check their values and read the environment themselves.
    The class refuses a name none of them takes, with the closest one that is; its ``repr`` shows names
    only.
    """

    @classmethod
    def passthrough_names(cls) -> frozenset[str]:
        """Every keyword of ``s3fs.S3FileSystem``, of botocore's session and of fsspec's listing cache."""
        import s3fs
        from aiobotocore.session import AioSession

        return accepted_options(s3fs.S3FileSystem, AioSession.__init__)


class S3Files(ObjectStore):
    """S3 through an ``s3fs.S3FileSystem`` (see :class:`~trackpoint.backends.stores.ObjectStore`).

    Parameters
    ----------
    fs
        The filesystem whose aiobotocore client sends the requests (built by
        :func:`create_files`); requests run on its event loop.
    transfer
        Retry and transfer tuning.
    """

    store_name = "s3"
    schemes = ("s3", "s3a")
    min_part_size = _MIN_PART

    def __init__(self, fs: Any, transfer: TransferOptions | None = None) -> None:
        super().__init__(transfer, loop=fs.loop)
        self.fs = fs

    @classmethod
    def from_options(cls, options: CheckpointOptions) -> S3Files:
        """An :class:`S3Files` for ``options`` (see :func:`create_files`)."""
        return create_files(options)

    async def _client(self) -> Any:
        await self.fs.set_session()
        return self.fs.s3

    def classify(self, exc: BaseException) -> ErrorKind:
        # docstring inherited
        from botocore.exceptions import (
            ConnectionClosedError,
            ConnectTimeoutError,
            EndpointConnectionError,
            IncompleteReadError,
            NoCredentialsError,
            PartialCredentialsError,
            ReadTimeoutError,
            ResponseStreamingError,
        )

        if isinstance(exc, HTTPStatusError) and exc.status == 412:
            return "precondition"
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            # Raised before any request is sent (botocore signs it); no retry finds credentials.
            return "permission"
        code, status = _error_info(exc)
        if status or code:
            if status == 412 or code == "PreconditionFailed":
                return "precondition"
            if status == 404 or code in ("NoSuchKey", "NoSuchBucket", "NotFound", "NoSuchUpload"):
                return "not_found"
            if status == 403 or code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                return "permission"
            if status == 416 or code == "InvalidRange":
                return "range"
            if code in _TRANSIENT_CODES or status in (408, 429) or status >= 500:
                return "transient"
            return "other"
        if isinstance(
            exc,
            (
                EndpointConnectionError,
                ConnectionClosedError,
                ReadTimeoutError,
                ConnectTimeoutError,
                ResponseStreamingError,
                IncompleteReadError,
            ),
        ):
            return "transient"
        import asyncio

        import aiohttp

        if isinstance(exc, (aiohttp.ClientError, ConnectionError, asyncio.IncompleteReadError)):
            return "transient"
        return "other"

    def explain_error(self, exc: BaseException, kind: ErrorKind) -> str | None:
        # docstring inherited
        from botocore.exceptions import NoCredentialsError, PartialCredentialsError

        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            found = "incomplete credentials were" if isinstance(exc, PartialCredentialsError) else "no credentials were"
            return f"{found} found: {_GIVE_CREDENTIALS}"
        code, status = _error_info(exc)
        if kind == "not_found" and status == 404 and code not in _S3_NOT_FOUND_CODES:
            # S3 (and every S3-compatible store) says what is missing, in an XML body: NoSuchBucket, NoSuchKey
            # (a HEAD, which has no body, gets "404"). A 404 without that is no S3 answer: a wrong endpoint_url
            # (a web server, another service, a path-style prefix) answers every request so, and would read
            # as "bucket does not exist".
            endpoint = self._endpoint()
            where = f"the endpoint {endpoint!r}" if endpoint else "the endpoint"
            return (
                f"{where} answered HTTP 404 without an S3 error code (S3 names what is missing: NoSuchBucket, "
                "NoSuchKey), so it is likely no S3 endpoint; is storage_options['endpoint_url'] right?"
            )
        return None

    def _endpoint(self) -> str | None:
        """The endpoint requests go to, when one was configured (``endpoint_url``), for messages."""
        fs = self.fs
        url = getattr(fs, "endpoint_url", None) or (getattr(fs, "client_kwargs", None) or {}).get("endpoint_url")
        return str(url) if url else None

    @staticmethod
    def _cond_kwargs(cond: Condition) -> dict[str, str]:
        if cond.create_only:
            return {"IfNoneMatch": "*"}
        if cond.version is not None:
            return {"IfMatch": cond.version}
        return {}

    async def object_stat(self, bucket: str, key: str) -> ObjectStat | None:
        s3 = await self._client()
        try:
            r = await s3.head_object(Bucket=bucket, Key=key)
        except Exception as exc:
            if self.classify(exc) == "not_found":
                return None
            raise
        meta = r.get("Metadata") or {}
        modified = r.get("LastModified")
        return ObjectStat(
            int(r["ContentLength"]),
            str(r["ETag"]),
            meta.get(WRITE_ID_METADATA_KEY),
            modified.timestamp() if modified is not None else None,
        )

    async def object_get_range(self, bucket: str, key: str, start: int, out: memoryview) -> None:
        await self.object_get_range_vectored(bucket, key, start, [out])

    async def object_get_range_vectored(self, bucket: str, key: str, start: int, outs: Sequence[memoryview]) -> None:
        s3 = await self._client()
        end = start + sum(out.nbytes for out in outs) - 1
        r = await s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{end}")
        body = r["Body"]
        try:
            got = await fill_views(body.read, outs, _READ_CHUNK)
        finally:
            body.close()
        if got < end - start + 1:
            raise DataLossError(
                f"s3: {self.url(bucket, key)!r} ends early: wanted bytes {start}-{end}, got {got} of them; "
                "the object is truncated or was replaced"
            )

    async def object_get(self, bucket: str, key: str) -> VersionedBytes | None:
        s3 = await self._client()
        try:
            r = await s3.get_object(Bucket=bucket, Key=key)
        except Exception as exc:
            if self.classify(exc) == "not_found":
                return None
            raise
        async with r["Body"] as body:
            data = await body.read()
        return VersionedBytes(bytes(data), str(r["ETag"]))

    async def object_put(self, bucket: str, key: str, data: memoryview, cond: Condition, write_id: str) -> str:
        s3 = await self._client()
        try:
            r = await s3.put_object(
                Bucket=bucket,
                Key=key,
                Body=_Body(_body_bytes(data)),
                Metadata={WRITE_ID_METADATA_KEY: write_id},
                **self._cond_kwargs(cond),
            )
        except Exception as exc:
            # S3 answers If-Match on a deleted key with 404 NoSuchKey: for a
            # compare-and-swap that is a failed precondition, not a missing path.
            if cond.version is not None and _error_info(exc)[0] == "NoSuchKey":
                raise HTTPStatusError(412, "the object was deleted since that version was read") from exc
            raise
        return str(r["ETag"])

    async def object_list(self, bucket: str, prefix: str) -> list[str]:
        return await self._list(bucket, prefix, delimiter=True)

    async def object_find(self, bucket: str, prefix: str) -> list[str]:
        return await self._list(bucket, prefix, delimiter=False)

    async def _list(self, bucket: str, prefix: str, *, delimiter: bool) -> list[str]:
        s3 = await self._client()
        keys: list[str] = []
        token: str | None = None
        while True:
            kw: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": _LIST_PAGE}
            if delimiter:
                kw["Delimiter"] = "/"
            if token:
                kw["ContinuationToken"] = token
            r = await s3.list_objects_v2(**kw)
            keys.extend(o["Key"] for o in r.get("Contents", []))
            if not r.get("IsTruncated"):
                return keys
            token = r["NextContinuationToken"]

    async def object_delete(self, bucket: str, keys: Sequence[str]) -> None:
        s3 = await self._client()
        for i in range(0, len(keys), _DELETE_BATCH):
            batch = [{"Key": k} for k in keys[i : i + _DELETE_BATCH]]
            r = await s3.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
            errors = [e for e in r.get("Errors", []) if e.get("Code") != "NoSuchKey"]
            if errors:
                first = errors[0]
                # Surfaces as StorageError via classify("other") unless the code is transient.
                from botocore.exceptions import ClientError

                raise ClientError(
                    {
                        "Error": {
                            "Code": first.get("Code", ""),
                            "Message": (
                                f"{len(errors)} deletions failed, first: {first.get('Key')}: {first.get('Message', '')}"
                            ),
                        }
                    },
                    "DeleteObjects",
                )

    async def upload_begin(self, bucket: str, key: str, cond: Condition, write_id: str) -> Any:
        s3 = await self._client()
        r = await s3.create_multipart_upload(Bucket=bucket, Key=key, Metadata={WRITE_ID_METADATA_KEY: write_id})
        return {"Bucket": bucket, "Key": key, "UploadId": r["UploadId"], "cond": cond}

    async def upload_part(self, state: Any, number: int, offset: int, data: memoryview, total: int | None) -> Any:
        if data.nbytes == 0 and number > 0:
            return None  # nothing left for a final part: complete with the parts sent
        s3 = await self._client()
        r = await s3.upload_part(
            Bucket=state["Bucket"],
            Key=state["Key"],
            UploadId=state["UploadId"],
            PartNumber=number + 1,
            Body=_Body(_body_bytes(data)),
        )
        return {"PartNumber": number + 1, "ETag": r["ETag"]}

    async def upload_finish(self, state: Any, parts: list[Any], total: int) -> str:
        s3 = await self._client()
        r = await s3.complete_multipart_upload(
            Bucket=state["Bucket"],
            Key=state["Key"],
            UploadId=state["UploadId"],
            MultipartUpload={"Parts": [p for p in parts if p is not None]},
            **self._cond_kwargs(state["cond"]),
        )
        return str(r["ETag"])

    async def upload_abort(self, state: Any) -> None:
        s3 = await self._client()
        await s3.abort_multipart_upload(Bucket=state["Bucket"], Key=state["Key"], UploadId=state["UploadId"])

    async def upload_list(self, bucket: str, prefix: str, *, recursive: bool = False) -> list[UploadStat]:
        # docstring inherited
        import asyncio

        s3 = await self._client()
        uploads: list[dict[str, Any]] = []
        kw: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
        if not recursive:
            kw["Delimiter"] = "/"  # the uploads of deeper keys come back as CommonPrefixes only
        while True:
            r = await s3.list_multipart_uploads(**kw)
            uploads.extend(r.get("Uploads", []))
            if not r.get("IsTruncated"):
                break
            kw["KeyMarker"], kw["UploadIdMarker"] = r.get("NextKeyMarker", ""), r.get("NextUploadIdMarker", "")
        # ListMultipartUploads tells when an upload started, not how much it holds nor when its last part
        # came: a save streaming a large object for longer than cleanup's age guard keeps sending parts, and
        # only their times tell it from an abandoned upload. One ListParts per upload, together.
        stats = await asyncio.gather(*(self._upload_stat(s3, bucket, u) for u in uploads))
        return [stat for stat in stats if stat is not None]

    async def _upload_stat(self, s3: Any, bucket: str, upload: dict[str, Any]) -> UploadStat | None:
        key, upload_id = str(upload["Key"]), str(upload["UploadId"])
        initiated = upload.get("Initiated")
        started = initiated.timestamp() if initiated is not None else None
        newest, size = started, 0
        kw: dict[str, Any] = {"Bucket": bucket, "Key": key, "UploadId": upload_id}
        while True:
            try:
                r = await s3.list_parts(**kw)
            except Exception as exc:
                if self.classify(exc) == "not_found":
                    return None  # completed or aborted since it was listed
                raise
            for part in r.get("Parts", []):
                size += int(part.get("Size", 0))
                modified = part.get("LastModified")
                if modified is not None:
                    t = modified.timestamp()
                    newest = t if newest is None else max(newest, t)
            if not r.get("IsTruncated"):
                break
            kw["PartNumberMarker"] = r["NextPartNumberMarker"]
        state = {"Bucket": bucket, "Key": key, "UploadId": upload_id, "cond": Condition.NONE}
        return UploadStat(key, upload_id, state, started=started, modified=newest, size=size)


def create_files(options: CheckpointOptions) -> S3Files:
    """An :class:`S3Files` for ``options`` (storage options go to ``s3fs.S3FileSystem``)."""
    transfer = S3Files.transfer_options(options)
    # This layer owns the retry policy; botocore retrying underneath would
    # multiply attempts and break the caller's bound on total time.
    fs = filesystem(
        "s3",
        options.storage_options,
        retries="caller",
        request_timeout=transfer.request_timeout,
        max_connections=transfer.max_concurrency,
    )
    return S3Files(fs, transfer)
