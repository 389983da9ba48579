"""A checkpoint holding two values where the program holds one array (or variable) in two places.

TensorFlow restores one value into one variable. A checkpoint saved from two separate arrays (an untied
model, an earlier version of trackpoint) restores into one array held in both places only when both values
are equal; two different values are refused, before anything is written, whether the array existed when
``restore`` ran or was attached afterwards (a restore on creation), instead of the last one winning silently.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from stateful_objects import StateHolder
from trackpoint import restore as restore_module

A, B = np.zeros(4, np.float32), np.ones(4, np.float32)


def untied(tmp_path: Path, a: np.ndarray[Any, Any] = A, b: np.ndarray[Any, Any] = B) -> str:
    """A checkpoint of two separate arrays ``a`` and ``b`` (and a save counter)."""
    return tp.Checkpoint(a=a.copy(), b=b.copy()).save(str(tmp_path / "untied"))


def _numpy() -> Any:
    return np.full(4, 7, np.float32)


def _torch() -> Any:
    torch = pytest.importorskip("torch")
    return torch.full((4,), 7.0)


def _variable() -> Any:
    return tp.Variable(np.full(4, 7, np.float32))


def values(held: Any) -> list[float]:
    return [float(v) for v in (held.numpy() if hasattr(held, "numpy") else held)]


KINDS: dict[str, Callable[[], Any]] = {"numpy": _numpy, "torch": _torch, "variable": _variable}


@pytest.mark.parametrize("kind", KINDS)
def test_one_array_attached_in_two_places_after_restore_gets_no_second_value(tmp_path: Path, kind: str) -> None:
    path = untied(tmp_path)
    ckpt = tp.Checkpoint()
    status = ckpt.restore(path)
    held = KINDS[kind]()
    ckpt.a = held
    assert values(held) == [0.0] * 4
    with pytest.raises(tp.TrackableError, match="two different values for one array") as raised:
        ckpt.b = held  # the moment the second binding is made
    message = str(raised.value)
    assert "(root).a and (root).b" in message and "keeps the value it got from the first path" in message
    assert values(held) == [0.0] * 4  # not half-written, not overwritten
    assert "b" not in dict(ckpt._trackable_children())

    # A separate array there takes the second value; the restore is then complete.
    ckpt.b = KINDS[kind]()
    assert values(ckpt.b) == [1.0] * 4 and values(held) == [0.0] * 4
    status.assert_consumed()


def test_an_array_restored_at_once_then_attached_elsewhere_is_refused_alike(tmp_path: Path) -> None:
    path = tp.Checkpoint(a=A.copy(), b={"inside": [B.copy()]}).save(str(tmp_path / "nested"))
    held = _numpy()
    ckpt = tp.Checkpoint(a=held)
    ckpt.restore(path).expect_partial()
    assert values(held) == [0.0] * 4
    with pytest.raises(tp.TrackableError, match=r"(?s)two different values.*\(root\)\.a and \(root\)\.b\.inside"):
        ckpt.b = {"inside": [held]}  # met below the object attached, not as it
    assert values(held) == [0.0] * 4


def test_equal_values_restore_into_one_array_attached_later(tmp_path: Path) -> None:
    path = untied(tmp_path, B, B)
    ckpt = tp.Checkpoint()
    status = ckpt.restore(path)
    held = _numpy()
    ckpt.a = held
    ckpt.b = held
    assert values(held) == [1.0] * 4
    status.assert_consumed()
    # Views of other parts of one memory are arrays of their own, each restored; each still known as itself.
    rows = {name: np.full(2, i, np.float32) for i, name in enumerate("abc")}
    ckpt = tp.Checkpoint()
    status = ckpt.restore(tp.Checkpoint(**rows).save(str(tmp_path / "views")))
    w = np.full((2, 2), 7, np.float32)
    ckpt.a, ckpt.b = w[0], w[1]
    assert w.tolist() == [[0.0, 0.0], [1.0, 1.0]]
    with pytest.raises(tp.TrackableError, match=r"\(root\)\.a and \(root\)\.c"):
        ckpt.c = w[0]
    ckpt.c = np.array(w[0])
    status.assert_consumed()


def test_two_values_for_one_array_are_compared_reading_each_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = untied(tmp_path, B, B)
    read: Counter[str] = Counter()
    real = restore_module.read_requests

    def counted(reader: Any, requests: list[tuple[str, Any]], parts: Any) -> Any:
        read.update(key for key, _ in requests)
        return real(reader, requests, parts)

    monkeypatch.setattr(restore_module, "read_requests", counted)
    held = _numpy()
    tp.Checkpoint(a=held, b=held).read(path).assert_existing_objects_matched()
    assert values(held) == [1.0] * 4
    assert read and max(read.values()) == 1, read


def test_a_tied_model_refusing_an_untied_checkpoint_leaves_every_object_as_it_was(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")

    class Tied(torch.nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(3, 2)
            self.head = torch.nn.Linear(2, 3, bias=False)
            self.head.weight = self.embed.weight

    weight = torch.arange(6.0).reshape(3, 2)
    # What a model whose weights were not tied saves: two tensors of one state dict.
    two = StateHolder({"embed.weight": weight, "head.weight": weight + 1})
    ones = np.ones(3, np.float32)
    path = tp.Checkpoint(model=two, v=tp.Variable(ones), x=ones.copy()).write(str(tmp_path / "ckpt"))

    model, v, x = Tied(), tp.Variable(np.zeros(3, np.float32)), np.zeros(3, np.float32)
    before = model.embed.weight.detach().clone()
    with pytest.raises(tp.TrackableError, match="two different values for one tensor"):
        tp.Checkpoint(model=model, v=v, x=x).read(path)
    # Refused while planning: no other object of the same restore was written either.
    assert values(v) == [0.0] * 3 and values(x) == [0.0] * 3
    assert torch.equal(model.embed.weight, before) and model.head.weight is model.embed.weight
