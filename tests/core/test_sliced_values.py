"""Slices of tensors: TensorSlice, SaveSliceInfo, sliced Variables and the storage contract's slice helpers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from trackpoint.storage import (
    CheckpointReader,
    TensorInfo,
    TensorSlice,
    WriteItem,
    assemble_slices,
    check_coverage,
    split_large,
)
from trackpoint.trackable import VARIABLE_VALUE_KEY, Trackable

FULL = np.arange(24, dtype=np.float32).reshape(6, 4)


class Partitioned(Trackable):
    """Holds a tensor as several slices under one attribute ({spec: array}, TensorFlow's form)."""

    def __init__(self, full: np.ndarray[Any, Any], cuts: list[tuple[int, int]]) -> None:
        self.parts = [
            (TensorSlice(full.shape, (a, *[0] * (full.ndim - 1)), (b - a, *full.shape[1:])), full[a:b].copy())
            for a, b in cuts
        ]

    def _serialize_to_tensors(self) -> dict[str, Any]:
        return {VARIABLE_VALUE_KEY: {s.spec: a for s, a in self.parts}}


# ------------------------------------------------------------------ TensorSlice
def test_spec_is_tensorflows_format_and_parses_back() -> None:
    s = TensorSlice((4, 3, 5), (0, 1, 3), (4, 1, 2))
    # The example of TensorFlow's SaveSliceInfo.from_spec docstring.
    assert s.spec == "4 3 5 0,4:1,1:3,2"
    assert TensorSlice.from_spec(s.spec) == s
    assert TensorSlice.from_spec("4 3 -:0,3") == TensorSlice((4, 3), (0, 0), (4, 3))


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("4,3", "not a slice spec"),
        ("4 3 0,4", "gives 1 slice dimensions for a shape of rank 2"),
        ("4 3 0,4:x", "neither '-' nor 'offset,length'"),
        ("4 3 0,5:0,3", "dimension 0 of the slice"),
    ],
)
def test_bad_specs_are_refused(spec: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TensorSlice.from_spec(spec)


def test_slice_outside_or_of_other_rank_is_refused() -> None:
    with pytest.raises(ValueError, match="same rank"):
        TensorSlice((4, 3), (0,), (4, 3))
    with pytest.raises(ValueError, match="dimension 1 of the slice"):
        TensorSlice((4, 3), (0, 2), (4, 2))


def test_intersect_and_within() -> None:
    a = TensorSlice((6, 4), (0, 0), (4, 4))
    b = TensorSlice((6, 4), (2, 1), (4, 2))
    both = a.intersect(b)
    assert both == TensorSlice((6, 4), (2, 1), (2, 2))
    assert both is not None and FULL[a.index][both.within(a)].tolist() == FULL[2:4, 1:3].tolist()
    assert a.intersect(TensorSlice((6, 4), (4, 0), (2, 4))) is None
    with pytest.raises(ValueError, match="does not lie inside"):
        b.within(a)


def test_check_coverage_names_overlap_and_gap() -> None:
    top = TensorSlice((6, 4), (0, 0), (3, 4))
    check_coverage("k", (6, 4), [top, TensorSlice((6, 4), (3, 0), (3, 4))], "here")
    with pytest.raises(tp.TrackableError, match=r"here: the slices '6 4 0,3:0,4' and '6 4 2,4:0,4' of 'k' overlap"):
        check_coverage("k", (6, 4), [top, TensorSlice((6, 4), (2, 0), (4, 4))], "here")
    with pytest.raises(tp.TrackableError, match=r"cover 12 of its 24 elements"):
        check_coverage("k", (6, 4), [top], "here")
    # Overlap in a later dimension only, found despite equal first-dimension ranges.
    left = TensorSlice((6, 4), (0, 0), (6, 3))
    with pytest.raises(tp.TrackableError, match="overlap"):
        check_coverage("k", (6, 4), [left, TensorSlice((6, 4), (0, 2), (6, 2))], "here")


# --------------------------------------------------------------- SaveSliceInfo
def test_save_slice_info_matches_tensorflow() -> None:
    info = tp.SaveSliceInfo("emb", full_shape=[4, 2], var_offset=[2, 0], var_shape=[2, 2])
    assert (info.full_name, info.full_shape, info.var_offset, info.var_shape) == ("emb", (4, 2), (2, 0), (2, 2))
    assert info.spec == "4 2 2,2:0,2"
    assert tp.SaveSliceInfo.from_spec(info.spec, "emb") == info
    with pytest.raises(ValueError, match="outside the full shape"):
        tp.SaveSliceInfo("emb", [4, 2], [3, 0], [2, 2])


def test_variable_checks_its_slice_shape() -> None:
    info = tp.SaveSliceInfo("emb", [6, 4], [2, 0], [2, 4])
    v = tp.Variable(np.zeros((2, 4), np.float32), save_slice_info=info)
    assert v.save_slice_info is info and v._get_save_slice_info() is info
    with pytest.raises(tp.ShapeMismatchError, match=r"declares a slice of shape \(2, 4\)"):
        tp.Variable(np.zeros((3, 4), np.float32), save_slice_info=info)
    with pytest.raises(TypeError, match="must be a trackpoint.SaveSliceInfo"):
        tp.Variable(np.zeros((2, 4)), save_slice_info="6 4 2,2:0,4")  # type: ignore[arg-type]


def test_write_item_checks_slice_shape() -> None:
    with pytest.raises(tp.ShapeMismatchError, match="its slice '6 4 0,2:0,4' has shape"):
        WriteItem("k", FULL[:3], TensorSlice((6, 4), (0, 0), (2, 4)))


# ------------------------------------------------------------- contract helpers
def test_split_large_cuts_rows_within_the_bound() -> None:
    items = [WriteItem("big", FULL), WriteItem("small", FULL[:1]), WriteItem("s", np.array([b"x" * 100], object))]
    out = split_large(items, 40)  # rows are 16 bytes: two per slice
    big = [it for it in out if it.key == "big"]
    assert [it.slice.spec for it in big if it.slice] == ["6 4 0,2:0,4", "6 4 2,2:0,4", "6 4 4,2:0,4"]
    assert all(it.array.nbytes <= 40 for it in big)
    assert [it.key for it in out[3:]] == ["small", "s"] and out[3].slice is None
    # A slice is cut within its own part of the tensor.
    part = WriteItem("p", FULL[2:6], TensorSlice((6, 4), (2, 0), (4, 4)))
    assert [it.slice.spec for it in split_large([part], 40) if it.slice] == ["6 4 2,2:0,4", "6 4 4,2:0,4"]
    assert split_large(items, None) == items


def test_assemble_slices_for_backends_without_them() -> None:
    items = [
        WriteItem("a", FULL[3:], TensorSlice((6, 4), (3, 0), (3, 4))),
        WriteItem("b", np.ones(2)),
        WriteItem("a", FULL[:3], TensorSlice((6, 4), (0, 0), (3, 4))),
    ]
    out = assemble_slices(items)
    assert [it.key for it in out] == ["a", "b"]
    np.testing.assert_array_equal(out[0].array, FULL)
    with pytest.raises(tp.TrackableError, match="cover 12 of its 24"):
        assemble_slices(items[:2])


class _WholeOnly(CheckpointReader):
    """A reader with only the required methods: read_slice takes the default path."""

    prefix = "mem"

    def keys(self) -> list[str]:
        return ["k"]

    def info(self, key: str) -> TensorInfo:
        return TensorInfo(FULL.dtype, FULL.shape)

    def read(self, key: str, out: np.ndarray[Any, Any] | None = None) -> np.ndarray[Any, Any]:
        return FULL.copy()


def test_default_read_slice_copies_out_of_the_whole_tensor() -> None:
    reader = _WholeOnly()
    np.testing.assert_array_equal(reader.read_slice("k", (1, 1), (2, 3)), FULL[1:3, 1:4])
    out = np.empty((2, 3), np.float32)
    assert reader.read_slice("k", (1, 1), (2, 3), out) is out
    np.testing.assert_array_equal(out, FULL[1:3, 1:4])
    with pytest.raises(ValueError, match="outside the full shape"):
        reader.read_slice("k", (5, 0), (2, 4))
    with pytest.raises(tp.ShapeMismatchError, match="into an array of shape"):
        reader.read_slice("k", (0, 0), (2, 4), np.empty((2, 3), np.float32))


# ---------------------------------------------------------- checkpoints (memory)
def test_memory_backend_saves_assembled_slices_and_restores_parts() -> None:
    """The memory backend has no slice support: the save assembles, restores cut parts out."""
    root = tp.AutoTrackable()
    root.v = Partitioned(FULL, [(0, 1), (1, 4), (4, 6)])
    path = tp.Checkpoint(model=root).write("memory://slices/whole")
    with tp.load_checkpoint(path) as reader:
        np.testing.assert_array_equal(reader.get_tensor("model/v/.ATTRIBUTES/VARIABLE_VALUE"), FULL)
    target = tp.AutoTrackable()
    target.v = tp.Variable(np.zeros((3, 2), np.float32), save_slice_info=tp.SaveSliceInfo("v", [6, 4], [2, 1], [3, 2]))
    tp.Checkpoint(model=target).read(path).assert_consumed()
    np.testing.assert_array_equal(target.v.numpy(), FULL[2:5, 1:3])


def test_sliced_variable_restores_on_create_and_checks_full_shape() -> None:
    root = tp.AutoTrackable()
    root.v = tp.Variable(FULL)
    path = tp.Checkpoint(model=root).write("memory://slices/roc")
    later = tp.AutoTrackable()
    status = tp.Checkpoint(model=later).read(path)
    later.v = tp.Variable(np.zeros((2, 4), np.float32), save_slice_info=tp.SaveSliceInfo("v", [6, 4], [4, 0], [2, 4]))
    np.testing.assert_array_equal(later.v.numpy(), FULL[4:])
    status.assert_consumed()
    wrong = tp.AutoTrackable()
    wrong.v = tp.Variable(np.zeros((2, 4), np.float32), save_slice_info=tp.SaveSliceInfo("v", [8, 4], [0, 0], [2, 4]))
    with pytest.raises(tp.ShapeMismatchError, match=r"is a slice of a tensor of shape \(8, 4\)"):
        tp.Checkpoint(model=wrong).read(path)
    np.testing.assert_array_equal(wrong.v.numpy(), 0)


def test_full_slice_is_saved_as_a_plain_value() -> None:
    root = tp.AutoTrackable()
    root.v = tp.Variable(FULL, save_slice_info=tp.SaveSliceInfo("v", [6, 4], [0, 0], [6, 4]))
    assert root.v._serialize_to_tensors()[VARIABLE_VALUE_KEY] is root.v._value


def test_bad_slice_spec_from_a_trackable_names_it() -> None:
    class Bad(Trackable):
        def _serialize_to_tensors(self) -> dict[str, Any]:
            return {VARIABLE_VALUE_KEY: {"6 4 0,2:0,4": FULL}}

    with pytest.raises(tp.TrackableError, match=r"Bad at 'b'.*has shape \(2, 4\), its value has shape \(6, 4\)"):
        tp.Checkpoint(b=Bad()).write("memory://slices/bad")


def test_name_based_restore_reads_the_slice_under_full_name() -> None:
    saver = tp.Saver({"emb": tp.Variable(FULL, name="emb")})
    path = saver.save("memory://slices/byname/ckpt")
    target = tp.AutoTrackable()
    target.part = tp.Variable(
        np.zeros((3, 4), np.float32), name="emb/part_1", save_slice_info=tp.SaveSliceInfo("emb", [6, 4], [3, 0], [3, 4])
    )
    tp.Checkpoint(model=target).read(path).assert_consumed()
    np.testing.assert_array_equal(target.part.numpy(), FULL[3:])


def test_several_sliced_variables_restore_in_one_step() -> None:
    root = tp.AutoTrackable()
    root.a, root.b = tp.Variable(FULL), tp.Variable(FULL * 2)
    target = tp.AutoTrackable()
    target.a = tp.Variable(np.zeros((2, 4), np.float32), save_slice_info=tp.SaveSliceInfo("a", [6, 4], [1, 0], [2, 4]))
    target.b = tp.Variable(np.zeros((6, 1), np.float32), save_slice_info=tp.SaveSliceInfo("b", [6, 4], [0, 3], [6, 1]))
    target.c = tp.Variable(np.zeros((6, 4), np.float32))
    root.c = tp.Variable(FULL + 1)
    path = tp.Checkpoint(model=root).write("memory://slices/several")
    tp.Checkpoint(model=target).read(path).assert_consumed()
    np.testing.assert_array_equal(target.a.numpy(), FULL[1:3])
    np.testing.assert_array_equal(target.b.numpy(), FULL[:, 3:] * 2)
    np.testing.assert_array_equal(target.c.numpy(), FULL + 1)


@pytest.mark.parametrize("scheme", ["", "zarr://"])
def test_the_slice_of_a_scalar_is_the_scalar(tmp_path: Any, scheme: str) -> None:
    """A 0-d tensor's only part has shape (); the bundle reader tried to read into a scalar copy."""
    path = tp.Checkpoint(step=tp.Variable(np.int64(7)), flag=tp.Variable(True)).write(f"{scheme}{tmp_path}/ckpt")
    with tp.load_checkpoint(path) as reader:
        assert reader.get_slice("step/.ATTRIBUTES/VARIABLE_VALUE", (), ()) == np.int64(7)
        assert bool(reader.get_slice("flag/.ATTRIBUTES/VARIABLE_VALUE", [], []))


def test_tensor_reader_get_slice() -> None:
    root = tp.AutoTrackable()
    root.v = tp.Variable(FULL)
    path = tp.Checkpoint(model=root).write("memory://slices/getslice")
    with tp.load_checkpoint(path) as reader:
        np.testing.assert_array_equal(
            reader.get_slice("model/v/.ATTRIBUTES/VARIABLE_VALUE", (2, 1), (3, 2)), FULL[2:5, 1:3]
        )
        with pytest.raises(tp.CheckpointKeyError, match="no tensor 'nope'"):
            reader.get_slice("nope", (0,), (1,))
