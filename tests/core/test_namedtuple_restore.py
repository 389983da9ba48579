"""A namedtuple restored from a namedtuple is matched by field name alone; positions only where names are missing.

A namedtuple's elements are saved by field name and by position (TensorFlow's rule, kept so TensorFlow reads the
files). Between program versions a namedtuple gains, loses, reorders or renames fields: matched by position too,
a field would take the value saved for another one silently, or one array two values. Where either side has no
field names (a plain tuple or a list saved, a plain tuple restoring), the positions are what is matched.
"""

from __future__ import annotations

import collections
from typing import Any

import numpy as np
import pytest

import trackpoint as tp

Pair = collections.namedtuple("Pair", "a b")
SAVED = {"a": 1.0, "b": 2.0}

#: What the arrays are: numpy arrays (restored in place), JAX arrays (replaced), or ``jax.ShapeDtypeStruct``
#: templates (made by ``jax.eval_shape``; a field left unrestored keeps its template).
KINDS = ["numpy", "jax", "template"]


def _saved_array(kind: str, value: float) -> Any:
    if kind == "numpy":
        return np.full(2, value)
    jnp = pytest.importorskip("jax.numpy")
    return jnp.full(2, value)


def _target_array(kind: str, value: float) -> Any:
    if kind == "numpy":
        return np.full(2, value)
    jax = pytest.importorskip("jax")
    array = jax.numpy.full(2, value)
    return jax.ShapeDtypeStruct(array.shape, array.dtype) if kind == "template" else array


def _value(array: Any) -> float | None:
    """The restored value of an array filled with one value; ``None`` for a template left without a value."""
    if not hasattr(array, "__array__"):
        return None
    values = np.asarray(array)
    assert (values == values[0]).all()
    return float(values[0])


def _unchanged(kind: str, start: float) -> float | None:
    """What a field no saved value was matched to holds after the restore."""
    return None if kind == "template" else start


def _save_pair(kind: str, path: str) -> str:
    return tp.Checkpoint(state=Pair(**{k: _saved_array(kind, v) for k, v in SAVED.items()})).save(path)


def _restore(kind: str, fields: str, path: str) -> tuple[tp.Checkpoint, Any]:
    """A checkpoint holding a namedtuple of ``fields`` (field ``i`` holding ``-(i + 1)``), restored from ``path``."""
    kind_of = collections.namedtuple("Pair", fields)  # type: ignore[misc]  # fields vary by test
    target = kind_of(*(_target_array(kind, -(i + 1.0)) for i in range(len(kind_of._fields))))
    ckpt = tp.Checkpoint(state=target)
    return ckpt, ckpt.restore(path)


def _values(ckpt: tp.Checkpoint) -> dict[str, float | None]:
    return {name: _value(array) for name, array in ckpt.state._asdict().items()}


@pytest.mark.parametrize("kind", KINDS)
def test_reordered_fields_restore_by_name(kind: str) -> None:
    path = _save_pair(kind, f"memory://nt/reordered-{kind}")
    ckpt, status = _restore(kind, "b a", path)
    assert _values(ckpt) == {"b": 2.0, "a": 1.0}
    assert ckpt.state._fields == ("b", "a")
    status.assert_consumed()


@pytest.mark.parametrize("kind", KINDS)
def test_a_field_inserted_in_the_middle_is_left_unrestored_and_reported(kind: str) -> None:
    stats_v1 = collections.namedtuple("Stats", "mean var")
    stats_v2 = collections.namedtuple("Stats", "mean ema_mean var")
    saved = stats_v1(_saved_array(kind, 0.5), _saved_array(kind, 9.0))
    path = tp.Checkpoint(stats=saved).save(f"memory://nt/inserted-{kind}")
    ckpt = tp.Checkpoint(stats=stats_v2(*(_target_array(kind, v) for v in (0.0, -1.0, 0.0))))
    status = ckpt.restore(path)
    # Not the value saved for `var`, which sat at its position.
    assert {n: _value(a) for n, a in ckpt.stats._asdict().items()} == {
        "mean": 0.5,
        "ema_mean": _unchanged(kind, -1.0),
        "var": 9.0,
    }
    with pytest.raises(tp.MatchError, match=r"\(root\)\.stats\.ema_mean") as raised:
        status.assert_consumed()
    assert "nothing it holds there is left for it" in str(raised.value)
    with pytest.raises(tp.MatchError, match=r"\(root\)\.stats\.ema_mean"):
        status.assert_existing_objects_matched()


@pytest.mark.parametrize("kind", KINDS)
def test_a_new_first_field_is_left_unrestored_and_reported(kind: str) -> None:
    path = _save_pair(kind, f"memory://nt/new-first-{kind}")
    ckpt, status = _restore(kind, "x a b", path)
    assert _values(ckpt) == {"x": _unchanged(kind, -1.0), "a": 1.0, "b": 2.0}
    with pytest.raises(tp.MatchError, match=r"\(root\)\.state\.x"):
        status.assert_existing_objects_matched()
    status.expect_partial()  # the checkpoint's values were all taken: nothing else to report


