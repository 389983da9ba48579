"""TensorFlow restores a checkpoint written by four torch ranks (needs TensorFlow and torch; skipped otherwise).

A table partitioned by rows over four ranks and a replicated bias, saved with ``Checkpoint.write`` and a
``TorchCoordinator``: TensorFlow 2 restores the whole table into a full-size ``tf.Variable`` and checks
``assert_consumed()``. The project's environment has no TensorFlow; run it in a virtualenv holding
TensorFlow, torch and this checkout::

    /tmp/tfvenv/bin/pip install --no-deps -e . && /tmp/tfvenv/bin/pip install torch==2.13.0 pluggy crc32c \
        pytest pytest-timeout pytest-xdist
    /tmp/tfvenv/bin/python -m pytest -n 0 tests/distributed/test_tf_four_ranks.py
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
from ranks import Ranks, needs_torch

tf = pytest.importorskip("tensorflow")

pytestmark = [pytest.mark.xdist_group("ranks"), needs_torch, pytest.mark.tensorflow]

ROWS, COLS = 240, 256


def test_tensorflow_restores_a_checkpoint_of_four_ranks(torch4: Ranks, tmp_path: Path) -> None:
    prefix = f"{tmp_path}/ckpt"
    torch4.values("partitioned_write", prefix=prefix, rows=ROWS, cols=COLS)
    model = tf.Module()
    model.table = tf.Variable(tf.zeros((ROWS, COLS)))
    model.bias = tf.Variable(tf.zeros(COLS))
    tf.train.Checkpoint(model=model).read(prefix).assert_consumed()
    np.testing.assert_array_equal(model.table.numpy(), np.arange(ROWS * COLS, dtype=np.float32).reshape(ROWS, COLS))
    np.testing.assert_array_equal(model.bias.numpy(), np.arange(COLS, dtype=np.float32))
    assert tf.train.load_checkpoint(prefix).get_variable_to_shape_map()["model/table/.ATTRIBUTES/VARIABLE_VALUE"] == [
        ROWS,
        COLS,
    ]
