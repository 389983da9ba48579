"""Tied weights (one Parameter under two keys of a module's state dict) are saved once and restored tied.

Views that share memory but are not the same tensor (another offset, shape or strides, a conjugate) are saved
each on its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from stateful_objects import StateHolder

torch = pytest.importorskip("torch")


class TiedLM(torch.nn.Module):  # type: ignore[misc]
    """An embedding whose output head is the same Parameter, as language models tie them."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(6, 4)
        self.lm_head = torch.nn.Linear(4, 6, bias=False)
        self.lm_head.weight = self.embed.weight


def _trained(seed: int) -> tuple[Any, Any]:
    torch.manual_seed(seed)
    model = TiedLM()
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model.lm_head(model.embed(torch.tensor([1, 2, 3]))).square().sum().backward()
    opt.step()
    return model, opt


def test_a_tied_weight_is_stored_once_and_restored_as_one_parameter(tmp_path: Path) -> None:
    model, opt = _trained(0)
    path = tp.Checkpoint(model=model, optimizer=opt).write(str(tmp_path / "ckpt"))
    stored = dict(tp.list_variables(path))
    assert stored["model/.ATTRIBUTES/embed..weight"] == [6, 4]
    assert not any("lm_head" in key for key in stored)  # its bytes are not written a second time

    restored, restored_opt = _trained(1)
    tp.Checkpoint(model=restored, optimizer=restored_opt).read(path).assert_consumed()
    assert restored.lm_head.weight is restored.embed.weight
    assert torch.equal(restored.embed.weight, model.embed.weight)
    assert torch.equal(restored_opt.state[restored.embed.weight]["exp_avg"], opt.state[model.embed.weight]["exp_avg"])

    # Built on 'meta': filled with one Parameter, the one an optimizer made before the restore holds.
    with torch.device("meta"):
        empty = TiedLM()
    adam = torch.optim.Adam(empty.parameters(), lr=0.5)
    tp.Checkpoint(model=empty, optimizer=adam).read(path).assert_consumed()
    assert empty.lm_head.weight is empty.embed.weight and not empty.embed.weight.is_meta
    assert torch.equal(empty.lm_head.weight, model.embed.weight)
    assert adam.param_groups[0]["params"][0] is empty.embed.weight

    # Read without the objects, the state dict has both keys, as the module's own has.
    tree = tp.load_tree(path)["model"]
    assert list(tree) == ["embed.weight", "lm_head.weight"]
    np.testing.assert_array_equal(tree["lm_head.weight"], model.embed.weight.detach().numpy())
    fresh = TiedLM()
    fresh.load_state_dict(tp.to_torch(tree))  # strict: every key is there
    assert torch.equal(fresh.lm_head.weight, model.embed.weight) and fresh.lm_head.weight is fresh.embed.weight


def test_a_checkpoint_that_stores_both_keys_restores_into_a_tied_model(tmp_path: Path) -> None:
    # What an untied model, or a save that stored each key, writes: two arrays of one structure.
    model, _ = _trained(0)
    weight = model.embed.weight.detach()
    both = StateHolder({"embed.weight": weight.clone(), "lm_head.weight": weight.clone()})
    path = tp.Checkpoint(model=both).write(str(tmp_path / "ckpt"))
    assert "model/.ATTRIBUTES/lm_head..weight" in dict(tp.list_variables(path))
    restored, _ = _trained(1)
    tp.Checkpoint(model=restored).read(path).assert_consumed()
    assert restored.lm_head.weight is restored.embed.weight
    assert torch.equal(restored.embed.weight, weight)
    # Saved again, the tied model stores the weight once.
    again = tp.Checkpoint(model=restored).write(str(tmp_path / "again"))
    assert "model/.ATTRIBUTES/lm_head..weight" not in dict(tp.list_variables(again))

    wrong = StateHolder({"embed.weight": weight.clone(), "lm_head.weight": torch.zeros(2, 4)})
    wrong_path = tp.Checkpoint(model=wrong).write(str(tmp_path / "wrong"))
    before = restored.embed.weight.detach().clone()
    with pytest.raises(tp.errors.ShapeMismatchError, match="lm_head.weight"):
        tp.Checkpoint(model=restored).read(wrong_path)
    assert torch.equal(restored.embed.weight, before)  # refused before anything was written


