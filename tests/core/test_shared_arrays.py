"""One array held in several places is one node of the object graph: saved once, restored once, into all of them.

TensorFlow saves a variable reached by several paths as one node with several parents (Keras: a layer's
kernel and the optimizer's ``_trainable_variables``); ``load_tree`` gives such a node back as one array
held in both places, and saving that tree must keep the link.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tf"
VALUE = "/.ATTRIBUTES/VARIABLE_VALUE"


def keys(path: str) -> list[str]:
    return [key for key, _ in tp.list_variables(path) if key != "_CHECKPOINTABLE_OBJECT_GRAPH"]


def test_an_array_held_in_two_places_is_saved_once_and_restored_into_both(tmp_path: Path) -> None:
    x = np.arange(4, dtype=np.float32)
    path = tp.Checkpoint(a=x, b=x, c=[x[:], x.view()]).write(str(tmp_path / "ckpt"))
    assert keys(path) == ["a" + VALUE]  # views of the same memory, dtype, shape and strides are the array too
    tree = tp.load_tree(path)
    assert tree["b"] is tree["a"] and tree["c"]["0"] is tree["a"]

    into = np.zeros(4, np.float32)
    tp.Checkpoint(a=into, b=into, c=[into, into[:]]).read(path).assert_consumed()
    assert into.tolist() == [0.0, 1.0, 2.0, 3.0]
    # Two arrays where the checkpoint holds one: each gets the value.
    first, second = np.zeros(4, np.float32), np.zeros(4, np.float32)
    tp.Checkpoint(a=first, b=second, c=[np.zeros(4, np.float32), np.zeros(4, np.float32)]).read(path).assert_consumed()
    assert first.tolist() == second.tolist() == [0.0, 1.0, 2.0, 3.0]

    # Views of other parts of the memory, or of another shape or strides, are arrays of their own.
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    path = tp.Checkpoint(a=w, b=w[1:], c=w.T, d=w.reshape(3, 2), e=w.copy()).write(str(tmp_path / "views"))
    assert len(keys(path)) == 5


def test_two_different_values_for_one_array_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    # As older versions saved an array held in two places (a node each), after one place was edited.
    path = tp.Checkpoint(a=np.zeros(4, np.float32), b=np.ones(4, np.float32)).write(str(tmp_path / "ckpt"))
    x = np.full(4, 7, np.float32)
    other = np.zeros(2, np.float32)
    with pytest.raises(tp.TrackableError, match=r"two different values for one array") as raised:
        tp.Checkpoint(a=x, b=x, c=other).read(path)
    assert "(root).a and (root).b" in str(raised.value)
    assert not isinstance(raised.value, tp.errors.DataLossError)
    assert x.tolist() == [7.0] * 4

    # Equal values (the array saved twice, unedited) restore as one.
    same = tp.Checkpoint(a=np.ones(4, np.float32), b=np.ones(4, np.float32)).write(str(tmp_path / "same"))
    tp.Checkpoint(a=x, b=x).read(same).assert_consumed()
    assert x.tolist() == [1.0] * 4
    # A variable held in two places is refused alike.
    v = tp.Variable(np.full(4, 7, np.float32))
    with pytest.raises(tp.TrackableError, match=r"two different values"):
        tp.Checkpoint(a=v, b=v).read(path)
    assert v.numpy().tolist() == [7.0] * 4


def test_a_keras_variable_of_two_parents_stays_one_after_load_tree_edit_and_save(tmp_path: Path) -> None:
    source = str(FIXTURES / "keras" / "ckpt-1")
    tree = tp.load_tree(source)
    del tree["save_counter"]  # the checkpoint's own
    kernel = tree["optimizer"]["_trainable_variables"]["0"]
    shared = [k for k, v in tree["model"]["_operations"]["1"].items() if v is kernel]
    assert shared  # the fixture's kernel is one node under the model and under the optimizer
    kernel += 100.0  # edited in place: held in both places
    path = tp.Checkpoint(**tree).write(str(tmp_path / "ckpt"))
    assert sorted(keys(path)) == sorted(key for key in keys(source) if not key.startswith("save_counter/"))

    template = tp.load_tree(source)
    del template["save_counter"]
    tp.Checkpoint(**template).read(path).assert_consumed()
    restored = template["optimizer"]["_trainable_variables"]["0"]
    assert template["model"]["_operations"]["1"][shared[0]] is restored
    np.testing.assert_array_equal(restored, kernel)


def test_a_jax_array_held_in_two_places_is_replaced_by_one_array(tmp_path: Path) -> None:
    jnp = pytest.importorskip("jax.numpy")
    w = jnp.arange(3.0)
    path = tp.Checkpoint(params={"embed": w, "head": w}).write(str(tmp_path / "ckpt"))
    assert keys(path) == ["params/embed" + VALUE]

    zeros = jnp.zeros(3)
    ckpt = tp.Checkpoint(params={"embed": zeros, "head": zeros})
    ckpt.read(path).assert_consumed()
    assert ckpt.params["embed"] is ckpt.params["head"]  # still one array: a next save writes it once
    assert np.asarray(ckpt.params["head"]).tolist() == [0.0, 1.0, 2.0]
    assert keys(ckpt.write(str(tmp_path / "again"))) == ["params/embed" + VALUE]

    # Replaced rather than written into, an immutable array takes two saved values: each place its own.
    two = tp.Checkpoint(params={"embed": w, "head": w + 1}).write(str(tmp_path / "two"))
    ckpt = tp.Checkpoint(params={"embed": zeros, "head": zeros})
    ckpt.read(two).assert_consumed()
    assert np.asarray(ckpt.params["head"]).tolist() == [1.0, 2.0, 3.0]
    assert np.asarray(ckpt.params["embed"]).tolist() == [0.0, 1.0, 2.0]


def test_a_read_only_array_held_in_two_places_is_replaced_by_one_array_in_both(tmp_path: Path) -> None:
    def holder_of(array: np.ndarray[Any, Any]) -> Any:
        holder: Any = tp.AutoTrackable()
        holder.x = array
        holder.items = [array]
        return holder

    path = tp.Checkpoint(model=holder_of(np.arange(3.0))).write(str(tmp_path / "ckpt"))
    assert keys(path) == ["model/x" + VALUE]
    frozen = np.zeros(3)
    frozen.flags.writeable = False
    holder = holder_of(frozen)
    tp.Checkpoint(model=holder).read(path).assert_consumed()
    assert holder.items[0] is holder.x and holder.x.tolist() == [0.0, 1.0, 2.0]


def test_tied_torch_weights_of_a_state_dict_given_as_a_dict_are_saved_once(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")

    def tied(seed: int) -> Any:
        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Embedding(6, 4), torch.nn.Linear(4, 6, bias=False))
        net[1].weight = net[0].weight
        return net

    net = tied(0)
    path = tp.Checkpoint(model=net.state_dict()).write(str(tmp_path / "ckpt"))
    assert keys(path) == ["model/0..weight" + VALUE]

    into = tied(1)
    tp.Checkpoint(model=into.state_dict()).read(path).assert_consumed()
    assert into[1].weight is into[0].weight and torch.equal(into[0].weight, net[0].weight)
    module = tied(2)
    tp.Checkpoint(model=module).read(path).assert_consumed()
    assert module[1].weight is module[0].weight and torch.equal(module[0].weight, net[0].weight)
    # Untied tensors where the checkpoint holds one: both get its values.
    untied = {key: value.clone() for key, value in tied(3).state_dict().items()}
    tp.Checkpoint(model=untied).read(path).assert_consumed()
    assert torch.equal(untied["0.weight"], net[0].weight) and torch.equal(untied["1.weight"], net[0].weight)


def test_a_view_whose_shape_is_set_in_place_after_a_save_is_saved_on_its_own(tmp_path: Path) -> None:
    a = np.arange(6.0)
    b = a.view()
    ckpt = tp.Checkpoint(a=a, b=b)
    assert keys(ckpt.write(str(tmp_path / "one"))) == ["a" + VALUE]  # the same array: one node
    b.shape = (2, 3)  # now another array over the same memory: what the first save found no longer holds
    path = ckpt.write(str(tmp_path / "two"))
    assert {key: shape for key, shape in tp.list_variables(path) if key in keys(path)} == {
        "a" + VALUE: [6],
        "b" + VALUE: [2, 3],
    }
    into = tp.Checkpoint(a=np.zeros(6), b=np.zeros((2, 3)))
    into.read(path).assert_consumed()
    assert into.b.tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    # Given the same layout again, it is the array again.
    b.shape = (6,)
    assert keys(ckpt.write(str(tmp_path / "three"))) == ["a" + VALUE]
