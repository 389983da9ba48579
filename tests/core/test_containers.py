"""Numpy values in tracked containers and AutoTrackable attributes are saved, or refused; never skipped."""

from __future__ import annotations

import decimal
from collections import namedtuple
from typing import Any

import numpy as np
import pytest

import trackpoint as tp

VALUE = "/.ATTRIBUTES/VARIABLE_VALUE"


def keys(path: str) -> list[str]:
    # Without the object graph, and the types of the Python numbers saved (docs/format.md).
    graph_and_types = ("_CHECKPOINTABLE_OBJECT_GRAPH", "_TRACKPOINT_PYTHON_NUMBERS")
    return [name for name, _ in tp.list_variables(path) if name not in graph_and_types]


def test_dict_of_arrays_round_trip_in_place() -> None:
    w = np.ones(3)
    ckpt = tp.Checkpoint(params={"w": w, "b": np.full(2, 2.0, np.float32)})
    assert isinstance(ckpt.params["w"], np.ndarray)
    assert ckpt.params["w"] is w  # the container keeps the user's array
    path = ckpt.save("memory://c/ckpt")
    assert keys(path) == ["params/b" + VALUE, "params/w" + VALUE, "save_counter" + VALUE]

    w[:] = 7.0  # changed after the save; the restore brings the saved value back in place
    status = ckpt.restore(path)
    status.assert_consumed()
    np.testing.assert_array_equal(w, np.ones(3))

    fresh_w = np.zeros(3)
    fresh = tp.Checkpoint(params={"w": fresh_w, "b": np.zeros(2, np.float32)})
    fresh.restore(path).assert_consumed()
    np.testing.assert_array_equal(fresh_w, np.ones(3))
    np.testing.assert_array_equal(fresh.params["b"], [2.0, 2.0])


def test_in_place_updates_after_wrapping_are_saved() -> None:
    w = np.zeros(2)
    ckpt = tp.Checkpoint(params={"w": w})
    w += 5.0
    path = ckpt.write("memory://c/inplace")
    with tp.load_checkpoint(path) as reader:
        np.testing.assert_array_equal(reader.get_tensor("params/w" + VALUE), [5.0, 5.0])


def test_missing_or_extra_values_fail_the_assertions() -> None:
    path = tp.Checkpoint(params={"w": np.ones(3), "b": np.ones(2)}).save("memory://c/ckpt")
    fewer = tp.Checkpoint(params={"w": np.zeros(3)})
    status = fewer.restore(path)
    status.assert_existing_objects_matched()
    with pytest.raises(tp.MatchError, match=r"params\.b"):
        status.assert_consumed()
    more = tp.Checkpoint(params={"w": np.zeros(3), "b": np.zeros(2), "extra": np.zeros(1)})
    with pytest.raises(tp.MatchError, match=r"params\.extra"):
        more.restore(path).assert_existing_objects_matched()


def test_lists_tuples_nesting_and_scalars() -> None:
    Pair = namedtuple("Pair", ["a", "b"])
    ckpt = tp.Checkpoint(
        layers=[{"w": np.full((2, 2), 3.0), "stats": (np.int64(4), np.float32(0.5))}],
        pair=Pair(np.arange(3), np.bool_(True)),
    )
    path = ckpt.save("memory://c/ckpt")
    assert "layers/0/stats/1" + VALUE in keys(path)

    fresh = tp.Checkpoint(
        layers=[{"w": np.zeros((2, 2)), "stats": (np.int64(0), np.float32(0.0))}],
        pair=Pair(np.zeros(3, np.int64), np.bool_(False)),
    )
    fresh.restore(path).assert_consumed()
    np.testing.assert_array_equal(fresh.layers[0]["w"], np.full((2, 2), 3.0))
    # Numpy scalars are immutable: the container now hands out the restored value, of the same type.
    step, rate = fresh.layers[0]["stats"]
    assert (step, type(step)) == (4, np.int64)
    assert (rate, type(rate)) == (0.5, np.float32)
    assert fresh.pair.b is np.True_ and fresh.pair[1] is np.True_
    np.testing.assert_array_equal(fresh.pair.a, [0, 1, 2])


