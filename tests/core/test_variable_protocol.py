"""Variable as an eager value (TensorFlow 2's Python protocol), and framework arrays as values.

The protocol: ``int(v)``, ``v % 10``, ``v == 6``, ``bool(v)``, ``v[0]``... act on the current value
and give numpy results, as eager ``tf.Variable`` gives tensors. Framework arrays (torch tensors, JAX
arrays, anything exposing ``__array__`` with a dtype) are arrays: they keep their dtype.
"""

from __future__ import annotations

import importlib.util
import operator
import pathlib
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import trackpoint as tp

# ------------------------------------------------------------------ scalars and truth


def test_python_scalars_of_the_value() -> None:
    step = tp.Variable(7)
    assert int(step) == 7 and type(int(step)) is int
    assert float(tp.Variable(2.5)) == 2.5
    assert complex(tp.Variable(1 + 2j)) == 1 + 2j
    assert operator.index(step) == 7
    assert list(range(tp.Variable(np.int64(3)))) == [0, 1, 2]
    assert [10, 20, 30][tp.Variable(np.uint8(1))] == 20


def test_format_spec_formats_the_value() -> None:
    loss = tp.Variable(1.23456, name="loss")
    assert f"{loss:.2f}" == "1.23"
    assert f"{loss}" == repr(loss)  # no spec: the repr, which names the variable


def test_index_only_for_integer_dtypes() -> None:
    with pytest.raises(TypeError):
        operator.index(tp.Variable(1.0))
    with pytest.raises(TypeError):
        operator.index(tp.Variable(True))


def test_int_of_a_multi_element_value_raises_as_numpy_does() -> None:
    with pytest.raises(TypeError):
        int(tp.Variable([1, 2]))


def test_tensorflow_checkpoint_guide_pattern() -> None:
    ckpt = tp.Checkpoint(step=tp.Variable(1))
    saved = []
    for _ in range(25):
        ckpt.step.assign_add(1)
        if int(ckpt.step) % 10 == 0:
            saved.append(int(ckpt.step))
    assert saved == [10, 20]
    assert ckpt.step % 10 == 6


@pytest.mark.parametrize(("value", "expected"), [(False, False), (True, True), (0, False), (3, True), ([0.0], False)])
def test_bool_is_the_truth_of_the_value(value: Any, expected: bool) -> None:
    assert bool(tp.Variable(value)) is expected
    assert (not tp.Variable(value)) is (not expected)


@pytest.mark.parametrize("value", [[True, False], np.zeros((0,), np.float32)])
def test_bool_of_several_or_no_elements_is_ambiguous(value: Any) -> None:
    with pytest.raises(ValueError, match="ambiguous"):
        bool(tp.Variable(value))


# ------------------------------------------------------------------ sequence protocol


def test_len_like_numpy() -> None:
    assert len(tp.Variable([1, 2, 3])) == 3
    assert len(tp.Variable(np.zeros((4, 2)))) == 4
    with pytest.raises(TypeError):
        len(tp.Variable(1.0))


def test_getitem_gives_a_numpy_copy_of_the_current_value() -> None:
    v = tp.Variable(np.arange(6, dtype=np.float32).reshape(2, 3))
    row = v[1]
    assert type(row) is np.ndarray and row.dtype == np.float32
    np.testing.assert_array_equal(row, [3, 4, 5])
    np.testing.assert_array_equal(v[:, 1:], [[1, 2], [4, 5]])
    np.testing.assert_array_equal(v[v > 3], [4, 5])
    assert v[0, 2] == 2 and isinstance(v[0, 2], np.float32)
    row[0] = 100  # the result is the caller's: the variable does not change
    v.assign(np.zeros((2, 3), np.float32))  # ... and the result does not follow later assignments
    np.testing.assert_array_equal(row, [100, 4, 5])
    assert v.numpy().sum() == 0
    with pytest.raises(IndexError):
        v[5]


def test_iteration_and_membership() -> None:
    v = tp.Variable([[1, 2], [3, 4]])
    rows = list(v)
    assert len(rows) == 2 and all(type(r) is np.ndarray for r in rows)
    np.testing.assert_array_equal(rows[1], [3, 4])
    assert 3 in v and 7 not in v
    with pytest.raises(TypeError):
        iter(tp.Variable(1))  # numpy: "iteration over a 0-d array"; never a silently empty loop


