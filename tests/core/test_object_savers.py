"""TensorFlow 1's object-based savers: ``TrackableSaver`` / ``CheckpointableSaver`` and ``frozen_saver``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import trackpoint as tp
from trackpoint.saver import CheckpointableSaver, TrackableSaver, frozen_saver


class Model(tp.AutoTrackable):
    def __init__(self, scale: float = 1.0) -> None:
        self.kernel = tp.Variable(np.arange(4.0).reshape(2, 2) * scale)
        self.blocks = [tp.Variable(np.ones(3) * scale)]


def test_trackable_saver_numbers_its_checkpoints(tmp_path: Path) -> None:
    model = Model()
    saver = CheckpointableSaver(model)  # TensorFlow 1.x's name and call shape: the root object
    assert saver.save(tmp_path / "ckpt", checkpoint_number=7) == str(tmp_path / "ckpt-7")
    assert saver.save(str(tmp_path / "plain")) == str(tmp_path / "plain")
    # As in TensorFlow, 0 adds no suffix; a session is ignored.
    assert saver.save(str(tmp_path / "zero"), checkpoint_number=0, session=object()) == str(tmp_path / "zero")
    assert saver.save(str(tmp_path / "var"), checkpoint_number=tp.Variable(np.int64(3))) == str(tmp_path / "var-3")
    assert not (tmp_path / "checkpoint").exists()  # no state file, unlike Checkpoint.save
    names = [n for n, _ in tp.list_variables(str(tmp_path / "ckpt-7"))]
    assert "kernel/.ATTRIBUTES/VARIABLE_VALUE" in names and "blocks/0/.ATTRIBUTES/VARIABLE_VALUE" in names

    fresh = Model(scale=0.0)
    status = TrackableSaver(fresh).restore(str(tmp_path / "ckpt-7"))
    status.assert_consumed()
    np.testing.assert_array_equal(fresh.kernel.numpy(), model.kernel.numpy())
    # The checkpoint is an ordinary object-based one.
    other = Model(scale=0.0)
    tp.Checkpoint(root=other).read(str(tmp_path / "ckpt-7")).assert_consumed()
    np.testing.assert_array_equal(other.blocks[0].numpy(), np.ones(3))
    with pytest.raises(tp.MatchError, match="No checkpoint specified"):
        TrackableSaver(fresh).restore(None).assert_consumed()
    with pytest.raises(tp.NotTrackableError, match="needs the root Trackable"):
        TrackableSaver([model])


def test_frozen_saver_saves_the_graph_as_it_was(tmp_path: Path) -> None:
    model = Model()
    saver = frozen_saver(model)
    model.kernel.assign(np.full((2, 2), 5.0))  # values still change what is saved
    model.extra = tp.Variable(9.0)  # structure does not
    path = saver.save(str(tmp_path / "frozen"))
    names = {n for n, _ in tp.list_variables(path)}
    assert "kernel/.ATTRIBUTES/VARIABLE_VALUE" in names
    assert not any(n.startswith("extra") for n in names)

    model.kernel.assign(np.zeros((2, 2)))
    saver.restore(path)
    np.testing.assert_array_equal(model.kernel.numpy(), np.full((2, 2), 5.0))
    fresh = Model(scale=0.0)
    tp.Checkpoint(root=fresh).read(path).assert_existing_objects_matched()
    np.testing.assert_array_equal(fresh.kernel.numpy(), np.full((2, 2), 5.0))


def test_frozen_saver_restore_is_strict(tmp_path: Path) -> None:
    model = Model()
    other = tp.AutoTrackable()
    other.kernel = tp.Variable(np.zeros((2, 2)))
    path = tp.Checkpoint(root=other).write(str(tmp_path / "partial"))
    with pytest.raises(tp.CheckpointKeyError, match=r"does not hold the object graph frozen.*blocks/0"):
        frozen_saver(model).restore(path)
    np.testing.assert_array_equal(model.kernel.numpy(), np.arange(4.0).reshape(2, 2))  # nothing written
    wrong = tp.AutoTrackable()
    wrong.kernel = tp.Variable(np.zeros((3, 3)))
    wrong.blocks = [tp.Variable(np.ones(3))]
    bad = tp.Checkpoint(root=wrong).write(str(tmp_path / "bad"))
    with pytest.raises(tp.ShapeMismatchError):
        frozen_saver(model).restore(bad)
    np.testing.assert_array_equal(model.blocks[0].numpy(), np.ones(3))
