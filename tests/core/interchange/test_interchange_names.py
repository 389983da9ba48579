"""Object-graph path names of tensors, and the object graph that names describe."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import trackpoint as tp
from trackpoint.errors import InvalidCheckpointError, NameConflictError
from trackpoint.interchange import graph_from_names, path_names
from trackpoint.interchange._names import pattern_paths, tensor_paths

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "tf"


def test_tensorflow_keys_become_object_graph_paths() -> None:
    graph = tp.object_metadata(FIXTURES / "nested" / "ckpt-1")
    keys = [k for k, _ in tp.list_variables(FIXTURES / "nested" / "ckpt-1")]
    names = path_names(graph, keys)
    assert names["model/encoder/dense/kernel/.ATTRIBUTES/VARIABLE_VALUE"] == "model/encoder/dense/kernel"
    assert names["save_counter/.ATTRIBUTES/VARIABLE_VALUE"] == "save_counter"
    # A shared variable (model.shared is also model.encoder.shared) gets its breadth-first path, as its key.
    assert names["model/shared/.ATTRIBUTES/VARIABLE_VALUE"] == "model/shared"
    slot = "model/stack/1/.OPTIMIZER_SLOT/optimizer/momentum/.ATTRIBUTES/VARIABLE_VALUE"
    assert names[slot] == "model/stack/1/.OPTIMIZER_SLOT/optimizer/momentum"
    assert "_CHECKPOINTABLE_OBJECT_GRAPH" not in names
    assert len(set(names.values())) == len(names) == 18


def test_other_attributes_keep_their_attribute_name() -> None:
    graph = tp.object_metadata(FIXTURES / "python_state" / "ckpt-1")
    names = path_names(graph, ["state/.ATTRIBUTES/py_state", "step/.ATTRIBUTES/VARIABLE_VALUE"])
    assert names == {
        "state/.ATTRIBUTES/py_state": "state/.ATTRIBUTES/py_state",
        "step/.ATTRIBUTES/VARIABLE_VALUE": "step",
    }


def test_a_name_based_checkpoint_keeps_its_keys() -> None:
    assert path_names(None, ["dense/kernel", "global_step"]) == {
        "dense/kernel": "dense/kernel",
        "global_step": "global_step",
    }


def test_a_local_name_holding_the_separator_is_refused(tmp_path: Path) -> None:
    model = tp.AutoTrackable()
    model._track_trackable(tp.Variable(np.zeros(2, np.float32)), "a/b")
    path = tp.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    keys = [k for k, _ in tp.list_variables(path)]
    with pytest.raises(NameConflictError, match=r"local name 'a/b'.*names='keys'"):
        path_names(tp.object_metadata(path), keys)
    # Another separator names it.
    key = next(k for k in keys if k.startswith("model/"))
    assert path_names(tp.object_metadata(path), keys, separator=".")[key] == "model.a/b"


def test_names_describe_a_graph_that_restores_by_path(tmp_path: Path) -> None:
    graph, keys = graph_from_names(["model/dense/kernel", "model/dense/bias", "step"])
    assert keys["model/dense/kernel"] == "model/dense/kernel/.ATTRIBUTES/VARIABLE_VALUE"
    assert keys["step"] == "step/.ATTRIBUTES/VARIABLE_VALUE"
    # Back to the same names: the two directions are inverse.
    assert path_names(graph, keys.values()) == {v: k for k, v in keys.items()}
    assert graph.nodes[0].has_checkpoint_values.value


def test_slot_and_attribute_names_rebuild_slots_and_attributes() -> None:
    names = ["m/w", "m/w/.OPTIMIZER_SLOT/opt/momentum", "s/.ATTRIBUTES/py_state"]
    graph, keys = graph_from_names(names)
    assert keys["m/w/.OPTIMIZER_SLOT/opt/momentum"] == "m/w/.OPTIMIZER_SLOT/opt/momentum/.ATTRIBUTES/VARIABLE_VALUE"
    assert keys["s/.ATTRIBUTES/py_state"] == "s/.ATTRIBUTES/py_state"
    optimizer = [n for n in graph.nodes if n.slot_variables]
    assert len(optimizer) == 1 and optimizer[0].slot_variables[0].slot_name == "momentum"
    assert path_names(graph, keys.values()) == {v: k for k, v in keys.items()}


def test_dotted_names_with_a_dot_separator() -> None:
    graph, keys = graph_from_names(["layers.0.weight", "layers.0.bias"], separator=".")
    assert keys["layers.0.weight"] == "layers/0/weight/.ATTRIBUTES/VARIABLE_VALUE"
    assert sorted(c.local_name for c in graph.nodes[0].children) == ["layers"]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("a//b", "empty element"),
        ("/a", "empty element"),
        ("a/.ATTRIBUTES/x/y", "an attribute is named"),
        (".OPTIMIZER_SLOT/opt/m", "a slot variable is named"),
        ("w/.OPTIMIZER_SLOT/m", "a slot variable is named"),
    ],
)
def test_malformed_names_are_refused(name: str, message: str) -> None:
    with pytest.raises(InvalidCheckpointError, match=message):
        graph_from_names([name])


def test_two_keys_with_one_name_are_refused() -> None:
    graph, keys = graph_from_names(["a"])
    with pytest.raises(NameConflictError, match="would both be named 'a'"):
        path_names(graph, [keys["a"], "a"])


def test_tensor_paths_leave_out_only_the_tensors_no_path_names() -> None:
    graph, keys = graph_from_names(["m/a", "m/b", "c"])
    a, b, c = keys["m/a"], keys["m/b"], keys["c"]
    graph.nodes[graph.nodes[0].children[0].node_id].children[0].local_name = "x/y"  # m's child 'a' becomes 'x/y'
    with pytest.raises(NameConflictError, match="'x/y'"):
        path_names(graph, [a, b, c])
    # Only the tensors asked for are named: the others' paths stand.
    assert path_names(graph, [b, c]) == {b: "m/b", c: "c"}
    assert tensor_paths(graph, [a, b, c, "other"]) == {a: None, b: "m/b", c: "c", "other": "other"}
    # Two tensors one path would name: neither gets it.
    assert tensor_paths(graph, [c, "c"]) == {c: None, "c": None}
    # Patterns match the local names joined as they are.
    assert pattern_paths(graph, [a, c]) == {a: "m/x/y", c: "c"}
