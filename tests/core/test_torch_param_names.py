"""Optimizers built from named parameters (``AdamW(model.named_parameters())``) save and restore.

Their state dict holds each param group's ``param_names``, a list of str. torch's ``load_state_dict`` maps the
state by position whatever the names, takes the checkpoint's names where it has them (into an optimizer built
without names too) and keeps the optimizer's own where it has none.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import trackpoint as tp
from stateful_objects import assert_same

torch = pytest.importorskip("torch")


def _stepped(seed: int, named: bool) -> tuple[Any, Any]:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    opt = torch.optim.AdamW(net.named_parameters() if named else net.parameters(), lr=0.01)
    net(torch.randn(5, 3)).square().sum().backward()
    opt.step()
    return net, opt


def _with_string_names(state: dict[str, Any]) -> dict[str, Any]:
    """The optimizer's state dict with each name a string value (a 0-d string array), as a dict saves strings."""
    groups = [
        {**group, "param_names": [tp.Variable(name, dtype=tp.string) for name in group["param_names"]]}
        for group in state["param_groups"]
    ]
    return {"state": state["state"], "param_groups": groups}


@pytest.mark.parametrize("named", [True, False], ids=["into-named", "into-unnamed"])
def test_names_saved_in_a_state_dict_given_as_a_dict_restore_into_the_optimizer(tmp_path: Path, named: bool) -> None:
    _, opt = _stepped(0, named=True)
    path = tp.Checkpoint(optimizer=_with_string_names(opt.state_dict())).write(str(tmp_path / "ckpt"))
    _, opt2 = _stepped(1, named=named)
    tp.Checkpoint(optimizer=opt2).read(path).assert_consumed()
    # The names are str again, the moments in place: the state dict is the saved one, names included.
    assert opt2.state_dict()["param_groups"][0]["param_names"] == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert opt2.state_dict()["param_groups"] == opt.state_dict()["param_groups"]
    assert_same(opt2.state_dict()["state"], opt.state_dict()["state"])