def test_read_only_array_is_replaced_by_the_restored_value() -> None:
    frozen = np.ones(2)
    frozen.flags.writeable = False
    path = tp.Checkpoint(table=[frozen]).save("memory://c/ckpt")
    target = np.zeros(2)
    target.flags.writeable = False
    fresh = tp.Checkpoint(table=[target])
    fresh.restore(path).assert_consumed()
    np.testing.assert_array_equal(target, [0.0, 0.0])  # untouched: it cannot be written
    np.testing.assert_array_equal(fresh.table[0], [1.0, 1.0])
    assert not fresh.table[0].flags.writeable


def test_views_and_byte_order_restore_in_place() -> None:
    base = np.zeros(6)
    view = base[::2]
    big = np.zeros(2, dtype=">f4")
    path = tp.Checkpoint(v={"x": np.array([1.0, 2.0, 3.0]), "y": np.array([4.0, 5.0], "<f4")}).save("memory://c/ckpt")
    tp.Checkpoint(v={"x": view, "y": big}).restore(path).assert_consumed()
    np.testing.assert_array_equal(base, [1.0, 0.0, 2.0, 0.0, 3.0, 0.0])
    np.testing.assert_array_equal(big, [4.0, 5.0])
    assert dict(tp.list_variables(path))["v/y" + VALUE] == [2]


def test_restore_on_create_in_containers() -> None:
    path = tp.Checkpoint(params={"w": np.full(3, 9.0)}, seq=[np.ones(1), np.full(1, 2.0)]).save("memory://c/ckpt")
    ckpt = tp.Checkpoint(params={}, seq=[])
    status = ckpt.restore(path)
    w = np.zeros(3)
    ckpt.params["w"] = w
    np.testing.assert_array_equal(w, np.full(3, 9.0))
    ckpt.seq.append(np.zeros(1))
    ckpt.seq.append(np.zeros(1))
    assert ckpt.seq[1][0] == 2.0
    status.assert_consumed()


def test_shape_or_dtype_mismatch_raises_before_anything_changes() -> None:
    path = tp.Checkpoint(params={"a": np.ones(2), "b": np.ones(3)}).save("memory://c/ckpt")
    a = np.zeros(2)
    with pytest.raises(tp.ShapeMismatchError, match=r"params/b/\.ATTRIBUTES/VARIABLE_VALUE.*shape \(3,\).*\(4,\)"):
        tp.Checkpoint(params={"a": a, "b": np.zeros(4)}).restore(path)
    with pytest.raises(tp.DTypeMismatchError, match="float64.*int64"):
        tp.Checkpoint(params={"a": a, "b": np.zeros(3, np.int64)}).restore(path)
    np.testing.assert_array_equal(a, [0.0, 0.0])


def test_autotrackable_numpy_attributes_are_saved_where_a_variable_would_be() -> None:
    class Model(tp.AutoTrackable):
        def __init__(self, value: float) -> None:
            self.w = np.full(3, value)
            self.best = np.float64(value)
            self.sizes = [64, 128]  # plain Python values: configuration, not saved
            self.name = "model"

    saved = Model(1.5)
    path = tp.Checkpoint(model=saved).save("memory://c/ckpt")
    assert keys(path) == ["model/best" + VALUE, "model/w" + VALUE, "save_counter" + VALUE]

    fresh = Model(0.0)
    w = fresh.w
    tp.Checkpoint(model=fresh).restore(path).assert_consumed()
    assert fresh.w is w
    np.testing.assert_array_equal(w, np.full(3, 1.5))
    assert fresh.best == 1.5 and type(fresh.best) is np.float64

    # The same keys as Variables in those places: the checkpoints are interchangeable.
    class VariableModel(tp.AutoTrackable):
        def __init__(self) -> None:
            self.w = tp.Variable(np.zeros(3))
            self.best = tp.Variable(np.float64(0.0))

    as_variables = VariableModel()
    tp.Checkpoint(model=as_variables).restore(path).assert_consumed()
    np.testing.assert_array_equal(as_variables.w.numpy(), np.full(3, 1.5))
    back = Model(0.0)
    tp.Checkpoint(model=back).restore(tp.Checkpoint(model=as_variables).save("memory://c/vars")).assert_consumed()
    np.testing.assert_array_equal(back.w, np.full(3, 1.5))


