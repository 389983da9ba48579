"""Google Cloud Storage as an :class:`~trackpoint.backends.stores.ObjectStore`.

:class:`GCSFiles` speaks the GCS JSON API through gcsfs' authenticated
aiohttp session. The ``gcs`` backend (registered by
:mod:`trackpoint.backends._builtin`) is the bundle format over it: its commit
point is a create-only upload (``ifGenerationMatch=0``) of the checkpoint's
``.index``; see ``docs/backends/gcs.md``.

gcsfs is imported only when a store is created, by
:func:`trackpoint.backends.stores._fsspec.filesystem`, which builds every
fsspec filesystem of trackpoint (``gcsfs.core.GCSFileSystem``, never gcsfs'
experimental subclass that probes every bucket over gRPC first).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any, Final
from urllib.parse import quote

from trackpoint.backends.stores._fsspec import accepted_options, filesystem
from trackpoint.backends.stores.objectstore import (
    WRITE_ID_METADATA_KEY,
    Condition,
    ErrorKind,
    HTTPStatusError,
    ObjectStat,
    ObjectStore,
    TransferOptions,
    fill_views,
)
from trackpoint.errors import DataLossError
from trackpoint.plugins import StorageOptions
from trackpoint.storage import CheckpointOptions, VersionedBytes

__all__ = ["GCSFiles", "GCSOptions", "create_files"]

_CHUNK_ALIGN: Final = 256 * 1024  # resumable-upload chunks are multiples of 256 KiB
_MiB: Final = 1 << 20
_READ_CHUNK: Final = 1 << 20
_SEND_CHUNK: Final = 1 << 20
_DELETE_CONCURRENCY: Final = 16
_LIST_PAGE: Final = 1000  # the JSON API's largest page


def _q(name: str) -> str:
    return quote(name, safe="")


class GCSOptions(StorageOptions, store="gcs"):
    """The ``storage_options`` of GCS: the keywords of ``gcsfs.core.GCSFileSystem``, checked by name only.

    None is declared: every option, ``token`` included, is a keyword passed to gcsfs unchanged (see
    ``docs/backends/gcs.md``), which checks the values and reads the environment itself. The class refuses
    a name gcsfs does not take, with the closest one it does; its ``repr`` shows names only.
    """

    @classmethod
    def passthrough_names(cls) -> frozenset[str]:
        """Every keyword of ``gcsfs.core.GCSFileSystem`` and of fsspec's listing cache."""
        from gcsfs.core import GCSFileSystem

        return accepted_options(GCSFileSystem)