# ------------------------------------------------------------------ arithmetic

BINARY: list[Callable[[Any, Any], Any]] = [
    operator.add,
    operator.sub,
    operator.mul,
    operator.truediv,
    operator.floordiv,
    operator.mod,
    operator.pow,
    operator.lt,
    operator.le,
    operator.gt,
    operator.ge,
    operator.eq,
    operator.ne,
    operator.and_,
    operator.or_,
    operator.xor,
    divmod,
]


@pytest.mark.parametrize("op", BINARY, ids=lambda op: op.__name__)
def test_binary_operators_act_on_the_value(op: Callable[[Any, Any], Any]) -> None:
    data = np.array([3, 7, 10], np.int32)
    other = np.array([2, 7, 4], np.int32)
    v, w = tp.Variable(data), tp.Variable(other)
    cases = [(op(v, 3), op(data, 3)), (op(3, v), op(3, data)), (op(v, other), op(data, other))]
    cases += [(op(other, v), op(other, data)), (op(v, w), op(data, other))]
    for got, expected in cases:
        for g, e in zip(got, expected, strict=True) if op is divmod else [(got, expected)]:
            assert not isinstance(g, tp.Variable)
            assert isinstance(g, np.ndarray)
            assert g.dtype == e.dtype
            np.testing.assert_array_equal(g, e)


def test_matmul() -> None:
    m = np.arange(4.0).reshape(2, 2)
    v = tp.Variable(m)
    np.testing.assert_array_equal(v @ m, m @ m)
    np.testing.assert_array_equal(m @ v, m @ m)
    np.testing.assert_array_equal(v @ v, m @ m)


def test_scalar_arithmetic_keeps_the_variable_dtype() -> None:
    step = tp.Variable(5)  # int32, as in TensorFlow
    assert (step + 1).dtype == np.int32
    assert (step * 2) == 10
    assert (tp.Variable(1.5) * 2).dtype == np.float32
    assert (step / 2) == 2.5


@pytest.mark.parametrize(
    ("op", "value"),
    [(operator.neg, [1.0, -2.0]), (operator.pos, [1.0, -2.0]), (abs, [1.0, -2.0]), (operator.invert, [1, 6])],
    ids=["neg", "pos", "abs", "invert"],
)
def test_unary_operators(op: Callable[[Any], Any], value: list[Any]) -> None:
    data = np.array(value, np.float32 if isinstance(value[0], float) else np.int32)
    got = op(tp.Variable(data))
    assert type(got) is np.ndarray and got.dtype == data.dtype
    np.testing.assert_array_equal(got, op(data))


# ------------------------------------------------------------------ equality and hashing


def test_equality_is_elementwise() -> None:
    assert tp.Variable(6) == 6
    assert not (tp.Variable(6) != 6)
    assert tp.Variable(6) != 7
    np.testing.assert_array_equal(tp.Variable([1, 2, 3]) == [1, 5, 3], [True, False, True])
    np.testing.assert_array_equal(tp.Variable([1, 2]) != tp.Variable([1, 3]), [False, True])
    assert tp.Variable(["a", "b"])[1] == b"b"
    np.testing.assert_array_equal(tp.Variable(["a", "b"]) == b"a", [True, False])


def test_equality_with_none_and_incompatible_shapes_is_false() -> None:
    # As TensorFlow: ``v == None`` is False, and shapes that do not broadcast compare unequal.
    v = tp.Variable([1, 2])
    assert (v == None) is False  # noqa: E711 -- the operator itself is under test
    assert (v != None) is True  # noqa: E711
    assert not (v == [1, 2, 3])
    assert v != [1, 2, 3]


def test_variables_hash_by_identity() -> None:
    a, b = tp.Variable(0), tp.Variable(0)
    assert bool(a == b)  # equal values ...
    table = {a: "a", b: "b"}  # ... but distinct keys
    assert len(table) == 2 and table[a] == "a" and table[b] == "b"
    assert len({a, b, a}) == 2
    assert hash(a) == hash(a)


