"""The public ObjectStore base with a store written from its API alone: sync or async client calls, own loop.

``DictStore`` is a complete object store kept in a dict, written only against
``trackpoint.backends.stores``: it shows what the base adds on top of the
client calls (retries, conditional writes, write-id recognition, buffering
without multipart uploads) without any network in between.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
import pytest

from trackpoint.backends.bundle import BundleBackend
from trackpoint.backends.stores import (
    WRITE_ID_METADATA_KEY,
    Condition,
    ErrorKind,
    ObjectStat,
    ObjectStore,
    TransferOptions,
    fill_views,
    fill_views_from,
)
from trackpoint.errors import (
    CheckpointExistsError,
    CheckpointNotFoundError,
    ConcurrentModificationError,
    DataLossError,
    StorageError,
    TransientStorageError,
)
from trackpoint.storage import CheckpointOptions, VersionedBytes, WriteItem

FAST = TransferOptions(retries=3, retry_base_delay=0.001, retry_max_delay=0.002, part_size=5 * 2**20)


class Missing(Exception):
    pass


class Refused(Exception):
    pass


class Flaky(Exception):
    pass


class DictStore(ObjectStore):
    """Objects in a dict; client calls are plain functions (as with a synchronous SDK)."""

    store_name = "dict"
    schemes = ("dict",)

    def __init__(self, transfer: TransferOptions | None = FAST, **kw: Any) -> None:
        super().__init__(transfer, **kw)
        self.objects: dict[tuple[str, str], tuple[bytes, str, str]] = {}
        self.lock = threading.Lock()
        self.calls: list[tuple[str, str]] = []  # (call, thread name)
        self.fail_next: list[BaseException] = []
        self.buckets = {"b"}
        self.versions = 0

    def _record(self, call: str) -> None:
        self.calls.append((call, threading.current_thread().name))
        if self.fail_next:
            raise self.fail_next.pop(0)

    def classify(self, exc: BaseException) -> ErrorKind:
        if isinstance(exc, Missing):
            return "not_found"
        if isinstance(exc, Refused):
            return "precondition"
        if isinstance(exc, Flaky):
            return "transient"
        return "other"

    def object_stat(self, bucket: str, key: str) -> ObjectStat | None:
        self._record("stat")
        found = self.objects.get((bucket, key))
        return None if found is None else ObjectStat(len(found[0]), found[1], found[2])

    def object_get_range(self, bucket: str, key: str, start: int, out: memoryview) -> None:
        self._record("get_range")
        found = self.objects.get((bucket, key))
        if found is None:
            raise Missing(key)
        chunk = found[0][start : start + out.nbytes]
        out[: len(chunk)] = chunk
        if len(chunk) < out.nbytes:
            raise DataLossError(f"dict: {key} ends early")

    def object_get(self, bucket: str, key: str) -> VersionedBytes | None:
        self._record("get")
        found = self.objects.get((bucket, key))
        return None if found is None else VersionedBytes(found[0], found[1])

    def object_put(self, bucket: str, key: str, data: memoryview, condition: Condition, write_id: str) -> str:
        self._record("put")
        if bucket not in self.buckets:
            raise Missing(bucket)
        with self.lock:
            current = self.objects.get((bucket, key))
            if condition.create_only and current is not None:
                raise Refused(key)
            if condition.version is not None and (current is None or current[1] != condition.version):
                raise Refused(key)
            self.versions += 1
            self.objects[(bucket, key)] = (bytes(data), str(self.versions), write_id)
            return str(self.versions)

    def object_list(self, bucket: str, prefix: str) -> list[str]:
        self._record("list")
        return [k for (b, k) in self.objects if b == bucket and k.startswith(prefix) and "/" not in k[len(prefix) :]]

    def object_delete(self, bucket: str, keys: Sequence[str]) -> None:
        self._record("delete")
        for k in keys:
            self.objects.pop((bucket, k), None)


class AsyncDictStore(DictStore):
    """The same store with coroutine client calls (as with an asynchronous client)."""

    async def object_stat(self, bucket: str, key: str) -> ObjectStat | None:  # type: ignore[override]
        return DictStore.object_stat(self, bucket, key)

    async def object_put(  # type: ignore[override]
        self, bucket: str, key: str, data: memoryview, condition: Condition, write_id: str
    ) -> str:
        return DictStore.object_put(self, bucket, key, data, condition, write_id)

    async def object_find(self, bucket: str, prefix: str) -> list[str]:
        return [k for (b, k) in self.objects if b == bucket and k.startswith(prefix)]


@pytest.fixture(params=[DictStore, AsyncDictStore])
def store(request: pytest.FixtureRequest) -> Any:
    s = request.param()
    yield s
    s.close()


def test_condition_spellings() -> None:
    assert Condition.NONE.create_only is False and Condition.NONE.version is None
    assert Condition.create_only().create_only is True
    assert Condition.if_version("7").version == "7" and not Condition.if_version("7").create_only
    assert Condition.create_only() == Condition(create_only=True) and hash(Condition.NONE) == hash(Condition())
    with pytest.raises(AttributeError, match="immutable"):
        Condition.NONE.version = "x"  # type: ignore[misc]
    with pytest.raises(ValueError, match="not both"):
        Condition(create_only=True, version="1")


def test_sync_calls_run_in_the_store_pool_and_async_calls_on_the_loop(store: DictStore) -> None:
    store.put("dict://b/k", b"hello")
    assert store.read("dict://b/k") == b"hello"
    threads = {name for call, name in store.calls if call == "put"}
    if isinstance(store, AsyncDictStore):
        assert threads == {"trackpoint-io"}  # trackpoint's own I/O loop: no loop was given
    else:
        assert len(threads) == 1 and next(iter(threads)).startswith("trackpoint-dict")


def test_write_id_is_stored_and_a_retried_create_recognised_as_ours(store: DictStore) -> None:
    real_put = DictStore.object_put

    def lands_then_drops(bucket: str, key: str, data: memoryview, condition: Condition, write_id: str) -> str:
        # The first attempt reaches the store, but its answer is lost; the retry then meets its own object.
        real_put(store, bucket, key, data, condition, write_id)
        store.object_put = real_put.__get__(store)  # type: ignore[method-assign]
        store._is_async["object_put"] = False
        raise Flaky("connection reset after the request was sent")

    store.object_put = lands_then_drops  # type: ignore[method-assign]
    store._is_async["object_put"] = False
    store.put("dict://b/once", b"x", create_only=True)
    assert store.objects[("b", "once")][0] == b"x"
    assert WRITE_ID_METADATA_KEY == "trackpoint-write-id"
    with pytest.raises(CheckpointExistsError, match=r"'dict://b/once' already exists"):
        store.put("dict://b/once", b"y", create_only=True)


def test_versioned_writes_and_errors(store: DictStore) -> None:
    v1 = store.write_versioned("dict://b/state", b"1")
    v2 = store.write_versioned("dict://b/state", b"2", if_version=v1)
    with pytest.raises(ConcurrentModificationError, match="changed since version"):
        store.write_versioned("dict://b/state", b"3", if_version=v1)
    got = store.read_versioned("dict://b/state")
    assert got is not None and got.data == b"2" and got.version == v2
    missing = r"dict: writing 'dict://nobucket/k' failed: bucket 'nobucket' does not exist"
    with pytest.raises(CheckpointNotFoundError, match=missing):
        store.put("dict://nobucket/k", b"x")
    store.fail_next = [Flaky("1"), Flaky("2"), Flaky("3"), Flaky("4")]
    with pytest.raises(TransientStorageError, match="still failed after 4 attempts"):
        store.size("dict://b/state")


def test_without_multipart_a_sink_buffers_and_puts_once(store: DictStore) -> None:
    big = np.random.default_rng(0).bytes(12 * 2**20)  # more than two parts
    with store.open_sink("dict://b/big") as sink:
        for i in range(0, len(big), 2**20):
            sink.write(big[i : i + 2**20])
    assert [c for c, _ in store.calls].count("put") == 1
    out = bytearray(100)
    store.read_into("dict://b/big", 5 * 2**20, memoryview(out))
    assert bytes(out) == big[5 * 2**20 : 5 * 2**20 + 100]


def test_find_and_rmtree_need_object_find(store: DictStore) -> None:
    for k in ("d/a", "d/sub/b", "d/sub/deeper/c", "e/x"):
        store.put(f"dict://b/{k}", b"x")
    assert store.listdir("dict://b/d") == ["a"]
    if not isinstance(store, AsyncDictStore):
        with pytest.raises(StorageError, match="does not implement object_find"):
            store.find("dict://b/d")
        return
    assert store.find("dict://b/d") == ["dict://b/d/a", "dict://b/d/sub/b", "dict://b/d/sub/deeper/c"]
    store.rmtree("dict://b/d")
    assert sorted(k for _, k in store.objects) == ["e/x"]


def test_close_refuses_more_work(store: DictStore) -> None:
    store.close()
    store.close()  # idempotent
    with pytest.raises(StorageError, match="was closed"):
        store.size("dict://b/x")


def test_close_releases_the_synchronous_clients_when_the_asynchronous_ones_fail_to_close() -> None:
    # A store with clients of both kinds: a failing aclose must not leak the others (sockets, threads).
    closed: list[str] = []

    class Both(DictStore):
        async def aclose(self) -> None:
            raise RuntimeError("the async client's session would not close")

        def close_client(self) -> None:
            closed.append("sync")

    store = Both()
    with pytest.raises(RuntimeError, match="would not close"):
        store.close()
    assert closed == ["sync"]
    with pytest.raises(StorageError, match="was closed"):
        store.size("dict://b/x")


def test_bundle_format_runs_on_a_store_from_the_public_api(tmp_path: Any) -> None:
    class Store(AsyncDictStore):
        pass

    files = Store()
    backend = BundleBackend(files, options=CheckpointOptions())
    value = np.arange(12, dtype=np.float32).reshape(3, 4)
    backend.save("dict://b/run/ckpt-1", [WriteItem("v", value)])
    with backend.open_reader("dict://b/run/ckpt-1") as reader:
        assert np.array_equal(reader.read("v"), value)
    files.close()


class SlowStatStore(DictStore):
    """DictStore whose stats take a while, counting how many are in flight at once."""

    def __init__(self, transfer: TransferOptions | None = FAST, **kw: Any) -> None:
        super().__init__(transfer, **kw)
        self.stats_now = 0
        self.stats_most = 0

    def object_stat(self, bucket: str, key: str) -> ObjectStat | None:
        with self.lock:
            self.stats_now += 1
            self.stats_most = max(self.stats_most, self.stats_now)
        try:
            time.sleep(0.02)
            return super().object_stat(bucket, key)
        finally:
            with self.lock:
                self.stats_now -= 1


def test_sizes_are_asked_together() -> None:
    store = SlowStatStore()
    try:
        for i in range(6):
            store.put(f"dict://b/obj{i}", b"x" * i)
        assert store.sizes([f"dict://b/obj{i}" for i in (5, 0, 3)] + ["dict://b/missing"]) == [5, 0, 3, None]
        assert store.stats_most == 4
        assert store.sizes([]) == []
    finally:
        store.close()


def test_reading_a_whole_object_is_one_request(store: DictStore) -> None:
    store.put("dict://b/obj", b"payload")
    store.calls.clear()
    assert store.read("dict://b/obj") == b"payload"
    assert [call for call, _ in store.calls] == ["get"]
    with pytest.raises(CheckpointNotFoundError, match=r"dict: 'dict://b/nothing' does not exist"):
        store.read("dict://b/nothing")


def test_a_bundle_reader_asks_the_sizes_of_its_data_files_together() -> None:
    store = SlowStatStore()
    try:
        backend = BundleBackend(store, options=CheckpointOptions())
        items = [WriteItem(f"v{i}", np.full(1000, i, np.float32)) for i in range(8)]
        backend.save("dict://b/run/ckpt", items, CheckpointOptions(num_writers=4))
        data = [k for (_, k) in store.objects if ".data-" in k]
        assert len(data) == 4
        assert store.stats_most > 4  # the commit checked the 4 markers and the 4 data objects together (8)
        store.calls.clear()
        store.stats_most = 0
        with backend.open_reader("dict://b/run/ckpt") as reader:
            first = reader.read("v0")  # as a restore reads its object graph first: every size at once
            assert [call for call, _ in store.calls].count("stat") == 4
            got = reader.read_many([(it.key, None) for it in items])
        np.testing.assert_array_equal(first, items[0].array)
        assert all(np.array_equal(g, it.array) for g, it in zip(got, items, strict=True))
        calls = [call for call, _ in store.calls]
        assert calls.count("get") == 1  # the index, without asking its size first
        assert calls.count("stat") == 4 and store.stats_most == 4  # each data file once, all at once
    finally:
        store.close()


class Configured(DictStore):
    min_part_size: ClassVar[int] = 1024
    default_part_size: ClassVar[int] = 4096


def test_from_options_reads_transfer_options() -> None:
    store = Configured.from_options(CheckpointOptions(backend_options={"part_size": 2048, "retries": 0}))
    assert isinstance(store, Configured)
    assert store.transfer.part_size == 2048 and store.transfer.retries == 0
    with pytest.raises(Exception, match=r"part_size'\] must be at least 1024 bytes"):
        Configured.from_options(CheckpointOptions(backend_options={"part_size": 10}))


def test_a_plugin_store_refuses_a_misspelt_backend_option() -> None:
    # Only the built-in s3 and gcs factories checked them: a plugin's store took {"retriez": 1} without a word.
    from trackpoint.errors import BackendOptionError
    from trackpoint.plugins import bundle_backend_spec

    factory = bundle_backend_spec(Configured, name="dict").factory
    with pytest.raises(
        BackendOptionError, match=r"dict: unknown backend option\(s\) retriez \(did you mean retries\?\)"
    ):
        factory("dict://b/run/ckpt", CheckpointOptions(backend_options={"retriez": 1}))
    backend = factory("dict://b/run/ckpt", CheckpointOptions(backend_options={"retries": 0}))
    assert isinstance(backend, BundleBackend) and backend.files.transfer.retries == 0


class OwnOptions(Configured):
    """A store reading a backend option of its own (in its from_options), declared for the formats' check."""

    extra_backend_options: ClassVar[frozenset[str]] = frozenset({"tier"})


