"""Torch tensors held by containers and attributes are saved in place, as numpy arrays are.

A ``state_dict`` handed to a ``Checkpoint`` is saved as is, and a restore writes into the module's own
parameters and buffers (through a numpy view of their memory, or by ``copy_`` where numpy cannot share it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import trackpoint as tp

torch = pytest.importorskip("torch")


def _net() -> Any:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    net[2].to(torch.bfloat16)
    net.train()
    net[1](torch.randn(8, 4))  # running statistics and num_batches_tracked move
    return net


def test_a_state_dict_saves_as_is_and_restores_into_the_module(tmp_path: Path) -> None:
    net = _net()
    path = tp.Checkpoint(model=net.state_dict()).write(str(tmp_path / "ckpt"))
    saved = {k: v.clone() for k, v in net.state_dict().items()}
    # The keys are a variable's, so TensorFlow and numpy restores read them too.
    assert ("model/1..num_batches_tracked/.ATTRIBUTES/VARIABLE_VALUE", []) in tp.list_variables(path)
    weight = net[0].weight
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        net[1].num_batches_tracked.fill_(0)
    tp.Checkpoint(model=net.state_dict()).read(path).assert_consumed()
    assert net[0].weight is weight and weight.requires_grad
    for key, value in net.state_dict().items():
        assert value.dtype == saved[key].dtype and torch.equal(value, saved[key]), key
    assert int(net[1].num_batches_tracked) == 1


def test_tensors_as_attributes_and_checkpoint_arguments_keep_their_identity(tmp_path: Path) -> None:
    model = tp.AutoTrackable()
    model.w = torch.nn.Parameter(torch.arange(3, dtype=torch.float64))
    step = torch.tensor(5)
    path = tp.Checkpoint(model=model, step=step).write(str(tmp_path / "ckpt"))
    w = model.w
    with torch.no_grad():
        w.zero_()
    step.fill_(0)
    tp.Checkpoint(model=model, step=step).read(path).assert_consumed()
    assert model.w is w and w.tolist() == [0.0, 1.0, 2.0] and int(step) == 5


def test_an_async_save_holds_the_values_of_its_save_call(tmp_path: Path) -> None:
    t = torch.ones(1000)
    ckpt = tp.Checkpoint(t=t)
    path = ckpt.write(str(tmp_path / "ckpt"), options=tp.CheckpointOptions(enable_async=True))
    t.fill_(2.0)  # while the save may still be writing
    ckpt.sync()
    assert (tp.load_checkpoint(path).get_tensor("t/.ATTRIBUTES/VARIABLE_VALUE") == 1.0).all()


def test_a_tensor_numpy_cannot_share_is_read_at_each_save_and_written_back(tmp_path: Path) -> None:
    class OnDevice(torch.Tensor):  # type: ignore[misc]  # a CPU tensor claiming to live elsewhere
        @property
        def device(self) -> Any:
            return torch.device("cuda", 0)

        def cpu(self, *args: Any, **kwargs: Any) -> Any:
            return self.as_subclass(torch.Tensor).clone()

    t = torch.tensor([1.0, 2.0]).as_subclass(OnDevice)
    ckpt = tp.Checkpoint(state={"t": t})
    t.as_subclass(torch.Tensor).fill_(3.0)  # changed after it was tracked
    path = ckpt.write(str(tmp_path / "ckpt"))
    assert tp.load_checkpoint(path).get_tensor("state/t/.ATTRIBUTES/VARIABLE_VALUE").tolist() == [3.0, 3.0]
    t.as_subclass(torch.Tensor).fill_(0.0)
    ckpt.read(path).assert_consumed()
    assert t.as_subclass(torch.Tensor).tolist() == [3.0, 3.0]


def test_a_mismatch_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    path = tp.Checkpoint(state={"a": torch.ones(3), "b": torch.ones(2)}).write(str(tmp_path / "ckpt"))
    a, b = torch.zeros(3), torch.zeros(4)
    with pytest.raises(tp.ShapeMismatchError, match=r"checkpoint holds shape \(2,\), the value has shape \(4,\)"):
        tp.Checkpoint(state={"a": a, "b": b}).read(path)
    assert a.tolist() == [0.0] * 3
    with pytest.raises(tp.DTypeMismatchError, match="float32"):
        tp.Checkpoint(state={"a": torch.zeros(3, dtype=torch.float64), "b": torch.zeros(2)}).read(path)


def test_tensors_that_cannot_be_saved_are_refused_when_tracked() -> None:
    with pytest.raises(tp.TrackableError, match=r"Checkpoint.x\['m'\].*'meta' device"):
        tp.Checkpoint(x={"m": torch.ones(2, device="meta")})
    with pytest.raises(tp.TrackableError, match="float8_e8m0fnu"):
        tp.Checkpoint(x={"f": torch.zeros(2, dtype=torch.float8_e8m0fnu)})


def test_an_object_with_only_a_state_dict_is_refused_with_the_state_dict_to_pass() -> None:
    class Exporter:
        def state_dict(self) -> dict[str, torch.Tensor]:
            return {"w": torch.zeros(2)}

    with pytest.raises(tp.TrackableError, match=r"got Exporter: .*no load_state_dict\(\): pass model=model.state_dict"):
        tp.Checkpoint(model=Exporter())
