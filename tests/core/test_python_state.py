"""PythonState: arbitrary state saved as the py_state string attribute."""

from __future__ import annotations

import json

import numpy as np
import pytest

import trackpoint as tp


class Config(tp.PythonState):
    def __init__(self, **data: object) -> None:
        self.data = dict(data)

    def serialize(self) -> str:
        return json.dumps(self.data)

    def deserialize(self, string_value: str | bytes) -> None:
        self.data = json.loads(string_value)


class Blob(tp.PythonState):
    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def serialize(self) -> bytes:
        return self.payload

    def deserialize(self, string_value: str | bytes) -> None:
        assert isinstance(string_value, bytes)
        self.payload = string_value


def test_python_state_round_trip() -> None:
    path = tp.Checkpoint(cfg=Config(lr=0.5, name="ü"), blob=Blob(b"\x00\x01")).save("memory://ps/ckpt")
    cfg, blob = Config(), Blob(b"")
    tp.Checkpoint(cfg=cfg, blob=blob).restore(path).assert_consumed()
    assert cfg.data == {"lr": 0.5, "name": "ü"}
    assert blob.payload == b"\x00\x01"
    with tp.load_checkpoint(path) as reader:
        assert reader.get_tensor("cfg/.ATTRIBUTES/py_state") == json.dumps({"lr": 0.5, "name": "ü"}).encode()


def test_python_state_restored_on_assignment() -> None:
    holder = tp.AutoTrackable()
    holder.cfg = Config(step=3)
    path = tp.Checkpoint(holder=holder).save("memory://ps/ckpt")
    other = tp.AutoTrackable()
    status = tp.Checkpoint(holder=other).restore(path)
    other.cfg = Config()
    assert other.cfg.data == {"step": 3}
    status.assert_consumed()


def test_serialize_must_return_text() -> None:
    class Bad(tp.PythonState):
        def serialize(self) -> str:
            return 3  # type: ignore[return-value]

        def deserialize(self, string_value: str | bytes) -> None:
            pass

    with pytest.raises(tp.TrackableError, match=r"Bad.serialize\(\) must return str or bytes, got int"):
        tp.Checkpoint(bad=Bad()).write("memory://ps/bad")


def test_python_state_refuses_a_numeric_value() -> None:
    class Numeric(tp.Trackable):
        def _serialize_to_tensors(self) -> dict[str, np.ndarray]:
            return {"py_state": np.zeros(2)}

    holder = tp.AutoTrackable()
    holder.cfg = Numeric()
    path = tp.Checkpoint(holder=holder).write("memory://ps/num")
    target = tp.AutoTrackable()
    target.cfg = Config(keep=True)
    with pytest.raises(tp.DTypeMismatchError, match="expected a string"):
        tp.Checkpoint(holder=target).read(path)
    assert target.cfg.data == {"keep": True}
