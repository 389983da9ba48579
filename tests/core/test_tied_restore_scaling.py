"""A restore on creation finds the earlier node of each tied array met again in one pass, not one per array.

An array attached in a second place after a step of the restore restored it (``ck.a = arrays`` then
``ck.b = dict(arrays)``) is checked against the saved node it got its value from. Those nodes are looked up in a
map of the matched nodes built once, at the first such array, so the step visits each matched node a bounded
number of times whatever the number of tied arrays; a search of the matched nodes per array visited them
quadratically often. Counted, not timed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, SupportsIndex

import numpy as np
import pytest

import trackpoint as tp


class _Visits(list[Any]):
    """The matched nodes of a restore, counting how many entries are read."""

    visited = 0

    def __iter__(self) -> Iterator[Any]:
        for item in super().__iter__():
            self.visited += 1
            yield item

    def __getitem__(self, index: Any) -> Any:
        self.visited += 1 if isinstance(index, SupportsIndex) else len(range(len(self))[index])
        return super().__getitem__(index)


def _counted(status: Any) -> _Visits:
    coordinator = status._checkpoint
    visits = _Visits(coordinator.matched)
    # The restore's end-of-life report reads the same list.
    coordinator.matched = coordinator._report.matched = visits
    return visits


def _saved(n: int, same: bool = True) -> str:
    """A checkpoint holding ``n`` values twice, under ``a`` and ``b`` (two saved nodes each: separate arrays)."""
    b = {f"k{i}": np.full(2, float(i)) for i in range(n)}
    a = {k: v.copy() if same else v + 1 for k, v in b.items()}
    path: str = tp.Checkpoint(a=a, b=b).save(f"memory://tied-scaling-{same}/ckpt")
    return path


@pytest.mark.parametrize("n", [50, 400])
def test_tied_arrays_attached_later_visit_each_matched_node_a_bounded_number_of_times(n: int) -> None:
    path = _saved(n)
    arrays = {f"k{i}": np.zeros(2) for i in range(n)}
    ckpt = tp.Checkpoint()
    status = ckpt.restore(path)
    ckpt.a = arrays
    visits = _counted(status)
    ckpt.b = dict(arrays)  # the same arrays: each met again, restored by the step before
    status.assert_consumed()
    assert all((arrays[f"k{i}"] == i).all() for i in range(n))
    # One pass to build the map, then a few reads of its own nodes per array met (about 7 now); a search of
    # the matched nodes per array read about n²/2 entries.
    assert visits.visited <= len(visits) + 10 * n


def test_tied_arrays_holding_two_values_are_still_refused() -> None:
    path = _saved(20, same=False)
    arrays = {f"k{i}": np.zeros(2) for i in range(20)}
    ckpt = tp.Checkpoint()
    ckpt.restore(path)
    ckpt.a = arrays
    with pytest.raises(tp.TrackableError, match="k0"):
        ckpt.b = dict(arrays)


def test_untied_arrays_attached_later_build_no_map() -> None:
    path = _saved(20)
    ckpt = tp.Checkpoint()
    status = ckpt.restore(path)
    ckpt.a = {f"k{i}": np.zeros(2) for i in range(20)}
    ckpt.b = {f"k{i}": np.zeros(2) for i in range(20)}
    status.assert_consumed()
    assert status._checkpoint.valued_nodes is None
