"""TensorFlow reads the ml_dtypes tensors trackpoint writes (needs TensorFlow; skipped without it).

The other direction of the ``ml_dtypes`` fixture tests in ``tests/backends/test_ml_dtypes_formats.py``:
trackpoint saves every ml_dtypes type TensorFlow has a DataType for (float8, float4_e2m1fn, int4/uint4,
int2/uint2), every bit pattern of each; TensorFlow lists them under its own dtype names, reads the same
bytes and restores them into ``tf.Variable``s. Runs in the fixtures' virtualenv (see
``tests/fixtures/tf/README.md``)::

    /tmp/tfvenv/bin/python -m pytest tests/backends/bundle/test_tf_ml_dtypes.py
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import ml_dtypes
import numpy as np
import pytest

import trackpoint as tp

tf = pytest.importorskip("tensorflow")

pytestmark = pytest.mark.tensorflow

#: The ml_dtypes types of TensorFlow 2.21's DataTypes 24-33.
NAMES = (
    "float8_e5m2",
    "float8_e4m3fn",
    "float8_e4m3fnuz",
    "float8_e4m3b11fnuz",
    "float8_e5m2fnuz",
    "int4",
    "uint4",
    "int2",
    "uint2",
    "float4_e2m1fn",
)
#: Types TensorFlow 2.21 cannot hold in a tf.Variable (no AssignVariableOp kernel): read, not restored.
NO_VARIABLE = ("float8_e4m3fnuz", "float8_e4m3b11fnuz", "float8_e5m2fnuz")


def _bits(name: str) -> np.ndarray[Any, Any]:
    """Every byte value as ``name`` (the unused high bits of sub-byte types included), as a 16 x 16 matrix."""
    return np.arange(256, dtype=np.uint8).view(getattr(ml_dtypes, name)).reshape(16, 16)


def test_tensorflow_reads_every_ml_dtype_trackpoint_wrote(tmp_path: Path) -> None:
    values = {name: _bits(name) for name in NAMES}
    path = tp.Checkpoint(**{name: tp.Variable(v, name=name) for name, v in values.items()}).save(str(tmp_path / "ckpt"))
    reader = tf.train.load_checkpoint(path)
    dtypes = reader.get_variable_to_dtype_map()
    for name, want in values.items():
        key = f"{name}/.ATTRIBUTES/VARIABLE_VALUE"
        assert dtypes[key] == getattr(tf.dtypes.experimental, name), name
        got = reader.get_tensor(key)
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), name


def test_tensorflow_restores_trackpoints_ml_dtypes_into_variables(tmp_path: Path) -> None:
    names = [n for n in NAMES if n not in NO_VARIABLE]
    values = {name: _bits(name) for name in names}
    path = tp.Checkpoint(**{name: tp.Variable(v, name=name) for name, v in values.items()}).save(str(tmp_path / "ckpt"))
    variables = {name: tf.Variable(tf.constant(np.zeros_like(v)), name=name) for name, v in values.items()}
    tf.train.Checkpoint(**variables).restore(path).assert_consumed()
    for name, want in values.items():
        got = variables[name].numpy()
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), name
