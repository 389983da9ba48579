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


@pytest.fixture
def follows(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The full comparisons of a copy with the user's container it mirrors (``_check_source``), counted."""
    found = [0]
    full: Callable[[Any], None] = ds.TrackableDataStructure._check_source

    def counted(self: Any) -> None:
        found[0] += 1
        full(self)

    monkeypatch.setattr(ds.TrackableDataStructure, "_check_source", counted)
    yield found


def test_writes_through_the_copy_of_a_container_of_torch_state_dicts_cost_o1(
    tmp_path: Path, follows: list[int]
) -> None:
    # A dict or list holding torch state dicts is copied, and a write through the copy goes into the user's
    # container too: each compared the whole container with its record, and rebuilt the record (O(n) a write).
    torch = pytest.importorskip("torch")
    net = torch.nn.Linear(2, 2)
    train: dict[str, Any] = {"model": net.state_dict(), "runs": [net.state_dict()]}
    ckpt = tp.Checkpoint(train=train)
    model, runs = ckpt.train["model"], ckpt.train["runs"]
    follows[0] = 0
    for index in range(N):
        ckpt.train[f"m{index}"] = float(index)
        model[f"w{index}"] = torch.full((1,), float(index))
        runs.append(torch.full((1,), float(index)))
    for index in range(N):
        runs[index] = torch.full((1,), -float(index))
        del ckpt.train[f"m{index}"]
        model.pop(f"w{index}")
    ckpt.train.setdefault("best", 0.5)
    assert follows[0] == 0  # HEAD: one per write
    # Each write reached the user's containers, and the record: nothing for the save to follow or refuse.
    assert "m0" not in train and train["best"] == 0.5 and "w0" not in train["model"]
    assert len(train["runs"]) == N + 1 and float(train["runs"][N][0]) == N - 1
    assert float(train["runs"][3][0]) == -3.0
    path = ckpt.write(str(tmp_path / "ckpt"))
    fresh = {"model": torch.nn.Linear(2, 2).state_dict(), "runs": [torch.zeros(1) for _ in range(N + 1)], "best": 0.0}
    tp.Checkpoint(train=fresh).read(path).assert_consumed()
    assert fresh["best"] == 0.5 and float(fresh["runs"][5][0]) == -5.0
    torch.testing.assert_close(fresh["model"]["weight"], net.weight.detach())


def test_a_change_to_the_users_container_is_followed_where_a_write_could_hide_it(follows: list[int]) -> None:
    torch = pytest.importorskip("torch")
    train: dict[str, Any] = {"model": torch.nn.Linear(2, 2).state_dict(), "epoch": 0, "runs": [torch.zeros(1)]}
    ckpt = tp.Checkpoint(train=train)
    follows[0] = 0
    train["epoch"] = 3  # the written key, changed in the user's dict
    ckpt.train["epoch"] = 4
    assert follows[0] == 1 and train["epoch"] == 4 and ckpt.train["epoch"] == 4
    train["extra"] = 1.0  # another key, added: the number of keys differs
    ckpt.train["lr"] = 0.1
    assert follows[0] == 2 and ckpt.train["extra"] == 1.0 and train["lr"] == 0.1
    train["runs"].append(torch.ones(1))  # the list grew in the user's container
    ckpt.train["runs"].append(torch.full((1,), 2.0))
    assert [float(v[0]) for v in train["runs"]] == [0.0, 1.0, 2.0]
    assert [float(v[0]) for v in ckpt.train["runs"]] == [0.0, 1.0, 2.0]
