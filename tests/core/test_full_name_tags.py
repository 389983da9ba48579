"""A Python number keeps its name as ``full_name``; its type is recorded outside the object graph.

``full_name`` is what TensorFlow's ``object_graph_key_mapping`` (a name-based restore of an object-based
checkpoint) looks names up by, so a Python number saved in a checkpoint's containers records the name it has
there, as any array does. Its type (which tells ``load_tree`` a saved ``7`` from a saved ``np.int64(7)``) is
the entry ``_TRACKPOINT_PYTHON_NUMBERS``, which no restore reads. Checkpoints written while the type took the
place of the name (``full_name`` ``python:int`` and the like) still read: the tags give the type and no name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from trackpoint.storage import OBJECT_GRAPH_KEY, WriteItem

#: The entry docs/format.md names.
PYTHON_NUMBERS_KEY = "_TRACKPOINT_PYTHON_NUMBERS"
COUNTERS = {"epoch": 3, "step": 40, "lr": 0.5, "momentum": 0.9, "warm": True, "done": False}


def _checkpoint(tmp_path: Path) -> str:
    ckpt = tp.Checkpoint(counters=dict(COUNTERS), cfg={"steps": 100}, w=tp.Variable(np.arange(3.0), name="w"))
    path: str = ckpt.write(str(tmp_path / "c"))
    return path


def _full_names(path: str) -> dict[str, str]:
    return {a.checkpoint_key: a.full_name for node in tp.object_metadata(path).nodes for a in node.attributes}


def test_a_python_number_records_its_name_and_its_type_beside_the_graph(tmp_path: Path) -> None:
    path = _checkpoint(tmp_path)
    names = _full_names(path)
    assert {names[f"counters/{k}/.ATTRIBUTES/VARIABLE_VALUE"] for k in COUNTERS} == set(COUNTERS)
    assert names["cfg/steps/.ATTRIBUTES/VARIABLE_VALUE"] == "steps"
    assert not [name for name in names.values() if name.startswith("python:")]
    types = {f"counters/{k}/.ATTRIBUTES/VARIABLE_VALUE": type(v).__name__ for k, v in COUNTERS.items()}
    types["cfg/steps/.ATTRIBUTES/VARIABLE_VALUE"] = "int"
    assert json.loads(tp.load_checkpoint(path).get_tensor(PYTHON_NUMBERS_KEY)) == types
    assert tp.load_tree(path)["counters"] == COUNTERS
    assert [type(v) for v in tp.load_tree(path)["counters"].values()] == [type(v) for v in COUNTERS.values()]


def test_a_checkpoint_without_python_numbers_has_no_entry_for_them(tmp_path: Path) -> None:
    path = tp.Checkpoint(step=np.int64(3), w=tp.Variable(np.ones(2))).write(str(tmp_path / "c"))
    assert PYTHON_NUMBERS_KEY not in dict(tp.list_variables(path))
    assert type(tp.load_tree(path)["step"]) is np.ndarray


def test_object_graph_key_mapping_finds_python_numbers_by_name(tmp_path: Path) -> None:
    mapping = tp.object_graph_key_mapping(_checkpoint(tmp_path))
    assert mapping["epoch"] == "counters/epoch/.ATTRIBUTES/VARIABLE_VALUE"
    assert mapping["steps"] == "cfg/steps/.ATTRIBUTES/VARIABLE_VALUE"
    assert mapping["w"] == "w/.ATTRIBUTES/VARIABLE_VALUE"
    # Neither the empty full_name of an object that is no variable nor the types' entry is a name.
    assert "" not in mapping and PYTHON_NUMBERS_KEY not in mapping.values()


def test_a_name_based_saver_restores_python_numbers_of_an_object_based_checkpoint(tmp_path: Path) -> None:
    path = tp.Checkpoint(epoch=7, lr=np.float64(0.5), cfg={"steps": 100}).write(str(tmp_path / "c"))
    epoch, steps = tp.Variable(np.int64(0), name="epoch"), tp.Variable(np.int64(0), name="steps")
    lr = tp.Variable(np.float64(0.0), name="lr")
    tp.Saver([epoch, steps, lr]).restore(path)
    assert (epoch.numpy(), steps.numpy(), lr.numpy()) == (7, 100, 0.5)


def _string(data: bytes) -> np.ndarray[Any, Any]:
    out = np.empty((), dtype=object)
    out[()] = data
    return out


def _copy(path: str, to: str, replaced: dict[str, bytes | None]) -> str:
    """A copy of the checkpoint ``path`` at ``to``, its string scalars ``replaced`` (a ``None`` value drops one)."""
    reader = tp.load_checkpoint(path)
    items = [WriteItem(key, _string(data)) for key, data in replaced.items() if data is not None]
    for key in reader.get_variable_to_shape_map():
        if key not in replaced:
            value = reader.get_tensor(key)
            items.append(WriteItem(key, _string(value) if isinstance(value, bytes) else np.asarray(value)))
    tp.plugins.open_backend(to).save(to, items)
    return to


def _as_written_before(path: str, to: str) -> str:
    """A copy of ``path`` as trackpoint wrote it while a Python number's ``full_name`` was its type."""
    graph = tp.object_metadata(path)
    types = json.loads(tp.load_checkpoint(path).get_tensor(PYTHON_NUMBERS_KEY))
    for node in graph.nodes:
        for attribute in node.attributes:
            if attribute.checkpoint_key in types:
                attribute.full_name = f"python:{types[attribute.checkpoint_key]}"
    return _copy(path, to, {OBJECT_GRAPH_KEY: graph.SerializeToString(), PYTHON_NUMBERS_KEY: None})


def test_checkpoints_written_with_type_tags_still_read(tmp_path: Path) -> None:
    path = _as_written_before(_checkpoint(tmp_path), str(tmp_path / "tagged"))
    assert sorted(name for name in _full_names(path).values() if name.startswith("python:")) == sorted(
        ["python:int"] * 3 + ["python:float"] * 2 + ["python:bool"] * 2
    )
    tree = tp.load_tree(path)
    assert tree["counters"] == COUNTERS and type(tree["cfg"]["steps"]) is int
    assert [type(v) for v in tree["counters"].values()] == [type(v) for v in COUNTERS.values()]
    # The tags are no names: many attributes share one.
    mapping = tp.object_graph_key_mapping(path)
    assert (
        not [name for name in mapping if name.startswith("python:")] and mapping["w"] == "w/.ATTRIBUTES/VARIABLE_VALUE"
    )
    with pytest.raises(tp.CheckpointKeyError, match=r"variable names \['python:int'\] are neither keys"):
        tp.Saver({"python:int": tp.Variable(np.int64(0))}).restore(path)


def test_an_unreadable_types_entry_is_reported(tmp_path: Path) -> None:
    path = tp.Checkpoint(epoch=7).write(str(tmp_path / "c"))
    to = _copy(path, str(tmp_path / "bad"), {PYTHON_NUMBERS_KEY: b'{"epoch/.ATTRIBUTES/VARIABLE_VALUE": "complex"}'})
    with pytest.raises(tp.InvalidCheckpointError, match=r"_TRACKPOINT_PYTHON_NUMBERS.*KeyError: 'complex'"):
        tp.load_tree(to)
    # Restores never read it.
    epoch = tp.Checkpoint(epoch=0)
    epoch.read(to).assert_consumed()
    assert epoch.epoch == 7
