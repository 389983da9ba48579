"""The conformance kit's file-layer listing tests catch the listings the formats' round trips hide.

A plugin author's store whose listing ignored the delimiter (it returned deeper keys too) passed every
Zarr test of the kit, and one that returned the first page of a listing only was caught by the checkpoint
listing test alone, not by the delete and abort tests the guide named. Each defect below is a subclass of
the in-dictionary object store of ``test_testing_store_contract``, adopted through
:class:`~trackpoint.plugins.testing.ObjectStoreBackdoors`; the intact store passes the same tests.
"""

from __future__ import annotations

import textwrap

import pytest
from test_testing_store_contract import STORES

# Imported once here, before pytester snapshots sys.modules (see test_testing_store_contract).
import trackpoint.plugins.testing  # noqa: F401

pytest_plugins = ["pytester"]

DEFECTS = STORES + textwrap.dedent(
    """
    from trackpoint.storage import Capabilities


    class ListsDeeper(DictStore):
        # The service's listing without the delimiter: keys in "subdirectories" come back too.
        def object_list(self, bucket, prefix):
            return self.object_find(bucket, prefix)


    class ListsSubdirectories(DictStore):
        # The delimiter's common prefixes ("run/sub/") returned as if they were keys.
        def object_list(self, bucket, prefix):
            keys = super().object_list(bucket, prefix)
            deeper = {prefix + k[len(prefix):].split("/", 1)[0] + "/" for k in self.object_find(bucket, prefix)}
            return keys + sorted(d for d in deeper if d not in keys and d != prefix + "/")


    class FirstPageOnly(DictStore):
        # A client that reads one page of 50 keys and never follows the continuation token.
        def object_list(self, bucket, prefix):
            return sorted(super().object_list(bucket, prefix))[:50]

        def object_find(self, bucket, prefix):
            return sorted(super().object_find(bucket, prefix))[:50]


    class ListsSubdirectoryNames(DictStore):
        # The delimiter's common prefixes returned as names without their '/' ("run/sub"), as if directories.
        def object_list(self, bucket, prefix):
            keys = super().object_list(bucket, prefix)
            deeper = {prefix + k[len(prefix):].split("/", 1)[0] for k in self.object_find(bucket, prefix)}
            return keys + sorted(d for d in deeper if d not in keys)


    class FindFails(DictStore):
        # object_find is implemented, and its request fails: an error the kit must report, not take for "no find".
        def object_find(self, bucket, prefix):
            raise RuntimeError("find: the service answered 500")


    class NoFind(DictStore):
        # Leaves out the optional object_find: the kit checks listdir alone.
        object_find = ObjectStore.object_find


    class OneWriteAtATime(DictStore):
        # Declares parallel_writes=False: its client takes one request at a time, and says so.
        capabilities = Capabilities(conditional_create=True, parallel_writes=False)
        _busy = threading.Lock()

        def object_put(self, bucket, key, data, condition, write_id):
            if not self._busy.acquire(blocking=False):
                raise RuntimeError("two writes at once on a store that declares parallel_writes=False")
            try:
                time.sleep(0.001)
                return super().object_put(bucket, key, data, condition, write_id)
            finally:
                self._busy.release()


    class EventuallyListed(OneWriteAtATime):
        # Declares listing_consistent=False: a new object is listed only a while after its put.
        capabilities = Capabilities(conditional_create=True, listing_consistent=False, parallel_writes=False)

        def object_list(self, bucket, prefix):
            return []

        def object_find(self, bucket, prefix):
            return []


    class TestListsDeeper(Adopt):
        store_class = ListsDeeper


    class TestListsSubdirectoryNames(Adopt):
        store_class = ListsSubdirectoryNames


    class TestFindFails(Adopt):
        store_class = FindFails


    class TestNoFind(Adopt):
        store_class = NoFind


    class TestOneWriteAtATime(Adopt):
        store_class = OneWriteAtATime


    class TestEventuallyListed(Adopt):
        store_class = EventuallyListed


    class TestListsSubdirectories(Adopt):
        store_class = ListsSubdirectories


    class TestFirstPageOnly(Adopt):
        store_class = FirstPageOnly
    """
)

