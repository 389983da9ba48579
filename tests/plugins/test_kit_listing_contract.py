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


    class TestListsDeeper(Adopt):
        store_class = ListsDeeper


    class TestListsSubdirectories(Adopt):
        store_class = ListsSubdirectories


    class TestFirstPageOnly(Adopt):
        store_class = FirstPageOnly
    """
)

#: The kit's tests that must catch each defect.
CATCHES = {
    "TestListsDeeper": {"test_a_listing_names_the_objects_directly_in_the_directory"},
    "TestListsSubdirectories": {"test_a_listing_names_the_objects_directly_in_the_directory"},
    "TestFirstPageOnly": {"test_a_listing_returns_every_page"},
}

#: What the failure of each says, by class.
SAYS = {
    "TestListsDeeper": "expected the names ['a', 'b.index', 'c.data-00000-of-00001'] of the objects directly in it",
    "TestListsSubdirectories": "no 'subdirectory' entries ending in '/'",
    "TestFirstPageOnly": "lists 50 of the 120 objects put there",
}


def test_each_listing_defect_fails_the_file_layer_test_meant_for_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_stores=DEFECTS)
    classes = ["TestIntact", *CATCHES]
    tests = sorted(set().union(*CATCHES.values()))
    selected = f"({' or '.join(classes)}) and ({' or '.join(tests)})"
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-k", selected)
    reports = result.reprec.getreports("pytest_runtest_logreport")  # type: ignore[attr-defined]
    outcomes = {
        rep.nodeid.split("::", 1)[1]: rep
        for rep in reports
        if rep.when == "call" or (rep.when == "setup" and rep.outcome != "passed")
    }
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
