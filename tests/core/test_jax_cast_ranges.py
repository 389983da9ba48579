"""A restore into a narrower template dtype refuses the values that dtype cannot hold, before anything changes.

Floats as integers are: a finite value that the template's float dtype would make inf (float16) or NaN
(float8_e4m3fn, which has no inf) is refused, naming the place, both dtypes and the largest finite value, and
so is inf into a dtype without inf; underflow (precision), NaN, and inf into a dtype with inf are accepted.
ml_dtypes' sub-byte integers (int4, uint4, int2, uint2) are integers for the cast rules, range-checked like int8.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import trackpoint as tp

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
ml_dtypes = pytest.importorskip("ml_dtypes")

KEY = "/.ATTRIBUTES/VARIABLE_VALUE"


def test_a_finite_float_that_would_become_inf_is_refused_and_nothing_changes() -> None:
    path = tp.Checkpoint(state={"f": np.array([1e30, 500.0, 1.0], np.float32), "g": np.ones(2, np.float32)}).save(
        "memory://cast-ranges/inf/ckpt"
    )
    numbers = np.zeros(2, np.float32)  # restored in place: written only once every value fits
    template = {"f": jax.ShapeDtypeStruct((3,), jnp.float16), "g": numbers}
    ckpt = tp.Checkpoint(state=template)
    with pytest.raises(tp.DTypeMismatchError) as caught:
        ckpt.restore(path)
    message = str(caught.value)
    assert message.startswith(
        "cannot restore 'state/f/.ATTRIBUTES/VARIABLE_VALUE' into the jax.ShapeDtypeStruct 'f' (Checkpoint.state['f'])"
        " of dtype float16: the checkpoint holds float32 values that are finite but would become inf in it, beyond "
        "its largest finite value 65504 (1 of 3: 1e+30). Give the template a float dtype of a wider range, such as "
        "the checkpoint's own float32"
    )
    assert message.endswith("; nothing was restored")
    assert isinstance(ckpt.state["f"], jax.ShapeDtypeStruct) and numbers.tolist() == [0.0, 0.0]


def test_float8_without_inf_names_the_nan_it_would_give() -> None:
    path = tp.Checkpoint(w=jnp.array([1e30, 500.0, 448.0, -1e30, 1.0])).save("memory://cast-ranges/nan/ckpt")
    ckpt = tp.Checkpoint(w=jax.ShapeDtypeStruct((5,), jnp.float8_e4m3fn))
    with pytest.raises(tp.DTypeMismatchError) as caught:
        ckpt.restore(path)
    message = str(caught.value)
    assert "dtype float8_e4m3fn: the checkpoint holds float32 values that are finite but would become NaN" in message
    assert "beyond its largest finite value 448 (3 of 5: 1e+30, 500.0, -1e+30)" in message
    assert isinstance(ckpt.w, jax.ShapeDtypeStruct)


@pytest.mark.parametrize(
    ("saved", "template", "value"),
    [
        ("bfloat16", np.float16, 1e20),  # an ml_dtypes float saved
        (np.float64, np.float32, -1e300),
        (np.float64, "bfloat16", 1e300),
    ],
)
def test_other_narrowing_float_casts_are_checked_too(saved: Any, template: Any, value: float) -> None:
    saved_dtype = np.dtype(getattr(ml_dtypes, saved) if isinstance(saved, str) else saved)
    template_dtype = np.dtype(getattr(ml_dtypes, template) if isinstance(template, str) else template)
    path = tp.Checkpoint(w=np.array([1.0, value]).astype(saved_dtype)).save("memory://cast-ranges/more/ckpt")
    with pytest.raises(tp.DTypeMismatchError, match=r"are finite but would become -?inf in it"):
        tp.Checkpoint(w=jax.ShapeDtypeStruct((2,), template_dtype)).restore(path)


def test_a_complex_part_that_would_become_inf_is_refused() -> None:
    path = tp.Checkpoint(w=np.array([1 + 2j, 1j * 1e200])).save("memory://cast-ranges/complex/ckpt")
    with pytest.raises(tp.DTypeMismatchError, match=r"of dtype complex64: the checkpoint holds complex128 values") as e:
        tp.Checkpoint(w=jax.ShapeDtypeStruct((2,), jnp.complex64)).restore(path)
    assert "Give the template a complex dtype of a wider range, such as the checkpoint's own complex128" in str(e.value)


@pytest.mark.parametrize("saved", [np.float32, "float8_e5m2"])
def test_inf_into_a_float8_without_inf_is_refused(saved: Any) -> None:
    # float8_e4m3fn has no inf: inf would become NaN there, silently, as a finite value beyond 448 would.
    dtype = np.dtype(getattr(ml_dtypes, saved) if isinstance(saved, str) else saved)
    path = tp.Checkpoint(w=np.array([1.0, np.inf, -np.inf, np.nan]).astype(dtype)).save("memory://cast-ranges/f8/ckpt")
    ckpt = tp.Checkpoint(w=jax.ShapeDtypeStruct((4,), jnp.float8_e4m3fn))
    with pytest.raises(tp.DTypeMismatchError) as caught:
        ckpt.restore(path)
    message = str(caught.value)
    assert (
        f"the checkpoint holds {dtype.name} values that are inf, which it cannot hold: float8_e4m3fn has no inf (they "
        "would become NaN) (2 of 4: inf, -inf). Give the template a float dtype that has inf, such as the "
        f"checkpoint's own {dtype.name}; nothing was restored"
    ) in message
    assert isinstance(ckpt.w, jax.ShapeDtypeStruct)
    # Beyond the largest finite value and inf together: both named.
    path = tp.Checkpoint(w=np.array([500.0, np.inf], np.float32)).save("memory://cast-ranges/f8-both/ckpt")
    with pytest.raises(tp.DTypeMismatchError, match=r"finite but beyond its largest finite value 448, or inf, which"):
        tp.Checkpoint(w=jax.ShapeDtypeStruct((2,), jnp.float8_e4m3fn)).restore(path)
    # NaN stays NaN, and float8_e5m2 has inf.
    path = tp.Checkpoint(w=np.array([np.nan, np.inf], np.float32)).save("memory://cast-ranges/f8-ok/ckpt")
    ok = tp.Checkpoint(w=jax.ShapeDtypeStruct((2,), jnp.float8_e5m2))
    ok.restore(path).assert_consumed()
    assert np.isnan(np.asarray(ok.w)[0]) and np.isposinf(np.asarray(ok.w)[1].astype(np.float32))
    path = tp.Checkpoint(w=np.array([np.nan, 1.0], np.float32)).save("memory://cast-ranges/f8-nan/ckpt")
    nan = tp.Checkpoint(w=jax.ShapeDtypeStruct((2,), jnp.float8_e4m3fn))
    nan.restore(path).assert_consumed()
    assert np.isnan(np.asarray(nan.w)[0].astype(np.float32))


def test_underflow_rounding_inf_and_nan_are_accepted() -> None:
    # 65519 rounds to float16's largest 65504 (precision, not overflow); 1e-30 underflows to 0; inf and NaN
    # were inf and NaN already.
    values = np.array([65519.0, -65504.0, 1e-30, np.inf, -np.inf, np.nan], np.float32)
    path = tp.Checkpoint(w=values).save("memory://cast-ranges/ok/ckpt")
    ckpt = tp.Checkpoint(w=jax.ShapeDtypeStruct((6,), jnp.float16))
    ckpt.restore(path).assert_consumed()
    got = np.asarray(ckpt.w)
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, np.array([65504.0, -65504.0, 0.0, np.inf, -np.inf, np.nan], np.float16))


@pytest.mark.parametrize("name", ["int4", "uint4", "int2", "uint2"])
def test_sub_byte_integers_are_integers_for_casts(name: str) -> None:
    dtype = np.dtype(getattr(ml_dtypes, name))
    path = tp.Checkpoint(w=np.array([0, 1], np.int32)).save(f"memory://cast-ranges/{name}/ckpt")
    ckpt = tp.Checkpoint(w=jax.ShapeDtypeStruct((2,), dtype))
    ckpt.restore(path).assert_consumed()
    assert ckpt.w.dtype == dtype and np.asarray(ckpt.w).astype(np.int32).tolist() == [0, 1]
    # And range-checked as any narrower integer.
    high = int(ml_dtypes.iinfo(dtype).max)
    path = tp.Checkpoint(w=np.array([high, high + 1], np.int32)).save(f"memory://cast-ranges/{name}/big")
    refused = rf"dtype {name}: the checkpoint holds int32 values that do not fit"
    with pytest.raises(tp.DTypeMismatchError, match=refused):
        tp.Checkpoint(w=jax.ShapeDtypeStruct((2,), dtype)).restore(path)


def test_int4_saved_restores_into_a_wider_integer_template() -> None:
    path = tp.Checkpoint(w=np.array([-8, 7], ml_dtypes.int4)).save("memory://cast-ranges/int4-wide/ckpt")
    ckpt = tp.Checkpoint(w=jax.ShapeDtypeStruct((2,), jnp.int8))
    ckpt.restore(path).assert_consumed()
    assert ckpt.w.dtype == jnp.int8 and ckpt.w.tolist() == [-8, 7]


def test_negative_values_into_an_unsigned_template_are_told_to_need_a_signed_dtype() -> None:
    path = tp.Checkpoint(w=np.array([3, -1], np.int32)).save("memory://cast-ranges/sign/ckpt")
    with pytest.raises(tp.DTypeMismatchError) as caught:
        tp.Checkpoint(w=jax.ShapeDtypeStruct((2,), jnp.uint32)).restore(path)
    message = str(caught.value)
    assert "The template's dtype uint32 is unsigned and these values are negative" in message
    assert "give the template a signed integer dtype, such as the checkpoint's own int32" in message
    assert "wider" not in message
