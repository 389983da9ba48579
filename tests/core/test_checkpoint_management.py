"""TensorFlow's checkpoint-management functions with TensorFlow's names and call shapes."""

from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest
from google.protobuf import text_format

import trackpoint as tp
from trackpoint.proto.checkpoint_state_pb2 import CheckpointState


def test_manager_continues_from_checkpoints_saved_under_another_name(tmp_path: pathlib.Path) -> None:
    first = tp.Checkpoint()
    unmanaged = [first.save(str(tmp_path / "unusual_prefix")) for _ in range(2)]
    ckpt = tp.Checkpoint()
    manager = tp.CheckpointManager(ckpt, tmp_path, max_to_keep=2)
    assert manager.latest_checkpoint == unmanaged[-1]
    ckpt.restore(manager.latest_checkpoint)
    assert ckpt.save_counter.numpy() == 2
    third = manager.save()
    assert third.endswith("ckpt-3") and manager.checkpoints == [third]
    fourth, fifth = manager.save(), manager.save()
    assert manager.checkpoints == [fourth, fifth]
    # The manager never deletes what it did not write.
    assert all(tp.checkpoint_exists(p) for p in unmanaged)
    assert not tp.checkpoint_exists(third)


def test_get_checkpoint_state_raises_value_error_for_an_incomplete_file(tmp_path: pathlib.Path) -> None:
    assert tp.get_checkpoint_state(tmp_path) is None
    (tmp_path / "checkpoint").write_text("")
    with pytest.raises(tp.InvalidCheckpointError, match="Invalid checkpoint state loaded from") as info:
        tp.get_checkpoint_state(tmp_path)
    assert isinstance(info.value, ValueError)
    (tmp_path / "checkpoint").write_text("not a proto {{{")
    assert tp.get_checkpoint_state(tmp_path) is None  # unparsable: a warning, as in TensorFlow


def test_state_file_functions_take_paths_and_tensorflows_call_shape(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    os.mkdir("train")
    absolute = str(tmp_path / "model-0")
    relative = os.path.join("train", "model-2")
    tp.update_checkpoint_state("train", relative, [absolute, relative])
    stored = CheckpointState()
    text_format.Merge((tmp_path / "train" / "checkpoint").read_text(), stored)
    assert list(stored.all_model_checkpoint_paths) == [absolute, "model-2"]
    state = tp.get_checkpoint_state(pathlib.Path("train"))
    assert state is not None and state.model_checkpoint_path == relative
    assert list(state.all_model_checkpoint_paths) == [absolute, relative]
    assert tp.read_checkpoint_state(pathlib.Path("train")) == state
    # Positional latest_filename and timestamps, as tf.compat.v1.train.update_checkpoint_state takes them.
    tp.update_checkpoint_state(tmp_path, str(tmp_path / "m-1"), None, "latest", [5.0], 4.0)
    other = tp.get_checkpoint_state(tmp_path, "latest")
    assert other is not None and list(other.all_model_checkpoint_timestamps) == [5.0]
    assert other.last_preserved_timestamp == 4.0


def test_generate_checkpoint_state_proto() -> None:
    proto = tp.generate_checkpoint_state_proto("train", os.path.join("train", "model-0"))
    assert proto.model_checkpoint_path == "model-0" and list(proto.all_model_checkpoint_paths) == ["model-0"]
    absolute = os.path.abspath("run/model-0")
    for paths in (None, [], ["model-2"]):
        proto = tp.generate_checkpoint_state_proto("/run", absolute, all_model_checkpoint_paths=paths)
        assert proto.model_checkpoint_path == absolute and proto.all_model_checkpoint_paths[-1] == absolute
        assert len(proto.all_model_checkpoint_paths) == (len(paths) if paths else 1) + (1 if paths else 0)
    with pytest.raises(tp.InvalidCheckpointError, match="timestamps, if provided, must match"):
        tp.generate_checkpoint_state_proto("/run", absolute, ["a"], [1.0])


def test_latest_checkpoint_takes_a_path_object(tmp_path: pathlib.Path) -> None:
    saved = tp.Checkpoint(v=tp.Variable(1.0)).save(tmp_path / "ckpt")
    assert tp.latest_checkpoint(tmp_path) == saved


def test_exists_remove_and_meta_graph_names(tmp_path: pathlib.Path) -> None:
    prefix = tp.Checkpoint(v=tp.Variable(1.0)).write(str(tmp_path / "model"))
    assert not tp.checkpoint_exists(tmp_path / "other") and tp.checkpoint_exists(pathlib.Path(prefix))
    meta = tp.meta_graph_filename(prefix)
    assert meta == prefix + ".meta"
    pathlib.Path(meta).write_bytes(b"graph")
    tp.remove_checkpoint(prefix, 2)
    assert not tp.checkpoint_exists(prefix) and not os.path.exists(meta)
    tp.remove_checkpoint(prefix)  # nothing left: not an error
    assert tp.meta_graph_filename("dir/model-00001-of-00002", "meta2") == "dir/model.meta2"


def test_readers_by_tensorflow_names(tmp_path: pathlib.Path) -> None:
    ckpt = tp.Checkpoint(model=tp.AutoTrackable())
    ckpt.model.w = tp.Variable(np.arange(3.0), name="w")
    path = ckpt.save(str(tmp_path / "ckpt"))
    key = "model/w/.ATTRIBUTES/VARIABLE_VALUE"
    np.testing.assert_array_equal(tp.load_variable(tmp_path, key + ":0"), [0.0, 1.0, 2.0])
    with tp.NewCheckpointReader(path) as reader:
        assert reader.has_tensor(key)
    mapping = tp.object_graph_key_mapping(path)
    assert mapping["w"] == key and mapping["save_counter"] == "save_counter/.ATTRIBUTES/VARIABLE_VALUE"
    with pytest.raises(tp.CheckpointKeyError):
        tp.load_variable(path, "missing")


def test_list_objects_walks_what_a_save_would_write() -> None:
    root = tp.AutoTrackable()
    root.layers = [[1.0]]
    objects = tp.list_objects(root)
    assert objects[0] is root and root.layers in objects and root.layers[0] in objects
    root.layers.insert(0, tp.Variable(1.0))  # renumbers a saved element
    with pytest.raises(ValueError, match="A list element was replaced"):
        tp.list_objects(root)


def test_without_a_state_file_the_series_committed_to_last_is_latest(tmp_path: pathlib.Path) -> None:
    ckpt = tp.Checkpoint(w=np.ones(2))
    for name, mtime in (("other-500", 1_000.0), ("ckpt-99", 1_500.0), ("ckpt-100", 2_000.0), ("eval-7", 3_000.0)):
        ckpt.write(str(tmp_path / name))
        os.utime(tmp_path / f"{name}.index", (mtime, mtime))  # the commit point's time
    assert tp.latest_checkpoint(tmp_path) == str(tmp_path / "eval-7")  # not other-500, the highest number
    os.utime(tmp_path / "ckpt-100.index", (4_000.0, 4_000.0))
    assert tp.latest_checkpoint(tmp_path) == str(tmp_path / "ckpt-100")