#: The kit's tests that must catch each defect.
CATCHES = {
    "TestListsDeeper": {"test_a_listing_names_the_objects_directly_in_the_directory"},
    "TestListsSubdirectoryNames": {"test_a_listing_names_the_objects_directly_in_the_directory"},
    "TestFindFails": {
        "test_a_listing_names_the_objects_directly_in_the_directory",
        "test_a_listing_returns_every_page",
    },
    "TestListsSubdirectories": {"test_a_listing_names_the_objects_directly_in_the_directory"},
    "TestFirstPageOnly": {"test_a_listing_returns_every_page"},
}

#: What the failure of each says, by class.
SAYS = {
    "TestListsDeeper": "expected the names ['a', 'b.index', 'c.data-00000-of-00001'] of the objects directly in it",
    "TestListsSubdirectories": "no 'subdirectory' entries, with or without a trailing '/'",
    "TestListsSubdirectoryNames": "returned ['a', 'b.index', 'c.data-00000-of-00001', 'sub']",
    "TestFindFails": "find: the service answered 500",
    "TestFirstPageOnly": "lists 50 of the 120 objects put there",
}


#: The file layer's listing tests.
LISTING_TESTS = ["test_a_listing_names_the_objects_directly_in_the_directory", "test_a_listing_returns_every_page"]

#: Stores that declare what they cannot do, or leave out what is optional: the listing tests must honour it.
HONOURED = {
    "TestNoFind": "passed",  # find is checked only where object_find is implemented
    "TestOneWriteAtATime": "passed",  # parallel_writes=False: the objects are put one after another
    "TestEventuallyListed": "skipped",  # listing_consistent=False, as the kit's other listing tests
}


def _outcomes(pytester: pytest.Pytester, classes: list[str], tests: list[str]) -> dict[str, pytest.TestReport]:
    pytester.makepyfile(test_stores=DEFECTS)
    selected = f"({' or '.join(classes)}) and ({' or '.join(tests)})"
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-k", selected)
    reports = result.reprec.getreports("pytest_runtest_logreport")  # type: ignore[attr-defined]
    return {
        rep.nodeid.split("::", 1)[1]: rep
        for rep in reports
        if rep.when == "call" or (rep.when == "setup" and rep.outcome != "passed")
    }


def test_each_listing_defect_fails_the_file_layer_test_meant_for_it(pytester: pytest.Pytester) -> None:
    tests = sorted(set().union(*CATCHES.values()))
    outcomes = _outcomes(pytester, ["TestIntact", *CATCHES], tests)
    for test in tests:
        assert outcomes[f"TestIntact::{test}"].outcome == "passed", outcomes[f"TestIntact::{test}"].longreprtext
    for cls, caught in CATCHES.items():
        for test in caught:
            report = outcomes[f"{cls}::{test}"]
            assert report.outcome == "failed", (cls, test)
            assert SAYS[cls] in report.longreprtext, report.longreprtext
        # Only the test meant for the defect fails among those run: the other one passes.
        for test in set(tests) - caught:
            assert outcomes[f"{cls}::{test}"].outcome == "passed", (cls, test)


def test_the_listing_tests_honour_declared_capabilities_and_optional_calls(pytester: pytest.Pytester) -> None:
    outcomes = _outcomes(pytester, list(HONOURED), LISTING_TESTS)
    for cls, outcome in HONOURED.items():
        for test in LISTING_TESTS:
            report = outcomes[f"{cls}::{test}"]
            assert report.outcome == outcome, (cls, test, report.longreprtext)
    skipped = outcomes[f"TestEventuallyListed::{LISTING_TESTS[0]}"].longreprtext
    assert "does not declare capabilities.listing_consistent" in skipped, skipped