@pytest.mark.parametrize("kind", KINDS)
def test_a_removed_fields_value_is_unconsumed(kind: str) -> None:
    path = _save_pair(kind, f"memory://nt/removed-{kind}")
    ckpt, status = _restore(kind, "b", path)
    assert _values(ckpt) == {"b": 2.0}
    status.assert_existing_objects_matched()  # every object of the program took a value
    with pytest.raises(tp.MatchError, match=r"\(root\)\.state\.a") as raised:
        status.assert_consumed()
    assert "state.b" not in str(raised.value)
    status.expect_partial()


@pytest.mark.parametrize("kind", KINDS)
def test_renamed_fields_restore_nothing_by_position(kind: str) -> None:
    path = _save_pair(kind, f"memory://nt/renamed-{kind}")
    ckpt, status = _restore(kind, "x y", path)
    assert _values(ckpt) == {"x": _unchanged(kind, -1.0), "y": _unchanged(kind, -2.0)}
    with pytest.raises(tp.MatchError) as raised:
        status.assert_consumed()
    message = str(raised.value)
    assert "(root).state.x" in message and "(root).state.y" in message
    # The saved elements, each named once (by field name): a position is not there for the taking.
    assert "it has 'a', 'b' there, which no object took" in message
    assert "(root).state.a: shape=(2,)" in message and "(root).state.b: shape=(2,)" in message


def test_a_namedtuple_created_after_the_restore_is_matched_by_field_name() -> None:
    stats_v1 = collections.namedtuple("Stats", "mean var")
    stats_v2 = collections.namedtuple("Stats", "var ema_mean mean")
    root = tp.AutoTrackable()
    root.stats = stats_v1(np.full(2, 0.5), np.full(2, 9.0))
    path = tp.Checkpoint(root=root).save("memory://nt/on-create")
    later = tp.AutoTrackable()
    status = tp.Checkpoint(root=later).restore(path)
    later.stats = stats_v2(np.zeros(2), np.full(2, -1.0), np.zeros(2))  # restored on assignment
    assert {n: _value(a) for n, a in later.stats._asdict().items()} == {"var": 9.0, "ema_mean": -1.0, "mean": 0.5}
    with pytest.raises(tp.MatchError, match=r"\(root\)\.stats\.ema_mean"):
        status.assert_consumed()


def test_a_namedtuple_in_a_deferred_subtree_is_matched_by_field_name() -> None:
    path = tp.Checkpoint(opt={"state": [Pair(np.full(2, 1.0), np.full(2, 2.0))]}).save("memory://nt/deferred")
    ckpt = tp.Checkpoint(opt={"state": []})
    status = ckpt.restore(path)
    swapped = collections.namedtuple("Pair", "b a")
    ckpt.opt["state"].append(swapped(np.zeros(2), np.zeros(2)))  # restored when appended
    assert {n: _value(a) for n, a in ckpt.opt["state"][0]._asdict().items()} == {"b": 2.0, "a": 1.0}
    status.assert_consumed()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("saved_as", ["tuple", "list"])
def test_elements_saved_without_names_restore_into_a_namedtuple_by_position(kind: str, saved_as: str) -> None:
    elements = [_saved_array(kind, 1.0), _saved_array(kind, 2.0)]
    path = tp.Checkpoint(state=tuple(elements) if saved_as == "tuple" else elements).save(
        f"memory://nt/{saved_as}-{kind}"
    )
    ckpt, status = _restore(kind, "x y", path)
    assert _values(ckpt) == {"x": 1.0, "y": 2.0}
    status.assert_consumed()


@pytest.mark.parametrize("kind", KINDS)
def test_a_namedtuple_restores_into_a_plain_tuple_by_position(kind: str) -> None:
    path = _save_pair(kind, f"memory://nt/into-tuple-{kind}")
    ckpt = tp.Checkpoint(state=(_target_array(kind, 0.0), _target_array(kind, 0.0)))
    ckpt.restore(path).assert_consumed()
    assert type(ckpt.state) is tuple and [_value(a) for a in ckpt.state] == [1.0, 2.0]


def test_variables_in_a_namedtuple_are_matched_by_field_name(caplog: pytest.LogCaptureFixture) -> None:
    root = tp.AutoTrackable()
    root.pair = Pair(tp.Variable(1.0), tp.Variable(2.0))
    path = tp.Checkpoint(root=root).save("memory://nt/variables")
    other = tp.AutoTrackable()
    other.pair = collections.namedtuple("Pair", "b x a")(tp.Variable(0.0), tp.Variable(-1.0), tp.Variable(0.0))
    status = tp.Checkpoint(root=other).restore(path)
    assert (other.pair.a.numpy(), other.pair.x.numpy(), other.pair.b.numpy()) == (1.0, -1.0, 2.0)
    # Positions are not matched too: no variable is reached again by position, with another node.
    assert "Inconsistent references" not in caplog.text
    with pytest.raises(tp.MatchError, match=r"\(root\)\.pair\.x"):
        status.assert_consumed()
