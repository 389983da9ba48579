"""The conformance kit catches broken backends, and its known-gap mechanism is strict.

Each case runs kit tests (through pytester) against the memory backend with
one deliberate defect and checks that exactly the relevant test fails.
"""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

# Imported once here, before pytester snapshots sys.modules: its in-process runs drop the modules they
# imported afterwards, and ml_dtypes (under the kit) cannot register its dtypes with numpy a second time.
import conformance.test_memory  # noqa: F401
import trackpoint.plugins.testing  # noqa: F401

pytest_plugins = ["pytester"]

BROKEN = textwrap.dedent(
    """
    import numpy as np
    import conformance.test_memory as base
    from trackpoint.backends import memory
    from trackpoint.storage import Capabilities

    Memory = base.TestMemoryBackend  # not collected here: the name does not start with "Test"


    class VisibleEarly(memory.MemoryBackend):
        def write_shard(self, prefix, spec, items):
            result = super().write_shard(prefix, spec, items)
            super().commit(prefix, [result], overwrite=True)  # visible before commit
            return result


    class KeepsData(memory.MemoryBackend):
        def delete(self, prefix):
            pass


    class Unsorted(memory.MemoryBackend):
        def list_checkpoints(self, directory):
            return sorted(super().list_checkpoints(directory), reverse=True)


    class Lossy(memory.MemoryBackend):
        def write_shard(self, prefix, spec, items):
            from trackpoint.storage import WriteItem
            squashed = [WriteItem(it.key, it.array.astype(np.float32).astype(it.array.dtype))
                        if it.array.dtype == np.float64 else it for it in items]
            return super().write_shard(prefix, spec, squashed)


    class NoPreconditions(memory.MemoryBackend):
        def write_file(self, path, data, *, if_version=None):
            return super().write_file(path, data)


    class DropsOldFirst(memory.MemoryBackend):
        # begin(overwrite=True) removes the old checkpoint, so a failed overwrite leaves none: a defect
        # whether or not the store can rename (the bundle keeps the old one on object stores too).
        capabilities = Capabilities(atomic_rename=False, conditional_create=True)

        def begin(self, prefix, save_id, *, overwrite=True):
            if overwrite:
                self.delete(prefix)
            super().begin(prefix, save_id, overwrite=overwrite)


    def _with(cls):
        class Fixture:
            import pytest

            @pytest.fixture
            def backend(self):
                yield cls()
                memory.clear()
        return Fixture


    class TestVisibleEarly(_with(VisibleEarly), Memory): pass
    class TestKeepsData(_with(KeepsData), Memory): pass
    class TestUnsorted(_with(Unsorted), Memory): pass
    class TestLossy(_with(Lossy), Memory): pass
    class TestNoPreconditions(_with(NoPreconditions), Memory): pass
    class TestDropsOldFirst(_with(DropsOldFirst), Memory): pass


    class TestGapStillOpen(_with(Unsorted), Memory):
        known_gaps = {"test_lists_committed_direct_children_sorted": "listing order not implemented yet"}


    class TestIntact(Memory): pass


    class TestGapClosed(Memory):
        known_gaps = {"test_create_only": "claimed gap that is in fact fixed"}
    """
)

CASES = {
    "TestVisibleEarly": "test_uncommitted_shards_are_invisible",
    "TestKeepsData": "test_delete_removes_every_object",
    "TestUnsorted": "test_lists_committed_direct_children_sorted",
    "TestLossy": "test_every_shape_of_dtype[float64]",
    "TestNoPreconditions": "test_create_only",
    "TestDropsOldFirst": "test_failed_save_keeps_existing_checkpoint",
}


