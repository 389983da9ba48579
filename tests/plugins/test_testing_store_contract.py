"""The conformance kit catches defects of an object store that every save and restore hides.

A plugin author's store over a small HTTP object server passed the whole kit with each of these
breakages; the kit now fails each one. Every case adopts the kit through
:class:`~trackpoint.plugins.testing.ObjectStoreBackdoors` on an object store kept in a dictionary,
with one deliberate defect, and checks that the tests meant for it fail while the intact store passes
them all.
"""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

# Imported once here, before pytester snapshots sys.modules: its in-process runs drop the modules they
# imported afterwards, and ml_dtypes (under the kit) cannot register its dtypes with numpy a second time.
import trackpoint.plugins.testing  # noqa: F401

pytest_plugins = ["pytester"]

STORES = textwrap.dedent(
    """
    import threading
    import time

    import pytest

    from trackpoint.backends.bundle import BundleBackend
    from trackpoint.backends.stores import Condition, ObjectStat, ObjectStore, TransferOptions
    from trackpoint.errors import DataLossError
    from trackpoint.plugins.testing import BackendConformance, ObjectStoreBackdoors
    from trackpoint.storage import CheckpointOptions, VersionedBytes

    CLOUD = {}  # (bucket, key) -> (data, version, write id): the service, shared by every client
    BUCKETS = set()
    LOCK = threading.Lock()
    VERSIONS = [0]


    class NoSuchBucket(Exception):
        pass


    class NoSuchKey(Exception):
        pass


    class Refused(Exception):
        pass


    class DictStore(ObjectStore):
        store_name = "dict"
        schemes = ("dict",)

        def __init__(self):
            super().__init__(TransferOptions(retries=2, retry_base_delay=0.001, retry_max_delay=0.002))

        def classify(self, exc):
            if isinstance(exc, (NoSuchBucket, NoSuchKey)):
                return "not_found"
            return "precondition" if isinstance(exc, Refused) else "other"

        def _bucket(self, bucket):
            if bucket not in BUCKETS:
                raise NoSuchBucket(bucket)

        def object_stat(self, bucket, key):
            found = CLOUD.get((bucket, key))
            return None if found is None else ObjectStat(len(found[0]), found[1], found[2], time.time())

        def object_get_range(self, bucket, key, start, out):
            found = CLOUD.get((bucket, key))
            if found is None:
                raise NoSuchKey(key)
            data = found[0][start : start + len(out)]
            out[: len(data)] = data
            if len(data) < len(out):
                raise DataLossError(f"dict: {bucket}/{key} ends before byte {start + len(out)}")

        def object_get(self, bucket, key):
            found = CLOUD.get((bucket, key))
            return None if found is None else VersionedBytes(found[0], found[1])

        def object_put(self, bucket, key, data, condition, write_id):
            self._bucket(bucket)
            with LOCK:
                current = CLOUD.get((bucket, key))
                if condition.create_only and current is not None:
                    raise Refused(key)
                if condition.version is not None and (current is None or current[1] != condition.version):
                    raise Refused(key)
                VERSIONS[0] += 1
                CLOUD[(bucket, key)] = (bytes(data), str(VERSIONS[0]), write_id)
                return str(VERSIONS[0])

        def object_list(self, bucket, prefix):
            self._bucket(bucket)
            return [k for b, k in list(CLOUD) if b == bucket and k.startswith(prefix) and "/" not in k[len(prefix):]]

        def object_find(self, bucket, prefix):
            self._bucket(bucket)
            return [k for b, k in list(CLOUD) if b == bucket and k.startswith(prefix)]

        def object_delete(self, bucket, keys):
            self._bucket(bucket)
            for key in keys:
                CLOUD.pop((bucket, key), None)


    class ZeroPads(DictStore):
        # A short read comes back padded with zeros: every checksummed format still reports it.
        def object_get_range(self, bucket, key, start, out):
            found = CLOUD.get((bucket, key))
            if found is None:
                raise NoSuchKey(key)
            data = found[0][start : start + len(out)]
            out[: len(data)] = data
            out[len(data) :] = bytes(len(out) - len(data))


    class MissingBucketIsOther(DictStore):
        # The service's "no such bucket" classified as "other": a plain StorageError.
        def classify(self, exc):
            return "other" if isinstance(exc, NoSuchBucket) else super().classify(exc)


    class TwoStepPut(DictStore):
        # Half the object, then all of it, in two requests of one client call.
        def object_put(self, bucket, key, data, condition, write_id):
            super().object_put(bucket, key, memoryview(bytes(data)[: len(data) // 2]), condition, write_id)
            time.sleep(0.005)  # the second request's round trip
            return super().object_put(bucket, key, data, Condition.NONE, write_id)


    class IndexUnconditional(DictStore):
        # The commit point alone loses its precondition.
        def object_put(self, bucket, key, data, condition, write_id):
            condition = Condition.NONE if key.endswith(".index") else condition
            return super().object_put(bucket, key, data, condition, write_id)


    class IgnoresCreateOnly(DictStore):
        # The service's create-only precondition never sent: an existing object is replaced.
        def object_put(self, bucket, key, data, condition, write_id):
            kept = Condition.if_version(condition.version) if condition.version is not None else Condition.NONE
            return super().object_put(bucket, key, data, kept, write_id)


    class ReplacesByDeleting(DictStore):
        # A small-file write (the bundle's commit point) as two client calls: delete, then create.
        def write_versioned(self, path, data, *, if_version=None):
            bucket, key = self.split(path)
            self.delete([path])
            self._run(self._put_checked, bucket, key, memoryview(bytes(data)), Condition.NONE)
            return self.read_versioned(path).version


    class Adopt(ObjectStoreBackdoors, BackendConformance):
        store_class = DictStore

        @pytest.fixture
        def base_url(self):
            CLOUD.clear()
            BUCKETS.clear()
            BUCKETS.add("bucket")
            return "dict://bucket/ckpts"

        @pytest.fixture
        def backend(self, base_url):
            backend = BundleBackend(self.store_class(), options=CheckpointOptions())
            yield backend
            backend.close()

        def open_store(self, backend):
            return self.store_class()


    class TestIntact(Adopt):
        pass


    class TestZeroPads(Adopt):
        store_class = ZeroPads


    class TestMissingBucketIsOther(Adopt):
        store_class = MissingBucketIsOther


    class TestTwoStepPut(Adopt):
        store_class = TwoStepPut


    class TestIndexUnconditional(Adopt):
        store_class = IndexUnconditional


    class TestReplacesByDeleting(Adopt):
        store_class = ReplacesByDeleting


    class TestIgnoresCreateOnly(Adopt):
        store_class = IgnoresCreateOnly
    """
)

