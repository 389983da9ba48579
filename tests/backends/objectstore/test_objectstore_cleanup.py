"""The clean-up budget and unfinished uploads of the public ObjectStore base, on a store written from its API alone.

``HangingStore`` keeps objects in a dict and can stop answering (every call
then hangs, as a server stopped with SIGSTOP); it lists and aborts unfinished
uploads through the optional ``upload_list``/``upload_abort`` client calls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from trackpoint.backends.stores import (
    Condition,
    ErrorKind,
    ObjectStat,
    ObjectStore,
    TransferOptions,
    UnfinishedUpload,
    UploadStat,
)
from trackpoint.errors import BackendError, StorageError, TransientStorageError
from trackpoint.storage import VersionedBytes

TIMEOUT, DEADLINE, BUDGET = 0.2, 0.5, 0.6
TRANSFER = TransferOptions(
    retries=10,
    retry_base_delay=0.001,
    retry_max_delay=0.002,
    retry_deadline=DEADLINE,
    request_timeout=TIMEOUT,
    cleanup_deadline=BUDGET,
)


class Gone(Exception):
    pass


class HangingStore(ObjectStore):
    """Objects and unfinished uploads in dicts; ``down`` makes every call hang."""

    store_name = "hang"
    schemes = ("hang",)

    def __init__(self, transfer: TransferOptions = TRANSFER) -> None:
        super().__init__(transfer)
        self.down = False
        self.calls: list[str] = []
        self.objects: dict[str, bytes] = {}
        self.uploads: dict[str, UploadStat] = {}

    async def _answer(self, call: str) -> None:
        self.calls.append(call)
        while self.down:
            await asyncio.sleep(0.01)

    def classify(self, exc: BaseException) -> ErrorKind:
        return "not_found" if isinstance(exc, Gone) else "other"

    async def object_stat(self, bucket: str, key: str) -> ObjectStat | None:
        await self._answer("stat")
        data = self.objects.get(key)
        return None if data is None else ObjectStat(len(data), "1", None)

    async def object_get_range(self, bucket: str, key: str, start: int, out: memoryview) -> None:
        await self._answer("get_range")
        out[:] = self.objects[key][start : start + out.nbytes]

    async def object_get(self, bucket: str, key: str) -> VersionedBytes | None:
        await self._answer("get")
        data = self.objects.get(key)
        return None if data is None else VersionedBytes(data, "1")

    async def object_put(self, bucket: str, key: str, data: memoryview, condition: Condition, write_id: str) -> str:
        await self._answer("put")
        self.objects[key] = bytes(data)
        return "1"

    async def object_list(self, bucket: str, prefix: str) -> list[str]:
        await self._answer("list")
        return [k for k in self.objects if k.startswith(prefix) and "/" not in k[len(prefix) :]]

    async def object_delete(self, bucket: str, keys: Sequence[str]) -> None:
        await self._answer("delete")
        for k in keys:
            self.objects.pop(k, None)

    async def upload_list(self, bucket: str, prefix: str) -> list[UploadStat]:
        await self._answer("upload_list")
        return [u for k, u in self.uploads.items() if k.startswith(prefix)]  # deeper keys too: the base drops them

    async def upload_abort(self, state: Any) -> None:
        await self._answer("upload_abort")
        if self.uploads.pop(state, None) is None:
            raise Gone(state)


@pytest.fixture
def store() -> Iterator[HangingStore]:
    s = HangingStore()
    yield s
    s.down = False
    s.close()


def _give_up(store: HangingStore) -> float:
    """Stop the store and let one request use up its retries; return when it gave up."""
    store.down = True
    with pytest.raises(TransientStorageError, match=r"hang: reading metadata of 'hang://b/k' still failed"):
        store.size("hang://b/k")
    return time.monotonic()


def test_clean_up_after_a_give_up_gets_one_budget_counted_from_it(store: HangingStore) -> None:
    gave_up = _give_up(store)
    with store.cleaning_up():
        with pytest.raises(TransientStorageError) as first:
            store.listdir("hang://b/run")
        cut = time.monotonic()
        sent = len(store.calls)
        with pytest.raises(TransientStorageError) as second:
            store.delete(["hang://b/run/x"])
    # The listing was cut off at the budget's end: not after a retry deadline of its own.
    assert cut - gave_up <= BUDGET + 0.15
    # The deletion was due after the budget: it failed at once, and no request went out.
    assert len(store.calls) == sent and time.monotonic() - cut < 0.05
    assert "hang: listing 'hang://b/run/' still failed" in str(first.value)
    assert "hang: deleting 'hang://b/run/x' was not sent" in str(second.value)
    for message in (str(first.value), str(second.value)):
        assert f"its {BUDGET:g} s (backend_options['cleanup_deadline'])" in message
        assert "cleanup(directory) or `trackpoint cleanup DIR` removes it" in message


def test_a_store_that_answers_again_gets_a_full_budget_and_a_block_shares_it(store: HangingStore) -> None:
    _give_up(store)
    store.down = False
    store.objects["run/a"] = b"1"
    assert store.listdir("hang://b/run") == ["a"]  # answered: the give-up no longer counts
    time.sleep(BUDGET + 0.1)
    with store.cleaning_up():
        store.delete(["hang://b/run/a"])  # the budget counts from the block's start
        store.down = True
        started = time.monotonic()
        with store.cleaning_up(), pytest.raises(TransientStorageError):  # nested: the outer budget
            store.listdir("hang://b/run")
    assert time.monotonic() - started <= BUDGET + 0.15
    assert "run/a" not in store.objects


def test_requests_outside_a_block_keep_their_retry_limits(store: HangingStore) -> None:
    _give_up(store)
    started = time.monotonic()
    with pytest.raises(TransientStorageError, match="still failed after"):
        store.listdir("hang://b/run")
    assert time.monotonic() - started >= DEADLINE


def test_cleanup_deadline_option() -> None:
    assert TransferOptions().cleanup_budget == 10.0  # request_timeout 60 s, at most 10 s
    assert TransferOptions.from_backend_options({"request_timeout": 3}).cleanup_budget == 3.0
    assert TransferOptions.from_backend_options({"cleanup_deadline": 1.5}).cleanup_budget == 1.5
    assert "cleanup_deadline" in TransferOptions.names()
    with pytest.raises(BackendError, match=r"backend_options\['cleanup_deadline'\] must be a positive number"):
        TransferOptions.from_backend_options({"cleanup_deadline": 0})


def test_unfinished_uploads_directly_in_a_directory_are_listed_and_aborted(store: HangingStore) -> None:
    for key, modified in (("run/ckpt-1.data-00000-of-00001", 20.0), ("run/sub/x", 30.0), ("other/y", 40.0)):
        store.uploads[key] = UploadStat(key, f"id-{key}", key, started=10.0, modified=modified, size=5)
    [upload] = store.unfinished_uploads("hang://b/run")
    assert upload == UnfinishedUpload(
        "hang://b/run/ckpt-1.data-00000-of-00001", "id-run/ckpt-1.data-00000-of-00001", 10.0, 20.0, 5
    )
    assert upload.handle == "run/ckpt-1.data-00000-of-00001"  # what upload_abort takes
    assert upload.describe() == (
        "hang://b/run/ckpt-1.data-00000-of-00001 (unfinished upload, id id-run/ckpt-1.data-00000-of-00001, 5 B in "
        "parts, started 1970-01-01 00:00:10 UTC, last part 1970-01-01 00:00:20 UTC)"
    )
    gone = UnfinishedUpload("hang://b/run/z", "id-z", handle="run/z")  # completed or aborted since it was listed
    store.abort_uploads([upload, gone])
    assert sorted(store.uploads) == ["other/y", "run/sub/x"]


def test_a_store_without_upload_list_reports_no_unfinished_uploads(store: HangingStore) -> None:
    class Plain(HangingStore):
        upload_list = ObjectStore.upload_list  # type: ignore[assignment]

    plain = Plain()
    try:
        plain.uploads["run/x"] = UploadStat("run/x", "1", "run/x")
        assert plain.unfinished_uploads("hang://b/run") == []
        assert "upload_list" not in plain.calls
    finally:
        plain.close()


def test_a_closed_store_refuses_clean_up_too(store: HangingStore) -> None:
    store.close()
    with store.cleaning_up(), pytest.raises(StorageError, match="was closed"):
        store.listdir("hang://b/run")


def test_a_recursive_listing_on_a_store_whose_upload_list_predates_the_keyword(store: HangingStore) -> None:
    # HangingStore.upload_list takes (bucket, prefix) alone, and returns deeper keys too; it has no object_find.
    for key in ("run/a", "run/sub/x", "other/y"):
        store.uploads[key] = UploadStat(key, f"id-{key}", key)
    found = store.unfinished_uploads("hang://b/run", recursive=True)
    # Called once, without the keyword (no object_find: no directories to ask besides the one given), and
    # what it returned below the directory is kept.
    assert [u.path for u in found] == ["hang://b/run/a", "hang://b/run/sub/x"]
    assert store.calls.count("upload_list") == 1
    assert [u.path for u in store.unfinished_uploads("hang://b/run")] == ["hang://b/run/a"]


def test_upload_list_gets_recursive_only_when_it_declares_it(store: HangingStore) -> None:
    asked: list[tuple[str, bool]] = []

    class Recursive(HangingStore):
        async def upload_list(self, bucket: str, prefix: str, **options: Any) -> list[UploadStat]:
            asked.append((prefix, options.get("recursive", False)))
            return [u for k, u in self.uploads.items() if k.startswith(prefix)]

    deep = Recursive()
    try:
        deep.uploads["run/sub/x"] = UploadStat("run/sub/x", "1", "run/sub/x")
        assert [u.path for u in deep.unfinished_uploads("hang://b/run", recursive=True)] == ["hang://b/run/sub/x"]
        assert deep.unfinished_uploads("hang://b/run") == []
        assert asked == [("run/", True), ("run/", False)]
    finally:
        deep.close()