def test_restore_on_create_of_a_numpy_scalar_attribute() -> None:
    class Holder(tp.AutoTrackable):
        pass

    saved = Holder()
    saved.step = np.int64(42)
    path = tp.Checkpoint(h=saved).save("memory://c/ckpt")
    fresh = Holder()
    status = tp.Checkpoint(h=fresh).restore(path)
    fresh.step = np.int64(0)  # the waiting value replaces it on assignment
    assert fresh.step == 42 and type(fresh.step) is np.int64
    status.assert_consumed()
    fresh.step = fresh.step + 1  # a new value is tracked again under the same name
    again = tp.Checkpoint(h=fresh).save("memory://c/again")
    with tp.load_checkpoint(again) as reader:
        assert reader.get_tensor("h/step" + VALUE) == 43


def test_checkpoint_keyword_can_be_an_array() -> None:
    w = np.ones(2)
    path = tp.Checkpoint(w=w).save("memory://c/ckpt")
    target = np.zeros(2)
    tp.Checkpoint(w=target).restore(path).assert_consumed()
    np.testing.assert_array_equal(target, [1.0, 1.0])


def test_checkpoint_containers_refuse_values_they_would_not_save() -> None:
    with pytest.raises(tp.TrackableError, match=r"Checkpoint\.params\['act'\] is 'relu' \(str\).*NoDependency"):
        tp.Checkpoint(params={"w": np.ones(3), "act": "relu"})
    with pytest.raises(tp.TrackableError, match=r"Checkpoint\.layers\[1\]\['fn'\] is <built-in function len>"):
        tp.Checkpoint(layers=[{}, {"fn": len}])
    # None holds nothing to save: it is kept, as an empty subtree is by JAX.
    assert tp.Checkpoint(layers=[{"fn": None}]).layers[0]["fn"] is None
    ckpt = tp.Checkpoint(params={"w": np.ones(3)})
    with pytest.raises(tp.TrackableError, match=r"Checkpoint\.params\['step'\] is Decimal\('3\.0'\) \(Decimal\)"):
        ckpt.params["step"] = decimal.Decimal("3.0")
    with pytest.raises(tp.TrackableError, match=r"Checkpoint\.note is 'x'"):
        ckpt.note = "x"
    with pytest.raises(tp.TrackableError, match=r"Checkpoint\.big is 1180591620717411303424, which does not fit"):
        ckpt.big = 2**70
    # An explicit opt-out is fine, and saves nothing.
    ckpt.params["lr"] = tp.NoDependency("0.1")
    assert ckpt.params["lr"] == "0.1"
    assert keys(ckpt.write("memory://c/ckpt")) == ["params/w" + VALUE]


def test_python_numbers_given_to_a_checkpoint_are_saved_and_come_back_as_python_numbers() -> None:
    ckpt = tp.Checkpoint(epoch=3, params={"w": np.ones(2), "lr": 0.25, "flags": [True, 7]}, pair=(1, 2.5))
    ckpt.epoch = 4  # assigned again later: the new value is saved
    path = ckpt.save("memory://c/numbers")
    assert keys(path) == [
        "epoch" + VALUE,
        "pair/0" + VALUE,
        "pair/1" + VALUE,
        "params/flags/0" + VALUE,
        "params/flags/1" + VALUE,
        "params/lr" + VALUE,
        "params/w" + VALUE,
        "save_counter" + VALUE,
    ]
    target = tp.Checkpoint(epoch=0, params={"w": np.zeros(2), "lr": 0.0, "flags": [False, 0]}, pair=(0, 0.0))
    target.restore(path).assert_consumed()
    assert (target.epoch, target.params["lr"], list(target.params["flags"]), target.pair) == (
        4,
        0.25,
        [True, 7],
        (1, 2.5),
    )
    assert [type(v) for v in (target.epoch, target.params["lr"], *target.params["flags"], *target.pair)] == [
        int,
        float,
        bool,
        int,
        int,
        float,
    ]
    # Any integer restores into an int (a TensorFlow int32 step), but not a float or an array.
    tp.Checkpoint(epoch=np.int32(9)).write("memory://c/int32")
    as_int = tp.Checkpoint(epoch=0)
    as_int.read("memory://c/int32").assert_consumed()
    assert as_int.epoch == 9 and type(as_int.epoch) is int
    tp.Checkpoint(epoch=1.5).write("memory://c/float")
    with pytest.raises(tp.DTypeMismatchError, match=r"into the Python int 'epoch': the checkpoint holds float64"):
        tp.Checkpoint(epoch=0).read("memory://c/float")


def test_python_numbers_on_autotrackable_attributes_stay_configuration() -> None:
    model = tp.AutoTrackable()
    model.lr = 0.1
    model.sizes = {"hidden": 64}
    assert keys(tp.Checkpoint(model=model).write("memory://c/config")) == []


