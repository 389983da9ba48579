"""A list or dict holding torch state dicts (torch.save's layout) is never changed by being given to a checkpoint.

``{"model": net.state_dict(), "optim": opt.state_dict(), "epoch": 3}`` given to a ``Checkpoint`` (or an
``AutoTrackable``'s attribute, or inside another container) was wrapped in place, as TensorFlow wraps a dict: its
values became trackpoint's wrappers, so the user's dict held other objects than the state dicts put there (a
``dict`` subclass where the module's ``OrderedDict`` was, without its ``_metadata``), and ``torch.load`` refused
what ``torch.save`` wrote of it. The checkpoint now wraps a copy of its containers, which follows them, as it
does for an optimizer's state dict; a restore fills the user's dicts.
"""

from __future__ import annotations

import collections
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from stateful_objects import assert_same
from torch_training import INPUTS, TARGETS, assert_plain

torch = pytest.importorskip("torch")


def _trained(seed: int, steps: int) -> tuple[Any, Any]:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        (net(INPUTS) - TARGETS).square().mean().backward()
        opt.step()
    return net, opt


def _identities(value: Any) -> list[tuple[int, type]]:
    """Each container of ``value`` and each value in one, by identity and exact type, in order."""
    found: list[tuple[int, type]] = [(id(value), type(value))]
    if isinstance(value, (dict, list, tuple)):
        for item in value.values() if isinstance(value, dict) else value:
            found += _identities(item)
    return found


HOLDERS = ["checkpoint", "nested", "list", "autotrackable"]


def _give(holder: str, sd: Any) -> tp.Checkpoint:
    if holder == "checkpoint":
        return tp.Checkpoint(training=sd)
    if holder == "nested":
        return tp.Checkpoint(runs={"main": sd})
    if holder == "list":
        return tp.Checkpoint(runs=[sd])
    module = tp.AutoTrackable()
    module.training = sd
    return tp.Checkpoint(module=module)


@pytest.mark.parametrize("holder", HOLDERS)
def test_the_dict_given_keeps_its_state_dicts(tmp_path: Path, holder: str) -> None:
    net, opt = _trained(0, steps=2)
    sd = {"model": net.state_dict(), "optim": opt.state_dict(), "epoch": 3}
    layout = _identities(sd)
    ckpt = _give(holder, sd)
    ckpt.save(str(tmp_path / "ckpt"))
    assert _identities(sd) == layout
    assert type(sd["model"]) is collections.OrderedDict and hasattr(sd["model"], "_metadata")
    assert_plain(sd)
    # torch's own tools take it as they took it before it was given.
    buffer = io.BytesIO()
    torch.save(sd, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer)  # weights_only: refuses trackpoint's classes
    assert_same(loaded["model"], net.state_dict())
    net.load_state_dict(sd["model"])
    opt.load_state_dict(sd["optim"])


@pytest.mark.parametrize("holder", HOLDERS)
def test_a_restore_fills_the_dicts_given(tmp_path: Path, holder: str) -> None:
    net, opt = _trained(0, steps=3)
    path = _give(holder, {"model": net.state_dict(), "optim": opt.state_dict(), "epoch": 7}).save(
        str(tmp_path / "ckpt")
    )
    # A fresh optimizer: its state is made by the restore. (Not in an AutoTrackable's containers, which restore
    # no Python numbers: there the state given is restored into.)
    net2, opt2 = _trained(1, steps=1 if holder == "autotrackable" else 0)
    sd = {"model": net2.state_dict(), "optim": opt2.state_dict(), "epoch": 0}
    layout = _identities(sd["model"])
    _give(holder, sd).restore(path).assert_consumed()
    if holder != "autotrackable":  # an AutoTrackable's containers save no Python numbers (configuration)
        assert sd["epoch"] == 7 and type(sd["epoch"]) is int  # restored, written into the user's dict
    assert _identities(sd["model"]) == layout  # tensors restored in place
    assert_plain(sd)
    net2.load_state_dict(sd["model"])
    opt2.load_state_dict(sd["optim"])
    assert_same(net2.state_dict(), net.state_dict())
    assert_same(opt2.state_dict(), opt.state_dict())


def test_the_copy_follows_the_dict_given(tmp_path: Path) -> None:
    net, opt = _trained(0, steps=1)
    sd = {"model": net.state_dict(), "optim": opt.state_dict(), "epoch": 3}
    ckpt = tp.Checkpoint(training=sd)
    ckpt.save(str(tmp_path / "ckpt"))
    sd["epoch"] = 4
    sd["optim"] = opt.state_dict()  # taken again, as a training loop does
    sd["optim"]["param_groups"][0]["lr"] = 0.5
    path = ckpt.save(str(tmp_path / "ckpt"))
    tree = tp.load_tree(path)["training"]
    assert tree["epoch"] == 4 and tree["optim"]["param_groups"]["0"]["lr"] == 0.5


def test_a_dict_holding_tensors_only_is_wrapped_in_place_as_before(tmp_path: Path) -> None:
    # Nothing in it is changed by its wrapper: TensorFlow's rule holds (edits through either are seen by both).
    net, _ = _trained(0, steps=0)
    state = net.state_dict()
    ckpt = tp.Checkpoint(model=state)
    ckpt.model["extra"] = torch.zeros(2)
    assert "extra" in state
    # And containers holding no torch tensor, as TensorFlow does.
    plain = {"inner": {"w": np.zeros(2)}}
    tp.Checkpoint(plain=plain)
    assert type(plain["inner"]) is not dict


