"""``ObjectStore.explain_error``: a store's own advice in the errors trackpoint raises for it.

The stores here are written against ``trackpoint.backends.stores`` alone, as a
third-party store is: objects in a dict, and a switch that makes every request
fail the way a service refuses an unsigned request.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from trackpoint.backends.stores import Condition, ErrorKind, ObjectStat, ObjectStore, TransferOptions
from trackpoint.errors import (
    CheckpointExistsError,
    StorageError,
    StoragePermissionError,
    TransientStorageError,
)
from trackpoint.storage import VersionedBytes

FAST = TransferOptions(retries=2, retry_base_delay=0.001, retry_max_delay=0.002)
ADVICE = "dictcloud refused an unsigned request: run `dictcloud login` or set DICTCLOUD_TOKEN"


class Unsigned(Exception):
    """What the client raises when it has no credentials to sign a request with."""


class Busy(Exception):
    """A failure worth retrying."""


class Exists(Exception):
    """A create-only write found the object."""


class DictCloud(ObjectStore):
    """Objects in a dict; ``fail_with`` makes every request raise it."""

    store_name = "dictcloud"
    schemes = ("dictcloud",)

    def __init__(self) -> None:
        super().__init__(FAST)
        self.objects: dict[tuple[str, str], tuple[bytes, str, str]] = {}
        self.lock = threading.Lock()
        self.fail_with: type[Exception] | None = None

    def _request(self) -> None:
        if self.fail_with is not None:
            raise self.fail_with("the service said no")

    def classify(self, exc: BaseException) -> ErrorKind:
        if isinstance(exc, Unsigned):
            return "permission"
        if isinstance(exc, Busy):
            return "transient"
        if isinstance(exc, Exists):
            return "precondition"
        return "other"

    def object_stat(self, bucket: str, key: str) -> ObjectStat | None:
        self._request()
        found = self.objects.get((bucket, key))
        return None if found is None else ObjectStat(len(found[0]), found[1], found[2])

    def object_get_range(self, bucket: str, key: str, start: int, out: memoryview) -> None:
        self._request()
        data = self.objects[(bucket, key)][0]
        out[:] = data[start : start + out.nbytes]

    def object_get(self, bucket: str, key: str) -> VersionedBytes | None:
        self._request()
        found = self.objects.get((bucket, key))
        return None if found is None else VersionedBytes(found[0], found[1])

    def object_put(self, bucket: str, key: str, data: memoryview, condition: Condition, write_id: str) -> str:
        self._request()
        with self.lock:
            if condition.create_only and (bucket, key) in self.objects:
                raise Exists(key)
            version = str(len(self.objects) + 1)
            self.objects[(bucket, key)] = (bytes(data), version, write_id)
            return version

    def object_list(self, bucket: str, prefix: str) -> list[str]:
        self._request()
        return [k for (b, k) in self.objects if b == bucket and k.startswith(prefix) and "/" not in k[len(prefix) :]]

    def object_delete(self, bucket: str, keys: Sequence[str]) -> None:
        self._request()
        for key in keys:
            self.objects.pop((bucket, key), None)


class Advising(DictCloud):
    """A store that explains its unsigned requests and its busy service, and records what it was asked."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[str, ErrorKind]] = []

    def explain_error(self, exc: BaseException, kind: ErrorKind) -> str | None:
        self.asked.append((type(exc).__name__, kind))
        if isinstance(exc, Unsigned):
            return ADVICE
        if isinstance(exc, Busy):
            return "dictcloud is busy at the top of the hour: save at another minute"
        return None


class Broken(DictCloud):
    """A store whose explain_error has a bug."""

    def explain_error(self, exc: BaseException, kind: ErrorKind) -> str | None:
        raise KeyError("a bug in the store's advice")


def _store(cls: type[DictCloud]) -> Iterator[Any]:
    store = cls()
    store.objects[("b", "there")] = (b"0123456789", "1", "w")
    yield store
    store.close()


@pytest.fixture
def advising() -> Iterator[Advising]:
    yield from _store(Advising)


@pytest.fixture
def broken() -> Iterator[Broken]:
    yield from _store(Broken)


def test_the_default_has_no_advice() -> None:
    store = DictCloud()
    try:
        assert store.explain_error(Unsigned("x"), "permission") is None
        store.fail_with = Unsigned
        with pytest.raises(StoragePermissionError) as info:
            store.read("dictcloud://b/there")
        assert str(info.value) == (
            "dictcloud: reading 'dictcloud://b/there' was refused (Unsigned: the service said no); check the "
            "credentials and the permissions on bucket 'b'"
        )
    finally:
        store.close()