def _outcomes(pytester: pytest.Pytester) -> dict[str, str]:
    pytester.makepyfile(test_broken=BROKEN)
    # Parametrized cases are selected by their parameter too, to keep the run short.
    selected = " or ".join(f"({t.split('[')[0]} and {t.split('[')[1][:-1]})" if "[" in t else t for t in CASES.values())
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-k", selected)
    reports = result.reprec.getreports("pytest_runtest_logreport")  # type: ignore[attr-defined]
    found: dict[str, str] = {}
    for rep in reports:
        if rep.when == "call" or (rep.when == "setup" and rep.outcome != "passed"):
            outcome = "xfailed" if hasattr(rep, "wasxfail") and rep.skipped else rep.outcome
            found[rep.nodeid.split("::", 1)[1]] = outcome
    return found


def test_kit_catches_defects_and_keeps_gaps_strict(pytester: pytest.Pytester) -> None:
    outcomes = _outcomes(pytester)
    for cls, test in CASES.items():
        assert outcomes[f"{cls}::{test}"] == "failed", (cls, test)
        # ... and only because of the defect: the intact backend passes it.
        assert outcomes[f"TestIntact::{test}"] == "passed", test
    assert outcomes["TestGapStillOpen::test_lists_committed_direct_children_sorted"] == "xfailed"
    # A gap that is not a gap any more fails (strict xfail), so stale declarations surface.
    assert outcomes["TestGapClosed::test_create_only"] == "failed"


def test_fixtures_not_overridden_say_so(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_bare=textwrap.dedent(
            """
            from trackpoint.plugins.testing import Listing

            class TestBare(Listing):
                def raw_list(self, directory): return []
                def raw_read(self, path): return b""
                def raw_write(self, path, data): pass
                def raw_delete(self, path): pass
            """
        )
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-k", "test_empty_and_missing_directories")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*TestBare must override the 'backend' fixture*"])


def test_the_host_names_the_backend_so_factories_need_not() -> None:
    from trackpoint import plugins
    from trackpoint.backends import memory
    from trackpoint.plugins import BackendSpec, hookimpl
    from trackpoint.storage import CheckpointOptions

    class Unnamed(memory.MemoryBackend):
        name = ""  # what a factory that sets no name returns

    class Nameless:
        @hookimpl
        def trackpoint_register_backends(self, register: Any) -> None:
            register(BackendSpec(name="nameless", factory=lambda url, options: Unnamed()))

    plugins.register(Nameless(), name="nameless-plugin")  # the conftest resets the manager afterwards
    assert plugins.open_backend("memory://x", CheckpointOptions(backend="nameless")).name == "nameless"


def test_a_known_gap_naming_no_test_is_an_error(pytester: pytest.Pytester) -> None:
    """A misspelt gap would mark nothing: the class fails to set up, naming the entry and the valid names."""
    pytester.makepyfile(
        test_gaps=textwrap.dedent(
            """
            import conformance.test_memory as base

            class TestMisspelt(base.TestMemoryBackend):
                known_gaps = {"test_round_trip": "no such test", "test_create_onyl": "a typo"}
            """
        )
    )
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "-k", "test_create_only and not none or test_delete_is_idempotent"
    )
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        [
            "*TestMisspelt.known_gaps names 2 test(s) the class does not have: "
            "'test_create_onyl' (did you mean 'test_create_only'?), 'test_round_trip'. "
            "Name a test without its parameters, one of: *test_create_only*test_delete_is_idempotent*"
        ]
    )