def test_a_store_declares_the_backend_options_it_reads_itself() -> None:
    from trackpoint.backends.zarr import ZarrBackend
    from trackpoint.errors import BackendOptionError

    given = CheckpointOptions(backend_options={"tier": "cold", "retries": 0, "compressor": "gzip"})
    assert ZarrBackend(OwnOptions(), given).options.compressor == "gzip"
    BundleBackend(OwnOptions(), options=CheckpointOptions(backend_options={"tier": "cold"}))
    with pytest.raises(BackendOptionError, match=r"unknown backend option\(s\) tire \(did you mean tier\?\)"):
        BundleBackend(OwnOptions(), options=CheckpointOptions(backend_options={"tire": "cold"}))
    with pytest.raises(BackendOptionError, match=r"unknown backend option\(s\) tire \(did you mean tier\?\)"):
        ZarrBackend(OwnOptions(), CheckpointOptions(backend_options={"tire": "cold"}))
    with pytest.raises(BackendOptionError, match="unknown backend option"):
        BundleBackend(Configured(), options=CheckpointOptions(backend_options={"tier": "cold"}))


def test_a_store_chooses_its_default_part_size() -> None:
    assert Configured.from_options(CheckpointOptions()).transfer.part_size == 4096
    assert Configured(None).transfer.part_size == 4096  # also when built without options
    assert DictStore(None).transfer.part_size == 16 * 2**20


