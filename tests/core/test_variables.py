"""Variable: construction, dtype inference, assignment rules and the array protocol."""

from __future__ import annotations

import numpy as np
import pytest

import trackpoint as tp


def test_python_values_follow_tensorflow_inference() -> None:
    assert tp.Variable(1.0).dtype == np.float32
    assert tp.Variable([1, 2]).dtype == np.int32
    assert tp.Variable(2**40).dtype == np.int64
    assert tp.Variable(True).dtype == np.bool_
    assert tp.Variable(1 + 2j).dtype == np.complex128
    assert tp.Variable("héllo").dtype == tp.string
    assert tp.Variable(np.zeros(3, np.float64)).dtype == np.float64


def test_strings_are_object_arrays_of_utf8_bytes() -> None:
    v = tp.Variable(["a", b"b", "é", ""])
    assert v.dtype == tp.string
    assert list(v.numpy()) == [b"a", b"b", "é".encode(), b""]
    v.assign(["x", "y", "z", "w"])
    assert v.numpy()[3] == b"w"


def test_value_is_owned_and_c_contiguous() -> None:
    source = np.arange(12, dtype=np.float32).reshape(3, 4).T
    v = tp.Variable(source)
    source[0, 0] = 100
    assert v.value.flags.c_contiguous
    assert v.numpy()[0, 0] == 0


def test_value_view_is_read_only_and_follows_assign() -> None:
    v = tp.Variable([1.0, 2.0])
    view = v.value
    with pytest.raises(ValueError, match="read-only"):
        view[0] = 5
    v.assign([3.0, 4.0])
    np.testing.assert_array_equal(view, [3.0, 4.0])


def test_numpy_returns_a_copy() -> None:
    v = tp.Variable([1.0, 2.0])
    copy = v.numpy()
    copy[0] = 9
    assert v.numpy()[0] == 1.0
    np.testing.assert_array_equal(np.asarray(v), [1.0, 2.0])
    np.testing.assert_array_equal(v.read_value(), [1.0, 2.0])


def test_assign_add_and_sub() -> None:
    v = tp.Variable([1.0, 2.0])
    v.assign_add([1.0, 1.0]).assign_sub(np.array([0.5, 0.5], np.float32))
    np.testing.assert_array_equal(v.numpy(), [1.5, 2.5])


def test_assign_refuses_array_of_other_dtype_and_keeps_value() -> None:
    v = tp.Variable([1.0, 2.0])
    with pytest.raises(tp.DTypeMismatchError, match=r"expected an array of dtype float32, got float64"):
        v.assign(np.array([5.0, 6.0]))
    np.testing.assert_array_equal(v.numpy(), [1.0, 2.0])


def test_assign_refuses_lossy_python_data() -> None:
    v = tp.Variable([1, 2])
    with pytest.raises(tp.DTypeMismatchError, match="cannot convert"):
        v.assign([1.5, 2.0])
    small = tp.Variable(np.zeros(2, np.int8))
    with pytest.raises(tp.DTypeMismatchError, match="does not fit in dtype int8"):
        small.assign([1, 300])
    np.testing.assert_array_equal(v.numpy(), [1, 2])
    np.testing.assert_array_equal(small.numpy(), [0, 0])


def test_assign_shape_mismatch_keeps_value() -> None:
    v = tp.Variable([1.0, 2.0], name="w")
    with pytest.raises(
        tp.ShapeMismatchError, match=r"Variable 'w': value has shape \(3,\), the variable has shape \(2,\)"
    ):
        v.assign([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(v.numpy(), [1.0, 2.0])


def test_arithmetic_on_strings_and_bools_is_refused() -> None:
    with pytest.raises(tp.DTypeMismatchError, match="assign_add on Variable 'Variable': not defined for dtype bool"):
        tp.Variable([True]).assign_add([True])
    with pytest.raises(tp.DTypeMismatchError, match="not defined for dtype string"):
        tp.Variable("a").assign_sub("b")


@pytest.mark.parametrize(
    "value",
    [
        np.array(["2020-01-01"], dtype="datetime64[D]"),
        np.zeros(2, dtype=[("a", "i4")]),
        np.array([object()], dtype=object),
        np.zeros(2, dtype=np.longdouble) if np.dtype(np.longdouble).itemsize > 8 else np.zeros(2, dtype="M8[s]"),
    ],
)
def test_unsupported_dtypes(value: np.ndarray) -> None:
    with pytest.raises(tp.UnsupportedDTypeError):
        tp.Variable(value)


def test_explicit_dtype_converts_only_losslessly() -> None:
    assert tp.Variable(np.zeros(2), dtype=np.float32).dtype == np.float32
    with pytest.raises(tp.DTypeMismatchError, match="would change values"):
        tp.Variable(np.array([0.1]), dtype=np.float16)


def test_shape_argument_is_checked() -> None:
    with pytest.raises(tp.ShapeMismatchError, match=r"initial value has shape \(2,\), but shape \(3,\) was given"):
        tp.Variable([1.0, 2.0], shape=(3,))


def test_callable_initial_value_and_repr() -> None:
    v = tp.Variable(lambda: np.ones(2, np.float32), name="ones")
    assert repr(v).startswith("<trackpoint.Variable 'ones' shape=(2,) dtype=float32, numpy=array([1., 1.]")
    assert v.name == "ones" and v.shape == (2,) and v.trainable


def test_bfloat16_variable() -> None:
    v = tp.Variable(np.array([1.5, -2.0], dtype=tp.bfloat16))
    assert v.dtype == tp.bfloat16
    v.assign([2.5, 3.0])
    assert v.numpy().astype(np.float32).tolist() == [2.5, 3.0]
