"""The type tags recorded as a Python number's ``full_name`` are no names: name-based mappings leave them out.

A Python number saved in a checkpoint's containers records its type in the object graph (``python:int``,
``python:float``, ``python:bool``), which ``load_tree`` reads to give back the number. Many attributes share a
tag, so ``object_graph_key_mapping`` and a name-based ``Saver`` restoring an object-based checkpoint never map a
tag to one of them, while a variable's own name is still mapped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import trackpoint as tp

TAGS = ("python:int", "python:float", "python:bool")


def _checkpoint(tmp_path: Path) -> str:
    counters = {"epoch": 3, "step": 40, "lr": 0.5, "momentum": 0.9, "warm": True, "done": False}
    path: str = tp.Checkpoint(counters=counters, w=tp.Variable(np.arange(3.0), name="w")).write(str(tmp_path / "c"))
    return path


def test_the_object_graph_records_the_tags(tmp_path: Path) -> None:
    path = _checkpoint(tmp_path)
    names = [attribute.full_name for node in tp.object_metadata(path).nodes for attribute in node.attributes]
    assert {tag: names.count(tag) for tag in TAGS} == {tag: 2 for tag in TAGS}
    assert tp.load_tree(path)["counters"]["lr"] == 0.5


def test_object_graph_key_mapping_leaves_the_tags_out(tmp_path: Path) -> None:
    mapping = tp.object_graph_key_mapping(_checkpoint(tmp_path))
    assert not set(TAGS) & set(mapping)
    assert mapping["w"] == "w/.ATTRIBUTES/VARIABLE_VALUE"


def test_a_name_based_saver_maps_no_tag_to_a_number(tmp_path: Path) -> None:
    path = _checkpoint(tmp_path)
    with pytest.raises(tp.CheckpointKeyError, match=r"variable names \['python:int'\] are neither keys"):
        tp.Saver({"python:int": tp.Variable(np.int64(0))}).restore(path)
    # A variable's own full_name still maps to its key.
    w = tp.Variable(np.zeros(3), name="w")
    tp.Saver([w]).restore(path)
    np.testing.assert_array_equal(w.numpy(), [0.0, 1.0, 2.0])