class MultipartDictStore(DictStore):
    """DictStore with multipart uploads, recording what each part arrives as."""

    def __init__(self, transfer: TransferOptions | None = FAST, **kw: Any) -> None:
        super().__init__(transfer, **kw)
        self.part_owners: list[type] = []
        self.part_sizes: list[int] = []

    def upload_begin(self, bucket: str, key: str, condition: Condition, write_id: str) -> object:
        return {"bucket": bucket, "key": key, "condition": condition, "write_id": write_id, "parts": {}}

    def upload_part(self, state: Any, number: int, offset: int, data: memoryview, total: int | None) -> object:
        self.part_owners.append(type(data.obj))
        self.part_sizes.append(data.nbytes)
        state["parts"][number] = bytes(data)
        return number

    def upload_finish(self, state: Any, parts: list[Any], total: int) -> str:
        whole = b"".join(state["parts"][n] for n in sorted(parts))
        return self.object_put(state["bucket"], state["key"], memoryview(whole), state["condition"], state["write_id"])

    def upload_abort(self, state: Any) -> None:
        state["parts"].clear()


def test_upload_parts_reach_the_store_as_bytes_so_sending_them_copies_nothing() -> None:
    from trackpoint.backends.stores.objectstore import _body_bytes

    store = MultipartDictStore()
    try:
        big = np.random.default_rng(0).bytes(12 * 2**20)  # three parts of 5 MiB
        with store.open_sink("dict://b/big") as sink:
            for i in range(0, len(big), 2**20):
                sink.write(big[i : i + 2**20])
        assert store.part_owners == [bytes, bytes, bytes]
        assert store.read("dict://b/big") == big
        part = memoryview(b"0123456789")
        assert _body_bytes(part) is part.obj
        assert _body_bytes(part[2:]) == b"23456789"
    finally:
        store.close()