def test_advice_ends_the_message_of_a_failed_read(advising: Advising) -> None:
    advising.fail_with = Unsigned
    with pytest.raises(StoragePermissionError) as info:
        advising.read("dictcloud://b/there")
    assert str(info.value) == (
        f"dictcloud: reading 'dictcloud://b/there' failed (Unsigned: the service said no); {ADVICE}"
    )
    assert isinstance(info.value.__cause__, Unsigned)
    # A ranged read and a metadata request are explained alike.
    with pytest.raises(StoragePermissionError, match=rf"\(Unsigned: the service said no\); {ADVICE}$"):
        advising.read_into("dictcloud://b/there", 2, memoryview(bytearray(4)))
    with pytest.raises(StoragePermissionError, match=rf"; {ADVICE}$"):
        advising.size("dictcloud://b/there")
    assert advising.asked == [("Unsigned", "permission")] * 3


def test_advice_ends_the_message_of_a_failed_write(advising: Advising) -> None:
    advising.fail_with = Unsigned
    with pytest.raises(StoragePermissionError) as info:
        advising.put("dictcloud://b/new", b"data")
    assert str(info.value) == f"dictcloud: writing 'dictcloud://b/new' failed (Unsigned: the service said no); {ADVICE}"
    with pytest.raises(StoragePermissionError, match=rf"; {ADVICE}$"):
        advising.write_versioned("dictcloud://b/state", b"1")
    assert advising.asked == [("Unsigned", "permission")] * 2


def test_advice_follows_the_retry_advice_when_retries_ran_out(advising: Advising) -> None:
    advising.fail_with = Busy
    with pytest.raises(TransientStorageError) as info:
        advising.put("dictcloud://b/new", b"data")
    message = str(info.value)
    assert message.startswith("dictcloud: writing 'dictcloud://b/new' still failed after 3 attempts")
    assert "retry later or raise" in message  # trackpoint's advice on the limits stays
    assert message.endswith("; dictcloud is busy at the top of the hour: save at another minute")
    assert advising.asked == [("Busy", "transient")]  # once, after the last attempt


def test_no_advice_keeps_the_message_and_refused_preconditions_are_not_explained(advising: Advising) -> None:
    advising.fail_with = KeyError
    with pytest.raises(StorageError) as info:
        advising.read("dictcloud://b/there")
    assert str(info.value) == "dictcloud: reading 'dictcloud://b/there' failed (KeyError: 'the service said no')"
    advising.fail_with = None
    with pytest.raises(CheckpointExistsError, match="already exists"):
        advising.put("dictcloud://b/there", b"again", create_only=True)
    assert advising.asked == [("KeyError", "other")]


def test_advice_that_raises_does_not_mask_the_error(broken: Broken, caplog: pytest.LogCaptureFixture) -> None:
    broken.fail_with = Unsigned
    with caplog.at_level(logging.WARNING, logger="trackpoint.backends.stores.objectstore"):
        with pytest.raises(StoragePermissionError) as read:
            broken.read("dictcloud://b/there")
        with pytest.raises(StoragePermissionError) as write:
            broken.put("dictcloud://b/new", b"data")
        broken.fail_with = Busy
        with pytest.raises(TransientStorageError, match="retry later or raise"):
            broken.size("dictcloud://b/there")
    # The error the advice was for, worded as without advice, chained to the client's exception.
    assert str(read.value).endswith("was refused (Unsigned: the service said no); check the credentials and the "
                                    "permissions on bucket 'b'")  # fmt: skip
    assert "writing 'dictcloud://b/new' was refused (Unsigned" in str(write.value)
    assert isinstance(read.value.__cause__, Unsigned) and isinstance(write.value.__cause__, Unsigned)
    assert "a bug in the store's advice" not in str(read.value) + str(write.value)
    # The store's bug is not swallowed silently: logged with its traceback, once per failed request.
    logged = [r for r in caplog.records if "Broken.explain_error raised explaining" in r.getMessage()]
    assert len(logged) == 3 and all(r.exc_info is not None for r in logged)


def test_the_built_in_stores_use_the_public_hook() -> None:
    pytest.importorskip("botocore")
    from botocore.exceptions import NoCredentialsError

    from trackpoint.backends.stores.s3 import S3Files

    assert "explain_error" in vars(S3Files)
    advice = S3Files.explain_error(object.__new__(S3Files), NoCredentialsError(), "permission")
    assert advice is not None and advice.startswith("no credentials were found: set AWS_ACCESS_KEY_ID")