class GCSFiles(ObjectStore):
    """GCS through a ``gcsfs`` filesystem's session (see :class:`~trackpoint.backends.stores.ObjectStore`).

    Parameters
    ----------
    fs
        The filesystem whose session and credentials send the requests
        (built by :func:`create_files`); requests run on its event loop.
    transfer
        Retry and transfer tuning.
    """

    store_name = "gcs"
    schemes = ("gs", "gcs")
    # A resumable upload accepts chunks strictly in order, in multiples of 256 KiB.
    sequential_parts = True
    min_part_size = _CHUNK_ALIGN
    part_alignment = _CHUNK_ALIGN
    # One chunk is in flight while the next fills, so 32 MiB chunks hold what
    # S3's 16 MiB parts with four in flight do (64 vs 80 MiB per writer), in
    # half the requests of 16 MiB chunks: chunks cannot overlap, so each
    # request's fixed cost (and a server's per-chunk work) is paid in series.
    default_part_size = 32 * _MiB

    def __init__(self, fs: Any, transfer: TransferOptions | None = None) -> None:
        super().__init__(transfer, loop=fs.loop)
        self.fs = fs

    @classmethod
    def from_options(cls, options: CheckpointOptions) -> GCSFiles:
        """A :class:`GCSFiles` for ``options`` (see :func:`create_files`)."""
        return create_files(options)

    # ------------------------------------------------------------ HTTP
    async def _request(
        self,
        method: str,
        url: str,
        *,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        data: bytes | memoryview | list[memoryview] | None = None,
        ok: tuple[int, ...] = (200,),
    ) -> tuple[int, Any, bytes]:
        """One request; ``data`` may be a list of views, sent one after another as one body."""
        session = await self.fs._set_session()
        # _get_headers adds the (refreshed) credentials of gcsfs' chain.
        hdrs = self.fs._get_headers(headers)
        body: Any = data
        views = data if isinstance(data, list) else None if data is None else [memoryview(data).cast("B")]
        if views is not None and (len(views) > 1 or views[0].nbytes > _SEND_CHUNK):
            # Sent piece by piece, waiting for each to drain: given one large
            # buffer, asyncio's transport copies whatever the socket does not
            # take at once, holding a second copy of the chunk while it is sent.
            hdrs["Content-Length"] = str(sum(v.nbytes for v in views))
            body = _pieces(views)
        # GCS answers 308 to a resumable-upload chunk it kept ("resume
        # incomplete"): a status to read, never a redirect to follow.
        async with session.request(method, url, params=params, headers=hdrs, data=body, allow_redirects=False) as r:
            body = await r.read()
            if r.status not in ok:
                raise HTTPStatusError(r.status, _reason(body))
            return r.status, r.headers, body

    @property
    def _base(self) -> str:
        return str(self.fs._location)

    def _object_url(self, bucket: str, key: str) -> str:
        return f"{self._base}/storage/v1/b/{_q(bucket)}/o/{_q(key)}"

    @staticmethod
    def _cond_params(cond: Condition) -> dict[str, str]:
        if cond.create_only:
            return {"ifGenerationMatch": "0"}
        if cond.version is not None:
            return {"ifGenerationMatch": cond.version}
        return {}

    def classify(self, exc: BaseException) -> ErrorKind:
        # docstring inherited
        import asyncio

        import aiohttp

        if isinstance(exc, HTTPStatusError):
            s = exc.status
            if s == 412:
                return "precondition"
            if s == 404:
                return "not_found"
            if s in (401, 403):
                return "permission"
            if s == 416:
                return "range"
            if s in (408, 429) or s >= 500:
                return "transient"
            return "other"
        if isinstance(exc, (aiohttp.ClientError, ConnectionError, asyncio.IncompleteReadError)):
            return "transient"
        return "other"

    # ------------------------------------------------------------ primitives
    async def object_stat(self, bucket: str, key: str) -> ObjectStat | None:
        try:
            _, _, body = await self._request("GET", self._object_url(bucket, key))
        except HTTPStatusError as exc:
            if exc.status == 404:
                return None
            raise
        meta = json.loads(body)
        updated = meta.get("updated")
        return ObjectStat(
            int(meta["size"]),
            str(meta["generation"]),
            (meta.get("metadata") or {}).get(WRITE_ID_METADATA_KEY),
            datetime.fromisoformat(updated).timestamp() if updated else None,
        )

    async def object_get_range(self, bucket: str, key: str, start: int, out: memoryview) -> None:
        await self.object_get_range_vectored(bucket, key, start, [out])

    async def object_get_range_vectored(self, bucket: str, key: str, start: int, outs: Sequence[memoryview]) -> None:
        session = await self.fs._set_session()
        end = start + sum(out.nbytes for out in outs) - 1
        hdrs = self.fs._get_headers({"Range": f"bytes={start}-{end}"})
        # No Accept-Encoding negotiation: ranges must address stored bytes.
        hdrs.setdefault("Accept-Encoding", "identity")
        async with session.get(self._object_url(bucket, key), params={"alt": "media"}, headers=hdrs) as r:
            if r.status not in (200, 206):
                raise HTTPStatusError(r.status, _reason(await r.read()))
            if r.status == 200 and start > 0:
                # The server ignored the range; skip to the requested bytes.
                await r.content.readexactly(start)
            got = await fill_views(r.content.read, outs, _READ_CHUNK)
        if got < end - start + 1:
            raise DataLossError(
                f"gcs: {self.url(bucket, key)!r} ends early: wanted bytes {start}-{end}, got {got} of them; "
                "the object is truncated or was replaced"
            )

    async def object_get(self, bucket: str, key: str) -> VersionedBytes | None:
        try:
            _, headers, body = await self._request("GET", self._object_url(bucket, key), params={"alt": "media"})
        except HTTPStatusError as exc:
            if exc.status == 404:
                return None
            raise
        generation = headers.get("x-goog-generation")
        if generation is None:
            # Some endpoints omit the header: ask for the metadata, and make
            # sure the bytes belong to that generation.
            stat = await self.object_stat(bucket, key)
            if stat is None:
                return None
            generation = stat.version
            _, _, body = await self._request(
                "GET", self._object_url(bucket, key), params={"alt": "media", "generation": generation}
            )
        return VersionedBytes(bytes(body), str(generation))

    async def object_put(self, bucket: str, key: str, data: memoryview, cond: Condition, write_id: str) -> str:
        # uploadType=multipart: metadata and media in one request.
        boundary = "trackpoint-" + uuid.uuid4().hex
        meta = json.dumps({"name": key, "metadata": {WRITE_ID_METADATA_KEY: write_id}}).encode()
        head = (
            f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n".encode()
            + meta
            + f"\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n".encode()
        )
        tail = f"\r\n--{boundary}--\r\n".encode()
        params = {"uploadType": "multipart", **self._cond_params(cond)}
        # The object's bytes are sent from the caller's buffer, never joined
        # into one body with the metadata (that would copy them).
        _, _, resp = await self._request(
            "POST",
            f"{self._base}/upload/storage/v1/b/{_q(bucket)}/o",
            params=params,
            headers={"Content-Type": f"multipart/related; boundary={boundary}"},
            data=[memoryview(head), memoryview(data).cast("B"), memoryview(tail)],
        )
        return str(json.loads(resp)["generation"])

    async def object_list(self, bucket: str, prefix: str) -> list[str]:
        return await self._list(bucket, prefix, delimiter=True)

    async def object_find(self, bucket: str, prefix: str) -> list[str]:
        return await self._list(bucket, prefix, delimiter=False)

    async def _list(self, bucket: str, prefix: str, *, delimiter: bool) -> list[str]:
        keys: list[str] = []
        token: str | None = None
        while True:
            params = {"prefix": prefix, "maxResults": str(_LIST_PAGE), "fields": "items(name),nextPageToken"}
            if delimiter:
                params["delimiter"] = "/"
            if token:
                params["pageToken"] = token
            _, _, body = await self._request("GET", f"{self._base}/storage/v1/b/{_q(bucket)}/o", params=params)
            page = json.loads(body)
            keys.extend(item["name"] for item in page.get("items", []))
            token = page.get("nextPageToken")
            if not token:
                return keys

    async def object_delete(self, bucket: str, keys: Sequence[str]) -> None:
        import asyncio

        # The JSON API deletes one object per request; run them concurrently.
        gate = asyncio.Semaphore(_DELETE_CONCURRENCY)

        async def one(key: str) -> None:
            async with gate:
                await self._request("DELETE", self._object_url(bucket, key), ok=(200, 204, 404))

        await asyncio.gather(*(one(k) for k in keys))

    async def upload_begin(self, bucket: str, key: str, cond: Condition, write_id: str) -> Any:
        # The precondition given here is checked when the upload is finalized.
        _, headers, _ = await self._request(
            "POST",
            f"{self._base}/upload/storage/v1/b/{_q(bucket)}/o",
            params={"uploadType": "resumable", "name": key, **self._cond_params(cond)},
            headers={
                "Content-Type": "application/json; charset=UTF-8",
                "X-Upload-Content-Type": "application/octet-stream",
            },
            data=json.dumps({"name": key, "metadata": {WRITE_ID_METADATA_KEY: write_id}}).encode(),
        )
        return {"location": headers["Location"], "bucket": bucket, "key": key, "attempted": set()}

    async def _persisted(self, location: str, total: int | None) -> tuple[int, Any]:
        """Bytes the server holds of a resumable upload, and the object if it is finished."""
        size = "*" if total is None else str(total)
        status, headers, body = await self._request(
            "PUT", location, headers={"Content-Range": f"bytes */{size}"}, ok=(200, 201, 308)
        )
        if status in (200, 201):
            return -1, json.loads(body)
        rng = headers.get("Range")
        return (int(rng.rsplit("-", 1)[1]) + 1 if rng else 0), None

    async def upload_part(self, state: Any, number: int, offset: int, data: memoryview, total: int | None) -> Any:
        location = state["location"]
        start = offset
        attempted: set[int] = state["attempted"]
        if number in attempted:
            # A retry: the failed attempt may have been stored in part, or
            # even completed the upload; resume at what the server holds.
            held, done = await self._persisted(location, None)
            if done is not None:
                return done
            start = max(offset, held)
        attempted.add(number)
        if start > offset + data.nbytes:
            raise DataLossError(
                f"gcs: resumable upload of {self.url(state['bucket'], state['key'])!r} is ahead of the data"
            )
        rest = data[start - offset :]
        size = "*" if total is None else str(total)
        if rest.nbytes == 0:
            if total is None:
                return None
            crange = f"bytes */{size}"
        else:
            crange = f"bytes {start}-{start + rest.nbytes - 1}/{size}"
        status, headers, body = await self._request(
            "PUT", location, headers={"Content-Range": crange}, data=rest, ok=(200, 201, 308)
        )
        if status in (200, 201):
            return json.loads(body)
        if total is not None:
            raise HTTPStatusError(503, "final chunk not accepted as final; retrying")
        held = int(headers["Range"].rsplit("-", 1)[1]) + 1 if headers.get("Range") else 0
        if held < start + rest.nbytes:
            raise HTTPStatusError(503, f"server kept {held} of {start + rest.nbytes} bytes; resuming")
        return None

    async def upload_finish(self, state: Any, parts: list[Any], total: int) -> str:
        final = parts[-1] if parts else None
        if not isinstance(final, dict) or "generation" not in final:
            held, final = await self._persisted(state["location"], total)
            if final is None:
                raise DataLossError(
                    f"gcs: upload of {self.url(state['bucket'], state['key'])!r} ended with {held} of {total} bytes"
                )
        return str(final["generation"])

    async def upload_abort(self, state: Any) -> None:
        await self._request("DELETE", state["location"], ok=(200, 204, 404, 410, 499))


async def _pieces(views: Sequence[memoryview]) -> AsyncIterator[memoryview]:
    """``views`` in slices of at most ``_SEND_CHUNK`` bytes, for a request body sent without copies."""
    for view in views:
        for start in range(0, view.nbytes, _SEND_CHUNK):
            yield view[start : start + _SEND_CHUNK]


def _reason(body: bytes) -> str:
    try:
        err = json.loads(body).get("error")
        if isinstance(err, dict):
            return str(err.get("message", ""))[:200]
        return str(err)[:200]
    except (ValueError, AttributeError):
        return body[:200].decode("utf-8", "replace")


def create_files(options: CheckpointOptions) -> GCSFiles:
    """A :class:`GCSFiles` for ``options`` (storage options go to ``gcsfs.core.GCSFileSystem``)."""
    transfer = GCSFiles.transfer_options(options)
    # The layer sends its own requests through the filesystem's session and
    # retries them itself; gcsfs' retries never wrap them.
    fs = filesystem("gcs", options.storage_options, retries="caller", request_timeout=transfer.request_timeout)
    return GCSFiles(fs, transfer)
