"""Objects with ``state_dict()``/``load_state_dict()`` are saved through their state dict, wherever they are.

PyTorch modules, optimizers and schedulers given to a ``Checkpoint``, held in containers or assigned to an
``AutoTrackable`` attribute; the state dict's plain Python values and structure are kept, and entries the object
lacks at restore time (an optimizer's moments before its first step) are rebuilt from the checkpoint.
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from stateful_objects import StateHolder, assert_same
from trackpoint.stateful import STATE_DICT_STRUCTURE

torch = pytest.importorskip("torch")


def _trained(seed: int, steps: int = 3) -> tuple[Any, Any, Any]:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    for _ in range(steps):
        opt.zero_grad()
        net(torch.randn(8, 3)).square().sum().backward()
        opt.step()
        sched.step()
    return net, opt, sched


def test_module_optimizer_and_scheduler_restore_into_fresh_objects(tmp_path: Path) -> None:
    net, opt, sched = _trained(0)
    path = tp.Checkpoint(model=net, optimizer=opt, scheduler=sched).write(str(tmp_path / "ckpt"))
    net2, opt2, sched2 = _trained(1, steps=0)  # a fresh optimizer holds no moments yet
    assert opt2.state_dict()["state"] == {}
    weight = net2[0].weight
    pointer = weight.data_ptr()
    tp.Checkpoint(model=net2, optimizer=opt2, scheduler=sched2).read(path).assert_consumed()
    assert_same(net2.state_dict(), net.state_dict())
    assert_same(opt2.state_dict(), opt.state_dict())  # moments, steps, lr, betas (a tuple), None flags
    assert_same(sched2.state_dict(), sched.state_dict())
    assert net2[0].weight is weight and weight.data_ptr() == pointer and weight.requires_grad
    # The restored optimizer goes on exactly as the saved one does.
    batch = torch.randn(8, 3)
    for model, optimizer in ((net, opt), (net2, opt2)):
        optimizer.zero_grad()
        model(batch).square().sum().backward()
        optimizer.step()
    assert_same(net2.state_dict(), net.state_dict())


def test_a_module_on_an_attribute_or_in_a_list_is_saved_not_dropped(tmp_path: Path) -> None:
    class Trainer(tp.AutoTrackable):
        def __init__(self, seed: int) -> None:
            torch.manual_seed(seed)
            self.net = torch.nn.Linear(2, 2)
            self.heads = [torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)]

    saved = Trainer(0)
    path = tp.Checkpoint(trainer=saved).write(str(tmp_path / "ckpt"))
    keys = {key for key, _ in tp.list_variables(path)}
    assert {"trainer/net/.ATTRIBUTES/weight", "trainer/heads/1/.ATTRIBUTES/bias"} <= keys
    restored = Trainer(1)
    assert isinstance(restored.net, torch.nn.Linear)  # the holder keeps the module itself
    tp.Checkpoint(trainer=restored).read(path).assert_consumed()
    assert torch.equal(restored.net.weight, saved.net.weight)
    assert torch.equal(restored.heads[1].bias, saved.heads[1].bias)


def test_restore_on_create_fills_a_module_assigned_later(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = tp.AutoTrackable()
    source.net = torch.nn.Linear(2, 3)
    path = tp.Checkpoint(root=source).write(str(tmp_path / "ckpt"))
    target = tp.AutoTrackable()
    status = tp.Checkpoint(root=target).read(path)
    target.net = torch.nn.Linear(2, 3)  # created after the restore: filled when assigned
    status.assert_consumed()
    assert torch.equal(target.net.weight, source.net.weight)


def test_python_values_structure_and_numpy_leaves_round_trip(tmp_path: Path) -> None:
    original = StateHolder()
    original.state = {
        "epoch": 3,
        "big": 2**70,
        "loss": float("nan"),
        "name": "run/a",
        "flags": (True, None, b"\x00\xff"),
        7: {"seen": [1, 2, 3], "rng": np.arange(4, dtype=np.uint32)},
        "scale": np.float32(0.5),
        "a/b": np.ones((2, 2), np.float16),
        ".hidden": np.zeros(1),
        "": np.ones(1),
        "bf": np.arange(3).astype(tp.bfloat16),
    }
    path = tp.Checkpoint(data=original).write(str(tmp_path / "ckpt"))
    keys = {key for key, _ in tp.list_variables(path)}
    # Names are the state dict's keys joined by "." ("/" in a key is "%2F", a leading "." "%2E", an empty key
    # "%"), escaped in the key as object-graph names are ("." -> "..").
    assert {"data/.ATTRIBUTES/7..rng", "data/.ATTRIBUTES/a%2Fb", "data/.ATTRIBUTES/%2Ehidden"} <= keys
    assert "data/.ATTRIBUTES/%" in keys
    restored = StateHolder()  # holds nothing: every entry is rebuilt from the checkpoint
    tp.Checkpoint(data=restored).read(path).assert_consumed()
    assert len(restored.loaded) == 1
    assert_same(restored.state, original.state)


def test_arrays_the_object_holds_are_read_into_its_memory(tmp_path: Path) -> None:
    original = StateHolder()
    original.state = {"w": np.arange(6.0).reshape(2, 3), "t": torch.arange(4.0)}
    path = tp.Checkpoint(data=original).write(str(tmp_path / "ckpt"))
    target = StateHolder()
    w, t = np.zeros((2, 3)), torch.zeros(4)
    target.state = {"w": w, "t": t}
    tp.Checkpoint(data=target).read(path).assert_consumed()
    assert target.state["w"] is w and target.state["t"] is t
    assert np.array_equal(w, original.state["w"]) and torch.equal(t, original.state["t"])


def test_a_module_keeps_its_version_metadata(tmp_path: Path) -> None:
    net, _, _ = _trained(0, steps=0)
    path = tp.Checkpoint(model=net).write(str(tmp_path / "ckpt"))
    seen: list[Any] = []
    target, _, _ = _trained(1, steps=0)
    original_load = target.load_state_dict

    def load(state: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(state)
        return original_load(state, *args, **kwargs)

    target.load_state_dict = load
    tp.Checkpoint(model=target).read(path).assert_consumed()
    assert isinstance(seen[0], collections.OrderedDict)
    assert seen[0]._metadata == net.state_dict()._metadata


def test_a_bfloat16_optimizer_state_is_rebuilt_as_torch_tensors(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2).to(torch.bfloat16)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.randn(4, 3, dtype=torch.bfloat16)).sum().backward()
    opt.step()
    path = tp.Checkpoint(optimizer=opt).write(str(tmp_path / "ckpt"))
    net2 = torch.nn.Linear(3, 2).to(torch.bfloat16)
    opt2 = torch.optim.SGD(net2.parameters(), lr=0.5, momentum=0.1)
    tp.Checkpoint(optimizer=opt2).read(path).assert_consumed()
    assert_same(opt2.state_dict(), opt.state_dict())


def test_a_value_a_state_dict_cannot_hold_is_refused_with_its_place(tmp_path: Path) -> None:
    bad = StateHolder()
    bad.state = {"ok": 1, "groups": [{"ids": {1, 2}}]}
    with pytest.raises(tp.TrackableError, match=r"Checkpoint.data\['groups'\]\[0\]\['ids'\] is \{1, 2\} \(set\)"):
        tp.Checkpoint(data=bad).write(str(tmp_path / "ckpt"))
    bad.state = {(1, 2): np.zeros(1)}
    with pytest.raises(tp.TrackableError, match=r"has the key \(1, 2\) \(tuple\): .*str and int keys only"):
        tp.Checkpoint(data=bad).write(str(tmp_path / "ckpt"))
    bad.state = {0: np.zeros(1), "0": np.ones(1)}
    with pytest.raises(tp.TrackableError, match=r"two entries of the state dict are both saved as '0'"):
        tp.Checkpoint(data=bad).write(str(tmp_path / "ckpt"))
    assert not (tmp_path / "ckpt.index").exists()


def test_arrays_that_do_not_fit_are_all_reported_before_anything_changes(tmp_path: Path) -> None:
    original = StateHolder()
    original.state = {"a": np.zeros(3), "b": np.zeros((2, 2)), "c": np.ones(2)}
    path = tp.Checkpoint(data=original).write(str(tmp_path / "ckpt"))
    target = StateHolder()
    c = np.zeros(2)
    target.state = {"a": np.zeros(4), "b": np.zeros((2, 2), np.float32), "c": c}
    with pytest.raises(tp.ShapeMismatchError, match=r"(?s)2 values do not fit Checkpoint.data.*'a'.*'b'"):
        tp.Checkpoint(data=target).read(path)
    assert not target.loaded and not c.any()


def test_torch_tensors_of_another_dtype_are_cast_by_load_state_dict_as_in_torch(tmp_path: Path) -> None:
    # A float32 run restored into a bfloat16 model and its optimizer: torch's load_state_dict casts (copy_), and
    # so does the restore; other shapes are still refused before anything is written.
    net, opt, _ = _trained(0)
    path = tp.Checkpoint(model=net, optimizer=opt).write(str(tmp_path / "ckpt"))
    half = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    half = half.to(torch.bfloat16)
    half_opt = torch.optim.Adam(half.parameters(), lr=0.5)
    tp.Checkpoint(model=half, optimizer=half_opt).read(path).assert_consumed()
    assert half[0].weight.dtype == torch.bfloat16
    assert torch.equal(half[0].weight, net[0].weight.to(torch.bfloat16))
    assert half[1].num_batches_tracked.item() == net[1].num_batches_tracked.item()
    moment = half_opt.state_dict()["state"][0]["exp_avg"]
    assert moment.dtype == torch.bfloat16 and torch.equal(moment, opt.state_dict()["state"][0]["exp_avg"].bfloat16())
    wide = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.BatchNorm1d(5), torch.nn.Linear(5, 2))
    before = wide[2].weight.detach().clone()
    with pytest.raises((tp.ShapeMismatchError, tp.DTypeMismatchError), match="do not fit Checkpoint.model"):
        tp.Checkpoint(model=wide.to(torch.float64)).read(path)
    assert torch.equal(wide[2].weight, before.to(torch.float64))


def test_a_refusing_load_state_dict_is_an_assignment_error(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = tp.Checkpoint(model=torch.nn.Linear(2, 2)).write(str(tmp_path / "ckpt"))
    with pytest.raises(tp.AssignmentError, match=r"Checkpoint.model: Sequential.load_state_dict\(\) refused"):
        tp.Checkpoint(model=torch.nn.Sequential(torch.nn.Linear(2, 2))).read(path)


def test_a_node_saved_by_something_else_is_not_taken_for_a_state_dict(tmp_path: Path) -> None:
    path = tp.Checkpoint(model=tp.Variable(np.zeros(2))).write(str(tmp_path / "ckpt"))
    with pytest.raises(
        tp.AssignmentError, match=rf"holds no state dict there \(no scalar string '{STATE_DICT_STRUCTURE}'"
    ):
        tp.Checkpoint(model=StateHolder()).read(path)


def test_an_async_save_keeps_the_values_of_the_moment_it_was_called(tmp_path: Path) -> None:
    net, _, _ = _trained(0, steps=0)
    expected = {k: v.clone() for k, v in net.state_dict().items()}
    ckpt = tp.Checkpoint(model=net)
    path = ckpt.write(str(tmp_path / "ckpt"), options=tp.CheckpointOptions(enable_async=True))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    ckpt.sync()
    assert_same(tp.load_checkpoint(path).get_tensor("model/.ATTRIBUTES/0..weight"), expected["0.weight"].numpy())


def test_stateful_is_the_protocol_torch_objects_follow(tmp_path: Path) -> None:
    net, opt, sched = _trained(0, steps=0)
    assert all(isinstance(obj, tp.Stateful) for obj in (net, opt, sched, StateHolder()))

    class Both(tp.AutoTrackable):  # a trackable saves itself, whatever methods it has
        def __init__(self) -> None:
            self.v = tp.Variable(np.ones(2))

        def state_dict(self) -> dict[str, Any]:
            raise AssertionError("not called")

        def load_state_dict(self, state: Any) -> None:
            raise AssertionError("not called")

    keys = [key for key, _ in tp.list_variables(tp.Checkpoint(both=Both()).write(str(tmp_path / "ckpt")))]
    assert "both/v/.ATTRIBUTES/VARIABLE_VALUE" in keys and not any("STATE_DICT" in key for key in keys)


class _Forged(tp.Trackable):
    """Saves a ``.STATE_DICT`` string of its choosing, as a damaged or newer checkpoint would hold."""

    def __init__(self, text: bytes) -> None:
        self.text = text

    def _serialize_to_tensors(self) -> dict[str, Any]:
        value = np.empty((), dtype=object)
        value[()] = self.text
        return {STATE_DICT_STRUCTURE: value}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"{not json", r"Checkpoint.data: the saved state dict structure is unreadable"),
        (b'{"state": {}}', r"structure is unreadable \('version'\)"),
        (b'{"version": 2, "state": {"dict": []}}', r"saved in format 2; this trackpoint reads format 1: upgrade"),
        (
            b'{"version": 1, "state": {"array": "w", "kind": "numpy"}}',
            r"names the array 'w', which the checkpoint lacks",
        ),
    ],
)
def test_an_unreadable_or_newer_structure_is_invalid(tmp_path: Path, text: bytes, message: str) -> None:
    path = tp.Checkpoint(data=_Forged(text)).write(str(tmp_path / "ckpt"))
    target = StateHolder()
    with pytest.raises(tp.InvalidCheckpointError, match=message):
        tp.Checkpoint(data=target).read(path)
    assert not target.loaded


def test_a_checkpoint_of_the_state_dict_given_as_a_dict_restores_into_the_module(tmp_path: Path) -> None:
    # The layout of `model=net.state_dict()` (a variable node per key) restores into `model=net` in place.
    net, _, _ = _trained(0, steps=0)
    path = tp.Checkpoint(model=net.state_dict()).write(str(tmp_path / "ckpt"))
    target, _, _ = _trained(1, steps=0)
    weight = target[0].weight
    status = tp.Checkpoint(model=target).read(path)
    status.assert_consumed().assert_existing_objects_matched()
    assert_same(target.state_dict(), net.state_dict())
    assert target[0].weight is weight


def test_entries_a_state_dict_checkpoint_lacks_are_reported_by_the_status(tmp_path: Path) -> None:
    # A layer added since `model=net.state_dict()` was saved kept its initial values while both asserts passed.
    net, _, _ = _trained(0, steps=0)
    saved = {k: v for k, v in net.state_dict().items() if not k.startswith("1.")}
    path = tp.Checkpoint(model=saved).write(str(tmp_path / "ckpt"))
    target, _, _ = _trained(1, steps=0)
    status = tp.Checkpoint(model=target).read(path)
    lacking = r"1\.weight, 1\.bias, 1\.running_mean, 1\.running_var, 1\.num_batches_tracked"
    for check in (status.assert_existing_objects_matched, status.assert_consumed):
        with pytest.raises(tp.MatchError, match=rf"got only some of their values.*\n  \(root\)\.model: {lacking}$"):
            check()
    assert torch.equal(target[0].weight, net[0].weight)  # what it holds is restored
    status.assert_nontrivial_match()


def test_objects_without_state_do_not_break_restoring_older_checkpoints(tmp_path: Path) -> None:
    old = tp.AutoTrackable()
    old.w = tp.Variable(np.ones(2))
    path = tp.Checkpoint(model=old).write(str(tmp_path / "ckpt"))
    new = tp.AutoTrackable()
    new.w = tp.Variable(np.zeros(2))
    new.loss_fn = torch.nn.MSELoss()  # an empty state dict: nothing saved, nothing expected
    new.act = torch.nn.ReLU()
    tp.Checkpoint(model=new).read(path).assert_consumed().assert_existing_objects_matched()
    assert new.w.numpy().tolist() == [1.0, 1.0]
    keys = [key for key, _ in tp.list_variables(tp.Checkpoint(model=new).write(str(tmp_path / "again")))]
    assert not any("loss_fn" in key or "act" in key for key in keys)


def test_an_object_held_in_two_places_is_saved_and_loaded_once(tmp_path: Path) -> None:
    shared = StateHolder()
    shared.state = {"w": np.arange(3.0)}
    holder = tp.AutoTrackable()
    holder.loader = shared
    path = tp.Checkpoint(root=holder, also=shared, many=[shared]).write(str(tmp_path / "ckpt"))
    assert sum(key.endswith("/.ATTRIBUTES/w") for key, _ in tp.list_variables(path)) == 1
    target = StateHolder()
    again = tp.AutoTrackable()
    again.loader = target
    tp.Checkpoint(root=again, also=target, many=[target]).read(path).assert_consumed()
    assert len(target.loaded) == 1 and target.state["w"].tolist() == [0.0, 1.0, 2.0]


def test_counters_and_ordered_dicts_keep_their_type(tmp_path: Path) -> None:
    net = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[2, 2, 4], gamma=0.5)
    opt.step()
    sched.step()
    path = tp.Checkpoint(opt=opt, sched=sched).write(str(tmp_path / "ckpt"))
    opt2 = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=1.0)
    sched2 = torch.optim.lr_scheduler.MultiStepLR(opt2, milestones=[9])
    tp.Checkpoint(opt=opt2, sched=sched2).read(path).assert_consumed()
    assert type(sched2.milestones) is collections.Counter and sched2.milestones == sched.milestones
    for _ in range(3):
        opt.step()
        opt2.step()
        sched.step()
        sched2.step()  # a plain dict here raised AttributeError ('elements')
    assert sched2.get_last_lr() == sched.get_last_lr()
    bad = StateHolder()
    bad.state = {"d": collections.defaultdict(list)}
    with pytest.raises(
        tp.TrackableError, match=r"Checkpoint.data\['d'\] is defaultdict.*dicts \(OrderedDict, Counter\)"
    ):
        tp.Checkpoint(data=bad).write(str(tmp_path / "bad"))


def test_a_lazy_module_is_restored_through_load_state_dict(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.LazyLinear(3), torch.nn.LazyBatchNorm1d())
    net(torch.randn(4, 5))
    path = tp.Checkpoint(model=net).write(str(tmp_path / "ckpt"))
    fresh = torch.nn.Sequential(torch.nn.LazyLinear(3), torch.nn.LazyBatchNorm1d())  # not materialised yet
    tp.Checkpoint(model=fresh).read(path).assert_consumed()
    assert_same(fresh.state_dict(), net.state_dict())


@pytest.mark.filterwarnings("error")  # torch's "copying into a meta parameter is a no-op" warning fails it
@pytest.mark.parametrize("non_strict", [False, True])
def test_a_module_built_on_the_meta_device_is_filled_by_its_checkpoint(tmp_path: Path, non_strict: bool) -> None:
    # Large models are built without memory and filled from their checkpoint; an optimizer made beforehand
    # must train the filled parameters, not the empty ones (torch's assign=True would leave it holding those).
    net, _, _ = _trained(0)
    path = tp.Checkpoint(model=net).write(str(tmp_path / "ckpt"))
    with torch.device("meta"):
        fresh = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    weight = fresh[0].weight
    opt = torch.optim.SGD(fresh.parameters(), lr=0.1)
    tp.Checkpoint(model=tp.NonStrict(fresh) if non_strict else fresh).read(path).assert_consumed()
    assert_same(fresh.state_dict(), net.state_dict())
    assert fresh[0].weight is weight and isinstance(weight, torch.nn.Parameter) and weight.requires_grad
    assert not any(t.is_meta for t in fresh.state_dict().values())
    before = weight.detach().clone()
    fresh(torch.randn(8, 3)).square().sum().backward()
    opt.step()
    assert not torch.equal(weight, before)


def test_meta_tensors_the_restore_cannot_fill_are_refused(tmp_path: Path) -> None:
    net, _, _ = _trained(0)
    path = tp.Checkpoint(model=net).write(str(tmp_path / "ckpt"))

    class Plain:  # a Stateful that is not a module: the restore cannot fill its tensors
        def __init__(self, module: Any) -> None:
            self.module = module

        def state_dict(self) -> Any:
            return self.module.state_dict()

        def load_state_dict(self, state: Any, **kwargs: Any) -> None:
            self.module.load_state_dict(state)

    with torch.device("meta"):
        fresh = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    with pytest.raises(tp.AssignmentError, match=r"9 of its tensors are on the 'meta' device .*to_empty"):
        tp.Checkpoint(model=Plain(fresh)).read(path)
    assert all(t.is_meta for t in fresh.state_dict().values())
    # Shapes are checked before anything is written: a tensor on 'meta' does not take another shape.
    with torch.device("meta"):
        narrow = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 3))
    with pytest.raises(tp.ShapeMismatchError, match=r"on the 'meta' device: the checkpoint holds shape \(2, 4\)"):
        tp.Checkpoint(model=narrow).read(path)
    assert narrow[2].weight.shape == (3, 4) and narrow[2].weight.is_meta


def test_a_layer_a_non_strict_restore_leaves_on_meta_is_said_and_the_rest_restored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    net, _, _ = _trained(0)
    step = tp.Variable(np.int64(7))
    path = tp.Checkpoint(model=net, step=step).write(str(tmp_path / "ckpt"))
    with torch.device("meta"):
        grown = torch.nn.Sequential(
            torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2), torch.nn.Linear(2, 2)
        )
    fresh_step = tp.Variable(np.int64(0))
    with caplog.at_level("WARNING", logger="trackpoint"):
        tp.Checkpoint(model=tp.NonStrict(grown), step=fresh_step).read(path).assert_consumed()
    assert "2 of its tensors are still on the 'meta' device after the restore (3.weight, 3.bias)" in caplog.text
    assert torch.equal(grown[0].weight, net[0].weight) and int(fresh_step.numpy()) == 7


def test_a_refusal_after_in_place_reads_says_so(tmp_path: Path) -> None:
    a = torch.nn.Linear(3, 2)
    two_groups = torch.optim.Adam([{"params": [a.weight]}, {"params": [a.bias], "lr": 0.1}])
    a(torch.ones(1, 3)).sum().backward()
    two_groups.step()
    path = tp.Checkpoint(opt=two_groups).write(str(tmp_path / "ckpt"))
    b = torch.nn.Linear(3, 2)
    one_group = torch.optim.Adam(b.parameters())
    b(torch.ones(1, 3)).sum().backward()
    one_group.step()
    with pytest.raises(tp.AssignmentError, match=r"groups\); 6 of its arrays had already been written in place"):
        tp.Checkpoint(opt=one_group).read(path)


def test_exports_and_filtered_copies_take_state_dict_names(tmp_path: Path) -> None:
    net, opt, _ = _trained(0)
    path = tp.Checkpoint(model=net, optimizer=opt).write(str(tmp_path / "ckpt"))
    # No "/" inside a name: key filters and exports by object path work.
    tp.convert(path, str(tmp_path / "model-only" / "ckpt"), exclude=["optimizer/*"])
    kept = [key for key, _ in tp.list_variables(str(tmp_path / "model-only" / "ckpt"))]
    assert "model/.ATTRIBUTES/0..weight" in kept and not any(key.startswith("optimizer/") for key in kept)
    tp.convert(path, str(tmp_path / "all.npz"))
    with np.load(tmp_path / "all.npz") as exported:
        assert np.array_equal(
            exported["optimizer/.ATTRIBUTES/state.0.exp_avg"], opt.state_dict()["state"][0]["exp_avg"].numpy()
        )


def test_a_refusal_counts_arrays_written_in_place_after_the_read(tmp_path: Path) -> None:
    class Refuses(StateHolder):
        def load_state_dict(self, state: Any) -> None:
            raise ValueError("not this one")

    path = tp.Checkpoint(data=StateHolder({"w": torch.arange(6.0).reshape(2, 3)})).write(str(tmp_path / "ckpt"))
    base = torch.zeros(3, 2)
    target = Refuses({"w": base.t()})  # a view numpy shares but cannot read into directly: copied in after
    with pytest.raises(tp.AssignmentError, match=r"not this one\); 1 of its arrays had already been written in place"):
        tp.Checkpoint(data=target).read(path)
    assert torch.equal(base.t(), torch.arange(6.0).reshape(2, 3))


def test_telling_dtensors_apart_imports_no_torch_distributed() -> None:
    import subprocess
    import sys

    # A fresh interpreter: this one may have imported torch.distributed.tensor for other tests.
    code = (
        "import sys, numpy as np, torch; from trackpoint.stateful import is_dtensor; "
        "assert not is_dtensor(torch.ones(2)) and not is_dtensor(np.ones(2)) and not is_dtensor(None); "
        "assert 'torch.distributed.tensor' not in sys.modules, 'imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    # Multi-process saves and restores of DTensors are in tests/distributed/test_dtensor.py.
