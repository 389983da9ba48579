"""A model built on the 'meta' device is filled before any optimizer whose state torch places by its parameters.

torch's ``Optimizer.load_state_dict`` moves each state tensor to its parameter's device: loaded while the
parameters are still on 'meta', the state keeps no values. The names the objects are given must not decide
the order (objects were applied in name order, so ``adam`` < ``model`` lost the moments), and state that no
restore fills first is refused before anything is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import trackpoint as tp

torch = pytest.importorskip("torch")


def _trained() -> tuple[Any, Any]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(2, 4)).square().sum().backward()
        opt.step()
    return net, opt


def _on_meta() -> tuple[Any, Any]:
    with torch.device("meta"):
        net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    return net, torch.optim.AdamW(net.parameters(), lr=1e-2)


def _same_state(a: Any, b: Any) -> bool:
    sa, sb = a.state_dict()["state"], b.state_dict()["state"]
    return sa.keys() == sb.keys() and all(
        not sb[i][k].is_meta and torch.equal(sa[i][k], sb[i][k]) for i in sa for k in sa[i]
    )


@pytest.mark.parametrize(
    # Names under which the optimizer sorts before the model (`model`/`opt` happened to work).
    ("model_name", "optimizer_name"),
    [("model", "adam"), ("unet", "optimizer"), ("z", "a")],
)
def test_the_model_is_filled_before_the_optimizer_whatever_their_names(
    tmp_path: Path, model_name: str, optimizer_name: str
) -> None:
    net, opt = _trained()
    path = tp.Checkpoint(**{model_name: net, optimizer_name: opt}).write(str(tmp_path / "ckpt"))
    fresh, fresh_opt = _on_meta()
    tp.Checkpoint(**{model_name: fresh, optimizer_name: fresh_opt}).read(path).assert_consumed()
    assert _same_state(opt, fresh_opt)  # the moments hold the saved values, on the CPU
    # Both go on exactly as the saved run does.
    batch = torch.randn(2, 4)
    for model, optimizer in ((net, opt), (fresh, fresh_opt)):
        optimizer.zero_grad()
        model(batch).square().sum().backward()
        optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), fresh.parameters(), strict=True))


def test_the_order_holds_for_objects_held_deeper_and_in_one_holder(tmp_path: Path) -> None:
    net, opt = _trained()
    saved = tp.AutoTrackable()
    saved.a_optimizer, saved.b_model = opt, net
    path = tp.Checkpoint(root=saved).write(str(tmp_path / "ckpt"))
    fresh, fresh_opt = _on_meta()
    holder = tp.AutoTrackable()
    holder.a_optimizer, holder.b_model = fresh_opt, fresh
    tp.Checkpoint(root=holder).read(path).assert_consumed()
    assert _same_state(opt, fresh_opt)


def test_optimizer_state_for_parameters_left_on_meta_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    net, opt = _trained()
    path = tp.Checkpoint(model=net, optimizer=opt, step=tp.Variable(7)).write(str(tmp_path / "ckpt"))
    fresh, fresh_opt = _on_meta()
    step = tp.Variable(0)
    with pytest.raises(tp.AssignmentError, match=r"state for 4 parameters on the 'meta' device .*to_empty") as caught:
        tp.Checkpoint(optimizer=fresh_opt, step=step).read(path)
    assert "nothing was written" in str(caught.value)
    assert fresh_opt.state_dict()["state"] == {} and int(step.numpy()) == 0

    # Assigned before the module to a holder restored earlier: the deferred restore is refused the same way,
    # and succeeds once the module has been filled.
    holder = tp.AutoTrackable()
    status = tp.Checkpoint(model=holder).read(
        tp.Checkpoint(model=_holding(net, opt)).write(str(tmp_path / "held" / "ckpt"))
    )
    with pytest.raises(tp.AssignmentError, match=r"Restore their module in the same restore"):
        holder.optimizer = fresh_opt
    assert fresh_opt.state_dict()["state"] == {}
    holder.net = fresh
    holder.optimizer = fresh_opt
    assert _same_state(opt, fresh_opt)
    status.assert_consumed()


def test_state_of_a_layer_a_non_strict_restore_leaves_on_meta_is_refused(tmp_path: Path) -> None:
    net, opt = _trained()
    # A checkpoint of the first layer alone (keys `0.*`), with the optimizer of both.
    path = tp.Checkpoint(model=torch.nn.Sequential(net[0]), optimizer=opt).write(str(tmp_path / "ckpt"))
    fresh, fresh_opt = _on_meta()
    with pytest.raises(tp.AssignmentError, match=r"state for 2 parameters on the 'meta' device \(state.2, state.3\)"):
        tp.Checkpoint(model=tp.NonStrict(fresh), optimizer=fresh_opt).read(path)
    assert fresh[0].weight.is_meta and fresh_opt.state_dict()["state"] == {}


def _holding(net: Any, opt: Any) -> tp.AutoTrackable:
    holder = tp.AutoTrackable()
    holder.net, holder.optimizer = net, opt
    return holder
