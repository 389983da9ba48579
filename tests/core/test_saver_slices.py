"""``Saver`` and partitioned variables: Variables holding slices (``save_slice_info``) of one tensor.

As TensorFlow 1's ``Saver`` (``op_list_to_dict``, ``saveable_objects_for_op``):
a listed Variable holding a slice is keyed by ``save_slice_info.full_name``, a
dict may give the slices of one tensor as a list under one name, the slices
are saved as one tensor (``list_variables`` shows it whole) and each variable
restores its own slice, from a checkpoint of any partitioning. The
``tf1_saver`` fixtures hold ``embedding`` [6, 3] saved by TensorFlow from a
variable partitioned in two (README.md next to the fixtures).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from fixtures.tf import tfcases
from fixtures.tf.tfcases import ExpectedCheckpoint
from trackpoint.errors import NameConflictError, NotTrackableError, ShapeMismatchError, TrackableError

TF1 = tfcases.checkpoints("tf1_saver")
FULL_SHAPE = (6, 3)


def _part(offset: int, rows: int, *, full_name: str = "embedding", full_shape: Any = FULL_SHAPE) -> tp.Variable:
    """A zero Variable holding rows ``offset .. offset + rows`` of ``full_name``."""
    shape = (rows, *full_shape[1:])
    info = tp.SaveSliceInfo(full_name, full_shape, [offset, *[0] * (len(full_shape) - 1)], shape)
    return tp.Variable(np.zeros(shape, np.float32), name=f"{full_name}/part_{offset}", save_slice_info=info)


def _embedding(prefix: str) -> np.ndarray[Any, Any]:
    with tp.load_checkpoint(prefix) as reader:
        value: np.ndarray[Any, Any] = reader.get_tensor("embedding")
    return value


def _filled(parts: list[tp.Variable], table: np.ndarray[Any, Any]) -> list[tp.Variable]:
    for p in parts:
        info = p.save_slice_info
        assert info is not None
        p.assign(table[info.slice.index])
    return parts


# ------------------------------------------------------------------ restore
@pytest.mark.parametrize("sequential", [False, True])
@pytest.mark.parametrize("c", TF1, ids=repr)
def test_listed_partitions_restore_their_slices_of_a_tf1_checkpoint(c: ExpectedCheckpoint, sequential: bool) -> None:
    p0, p1 = _part(0, 3), _part(3, 3)
    kernel = tp.Variable(np.zeros((3, 2), np.float32), name="dense/kernel")
    tp.Saver([p1, kernel, p0], restore_sequentially=sequential).restore(c.prefix)
    want = _embedding(c.prefix)
    assert want.shape == FULL_SHAPE
    np.testing.assert_array_equal(p0.numpy(), want[:3])
    np.testing.assert_array_equal(p1.numpy(), want[3:])
    np.testing.assert_array_equal(kernel.numpy(), c.tensor("dense/kernel"))


def test_dict_with_a_list_of_partitions_restores_them() -> None:
    prefix = TF1[-1].prefix
    p0, p1 = _part(0, 3), _part(3, 3)
    tp.Saver({"embedding": [p1, p0]}).restore(prefix)  # any order
    want = _embedding(prefix)
    np.testing.assert_array_equal(p0.numpy(), want[:3])
    np.testing.assert_array_equal(p1.numpy(), want[3:])


def test_partitions_of_another_partitioning_read_across_the_stored_slices() -> None:
    # TensorFlow stored rows 0-2 and 3-5; these cut through both, and one cuts columns too.
    prefix = TF1[-1].prefix
    rows = [_part(0, 2), _part(2, 3), _part(5, 1)]
    info = tp.SaveSliceInfo("embedding", FULL_SHAPE, [1, 1], [4, 2])
    block = tp.Variable(np.zeros((4, 2), np.float32), name="block", save_slice_info=info)
    tp.Saver({"embedding": rows}).restore(prefix)
    tp.Saver({"embedding": [block]}).restore(prefix)
    want = _embedding(prefix)
    np.testing.assert_array_equal(np.concatenate([p.numpy() for p in rows]), want)
    np.testing.assert_array_equal(block.numpy(), want[1:5, 1:3])


def test_a_partition_alone_in_a_dict_reads_its_slice_of_the_whole_tensor() -> None:
    prefix = TF1[-1].prefix
    p1 = _part(3, 3)
    tp.Saver({"embedding": p1}).restore(prefix)
    np.testing.assert_array_equal(p1.numpy(), _embedding(prefix)[3:])


def test_a_partition_alone_in_a_dict_is_saved_whole_as_in_tensorflow(tmp_path: Path) -> None:
    p1 = _part(3, 3)
    p1.assign(np.full((3, 3), 4.0, np.float32))
    prefix = tp.Saver({"p1": p1}).save(str(tmp_path / "m"))
    assert prefix is not None
    assert tp.list_variables(prefix) == [("p1", [3, 3])]
    p1.assign(np.zeros((3, 3), np.float32))
    tp.Saver({"p1": p1}).restore(prefix)
    np.testing.assert_array_equal(p1.numpy(), np.full((3, 3), 4.0))


def test_restore_of_partitions_checks_every_variable_before_writing_any() -> None:
    p0 = _part(0, 3)
    wrong = _part(3, 3, full_name="embedding", full_shape=(6, 3))
    other = _part(0, 4, full_name="other", full_shape=(8, 3))
    saver = tp.Saver({"embedding": [p0, wrong], "dense/kernel": other})
    with pytest.raises(
        ShapeMismatchError,
        match=r"'dense/kernel'.*has shape \(3, 2\).*\(4, 3\) \(a slice of a tensor of shape \(8, 3\)\)",
    ):
        saver.restore(TF1[-1].prefix)
    np.testing.assert_array_equal(p0.numpy(), np.zeros((3, 3)))  # "dense/kernel" sorts first; p0 not written


def test_partition_of_a_tensor_of_another_shape_is_refused() -> None:
    p0, p1 = _part(0, 4, full_shape=(8, 3)), _part(4, 4, full_shape=(8, 3))
    with pytest.raises(ShapeMismatchError, match=r"has shape \(6, 3\).*holds the slice '8 3 0,4:0,3' of a tensor"):
        tp.Saver([p0, p1]).restore(TF1[-1].prefix)
    np.testing.assert_array_equal(p0.numpy(), np.zeros((4, 3)))


# --------------------------------------------------------------------- save
@pytest.mark.parametrize("sharded", [False, True])
@pytest.mark.parametrize("where", ["bundle", "memory"])
def test_saved_partitions_are_one_tensor_and_round_trip(tmp_path: Path, where: str, sharded: bool) -> None:
    root = str(tmp_path) if where == "bundle" else "memory://saver-slices"
    table = np.arange(18, dtype=np.float32).reshape(FULL_SHAPE)
    p0, p1 = _filled([_part(0, 3), _part(3, 3)], table)
    step = tp.Variable(np.int64(5), name="global_step")
    prefix = tp.Saver([p0, step, p1], sharded=sharded).save(f"{root}/m")
    assert prefix is not None
    assert tp.list_variables(prefix) == [("embedding", [6, 3]), ("global_step", [])]
    np.testing.assert_array_equal(_embedding(prefix), table)

    q0, q1 = _part(0, 3), _part(3, 3)
    tp.Saver({"embedding": [q0, q1]}).restore(prefix)
    np.testing.assert_array_equal(q0.numpy(), table[:3])
    np.testing.assert_array_equal(q1.numpy(), table[3:])
    whole = tp.Variable(np.zeros(FULL_SHAPE, np.float32), name="embedding")
    tp.Saver([whole]).restore(prefix)
    np.testing.assert_array_equal(whole.numpy(), table)


def test_saved_partitions_restore_through_checkpoint_by_name(tmp_path: Path) -> None:
    # The name-based Checkpoint restore keys a slice by full_name too (docs/slices.md).
    table = np.arange(18, dtype=np.float32).reshape(FULL_SHAPE)
    prefix = tp.Saver(_filled([_part(0, 2), _part(2, 4)], table)).save(str(tmp_path / "m"))
    assert prefix is not None
    model: Any = tp.AutoTrackable()
    model.parts = [_part(0, 3), _part(3, 3)]
    tp.Checkpoint(model=model).restore(prefix).assert_consumed()
    np.testing.assert_array_equal(np.concatenate([p.numpy() for p in model.parts]), table)


def test_dict_name_keys_the_partitions_whatever_their_full_name(tmp_path: Path) -> None:
    # TensorFlow keys a list of slices by its dict name; the slices need only agree among themselves.
    table = np.arange(18, dtype=np.float32).reshape(FULL_SHAPE)
    prefix = tp.Saver({"old/embedding": _filled([_part(0, 3), _part(3, 3)], table)}).save(str(tmp_path / "m"))
    assert prefix is not None
    assert tp.list_variables(prefix) == [("old/embedding", [6, 3])]
    np.testing.assert_array_equal(tp.load_variable(prefix, "old/embedding"), table)


@pytest.mark.parametrize(
    ("rows", "match"),
    [
        ([(0, 3), (2, 4)], r"the slices '6 3 0,3:0,3' and '6 3 2,4:0,3' of 'embedding' overlap"),
        ([(0, 3), (3, 2)], r"the slices saved for 'embedding' cover 15 of its 18 elements"),
    ],
    ids=["overlap", "gap"],
)
@pytest.mark.parametrize("where", ["bundle", "memory"])
def test_save_refuses_slices_that_do_not_tile_the_tensor(
    tmp_path: Path, where: str, rows: list[tuple[int, int]], match: str
) -> None:
    root = str(tmp_path) if where == "bundle" else "memory://saver-slices"
    saver = tp.Saver([_part(offset, n) for offset, n in rows])
    # The class the object-based path's commits raise (trackpoint.storage.check_coverage), before any write.
    with pytest.raises(TrackableError, match=rf"Saver.save of '.*/m': {match}.*held by Variables 'embedding/part_0'"):
        saver.save(f"{root}/m")
    assert tp.latest_checkpoint(root) is None
    assert not list(tmp_path.iterdir())


def test_save_refuses_a_partial_list_of_partitions(tmp_path: Path) -> None:
    # TensorFlow restores a subset of the slices; it can save one too, but a checkpoint with a gap
    # cannot be read back whole, so trackpoint refuses it as for every other save.
    p1 = _part(3, 3)
    saver = tp.Saver({"embedding": [p1]})
    saver.restore(TF1[-1].prefix)
    np.testing.assert_array_equal(p1.numpy(), _embedding(TF1[-1].prefix)[3:])
    with pytest.raises(tp.IncompletePartitionError, match="cover 9 of its 18 elements"):
        saver.save(str(tmp_path / "m"))


# ------------------------------------------------------------- bad var_list
def test_partitions_disagreeing_on_the_full_name_are_refused() -> None:
    with pytest.raises(TrackableError, match=r"Slices must all be from the same tensor.*\['embedding', 'other'\]"):
        tp.Saver({"embedding": [_part(0, 3), _part(3, 3, full_name="other")]})


@pytest.mark.parametrize("as_dict", [False, True])
def test_partitions_disagreeing_on_the_full_shape_are_refused(as_dict: bool) -> None:
    parts = [_part(0, 3), _part(3, 3, full_shape=(7, 3))]
    var_list: Any = {"embedding": parts} if as_dict else parts
    with pytest.raises(
        TrackableError, match=r"slices saved for 'embedding' disagree on the full shape: \[\(6, 3\), \(7, 3\)\]"
    ):
        tp.Saver(var_list)


def test_mixing_a_partition_and_a_plain_variable_under_one_name_is_refused() -> None:
    plain = tp.Variable(np.zeros(FULL_SHAPE, np.float32), name="embedding")
    for var_list in ([plain, _part(0, 3), _part(3, 3)], [_part(0, 3), plain, _part(3, 3)]):
        with pytest.raises(NameConflictError, match="Mixing slices and non-slices with the same name: 'embedding'"):
            tp.Saver(var_list)
    with pytest.raises(TrackableError, match=r"Slices must all be slices: Variable 'embedding'.*no save_slice_info"):
        tp.Saver({"embedding": [_part(0, 3), plain]})


def test_bad_partition_lists_are_refused() -> None:
    p0 = _part(0, 3)
    with pytest.raises(NotTrackableError, match="Slices must all be Variables.*got ndarray"):
        tp.Saver({"embedding": [p0, np.zeros((3, 3), np.float32)]})
    with pytest.raises(NameConflictError, match="saved twice among the slices of 'embedding'"):
        tp.Saver({"embedding": [p0, p0]})
    with pytest.raises(NameConflictError, match="under two names: 'a' and 'embedding'"):
        tp.Saver({"embedding": [p0], "a": p0})
    with pytest.raises(TrackableError, match=r"var_list\['embedding'\] is an empty list"):
        tp.Saver({"embedding": []})