@pytest.mark.parametrize(
    ("extra", "parts"),
    [
        (0, []),  # exactly one part: one request
        (4, []),  # a part and a 4-byte checksum (a Zarr chunk): still one request
        (5 * 2**20, []),  # a part and the smallest part: one request
        (5 * 2**20 + 1, [5 * 2**20, 5 * 2**20, 1]),  # one byte more: an upload
        (7 * 2**20, [5 * 2**20, 5 * 2**20, 2 * 2**20]),
    ],
)
def test_an_object_little_over_one_part_goes_in_one_request(extra: int, parts: list[int]) -> None:
    store = MultipartDictStore()  # part_size and min_part_size 5 MiB
    try:
        data = np.random.default_rng(1).bytes(5 * 2**20 + extra)
        with store.open_sink("dict://b/obj") as sink:
            for i in range(0, len(data), 3 * 2**20):  # writes that do not end on part boundaries
                sink.write(data[i : i + 3 * 2**20])
        assert store.part_sizes == parts
        assert [c for c, _ in store.calls].count("put") == 1  # the object, or the completed upload
        assert store.read("dict://b/obj") == data
    finally:
        store.close()


@pytest.mark.parametrize(
    ("extra", "parts"),
    [
        (4, []),  # a part and a 4-byte checksum: one request, though a 1-byte part would be accepted
        (2**16, []),
        (2**16 + 1, [5 * 2**20, 2**16 + 1]),  # past the 64 KiB every store holds back: an upload
    ],
)
def test_a_store_without_a_smallest_part_still_sends_a_part_and_a_trailer_in_one_request(
    extra: int, parts: list[int]
) -> None:
    class TinyPartsStore(MultipartDictStore):
        min_part_size = 1  # as Azure's blocks

    store = TinyPartsStore()  # 5 MiB parts
    try:
        data = np.random.default_rng(2).bytes(5 * 2**20 + extra)
        with store.open_sink("dict://b/obj") as sink:
            for i in range(0, len(data), 3 * 2**20):
                sink.write(data[i : i + 3 * 2**20])
        assert store.part_sizes == parts
        assert store.read("dict://b/obj") == data
    finally:
        store.close()


