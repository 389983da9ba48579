"""A checkpoint of state dicts given as dicts (torch.save's layout) restores into the objects themselves.

``tp.Checkpoint(model=net.state_dict(), optimizer=opt.state_dict(), epoch=7)`` saves each container as a node
and each value as a variable. Restored into ``tp.Checkpoint(model=net, optimizer=opt, epoch=0)``, the
optimizer's state dict is rebuilt from those entries, typed by the optimizer's own, and loaded; where that
cannot be done with certainty, the restore is refused before anything is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from stateful_objects import assert_same

torch = pytest.importorskip("torch")


def _run(seed: int, steps: int) -> tuple[Any, Any, Any]:
    torch.manual_seed(seed)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters(), lr=0.123, betas=(0.8, 0.95))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    for _ in range(steps):
        opt.zero_grad()
        net(torch.randn(4, 3)).square().sum().backward()
        opt.step()
        sched.step()
    return net, opt, sched


def test_an_optimizer_and_a_scheduler_saved_as_dicts_restore_into_the_objects(tmp_path: Path) -> None:
    net, opt, sched = _run(0, steps=3)
    saved = {"model": net.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": 7}
    path = tp.Checkpoint(**saved).write(str(tmp_path / "ckpt"))
    net2, opt2, sched2 = _run(1, steps=0)
    ckpt = tp.Checkpoint(model=net2, optimizer=opt2, scheduler=sched2, epoch=0)
    ckpt.read(path).assert_consumed().assert_existing_objects_matched()
    # The optimizer's learning rate, betas (a tuple), None flags and moments; the scheduler's counters.
    assert_same(opt2.state_dict(), opt.state_dict())
    assert_same(sched2.state_dict(), sched.state_dict())
    assert ckpt.epoch == 7
    batch = torch.randn(4, 3)
    for model, optimizer, scheduler in ((net, opt, sched), (net2, opt2, sched2)):
        optimizer.zero_grad()
        model(batch).square().sum().backward()
        optimizer.step()
        scheduler.step()
    assert_same(net2.state_dict(), net.state_dict())


def test_a_state_dict_bundling_several_saved_as_a_dict_restores_into_its_object(tmp_path: Path) -> None:
    class Trainer:
        def __init__(self, seed: int, steps: int) -> None:
            self.net, self.opt, _ = _run(seed, steps)
            self.epoch = 0

        def state_dict(self) -> dict[str, Any]:
            return {"model": self.net.state_dict(), "opt": self.opt.state_dict(), "epoch": self.epoch}

        def load_state_dict(self, state: dict[str, Any]) -> None:
            self.net.load_state_dict(state["model"])
            self.opt.load_state_dict(state["opt"])
            self.epoch = state["epoch"]

    trainer = Trainer(0, steps=2)
    trainer.epoch = 5
    path = tp.Checkpoint(trainer=trainer.state_dict()).write(str(tmp_path / "ckpt"))
    fresh = Trainer(1, steps=0)
    tp.Checkpoint(trainer=fresh).read(path).assert_consumed()
    assert fresh.epoch == 5 and type(fresh.epoch) is int
    assert_same(fresh.opt.state_dict(), trainer.opt.state_dict())


class HistoryOptimizer(torch.optim.LBFGS):  # type: ignore[misc]
    """Another library's optimizer keeping Python numbers and lists of tensors as its state (torch's own LBFGS is
    rebuilt by the names of its entries: see test_torch_lbfgs.py)."""


def test_state_that_cannot_be_rebuilt_with_certainty_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    lbfgs = HistoryOptimizer(net.parameters())

    def closure() -> Any:
        lbfgs.zero_grad()
        loss = net(torch.ones(2, 3)).square().sum()
        loss.backward()
        return loss

    lbfgs.step(closure)  # its state holds lists of tensors, which the dict layout cannot tell from dicts
    path = tp.Checkpoint(model=net.state_dict(), optimizer=lbfgs.state_dict()).write(str(tmp_path / "ckpt"))
    fresh = torch.nn.Linear(3, 2)
    before = fresh.weight.detach().clone()
    fresh_lbfgs = HistoryOptimizer(fresh.parameters())
    with pytest.raises(tp.AssignmentError) as caught:
        tp.Checkpoint(model=fresh, optimizer=fresh_lbfgs).read(path)
    message = str(caught.value)
    assert "nothing was written" in message and "Checkpoint.optimizer (HistoryOptimizer)" in message
    assert "Checkpoint.optimizer['state']['0']['old_dirs']" in message and "tp.load_tree(path)" in message
    assert torch.equal(fresh.weight, before) and fresh_lbfgs.state_dict()["state"] == {}


def test_a_value_of_another_type_than_the_objects_is_refused(tmp_path: Path) -> None:
    _, opt, _ = _run(0, steps=1)
    state = opt.state_dict()
    state["param_groups"][0]["lr"] = np.ones(2)  # not a number where the optimizer holds the float lr
    path = tp.Checkpoint(optimizer=state).write(str(tmp_path / "ckpt"))
    _, fresh, _ = _run(1, steps=0)
    with pytest.raises(tp.AssignmentError, match=r"\['lr'\] .* holds an array of dtype float64 and shape \(2,\) where"):
        tp.Checkpoint(optimizer=fresh).read(path)
    assert fresh.param_groups[0]["lr"] == 0.123 and fresh.state_dict()["state"] == {}


def test_entries_the_dict_lacks_are_reported_by_the_status(tmp_path: Path) -> None:
    _, opt, sched = _run(0, steps=1)
    state = {k: v for k, v in sched.state_dict().items() if k != "last_epoch"}
    path = tp.Checkpoint(optimizer=opt.state_dict(), scheduler=state).write(str(tmp_path / "ckpt"))
    _, opt2, sched2 = _run(1, steps=0)
    status = tp.Checkpoint(optimizer=opt2, scheduler=sched2).read(path)
    with pytest.raises(tp.MatchError, match=r"got only some of their values.*\n  \(root\)\.scheduler: last_epoch$"):
        status.assert_existing_objects_matched()
    assert sched2.state_dict()["_step_count"] == sched.state_dict()["_step_count"]