OBJECT_STORES = textwrap.dedent(
    """
    import threading

    import pytest

    from trackpoint.backends.bundle import BundleBackend
    from trackpoint.backends.stores import ObjectStat, ObjectStore, TransferOptions
    from trackpoint.plugins.testing import ObjectStoreWrites
    from trackpoint.storage import VersionedBytes


    class Missing(Exception):
        pass


    class Refused(Exception):
        pass


    class DictStore(ObjectStore):
        # A complete object store in a dict; the service checks conditions atomically.
        store_name = "dict"
        schemes = ("dict",)

        def __init__(self):
            super().__init__(TransferOptions(retries=3, retry_base_delay=0.001, retry_max_delay=0.002))
            self.objects = {}
            self.lock = threading.Lock()
            self.versions = 0

        def classify(self, exc):
            return "not_found" if isinstance(exc, Missing) else "precondition" if isinstance(exc, Refused) else "other"

        def object_stat(self, bucket, key):
            found = self.objects.get((bucket, key))
            return None if found is None else ObjectStat(len(found[0]), found[1], found[2])

        def object_get_range(self, bucket, key, start, out):
            data = self.objects[(bucket, key)][0][start : start + len(out)]
            out[: len(data)] = data

        def object_get(self, bucket, key):
            found = self.objects.get((bucket, key))
            return None if found is None else VersionedBytes(found[0], found[1])

        def object_put(self, bucket, key, data, condition, write_id):
            with self.lock:
                current = self.objects.get((bucket, key))
                if condition.create_only and current is not None:
                    raise Refused(key)
                if condition.version is not None and (current is None or current[1] != condition.version):
                    raise Refused(key)
                self.versions += 1
                self.objects[(bucket, key)] = (bytes(data), str(self.versions), write_id)
                return str(self.versions)

        def object_list(self, bucket, prefix):
            return [k for b, k in self.objects if b == bucket and k.startswith(prefix) and "/" not in k[len(prefix):]]

        def object_delete(self, bucket, keys):
            for key in keys:
                self.objects.pop((bucket, key), None)


    class NoWriteId(DictStore):
        # Writes as it should, but its stat never reports the write id.
        def object_stat(self, bucket, key):
            found = super().object_stat(bucket, key)
            return None if found is None else ObjectStat(found.size, found.version, None)


    class Adopt(ObjectStoreWrites):
        store_class = DictStore

        @pytest.fixture
        def backend(self):
            self.store = self.store_class()
            yield BundleBackend(self.store)
            self.store.close()

        @pytest.fixture
        def base_url(self):
            return "dict://bucket/ckpts"

        def raw_list(self, directory):
            return sorted(f"dict://{b}/{k}" for b, k in self.store.objects)

        def raw_read(self, path):
            return self.store.objects[self.store.split(path)][0]

        def raw_write(self, path, data):
            self.store.objects[self.store.split(path)] = (bytes(data), "raw", None)

        def raw_delete(self, path):
            self.store.objects.pop(self.store.split(path), None)


    class TestIntactStore(Adopt):
        pass


    class TestNoWriteId(Adopt):
        store_class = NoWriteId
    """
)


def test_kit_catches_a_store_that_drops_write_ids(pytester: pytest.Pytester) -> None:
    """A store whose object_stat never returns the write id fails the kit, not only its first timed-out commit."""
    from trackpoint.plugins.testing import BackendConformance, ObjectStoreWrites

    assert issubclass(BackendConformance, ObjectStoreWrites)
    pytester.makepyfile(test_object_stores=OBJECT_STORES)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-rf")
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(
        [
            "E*AssertionError: object_stat of 'dict://bucket/ckpts/write-ids/small' reports write_id None, but "
            "object_put was given '*': object_put and upload_begin must store the write id*",
            "E*Failed: a create-only write whose response was lost was reported as lost (dict: *create-only write "
            "lost a race*",
            "FAILED *TestNoWriteId::test_writes_store_their_write_id*",
            "FAILED *TestNoWriteId::test_a_write_whose_response_was_lost_is_its_own*",
        ]
    )


def test_backends_not_built_on_an_object_store_skip_the_write_id_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_memory_writes=textwrap.dedent(
            """
            import conformance.test_memory as base
            from trackpoint.plugins.testing import ObjectStoreWrites

            class TestMemoryWrites(base.TestMemoryBackend, ObjectStoreWrites):
                pass
            """
        )
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-rs", "-k", "write_id or response_was_lost")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*backend 'memory' is not built on trackpoint.backends.stores.ObjectStore*"])