def test_equal_valued_variables_in_containers_save_and_restore(tmp_path: pathlib.Path) -> None:
    # Internals compare trackables by identity: equal values (and elementwise ==) change nothing.
    model = tp.AutoTrackable()
    model.layers = [tp.Variable(0.0), tp.Variable(0.0), tp.Variable(np.zeros(3)), tp.Variable(np.zeros(3))]
    model.named = {"x": tp.Variable(0.0), "y": tp.Variable(0.0)}
    prefix = tp.Checkpoint(model=model).write(str(tmp_path / "ck"))
    for i, layer in enumerate(model.layers):
        layer.assign(np.full(layer.shape, i + 1, layer.dtype))
    model.named["y"].assign(5.0)
    status = tp.Checkpoint(model=model).read(prefix)
    status.assert_consumed()
    assert [float(np.sum(layer)) for layer in model.layers] == [0.0, 0.0, 0.0, 0.0]
    assert model.named["y"] == 0.0
    assert len(tp.list_objects(model)) == 1 + 1 + 4 + 1 + 2


# ------------------------------------------------------------------ in-place operators


@pytest.mark.parametrize(
    ("op", "hint"),
    [
        (operator.iadd, r"v\.assign_add\(value\)"),
        (operator.isub, r"v\.assign_sub\(value\)"),
        (operator.imul, r"v\.assign\(v \* value\)"),
        (operator.itruediv, r"v\.assign\(v / value\)"),
        (operator.ifloordiv, r"v\.assign\(v // value\)"),
        (operator.imod, r"v\.assign\(v % value\)"),
        (operator.ipow, r"v\.assign\(v \*\* value\)"),
        (operator.imatmul, r"v\.assign\(v @ value\)"),
        (operator.iand, r"v\.assign\(v & value\)"),
        (operator.ior, r"v\.assign\(v \| value\)"),
        (operator.ixor, r"v\.assign\(v \^ value\)"),
    ],
    ids=lambda x: getattr(x, "__name__", ""),
)
def test_in_place_operators_refuse_and_point_to_assign(op: Callable[[Any, Any], Any], hint: str) -> None:
    step = tp.Variable(np.ones((2, 2), np.int64))
    with pytest.raises(TypeError, match=hint):
        op(step, 1)
    np.testing.assert_array_equal(step.numpy(), np.ones((2, 2)))


def test_augmented_assignment_keeps_the_attribute_tracked() -> None:
    ckpt = tp.Checkpoint(step=tp.Variable(0))
    with pytest.raises(TypeError, match="assign_add"):
        ckpt.step += 1
    assert isinstance(ckpt.step, tp.Variable)
    ckpt.step.assign_add(1)
    assert ckpt.step == 1


# ------------------------------------------------------------------ Python data


def test_non_rectangular_python_data_raises_a_trackpoint_error() -> None:
    with pytest.raises(tp.AssignmentError, match="non-rectangular") as info:
        tp.Variable([[1, 2], [3]])
    assert isinstance(info.value, ValueError)  # as TensorFlow's ValueError
    v = tp.Variable([[1, 2], [3, 4]])
    with pytest.raises(tp.AssignmentError, match="non-rectangular"):
        v.assign([[1, 2], [3]])
    with pytest.raises(tp.AssignmentError, match="non-rectangular"):
        tp.Variable([[1.0], [2.0, 3.0]], dtype=np.float64)


# ------------------------------------------------------------------ array-likes of other libraries


class DuckArray:
    """An array of another library: ``__array__`` plus ``dtype`` and ``shape`` (pandas, xarray...)."""

    def __init__(self, data: np.ndarray[Any, Any]) -> None:
        self._data = data

    @property
    def dtype(self) -> np.dtype[Any]:
        return self._data.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._data.shape)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray[Any, Any]:
        return self._data if dtype is None else self._data.astype(dtype)


def test_duck_arrays_keep_their_dtype() -> None:
    data = np.array([1 + 1e-12, 16777217.0])
    v = tp.Variable(DuckArray(data))
    assert v.dtype == np.float64
    np.testing.assert_array_equal(v.numpy(), data)
    assert tp.Variable(DuckArray(np.array([1, 2], np.int8))).dtype == np.int8
    with pytest.raises(tp.DTypeMismatchError, match="expected an array of dtype float32"):
        tp.Variable(np.zeros(2, np.float32)).assign(DuckArray(data))


def test_a_variable_as_initial_value_keeps_its_dtype() -> None:
    assert tp.Variable(tp.Variable(np.float64(1.5))).dtype == np.float64
    assert tp.Variable(tp.Variable(np.array([1, 2], np.uint16))).dtype == np.uint16


# ------------------------------------------------------------------ torch

PRECISE = [1 + 1e-12, 16777217.0]  # both change when rounded to float32


