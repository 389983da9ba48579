"""A write through a list or dict wrapper costs O(1), not O(len): filling a container of n values is not O(n^2).

Counted, not timed: each write compares at most the element it touches with the snapshot, and the full
comparison (every element) runs only when a change made outside the wrapper could be hidden by the write, or
at save and restore. The changes it leaves to the save are still refused there (or taken as assigned).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from trackpoint import data_structures as ds

N = 200  # writes per container: a full comparison at each would cost N * N / 2 element comparisons


class Counts:
    def __init__(self) -> None:
        self.full = 0  # full comparisons of the storage with the snapshot
        self.elements = 0  # element comparisons by _same_element

    def reset(self) -> None:
        self.full = self.elements = 0


@pytest.fixture
def counts(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counts]:
    found = Counts()
    same = ds._same_element

    def counted_same(a: Any, b: Any) -> bool:
        found.elements += 1
        return same(a, b)

    monkeypatch.setattr(ds, "_same_element", counted_same)
    for kind in (ds.ListWrapper, ds._DictWrapper):
        full: Callable[[Any], None] = kind._check_external_modification

        def counted_full(self: Any, full: Callable[[Any], None] = full) -> None:
            found.full += 1
            full(self)

        monkeypatch.setattr(kind, "_check_external_modification", counted_full)
    yield found


def _fill(model: Any, values: list[Any]) -> None:
    for index, value in enumerate(values):
        model.l.append(value)
        model.d[f"k{index}"] = value
    for index, value in enumerate(values):
        model.l[index] = value  # replacing by position keeps the names
        model.d.update({f"u{index}": value})
        model.d.setdefault(f"s{index}", value)
        del model.d[f"s{index}"]
    model.l.extend(values)


@pytest.mark.parametrize(
    "values",
    [
        pytest.param(lambda: [np.full(2, i, np.float32) for i in range(N)], id="arrays"),
        pytest.param(lambda: [tp.Variable(float(i)) for i in range(N)], id="variables"),
        pytest.param(lambda: [float(i) for i in range(N)], id="numbers"),
        pytest.param(lambda: [f"name{i}" for i in range(N)], id="plain-strings"),
    ],
)
def test_writes_compare_a_bounded_number_of_elements(counts: Counts, values: Callable[[], list[Any]]) -> None:
    model = tp.AutoTrackable()
    model.l = []
    model.d = {}
    made = values()
    counts.reset()
    _fill(model, made)
    writes = 7 * N
    assert counts.full == 0
    assert counts.elements <= writes  # at most the touched element, once per write
    # The save still compares everything, once per container.
    counts.reset()
    model.l._trackable_children()
    model.d._trackable_children()
    assert counts.full == 2


def test_a_checkpoints_own_containers_are_filled_in_linear_cost(counts: Counts) -> None:
    ckpt = tp.Checkpoint(params={}, layers=[])
    counts.reset()
    for index in range(N):
        ckpt.params[f"w{index}"] = np.zeros(2)
        ckpt.layers.append(np.zeros(2))
    assert counts.full == 0 and counts.elements <= 2 * N


# ------------------------------------------- changes outside the wrapper: still found, now or at the save
def test_a_change_elsewhere_in_the_users_list_is_refused_at_the_save(tmp_path: Path) -> None:
    layers: list[Any] = [tp.Variable(1.0), tp.Variable(2.0)]
    model = tp.AutoTrackable()
    model.layers = layers
    layers[0] = tp.Variable(3.0)  # outside the wrapper, not at the place the next writes touch
    model.layers.append(tp.Variable(4.0))
    model.layers[1] = tp.Variable(5.0)
    with pytest.raises(tp.TrackableError, match=r"The wrapped list was modified outside the wrapper"):
        tp.Checkpoint(model=model).write(str(tmp_path / "elsewhere"))
    assert len(model.layers) == 3


@pytest.mark.parametrize(
    "external",
    [
        pytest.param(lambda values: values.__setitem__(-1, tp.Variable(9.0)), id="last-replaced"),
        pytest.param(lambda values: values.append(tp.Variable(9.0)), id="appended"),
        pytest.param(lambda values: values.pop(0), id="removed"),
    ],
)
def test_a_change_a_write_could_hide_is_found_at_the_write(
    tmp_path: Path, external: Callable[[list[Any]], None]
) -> None:
    layers: list[Any] = [tp.Variable(1.0), tp.Variable(2.0)]
    model = tp.AutoTrackable()
    model.layers = layers
    external(layers)
    model.layers[-1] = tp.Variable(5.0)  # replaces the element changed outside, where it was: found, not hidden
    with pytest.raises(tp.TrackableError, match=r"The wrapped list was modified outside the wrapper"):
        tp.Checkpoint(model=model).write(str(tmp_path / "hidden"))


def test_a_dict_changed_elsewhere_or_at_the_key_written_is_refused(tmp_path: Path) -> None:
    table: dict[str, Any] = {"a": np.ones(2), "b": np.ones(2)}
    model = tp.AutoTrackable()
    model.table = table
    table["a"] = np.zeros(2)  # a new array under a key: a new object a restore could have waited for
    model.table["c"] = np.ones(2)
    with pytest.raises(tp.TrackableError, match=r"The wrapped dictionary was modified outside the wrapper"):
        tp.Checkpoint(model=model).write(str(tmp_path / "elsewhere"))
    table = {"a": np.ones(2)}
    model.table = table
    table["a"] = np.zeros(2)
    model.table["a"] = np.full(2, 2.0)  # would hide the change outside: found at the write
    with pytest.raises(tp.TrackableError, match=r"The wrapped dictionary was modified outside the wrapper"):
        tp.Checkpoint(model=model).write(str(tmp_path / "same-key"))


def test_number_counters_updated_outside_are_still_taken_as_assigned(tmp_path: Path) -> None:
    state: dict[str, Any] = {"epoch": 0, "step": 0, "w": np.ones(2)}
    ckpt = tp.Checkpoint(train=state)
    state["epoch"] += 3
    state["step"] += 1
    ckpt.train["w"] = np.full(2, 2.0)  # a write elsewhere: the counters are taken at the save
    ckpt.train["step"] = 7  # the write of a counter changed outside: the write's value is saved
    path = ckpt.write(str(tmp_path / "ckpt"))
    fresh: dict[str, Any] = {"epoch": 0, "step": 0, "w": np.zeros(2)}
    tp.Checkpoint(train=fresh).read(path).assert_consumed()
    assert fresh["epoch"] == 3 and fresh["step"] == 7
    np.testing.assert_array_equal(fresh["w"], np.full(2, 2.0))
    state["epoch"] = 4.5  # another type: refused, whenever found
    ckpt.train["x"] = 1
    with pytest.raises(tp.TrackableError, match=r"Here 'epoch' went from int to float"):
        ckpt.write(str(tmp_path / "float"))


def test_a_list_filled_through_the_wrapper_saves_and_restores_by_position(tmp_path: Path) -> None:
    model = tp.AutoTrackable()
    model.l = []
    for index in range(N):
        model.l.append(np.full(2, index, np.float32))
    model.l[3] = np.full(2, -1.0, np.float32)
    assert json.loads(json.dumps([float(v[0]) for v in model.l]))[3] == -1.0
    path = tp.Checkpoint(model=model).write(str(tmp_path / "ckpt"))
    restored = tp.AutoTrackable()
    restored.l = [np.zeros(2, np.float32) for _ in range(N)]
    tp.Checkpoint(model=restored).read(path).assert_consumed()
    assert float(restored.l[3][0]) == -1.0 and float(restored.l[N - 1][0]) == N - 1