def test_autotrackable_containers_keep_python_values_unsaved() -> None:
    model = tp.AutoTrackable()
    model.config = {"sizes": [64, 128], "act": "relu", "fn": len, "w": np.ones(1)}
    assert model.config["sizes"] == [64, 128]
    assert keys(tp.Checkpoint(model=model).write("memory://c/ckpt")) == ["model/config/w" + VALUE]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (np.array(["a", "b"]), r"dtype <U1 are not saved.*trackpoint\.Variable\(value, dtype=trackpoint\.string\)"),
        (np.array([object()], dtype=object), "dtype object are not saved"),
        (np.array(["2020-01-01"], dtype="datetime64[D]"), "dtype datetime64.*cannot be saved"),
        (np.ma.masked_array([1.0, 2.0], mask=[0, 1]), "masked array cannot be saved"),
    ],
)
def test_numpy_values_that_cannot_be_saved_are_refused_on_assignment(value: object, message: str) -> None:
    model = tp.AutoTrackable()
    with pytest.raises(tp.TrackableError, match=r"AutoTrackable\.x: .*" + message):
        model.x = value
    with pytest.raises(tp.TrackableError, match=r"AutoTrackable\.y\['k'\]: .*" + message):
        model.y = {"k": value}
    model.z = tp.NoDependency(value)  # the opt-out works for them too
    assert model._trackable_children() == {}


def test_tuples_of_python_numbers_in_a_checkpoints_containers_are_saved() -> None:
    ckpt = tp.Checkpoint(groups=[{"betas": (0.9, 0.999)}], pair={"a": (True, 4)}, empty={"e": ()})
    path = ckpt.write("memory://c/tuples")
    assert keys(path) == [
        "groups/0/betas/0" + VALUE,
        "groups/0/betas/1" + VALUE,
        "pair/a/0" + VALUE,
        "pair/a/1" + VALUE,
    ]
    target = tp.Checkpoint(groups=[{"betas": (0.0, 0.0)}], pair={"a": (False, 0)}, empty={"e": ()})
    target.read(path).assert_consumed()
    assert target.groups[0]["betas"] == (0.9, 0.999) and target.pair["a"] == (True, 4)


def test_a_uint64_beyond_int64_restores_exactly_into_a_python_int() -> None:
    path = tp.Checkpoint(x=np.uint64(2**64 - 1)).write("memory://c/uint64")
    target = tp.Checkpoint(x=0)
    target.read(path).assert_consumed()
    assert target.x == 2**64 - 1  # not wrapped around to -1
    with pytest.raises(tp.TrackableError, match=r"Checkpoint\.x is 18446744073709551615, which does not fit in int64"):
        target.write("memory://c/uint64-again")


@pytest.mark.parametrize("kind", ["dict", "list", "through a tuple", "through another dict"])
def test_a_container_that_holds_itself_is_refused_by_name(kind: str) -> None:
    outer: Any
    if kind == "dict":
        outer = {"w": np.ones(1)}
        outer["self"] = outer
        where = r"Checkpoint\.x\['self'\]"
    elif kind == "list":
        outer = [np.ones(1)]
        outer.append(outer)
        where = r"Checkpoint\.x\[1\]"
    elif kind == "through a tuple":
        outer = [np.ones(1)]
        outer.append((np.ones(1), outer))
        where = r"Checkpoint\.x\[1\]\[1\]"
    else:
        outer = {"inner": {"w": np.ones(1)}}
        outer["inner"]["up"] = outer
        where = r"Checkpoint\.x\['inner'\]\['up'\]"
    with pytest.raises(tp.TrackableError, match=where + " is a (dict|list) that also holds it"):
        tp.Checkpoint(x=outer)


def test_a_container_held_twice_is_not_a_cycle(tmp_path: Any) -> None:
    shared = {"w": np.ones(2)}
    ckpt = tp.Checkpoint(x={"a": shared, "b": [shared, (shared, np.zeros(1))]})
    path = ckpt.write(str(tmp_path / "c"))
    assert "x/a/w" + VALUE in keys(path)

    trackable = tp.AutoTrackable()
    trackable.loop = {"me": trackable}  # a cycle through a trackable is an edge of the graph, not a wrap
    tp.Checkpoint(t=trackable).write(str(tmp_path / "d"))