def test_torch_tensors_keep_dtype_and_values() -> None:
    torch = pytest.importorskip("torch")
    t64 = torch.tensor(PRECISE, dtype=torch.float64)
    v = tp.Variable(t64)
    assert v.dtype == np.float64
    np.testing.assert_array_equal(v.numpy(), np.array(PRECISE))
    assert tp.Variable(torch.ones(2, dtype=torch.float16)).dtype == np.float16
    assert tp.Variable(torch.tensor([-3, 4], dtype=torch.int8)).dtype == np.int8
    assert tp.Variable(torch.tensor([True, False])).dtype == np.bool_
    assert tp.Variable(torch.tensor(7, dtype=torch.int64)).shape == ()


def test_torch_bfloat16() -> None:
    torch = pytest.importorskip("torch")
    t = torch.tensor([1.5, -2.0, 3.140625], dtype=torch.bfloat16)
    v = tp.Variable(t)
    assert v.dtype == tp.bfloat16
    np.testing.assert_array_equal(v.numpy().astype(np.float32), t.float().numpy())
    v.assign(torch.tensor([0.5, 0.25, -1.0], dtype=torch.bfloat16))
    np.testing.assert_array_equal(v.numpy().astype(np.float32), [0.5, 0.25, -1.0])
    # A non-contiguous bfloat16 tensor (a transposed view) converts by value, not by memory layout.
    m = torch.arange(6, dtype=torch.float32).reshape(2, 3).to(torch.bfloat16).T
    np.testing.assert_array_equal(tp.Variable(m).numpy().astype(np.float32), m.float().numpy())


def test_torch_tensors_that_require_grad() -> None:
    torch = pytest.importorskip("torch")
    weight = torch.nn.Parameter(torch.tensor([0.5, 1.5], dtype=torch.float64))
    v = tp.Variable(weight)
    assert v.dtype == np.float64
    np.testing.assert_array_equal(v.numpy(), [0.5, 1.5])
    v.assign(weight * 2)
    np.testing.assert_array_equal(v.numpy(), [1.0, 3.0])
    assert weight.requires_grad and weight.grad is None


def test_torch_lazy_conjugate() -> None:
    torch = pytest.importorskip("torch")
    v = tp.Variable(torch.tensor([1 + 2j], dtype=torch.complex128).conj())
    assert v.dtype == np.complex128
    np.testing.assert_array_equal(v.numpy(), [1 - 2j])


def test_torch_assign_refuses_another_dtype() -> None:
    torch = pytest.importorskip("torch")
    v32 = tp.Variable(np.zeros(2, np.float32))
    with pytest.raises(tp.DTypeMismatchError, match="expected an array of dtype float32, got float64"):
        v32.assign(torch.tensor(PRECISE, dtype=torch.float64))
    np.testing.assert_array_equal(v32.numpy(), [0, 0])
    v64 = tp.Variable(np.zeros(2))
    v64.assign(torch.tensor(PRECISE, dtype=torch.float64))
    np.testing.assert_array_equal(v64.numpy(), PRECISE)
    v8 = tp.Variable(np.zeros(2, np.int8))
    v8.assign_add(torch.tensor([1, -1], dtype=torch.int8))
    np.testing.assert_array_equal(v8.numpy(), [1, -1])


def test_torch_with_dtype_converts_only_losslessly() -> None:
    torch = pytest.importorskip("torch")
    assert tp.Variable(torch.tensor([1, 2], dtype=torch.int8), dtype=np.int64).dtype == np.int64
    with pytest.raises(tp.DTypeMismatchError, match="would change values"):
        tp.Variable(torch.tensor(PRECISE, dtype=torch.float64), dtype=np.float32)


def test_torch_tensors_without_data_or_numpy_type_raise_trackpoint_errors() -> None:
    torch = pytest.importorskip("torch")
    with pytest.raises(tp.UnsupportedDTypeError, match="meta"):
        tp.Variable(torch.ones(2, device="meta"))
    with pytest.raises(tp.UnsupportedDTypeError, match="float8_e8m0fnu"):
        tp.Variable(torch.zeros(2, dtype=torch.float8_e8m0fnu))  # ml_dtypes has it, TensorFlow has no DataType


