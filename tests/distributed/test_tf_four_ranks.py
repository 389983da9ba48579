"""TensorFlow restores a checkpoint written by four torch ranks (needs TensorFlow and torch; skipped otherwise).

A table partitioned by rows over four ranks and a replicated bias, saved with ``Checkpoint.write`` and a
``TorchCoordinator``: TensorFlow 2 restores the whole table into a full-size ``tf.Variable`` and checks
``assert_consumed()``; and the momentum slots of such a table (each rank's slice of the slot's whole
tensor) restore into TensorFlow's ``MomentumOptimizer`` slot of the full-size variable. The project's
environment has no TensorFlow; run it in a virtualenv holding TensorFlow, torch and this checkout::

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


def test_tensorflow_restores_momentum_slots_of_a_table_partitioned_over_four_ranks(
    torch4: Ranks, tmp_path: Path
) -> None:
    # Every rank takes one SGD momentum step on its rows (cases._gradient) and saves with the optimizer:
    # the checkpoint holds the table's and the momentum slot's slices of four ranks.
    prefix = f"{tmp_path}/ckpt"
    torch4.values("partitioned_train_write", prefix=prefix, rows=ROWS, cols=COLS)
    slot_key = "model/table/.OPTIMIZER_SLOT/opt/momentum/.ATTRIBUTES/VARIABLE_VALUE"
    assert tf.train.load_checkpoint(prefix).get_variable_to_shape_map()[slot_key] == [ROWS, COLS]

    model = tf.Module()
    model.table = tf.Variable(tf.zeros((ROWS, COLS)))
    model.bias = tf.Variable(tf.zeros(COLS))
    opt = tf.compat.v1.train.MomentumOptimizer(0.5, momentum=0.9)
    status = tf.train.Checkpoint(model=model, opt=opt).read(prefix)
    # TensorFlow creates the slots at the first update and fills them from the checkpoint then (deferred
    # slot restoration); a zero gradient leaves momentum * saved slot, applied once more to the table.
    opt.apply_gradients([(tf.zeros((ROWS, COLS)), model.table), (tf.zeros(COLS), model.bias)])
    status.assert_existing_objects_matched()
    full = np.arange(ROWS * COLS, dtype=np.float32).reshape(ROWS, COLS)
    grad = (full % 7) - 3.0  # cases._gradient
    np.testing.assert_allclose(opt.get_slot(model.table, "momentum").numpy(), 0.9 * grad, rtol=1e-6)
    np.testing.assert_allclose(model.table.numpy(), full - 0.5 * grad - 0.5 * 0.9 * grad, rtol=1e-6)
    np.testing.assert_allclose(opt.get_slot(model.bias, "momentum").numpy(), np.full(COLS, 0.9), rtol=1e-6)
