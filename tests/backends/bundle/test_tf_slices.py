"""TensorFlow restores trackpoint's sliced and split checkpoints (needs TensorFlow; skipped without it).

trackpoint writes partitioned values (one key, slices merged from several shards, as several processes
write them) and tensors split by ``max_shard_bytes``; TensorFlow restores them into full-size
``tf.Variable`` objects with ``assert_consumed()`` and reads them with ``tf.train.load_checkpoint``.
Run it in a virtualenv holding TensorFlow and this checkout (see test_tf_roundtrip.py)::

    /tmp/tfvenv/bin/python -m pytest tests/backends/bundle/test_tf_slices.py
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

import trackpoint as tp
from trackpoint.backends.bundle import BundleBackend
from trackpoint.backends.stores import LocalFiles
from trackpoint.storage import CheckpointOptions, ShardSpec, TensorSlice, WriteItem
from trackpoint.trackable import VARIABLE_VALUE_KEY, Trackable

tf = pytest.importorskip("tensorflow")

pytestmark = pytest.mark.tensorflow

VALUE = ".ATTRIBUTES/VARIABLE_VALUE"
TABLE = np.arange(40 * 6, dtype=np.float32).reshape(40, 6) * 0.5
BIG = np.arange(64 * 32, dtype=np.float64).reshape(64, 32)


class Partitioned(Trackable):
    """One object holding a tensor as slices of one attribute ({spec: array}), as a partitioned variable."""

    def __init__(self, full: np.ndarray[Any, Any], parts: list[TensorSlice]) -> None:
        self.parts = {p.spec: full[p.index].copy() for p in parts}

    def _serialize_to_tensors(self) -> dict[str, Any]:
        return {VARIABLE_VALUE_KEY: dict(self.parts)}


def test_tensorflow_restores_partitioned_and_split_values(tmp_path: Path) -> None:
    s = TABLE.shape
    parts = [
        TensorSlice(s, (0, 0), (15, 6)),
        TensorSlice(s, (15, 0), (25, 2)),  # a cut along the second dimension too
        TensorSlice(s, (15, 2), (25, 4)),
    ]
    root = tp.AutoTrackable()
    root.table = Partitioned(TABLE, parts)
    root.big = tp.Variable(BIG)  # 16 KiB: split into 4 KiB slices
    root.step = tp.Variable(np.int64(7))
    path = tp.Checkpoint(model=root).write(str(tmp_path / "ckpt"), CheckpointOptions(max_shard_bytes=4096))

    model = tf.Module()
    model.table = tf.Variable(tf.zeros(s))
    model.big = tf.Variable(tf.zeros(BIG.shape, tf.float64))
    model.step = tf.Variable(np.int64(0))
    tf.train.Checkpoint(model=model).read(path).assert_consumed()
    np.testing.assert_array_equal(model.table.numpy(), TABLE)
    np.testing.assert_array_equal(model.big.numpy(), BIG)
    assert int(model.step.numpy()) == 7

    reader = tf.train.load_checkpoint(path)
    shapes = reader.get_variable_to_shape_map()
    assert shapes[f"model/table/{VALUE}"] == [40, 6] and shapes[f"model/big/{VALUE}"] == [64, 32]
    np.testing.assert_array_equal(reader.get_tensor(f"model/big/{VALUE}"), BIG)


def test_tensorflow_reads_slices_merged_from_several_writers(tmp_path: Path) -> None:
    """The save protocol as four processes run it (one shard each, one commit), read by TensorFlow."""
    backend = BundleBackend(LocalFiles())
    prefix = str(tmp_path / "ckpt")
    save_id = uuid.uuid4().hex
    backend.begin(prefix, save_id)
    bounds = [(0, 7), (7, 20), (20, 21), (21, 40)]
    results = [
        backend.write_shard(
            prefix,
            ShardSpec(i, 4, save_id),
            [WriteItem("table", TABLE[a:b], TensorSlice(TABLE.shape, (a, 0), (b - a, 6)))],
        )
        for i, (a, b) in reversed(list(enumerate(bounds)))
    ]
    backend.commit(prefix, sorted(results, key=lambda r: r.spec.shard_id))
    reader = tf.train.load_checkpoint(prefix)
    np.testing.assert_array_equal(reader.get_tensor("table"), TABLE)
    # TensorFlow's own restore op reading a part of it.
    part = tf.raw_ops.RestoreV2(
        prefix=prefix, tensor_names=["table"], shape_and_slices=["40 6 5,10:0,6"], dtypes=[tf.float32]
    )[0]
    np.testing.assert_array_equal(part.numpy(), TABLE[5:15])