@pytest.mark.parametrize("name", ["float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz"])
def test_torch_float8(name: str) -> None:
    torch = pytest.importorskip("torch")
    import ml_dtypes

    t = torch.tensor([[1.5, -2.0], [0.25, 8.0]]).to(getattr(torch, name))
    v = tp.Variable(t.T)  # a transposed view converts by value
    assert v.dtype == np.dtype(getattr(ml_dtypes, name))
    np.testing.assert_array_equal(v.numpy().astype(np.float32), t.T.float().numpy())


def test_torch_tensors_on_another_device_are_copied_to_the_host() -> None:
    torch = pytest.importorskip("torch")
    copied: list[str] = []

    class OnDevice(torch.Tensor):  # type: ignore[misc]  # a CPU tensor claiming to live elsewhere
        @property
        def device(self) -> Any:
            return torch.device("cuda", 0)

        def cpu(self, *args: Any, **kwargs: Any) -> Any:
            copied.append("cpu")
            return self.as_subclass(torch.Tensor)

    t = torch.tensor([1.0, 2.0], dtype=torch.float64).as_subclass(OnDevice)
    v = tp.Variable(t)
    assert copied == ["cpu"] and v.dtype == np.float64
    np.testing.assert_array_equal(v.numpy(), [1.0, 2.0])


def test_torch_round_trip(tmp_path: pathlib.Path) -> None:
    torch = pytest.importorskip("torch")
    values = {
        "f64": torch.tensor(PRECISE, dtype=torch.float64),
        "f16": torch.tensor([0.1, 65504.0], dtype=torch.float16),
        "bf16": torch.tensor([1.5, -3.0], dtype=torch.bfloat16),
        "i8": torch.tensor([-128, 127], dtype=torch.int8),
        "grad": torch.tensor([2.0, 3.0], requires_grad=True),
    }
    saved = tp.Checkpoint(**{k: tp.Variable(t) for k, t in values.items()})
    prefix = saved.write(str(tmp_path / "ck"))
    fresh = tp.Checkpoint(**{k: tp.Variable(torch.zeros_like(t).detach()) for k, t in values.items()})
    fresh.read(prefix).assert_consumed()
    for key, t in values.items():
        var = getattr(fresh, key)
        assert var.dtype == getattr(saved, key).dtype
        np.testing.assert_array_equal(var.numpy().astype(np.float64), t.detach().double().numpy())


# ------------------------------------------------------------------ JAX
# In a child process: JAX starts threads when imported, and every later subprocess of this test worker
# would be forked from a multithreaded process (JAX warns, and a fork there can deadlock).

_JAX_CHECKS = """
import sys
import numpy as np
import jax.numpy as jnp
import trackpoint as tp

v8 = tp.Variable(jnp.array([-3, 4], jnp.int8))
assert v8.dtype == np.int8 and v8.numpy().tolist() == [-3, 4]
bf = tp.Variable(jnp.array([1.5, -2.0], jnp.bfloat16))
assert bf.dtype == tp.bfloat16 and bf.numpy().astype(np.float32).tolist() == [1.5, -2.0]
bf.assign(jnp.array([0.5, 4.0], jnp.bfloat16))
assert bf.numpy().astype(np.float32).tolist() == [0.5, 4.0]
try:
    v8.assign(jnp.array([1, 2], jnp.int32))
except tp.DTypeMismatchError as exc:
    assert "expected an array of dtype int8, got int32" in str(exc), exc
else:
    raise AssertionError("assign of int32 into int8 was accepted")

saved = tp.Checkpoint(i8=tp.Variable(jnp.array([1, -2], jnp.int8)), bf=tp.Variable(jnp.ones(3, jnp.bfloat16)))
prefix = saved.write(sys.argv[1])
fresh = tp.Checkpoint(i8=tp.Variable(jnp.zeros(2, jnp.int8)), bf=tp.Variable(jnp.zeros(3, jnp.bfloat16)))
fresh.read(prefix).assert_consumed()
assert fresh.i8.dtype == np.int8 and fresh.bf.dtype == tp.bfloat16
assert fresh.i8.numpy().tolist() == [1, -2] and fresh.bf.numpy().astype(np.float32).tolist() == [1, 1, 1]
"""


def test_jax_arrays_keep_dtype_and_values_through_assign_and_a_round_trip(tmp_path: pathlib.Path) -> None:
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed")
    result = subprocess.run(
        [sys.executable, "-c", _JAX_CHECKS, str(tmp_path / "ck")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
