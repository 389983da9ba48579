"""trackpoint.load_tree: a checkpoint's values as nested dicts along its object graph, read with numpy alone."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest

import trackpoint as tp
from stateful_objects import StateHolder

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tf"


def test_a_tensorflow_checkpoint_reads_as_its_object_graph() -> None:
    tree = tp.load_tree(FIXTURES / "nested" / "ckpt-1")
    model = tree["model"]
    assert set(model) == {"decoder", "encoder", "shared", "stack", "table"}
    np.testing.assert_array_equal(model["stack"]["1"], np.array([3.65, 3.9, 4.15], np.float32))
    assert model["encoder"]["shared"] is model["shared"]  # one object, reached by two paths
    slots = tree["optimizer"][".OPTIMIZER_SLOT"]
    np.testing.assert_array_equal(slots["model/stack/0"]["momentum"], np.array([3.0, 3.0], np.float32))
    assert int(tree["save_counter"]) == 1


def test_python_state_and_numbers_keep_their_attribute_names(tmp_path: Path) -> None:
    tree = tp.load_tree(FIXTURES / "python_state" / "ckpt-1")
    assert tree["state"] == {"py_state": b'{"epoch": 3, "losses": [0.5, 0.25], "name": "run-\xce\xb1"}'}
    assert int(tree["step"]) == 7


def test_a_state_dict_is_rebuilt_without_its_object(tmp_path: Path) -> None:
    state = {"groups": [{"lr": 0.1, "betas": (0.9, 0.999), "fused": None}], 0: {"m": np.arange(3.0)}, "s": np.int8(4)}
    path = tp.Checkpoint(loader=StateHolder(state), epoch=2).write(str(tmp_path / "ckpt"))
    tree = tp.load_tree(path)
    assert tree["loader"]["groups"] == [{"lr": 0.1, "betas": (0.9, 0.999), "fused": None}]
    np.testing.assert_array_equal(tree["loader"][0]["m"], np.arange(3.0))
    assert tree["loader"]["s"] == np.int8(4) and tree["loader"]["s"].dtype == np.int8
    assert int(tree["epoch"]) == 2


def test_a_name_based_checkpoint_has_no_tree() -> None:
    with pytest.raises(tp.InvalidCheckpointError, match="does not appear to be object-based"):
        tp.load_tree(FIXTURES / "tf1_saver" / "model.ckpt-1")


def test_a_missing_checkpoint_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(tp.CheckpointNotFoundError):
        tp.load_tree(tmp_path / "nothing")


def test_a_namedtuple_shows_each_element_once_by_field_name(tmp_path: Path) -> None:
    pair = collections.namedtuple("pair", "count mu")
    path = tp.Checkpoint(s=pair(np.int32(1), {"w": np.ones(3)}), t=(np.ones(1), np.zeros(1))).write(str(tmp_path / "c"))
    tree = tp.load_tree(path)
    assert set(tree["s"]) == {"count", "mu"} and int(tree["s"]["count"]) == 1
    assert set(tree["t"]) == {"0", "1"}  # a plain tuple's elements go by position


def test_a_dict_entry_named_by_digits_is_kept(tmp_path: Path) -> None:
    v = tp.Variable(np.ones(2))
    tree = tp.load_tree(tp.Checkpoint(d={"0": v, "best": v}).write(str(tmp_path / "c")))
    assert set(tree["d"]) == {"0", "best"} and tree["d"]["0"] is tree["d"]["best"]