#: The tests of the store contract, by the defect each one catches.
CATCHES = {
    "TestZeroPads": {"test_a_read_past_the_end_raises_data_loss", "test_a_truncated_object_is_detected"},
    "TestMissingBucketIsOther": {
        "test_reads_in_a_missing_location_raise_not_found",
        "test_writes_in_a_missing_location_raise_not_found",
    },
    "TestTwoStepPut": {"test_a_put_replaces_an_object_whole"},
    "TestIndexUnconditional": {"test_commit_write_refuses_a_checkpoint_committed_after_the_check"},
    # Caught only since the crash tests stop at the client calls inside one write of the file layer.
    "TestReplacesByDeleting": {"test_a_crash_while_overwriting_leaves_a_whole_checkpoint"},
}

TESTS = sorted(
    set().union(*CATCHES.values())
    | {"test_absent_objects_read_as_absent", "test_existing_objects_refuse_create_only_writes"}
)


def _outcomes(pytester: pytest.Pytester) -> dict[str, str]:
    pytester.makepyfile(test_stores=STORES)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-k", " or ".join(TESTS))
    reports = result.reprec.getreports("pytest_runtest_logreport")  # type: ignore[attr-defined]
    found: dict[str, str] = {}
    for rep in reports:
        if rep.when == "call" or (rep.when == "setup" and rep.outcome != "passed"):
            found[rep.nodeid.split("::", 1)[1]] = rep.outcome
    return found


def test_each_defect_fails_the_test_meant_for_it(pytester: pytest.Pytester) -> None:
    outcomes = _outcomes(pytester)
    for test in TESTS:
        assert outcomes[f"TestIntact::{test}"] == "passed", test
    for cls, tests in CATCHES.items():
        failed = {name.split("::")[1] for name, outcome in outcomes.items() if name.startswith(f"{cls}::")}
        failed = {t for t in failed if outcomes[f"{cls}::{t}"] == "failed"}
        assert tests <= failed, (cls, sorted(tests - failed))


#: What the kit says of a defect, by the test that catches it: the call that misbehaved, and what to change.
MESSAGES = {
    "TestIgnoresCreateOnly::test_existing_objects_refuse_create_only_writes": (
        "put('dict://bucket/ckpts/file-layer/taken', create_only=True) over an existing object returned instead of "
        "raising CheckpointExistsError: a create-only write must refuse an existing object (on an ObjectStore: "
        "object_put, and upload_begin or upload_finish, must honour condition.create_only"
    ),
    "TestIgnoresCreateOnly::test_create_only": (
        "write_file('dict://bucket/ckpts/checkpoint', if_version=MUST_NOT_EXIST) over an existing file returned "
        "instead of raising ConcurrentModificationError: a create-only write must refuse an existing object (on an "
        "ObjectStore: object_put"
    ),
    "TestIgnoresCreateOnly::test_create_only_spelled_none": (
        "write_file('dict://bucket/ckpts/checkpoint', if_version=None) over an existing file returned instead of "
        "raising ConcurrentModificationError"
    ),
    "TestMissingBucketIsOther::test_reads_in_a_missing_location_raise_not_found": (
        "list_checkpoints('dict://trackpoint-absent-"
    ),
    "TestMissingBucketIsOther::test_writes_in_a_missing_location_raise_not_found": "a save of 'dict://trackpoint-absent-",
}


