"""load_checkpoint / list_variables / object_metadata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import trackpoint as tp
from trackpoint.storage import WriteItem


def test_reader_methods() -> None:
    path = tp.Checkpoint(w=tp.Variable(np.ones((2, 3), np.float32)), s=tp.Variable("x")).save("memory://rd/ckpt")
    with tp.load_checkpoint(path) as reader:
        assert reader.prefix == path
        assert reader.has_tensor("w/.ATTRIBUTES/VARIABLE_VALUE")
        assert not reader.has_tensor("nope")
        np.testing.assert_array_equal(reader.get_tensor("w/.ATTRIBUTES/VARIABLE_VALUE"), np.ones((2, 3)))
        assert reader.get_tensor("s/.ATTRIBUTES/VARIABLE_VALUE") == b"x"
        assert reader.get_variable_to_shape_map()["w/.ATTRIBUTES/VARIABLE_VALUE"] == [2, 3]
        dtypes = reader.get_variable_to_dtype_map()
        assert dtypes["w/.ATTRIBUTES/VARIABLE_VALUE"] == np.float32
        assert dtypes["save_counter/.ATTRIBUTES/VARIABLE_VALUE"] == np.int64
        with pytest.raises(tp.CheckpointKeyError, match="nope"):
            reader.get_tensor("nope")


def test_list_variables_sorted_and_directory_resolution() -> None:
    ckpt = tp.Checkpoint(b=tp.Variable([1.0]), a=tp.Variable(2.0))
    ckpt.save("memory://rd/dir/ckpt")
    ckpt.save("memory://rd/dir/ckpt")
    expected = [
        ("_CHECKPOINTABLE_OBJECT_GRAPH", []),
        ("a/.ATTRIBUTES/VARIABLE_VALUE", []),
        ("b/.ATTRIBUTES/VARIABLE_VALUE", [1]),
        ("save_counter/.ATTRIBUTES/VARIABLE_VALUE", []),
    ]
    assert tp.list_variables("memory://rd/dir/ckpt-1") == expected
    with tp.load_checkpoint("memory://rd/dir") as reader:
        assert reader.prefix == "memory://rd/dir/ckpt-2"
    with pytest.raises(tp.CheckpointNotFoundError, match=r"no checkpoint at 'memory://rd/void'.*-N suffix"):
        tp.load_checkpoint("memory://rd/void")


def test_object_metadata() -> None:
    path = tp.Checkpoint(v=tp.Variable(1.0)).save("memory://rd/ckpt")
    graph = tp.object_metadata(path)
    assert [c.local_name for c in graph.nodes[0].children] == ["v", "save_counter"]
    from trackpoint import _resolve

    _resolve.open_backend("memory://rd/names").save("memory://rd/names", [WriteItem("x", np.zeros(1))])
    with pytest.raises(tp.InvalidCheckpointError, match="does not appear to be object-based"):
        tp.object_metadata("memory://rd/names")


_READERS = {
    "restore": lambda p: tp.Checkpoint(v=tp.Variable(0.0)).restore(p),
    "read": lambda p: tp.Checkpoint(v=tp.Variable(0.0)).read(p),
    "load_checkpoint": lambda p: tp.load_checkpoint(p).close(),
    "list_variables": tp.list_variables,
    "object_metadata": tp.object_metadata,
}


@pytest.mark.parametrize("reader", sorted(_READERS))
def test_every_reader_accepts_the_same_paths(reader: str) -> None:
    """A prefix and a directory work alike for every reader; a path that is neither fails alike."""
    call = _READERS[reader]
    tp.Checkpoint(v=tp.Variable(3.0)).save("memory://rd/same/ckpt")
    call("memory://rd/same/ckpt-1")
    call("memory://rd/same")
    with pytest.raises(
        tp.CheckpointNotFoundError, match=r"no checkpoint at 'memory://rd/same/ckpt'.*a directory that holds"
    ):
        call("memory://rd/same/ckpt")


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_readers_read_flat_files_as_convert_does(tmp_path: Path, suffix: str) -> None:
    pytest.importorskip("safetensors")
    model = tp.AutoTrackable()
    model.w = tp.Variable(np.arange(6, dtype=np.float32).reshape(2, 3))
    path = tp.Checkpoint(model=model).write(str(tmp_path / "ckpt"))
    flat = str(tmp_path / f"model{suffix}")
    tp.convert(path, flat)
    key = "model/w/.ATTRIBUTES/VARIABLE_VALUE"
    assert dict(tp.list_variables(flat))[key] == [2, 3]
    np.testing.assert_array_equal(tp.load_variable(flat, key), model.w.numpy())
    assert [c.local_name for c in tp.object_metadata(flat).nodes[0].children] == ["model"]
    with pytest.raises(tp.CheckpointNotFoundError, match="no file"):
        tp.list_variables(str(tmp_path / f"missing{suffix}"))