class SlowDictStore(DictStore):
    """DictStore whose ranged reads take a while, counting merged reads (scratch buffers) in flight."""

    def __init__(self, transfer: TransferOptions | None = FAST, **kw: Any) -> None:
        super().__init__(transfer, **kw)
        self.scratch_now = 0
        self.scratch_most = 0
        self.scratch_reads = 0

    def object_get_range(self, bucket: str, key: str, start: int, out: memoryview) -> None:
        merged = isinstance(out.obj, bytearray)  # the layer's scratch buffer, not a destination
        with self.lock:
            if merged:
                self.scratch_now += 1
                self.scratch_reads += 1
                self.scratch_most = max(self.scratch_most, self.scratch_now)
        try:
            time.sleep(0.02)
            super().object_get_range(bucket, key, start, out)
        finally:
            with self.lock:
                self.scratch_now -= merged


class VectoredDictStore(SlowDictStore):
    """SlowDictStore with vectored reads, counting them."""

    def __init__(self, transfer: TransferOptions | None = FAST, **kw: Any) -> None:
        super().__init__(transfer, **kw)
        self.vectored = 0

    def object_get_range_vectored(self, bucket: str, key: str, start: int, outs: Sequence[memoryview]) -> None:
        self._record("get_range_vectored")
        self.vectored += 1
        whole = self.objects[(bucket, key)][0]
        pos = start
        for out in outs:
            chunk = whole[pos : pos + out.nbytes]
            out[: len(chunk)] = chunk
            if len(chunk) < out.nbytes:
                raise DataLossError(f"dict: {key} ends early")
            pos += out.nbytes


