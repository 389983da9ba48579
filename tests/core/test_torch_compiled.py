"""A compiled submodule is saved without the ``_orig_mod.`` that ``torch.compile`` adds to its keys.

PyTorch DCP's ``get_model_state_dict`` drops ``_orig_mod`` at every level, so compiled and eager runs share
checkpoints; a model compiled as a whole was already saved as the module it wraps. Checkpoints written with
``_orig_mod.`` inside keys (a compiled submodule saved before) still restore, into the model that wrote them
and into an eager one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

import trackpoint as tp

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _quiet_dynamo() -> Any:
    # Wrapping with torch.compile logs nothing useful here; no forward pass is ever compiled.
    logging.getLogger("torch._dynamo").setLevel(logging.ERROR)
    yield


def _model(seed: int, compiled: bool = False) -> Any:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
    net[1](torch.randn(6, 8))  # running statistics move
    if compiled:
        net[0] = torch.compile(net[0], backend="eager")  # compile a block, as large models do
    return net


def _values(net: Any) -> dict[str, Any]:
    return {key.replace("_orig_mod.", ""): value for key, value in net.state_dict().items()}


def _equal(a: Any, b: Any) -> bool:
    va, vb = _values(a), _values(b)
    return va.keys() == vb.keys() and all(torch.equal(va[k], vb[k]) for k in va)


class _AsSavedBefore:
    """Saves a module's state dict as it is, ``_orig_mod.`` included: the layout an older trackpoint wrote."""

    def __init__(self, net: Any) -> None:
        self.net = net

    def state_dict(self) -> Any:
        return self.net.state_dict()

    def load_state_dict(self, state: Any) -> Any:
        return self.net.load_state_dict(state)


def test_a_compiled_submodule_is_saved_without_orig_mod_and_restores_either_way(tmp_path: Path) -> None:
    compiled = _model(0, compiled=True)
    path = tp.Checkpoint(model=compiled).write(str(tmp_path / "compiled" / "ckpt"))
    keys = [key for key, _ in tp.list_variables(path)]
    assert "model/.ATTRIBUTES/0..weight" in keys and not any("_orig_mod" in key for key in keys)
    eager = _model(1)
    tp.Checkpoint(model=eager).read(path).assert_consumed()
    assert _equal(eager, compiled)

    eager_path = tp.Checkpoint(model=_model(2)).write(str(tmp_path / "eager" / "ckpt"))
    target = _model(3, compiled=True)
    weight = target[0].weight
    tp.Checkpoint(model=target).read(eager_path).assert_consumed()
    assert _equal(target, _model(2)) and target[0].weight is weight


def test_keys_saved_with_orig_mod_inside_still_restore(tmp_path: Path) -> None:
    saved = _model(0, compiled=True)
    path = tp.Checkpoint(model=_AsSavedBefore(saved)).write(str(tmp_path / "ckpt"))
    assert "model/.ATTRIBUTES/0.._orig_mod..weight" in [key for key, _ in tp.list_variables(path)]
    for compiled in (True, False):  # into the model that wrote them, and into an eager one
        target = _model(1, compiled=compiled)
        tp.Checkpoint(model=target).read(path).assert_consumed()
        assert _equal(target, saved)


def test_a_compiled_model_built_on_meta_is_filled_from_either_spelling(tmp_path: Path) -> None:
    saved = _model(0, compiled=True)
    for name, obj in (("new", saved), ("old", _AsSavedBefore(saved))):
        path = tp.Checkpoint(model=obj).write(str(tmp_path / name / "ckpt"))
        assert any("_orig_mod" in key for key, _ in tp.list_variables(path)) == (name == "old")
        with torch.device("meta"):
            target = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
        target[0] = torch.compile(target[0], backend="eager")
        tp.Checkpoint(model=target).read(path).assert_consumed()
        assert _equal(target, saved) and not target[0].weight.is_meta


def test_a_compiled_models_state_dict_given_as_a_dict_restores_into_an_eager_module(tmp_path: Path) -> None:
    whole = torch.compile(_model(0), backend="eager")
    path = tp.Checkpoint(model=whole.state_dict()).write(str(tmp_path / "ckpt"))  # keys `_orig_mod.0.weight`
    eager = _model(1)
    tp.Checkpoint(model=eager).read(path).assert_consumed().assert_existing_objects_matched()
    assert _equal(eager, whole._orig_mod)


def test_entries_saved_under_a_prefix_are_named_with_what_to_do(tmp_path: Path) -> None:
    # `model=ddp.state_dict()`: every key starts with `module.`; the module's own keys are reported missing.
    saved = _model(0)
    path = tp.Checkpoint(model={f"module.{k}": v for k, v in saved.state_dict().items()}).write(str(tmp_path / "c"))
    eager = _model(1)
    status = tp.Checkpoint(model=eager).read(path)
    with pytest.raises(
        tp.MatchError,
        match=r"0\.weight, .*\(the checkpoint holds 9 of them under the prefix 'module\.', as 'module\.0\.",
    ):
        status.assert_existing_objects_matched()
    # What the message says to do restores them.
    tp.Checkpoint(model={f"module.{k}": v for k, v in eager.state_dict().items()}).read(path).assert_consumed()
    assert _equal(eager, saved)


def test_a_submodule_of_its_own_named_orig_mod_restores_into_its_own_keys(tmp_path: Path) -> None:
    # Not torch.compile's wrapper: a real submodule whose keys, uncompiled, would collide with the module's own.
    class Holder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self._orig_mod = torch.nn.Linear(2, 2)
            self.weight = torch.nn.Parameter(torch.zeros(2, 2))

    torch.manual_seed(0)
    saved = Holder()
    with torch.no_grad():
        saved.weight.fill_(7.0)
    path = tp.Checkpoint(model=saved).write(str(tmp_path / "ckpt"))
    restored = Holder()
    with torch.no_grad():
        for parameter in restored.parameters():
            parameter.fill_(-1.0)
    tp.Checkpoint(model=restored).read(path).assert_consumed()
    for key, value in saved.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value), key