def test_an_untied_checkpoint_of_two_values_is_refused_by_a_tied_model_before_anything_is_written(
    tmp_path: Path,
) -> None:
    model, _ = _trained(0)
    weight = model.embed.weight.detach()
    two = StateHolder({"embed.weight": weight.clone(), "lm_head.weight": weight + 1})
    path = tp.Checkpoint(model=two).write(str(tmp_path / "ckpt"))
    restored, _ = _trained(1)
    before = restored.embed.weight.detach().clone()
    with pytest.raises(tp.TrackableError, match="two different values for one tensor") as raised:
        tp.Checkpoint(model=restored).read(path)
    assert "'model/.ATTRIBUTES/embed..weight' and 'model/.ATTRIBUTES/lm_head..weight'" in str(raised.value)
    assert torch.equal(restored.embed.weight, before) and restored.lm_head.weight is restored.embed.weight

    # Alike into a tied model built on 'meta', which the restore would fill.
    with torch.device("meta"):
        empty = TiedLM()
    with pytest.raises(tp.TrackableError, match="two different values for one tensor"):
        tp.Checkpoint(model=empty).read(path)
    assert empty.embed.weight.is_meta
    # Equal values restore as one.
    equal = StateHolder({"embed.weight": weight.clone(), "lm_head.weight": weight.clone()})
    tp.Checkpoint(model=empty).read(tp.Checkpoint(model=equal).write(str(tmp_path / "equal"))).assert_consumed()
    assert empty.lm_head.weight is empty.embed.weight and torch.equal(empty.embed.weight, weight)


def test_a_tensor_pointed_at_other_memory_after_a_save_is_saved_on_its_own(tmp_path: Path) -> None:
    a = torch.zeros(3)
    b = a.detach()  # another tensor object over the same memory: the same array
    ckpt = tp.Checkpoint(a=a, b=b)
    assert [key for key, _ in tp.list_variables(ckpt.write(str(tmp_path / "one"))) if "VALUE" in key] == [
        "a/.ATTRIBUTES/VARIABLE_VALUE"
    ]
    b.data = torch.ones(3)  # now an array of its own
    path = ckpt.write(str(tmp_path / "two"))
    assert [key for key, _ in tp.list_variables(path) if "VALUE" in key] == [
        "a/.ATTRIBUTES/VARIABLE_VALUE",
        "b/.ATTRIBUTES/VARIABLE_VALUE",
    ]


def test_views_of_one_storage_that_are_not_the_same_tensor_are_saved_each(tmp_path: Path) -> None:
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    complex_base = torch.randn(3, dtype=torch.complex64)
    views = {
        "base": base,
        "same": base.detach(),  # the same tensor: merged
        "rows": base[1:],  # another offset
        "head": base.reshape(-1)[:4],  # the same offset, another shape
        "transposed": base.t(),  # the same offset, other strides
        "complex": complex_base,
        "conjugate": complex_base.conj(),  # everything alike but the conjugate bit
        "empty_a": torch.empty(0),
        "empty_b": torch.empty(0),  # empty tensors share no memory to tell by
    }
    holder = StateHolder(dict(views))
    path = tp.Checkpoint(state=holder).write(str(tmp_path / "ckpt"))
    stored = {key.split("/.ATTRIBUTES/")[1] for key, _ in tp.list_variables(path) if key.startswith("state/")}
    assert stored == {"..STATE_DICT", *views} - {"same"}
    tree = tp.load_tree(path)["state"]
    for key, view in views.items():
        np.testing.assert_array_equal(tree[key], view.resolve_conj().numpy())

    target = StateHolder({key: torch.zeros_like(view).resolve_conj() for key, view in views.items()})
    tp.Checkpoint(state=target).read(path).assert_consumed()
    loaded = target.loaded[-1]
    assert loaded["same"] is loaded["base"]
    for key, view in views.items():
        assert torch.equal(loaded[key], view.resolve_conj()), key


def test_a_diff_names_the_array_an_entry_tied_since_stands_for(tmp_path: Path) -> None:
    tied, _ = _trained(0)
    untied = TiedLM()
    untied.lm_head.weight = torch.nn.Parameter(tied.embed.weight.detach().clone())
    untied.embed.weight = torch.nn.Parameter(tied.embed.weight.detach().clone())
    before = tp.Checkpoint(model=untied).write(str(tmp_path / "untied"))
    after = tp.Checkpoint(model=tied).write(str(tmp_path / "tied"))
    key = "model/.ATTRIBUTES/..STATE_DICT"
    changes = tp.stateful.structure_changes(tp.load_variable(before, key), tp.load_variable(after, key))
    assert changes == ["['lm_head.weight']: <torch array 'lm_head.weight'> -> <torch array 'embed.weight'>"]