def test_each_defect_s_failure_says_what_to_change(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_stores=STORES)
    selected = "(TestIgnoresCreateOnly and create_only) or (TestMissingBucketIsOther and missing_location)"
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-k", selected)
    reports = result.reprec.getreports("pytest_runtest_logreport")  # type: ignore[attr-defined]
    failures = {rep.nodeid.split("::", 1)[1]: rep.longreprtext for rep in reports if rep.failed}
    assert failures.keys() == MESSAGES.keys()
    for test, expected in MESSAGES.items():
        assert expected in failures[test], failures[test]
        assert "DID NOT RAISE" not in failures[test]
        if "MissingBucketIsOther" in test:
            # The StorageError quoted, and what classify must say instead, not the error's traceback.
            assert "a location that does not exist, raised StorageError (dict: " in failures[test]
            assert (
                "instead of CheckpointNotFoundError: a store must report a location that does not exist as not "
                'found (on an ObjectStore: classify must return "not_found" for the answer of the service to a '
                "missing bucket"
            ) in failures[test]
            assert "Traceback" not in failures[test] and "direct cause" not in failures[test]


def test_intercepting_an_object_store_announces_each_client_write(tmp_path: Any) -> None:
    """Client calls are announced besides the layer's own changes, a batch delete one key at a time."""
    import threading

    from trackpoint.backends.stores import ObjectStat, ObjectStore, TransferOptions
    from trackpoint.errors import StorageError
    from trackpoint.plugins.testing import intercept_file_layer
    from trackpoint.storage import VersionedBytes

    objects: dict[tuple[str, str], bytes] = {}

    class Store(ObjectStore):
        store_name = "plain"
        schemes = ("plain",)

        def classify(self, exc: BaseException) -> Any:
            return "other"

        def object_stat(self, bucket: str, key: str) -> ObjectStat | None:
            found = objects.get((bucket, key))
            return None if found is None else ObjectStat(len(found), "v", None)

        def object_get_range(self, bucket: str, key: str, start: int, out: memoryview) -> None:
            out[:] = objects[(bucket, key)][start : start + len(out)]

        def object_get(self, bucket: str, key: str) -> VersionedBytes | None:
            found = objects.get((bucket, key))
            return None if found is None else VersionedBytes(found, "v")

        async def object_put(self, bucket: str, key: str, data: memoryview, condition: Any, write_id: str) -> str:
            objects[(bucket, key)] = bytes(data)  # a coroutine function: awaited on the store's loop
            return "v"

        def object_list(self, bucket: str, prefix: str) -> list[str]:
            return [k for b, k in objects if b == bucket and k.startswith(prefix)]

        def object_delete(self, bucket: str, keys: Any) -> None:
            for key in keys:
                objects.pop((bucket, key), None)

    store = Store(TransferOptions(retries=0))
    announced: list[tuple[str, bool]] = []
    caller = threading.get_ident()

    def before_each(what: str) -> None:
        announced.append((what, threading.get_ident() == caller))

    with intercept_file_layer(store, before_each):
        store.put("plain://b/one", b"1")
        store.delete(["plain://b/one", "plain://b/two"])
    assert announced == [
        ("plain://b/one", True),  # the layer's put, in the calling thread
        ("object_put of plain://b/one", False),  # its client call, on the store's loop
        ("plain://b/one", True),
        ("object_delete of plain://b/one", False),
        ("plain://b/two", True),
        ("object_delete of plain://b/two", False),
    ]
    assert not {"object_put", "object_delete", "put", "delete"} & set(vars(store)), "the stand-ins stay in place"

    class Crash(BaseException):
        pass

    def crash(what: str) -> None:
        if what.startswith("object_"):
            raise Crash(what)

    objects[("b", "kept")] = b"k"
    with intercept_file_layer(store, crash), pytest.raises(StorageError) as stopped:
        store.put("plain://b/new", b"n")
    # Raised in a client call, the crash fails its request as any BaseException that is no Exception does.
    assert isinstance(stopped.value.__cause__, Crash)
    assert ("b", "new") not in objects and objects[("b", "kept")] == b"k", "the stopped client call wrote"
    store.close()