def test_nearby_ranges_are_read_into_their_buffers_without_a_scratch_buffer() -> None:
    transfer = TransferOptions(retries=0, read_part_size=1000, coalesce_gap=64)
    store = VectoredDictStore(transfer)
    try:
        data = np.random.default_rng(3).bytes(6600)
        store.put("dict://b/obj", data)
        outs = [bytearray(100) for _ in range(60)]  # 10 bytes apart: 9 to a request of up to 1,000 bytes
        store.read_ranges("dict://b/obj", [(i * 110, memoryview(o)) for i, o in enumerate(outs)])
        assert [bytes(o) for o in outs] == [data[i * 110 : i * 110 + 100] for i in range(60)]
        assert store.vectored == 7 and store.scratch_reads == 0
        # The same bytes asked twice cannot be streamed into both: that request takes a scratch buffer.
        twice = [bytearray(50), bytearray(50)]
        store.read_ranges("dict://b/obj", [(200, memoryview(twice[0])), (220, memoryview(twice[1]))])
        assert twice == [bytearray(data[200:250]), bytearray(data[220:270])]
        assert store.vectored == 7 and store.scratch_reads == 1
    finally:
        store.close()


@pytest.mark.parametrize("pieces", [[1], [3, 3, 3], [7, 1, 2, 5], [20]])
def test_fill_views_streams_chunks_across_views(pieces: list[int]) -> None:
    body = bytes(range(20))
    sent = 0

    async def read(n: int) -> bytes:
        nonlocal sent
        size = min(n, pieces[min(len(pieces) - 1, sent % len(pieces))], len(body) - sent)
        chunk = body[sent : sent + size]
        sent += size
        return chunk

    outs = [bytearray(2), bytearray(0), bytearray(9), bytearray(1), bytearray(5)]
    assert asyncio.run(fill_views(read, [memoryview(o) for o in outs], chunk=4)) == 17
    assert b"".join(outs) == body[:17]
    assert sent == 17  # never more than the views hold
    sent = 0
    longer = [bytearray(15), bytearray(10)]
    assert asyncio.run(fill_views(read, [memoryview(o) for o in longer])) == 20  # the body ended early
    assert longer[0] == body[:15] and longer[1][:5] == body[15:]


def test_fill_views_from_takes_chunks_until_the_views_are_full() -> None:
    taken = 0

    def chunks() -> Iterator[bytes]:
        nonlocal taken
        for start in range(0, 30, 7):
            taken += 1
            yield bytes(range(start, min(start + 7, 30)))

    outs = [bytearray(3), bytearray(0), bytearray(10)]
    assert fill_views_from(chunks(), [memoryview(o) for o in outs]) == 13
    assert b"".join(outs) == bytes(range(13)) and taken == 2  # the third chunk is never asked for
    assert fill_views_from(iter([b"ab"]), [memoryview(bytearray(5))]) == 2  # the body ended early


def test_merged_reads_hold_at_most_two_scratch_buffers_at_once() -> None:
    # 60 ranges of 100 bytes, 10 bytes apart: merged into requests of at most 1,000 bytes, six of them.
    transfer = TransferOptions(retries=0, read_part_size=1000, coalesce_gap=64, max_concurrency=16)
    store = SlowDictStore(transfer)
    try:
        data = np.random.default_rng(1).bytes(6600)
        store.put("dict://b/obj", data)
        outs = [bytearray(100) for _ in range(60)]
        store.read_ranges("dict://b/obj", [(i * 110, memoryview(o)) for i, o in enumerate(outs)])
        assert [bytes(o) for o in outs] == [data[i * 110 : i * 110 + 100] for i in range(60)]
        assert store.scratch_reads >= 6
        assert store.scratch_most == 2
    finally:
        store.close()