def test_edits_through_the_wrapper_reach_the_dict_given(tmp_path: Path) -> None:
    # The copy stands for the dict given: an edit through the checkpoint's wrapper is made in the user's dict too
    # (with the value given, not a wrapper), and survives the copy following a later edit of the user's dict.
    net, _ = _trained(0, steps=0)
    train = {"model": net.state_dict(), "epoch": 0, "best": 1.0}
    ckpt = tp.Checkpoint(train=train)
    ema = torch.ones(2)
    extra = {"count": 1}
    ckpt.train["epoch"] = 5
    del ckpt.train["best"]
    ckpt.train["ema"] = ema
    ckpt.train.update(extra=extra)
    ckpt.train["quiet"] = tp.NoDependency(np.zeros(1))
    assert list(train) == ["model", "epoch", "ema", "extra", "quiet"] and train["epoch"] == 5
    assert train["ema"] is ema and train["extra"] is extra and type(extra) is dict and extra == {"count": 1}
    assert_plain({k: v for k, v in train.items() if k != "quiet"})
    train["lr"] = 0.1  # the user's dict changes afterwards: the copy follows it, keeping the edits above
    ckpt.train["extra"]["count"] = 2  # through the wrapper of the dict added
    tree = tp.load_tree(ckpt.write(str(tmp_path / "c1")))["train"]
    assert {k: v for k, v in tree.items() if k != "model"} == {
        "epoch": 5,
        "ema": pytest.approx(np.ones(2)),
        "extra": {"count": 2},
        "lr": 0.1,
    }
    assert extra == {"count": 2} and sorted(ckpt.train) == sorted(train)
    ckpt.train.pop("ema")
    train["epoch"] = 6
    tree = tp.load_tree(ckpt.write(str(tmp_path / "c2")))["train"]
    assert "ema" not in train and "ema" not in tree and tree["epoch"] == 6
    # A restore fills the user's dict, added entries included.
    ema.zero_()
    train["epoch"] = 0
    ckpt.read(str(tmp_path / "c1")).assert_existing_objects_matched()
    assert train["epoch"] == 5 and train["extra"] is extra and extra == {"count": 2} and train["lr"] == 0.1


def test_edits_through_the_wrapper_reach_the_list_given(tmp_path: Path) -> None:
    net, _ = _trained(0, steps=0)
    runs: list[Any] = [{"model": net.state_dict()}]
    ckpt = tp.Checkpoint(runs=runs)
    extra = {"w": torch.ones(2)}
    ckpt.runs.append(extra)
    ckpt.runs.extend([torch.zeros(1), 3])
    assert len(runs) == 4 and runs[1] is extra and type(extra["w"]) is torch.Tensor and runs[3] == 3
    runs.append(4)  # the user's list changes afterwards
    ckpt.runs[3] = 30
    assert runs[3] == 30 and runs[4] == 4
    tree = tp.load_tree(ckpt.write(str(tmp_path / "c")))["runs"]
    assert sorted(tree) == ["0", "1", "2", "3", "4"] and tree["3"] == 30 and tree["4"] == 4
    # Renumbering a list holding saved elements is refused, as for a list wrapped in place.
    ckpt.runs.pop()
    assert len(runs) == 4
    with pytest.raises(tp.TrackableError, match="A list element was replaced"):
        ckpt.write(str(tmp_path / "c2"))


def test_a_write_into_a_state_dict_the_user_swapped_reaches_it(tmp_path: Path) -> None:
    # The user replaces a state dict in the dict (or list) given, a write of another entry through the checkpoint
    # follows that entry only (O(1)): a read of the replaced one through the checkpoint follows it too, so that a
    # write into what it returns lands in the user's new state dict, and is saved, not in a copy of the old one.
    torch.manual_seed(0)
    train = {"model": torch.nn.Linear(2, 2).state_dict(), "epoch": 0}
    ckpt = tp.Checkpoint(train=train)
    train["model"] = torch.nn.Linear(2, 2).state_dict()
    ckpt.train["epoch"] = 1
    ckpt.train["model"]["bias"] = torch.full((2,), 3.0)
    assert train["model"]["bias"].tolist() == [3.0, 3.0]
    tree = tp.load_tree(ckpt.write(str(tmp_path / "d")))["train"]
    assert tree["epoch"] == 1 and np.asarray(tree["model"]["bias"]).tolist() == [3.0, 3.0]

    train = {"runs": [torch.nn.Linear(2, 2).state_dict(), torch.nn.Linear(2, 2).state_dict()]}
    ckpt = tp.Checkpoint(train=train)
    train["runs"][0] = torch.nn.Linear(2, 2).state_dict()
    ckpt.train["runs"][1] = torch.nn.Linear(2, 2).state_dict()
    ckpt.train["runs"][0]["bias"] = torch.full((2,), 3.0)
    assert train["runs"][0]["bias"].tolist() == [3.0, 3.0]
    tree = tp.load_tree(ckpt.write(str(tmp_path / "l")))["train"]
    assert np.asarray(tree["runs"]["0"]["bias"]).tolist() == [3.0, 3.0]
