"""Strings of a torch optimizer's state dict given as a dict are saved; strings elsewhere say how to save them.

An optimizer built from ``named_parameters()`` holds its parameters' names in each param group
(``param_names``); ``Checkpoint(optimizer=opt.state_dict())`` saves each as a 0-d string value, restored
as a str (into the dict, or into the optimizer itself).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

import trackpoint as tp

torch = pytest.importorskip("torch")

NAMES = ["0.weight", "0.bias", "1.weight", "1.bias"]


def _stepped(seed: int) -> Any:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    opt = torch.optim.AdamW(net.named_parameters(), lr=0.01 * (seed + 1))
    net(torch.randn(5, 3)).square().sum().backward()
    opt.step()
    return opt


def test_the_names_of_an_optimizers_state_dict_given_as_a_dict_are_saved_and_restored(tmp_path: Path) -> None:
    opt = _stepped(0)
    path = tp.Checkpoint(optimizer=opt.state_dict()).write(str(tmp_path / "ckpt"))
    saved = tp.load_tree(path)["optimizer"]["param_groups"]["0"]["param_names"]
    assert [saved[str(i)] for i in range(4)] == [name.encode() for name in NAMES]  # 0-d string values

    into = _stepped(1)
    tp.Checkpoint(optimizer=into).read(path).assert_consumed()
    assert into.state_dict()["param_groups"] == opt.state_dict()["param_groups"]

    state = _stepped(2).state_dict()
    state["param_groups"][0]["param_names"] = ["a", "b", "c", "d"]
    ckpt = tp.Checkpoint(optimizer=state)
    ckpt.read(path).assert_consumed()
    names = ckpt.optimizer["param_groups"][0]["param_names"]
    assert names == NAMES and all(type(name) is str for name in names)
    assert copy.deepcopy(ckpt.optimizer)["param_groups"][0]["param_names"] == NAMES


def test_a_string_elsewhere_in_a_checkpoints_containers_is_refused_with_how_to_save_it() -> None:
    with pytest.raises(tp.TrackableError, match=r"is 'relu' \(str\)") as raised:
        tp.Checkpoint(config={"act": "relu"})
    message = str(raised.value)
    assert "trackpoint.Variable(value, dtype=trackpoint.string)" in message and "np.asarray" not in message
    # The way it names saves the string.
    path = tp.Checkpoint(config={"act": tp.Variable("relu", dtype=tp.string)}).write("memory://strings/ckpt")
    assert tp.load_tree(path)["config"]["act"] == b"relu"
