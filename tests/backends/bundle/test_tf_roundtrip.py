"""TensorFlow reads what trackpoint writes (needs TensorFlow; skipped without it).

The other direction of test_tf_compat.py: trackpoint saves a nested model with
momentum slots, strings and bfloat16, a multi-shard checkpoint and every
dtype; real TensorFlow then restores them with ``assert_consumed()`` and reads
them with ``tf.train.load_checkpoint``. ``trackpoint.Saver`` checkpoints
(single and sharded) are restored by ``tf.compat.v1.train.Saver``, and TF's
``CheckpointManager`` resumes from a directory kept by trackpoint's. The project's environment has no
TensorFlow, so this runs in the fixtures' virtualenv::

    /tmp/tfvenv/bin/pip install --no-deps -e . && /tmp/tfvenv/bin/pip install pluggy crc32c pytest pytest-timeout
    /tmp/tfvenv/bin/python -m pytest tests/backends/bundle/test_tf_roundtrip.py
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
from fixtures.tf import tfcases
from trackpoint import CheckpointOptions

tf = pytest.importorskip("tensorflow")

pytestmark = pytest.mark.tensorflow

VALUE = ".ATTRIBUTES/VARIABLE_VALUE"
STRINGS = np.array([b"", "caf\u00e9".encode(), b"\x00\xff raw", b"x" * 300], dtype=object)
HALF = np.array([1.0, -2.5, 3.140625, 1e30], dtype=ml_dtypes.bfloat16)


def _vals(shape: tuple[int, ...], base: float) -> np.ndarray[Any, Any]:
    n = int(np.prod(shape)) if shape else 1
    return (np.arange(n, dtype=np.float32) * 0.25 + base).reshape(shape)


FLOAT_SHAPES: dict[str, tuple[int, ...]] = {
    "shared": (2,),
    "encoder.dense.kernel": (3, 4),
    "encoder.dense.bias": (4,),
    "decoder.kernel": (4, 2),
    "decoder.bias": (2,),
    "stack.0": (2,),
    "stack.1": (3,),
    "table.alpha": (2, 2),
    "table.beta": (),
}


def _get(model: Any, dotted: str) -> Any:
    """``model.stack[0]`` for ``"stack.0"``, ``model.table["alpha"]`` for ``"table.alpha"``."""
    obj = model
    for part in dotted.split("."):
        if part.isdigit():
            obj = obj[int(part)]
        elif hasattr(obj, "keys"):
            obj = obj[part]
        else:
            obj = getattr(obj, part)
    return obj


def _trackpoint_model() -> tuple[Any, Any]:
    model: Any = tp.AutoTrackable()
    model.shared = tp.Variable(_vals((2,), 0.5))
    model.encoder = tp.AutoTrackable()
    model.encoder.dense = tp.AutoTrackable()
    model.encoder.dense.kernel = tp.Variable(_vals((3, 4), 1.0))
    model.encoder.dense.bias = tp.Variable(_vals((4,), 101.0))
    model.encoder.shared = model.shared  # diamond
    model.decoder = tp.AutoTrackable()
    model.decoder.kernel = tp.Variable(_vals((4, 2), 2.0))
    model.decoder.bias = tp.Variable(_vals((2,), 102.0))
    model.stack = [tp.Variable(_vals((2,), 3.0)), tp.Variable(_vals((3,), 4.0))]
    model.table = {"alpha": tp.Variable(_vals((2, 2), 5.0)), "beta": tp.Variable(np.float32(6.5))}
    model.names = tp.Variable(STRINGS)
    model.half = tp.Variable(HALF)
    optimizer = tp.optimizers.SGD(learning_rate=0.1, momentum=0.9)
    trained = [_get(model, k) for k in FLOAT_SHAPES if k != "table.beta"]
    optimizer.apply_gradients([(np.full(v.shape, 0.5 * (i + 1), np.float32), v) for i, v in enumerate(trained)])
    return model, optimizer


_MomentumOptimizer: Any = tf.compat.v1.train.MomentumOptimizer


class _MomentumWithIter(_MomentumOptimizer):  # type: ignore[misc]  # TF ships no type information
    """TF's MomentumOptimizer plus the step counter trackpoint's SGD saves as dependency ``iter``.

    Without a Python object for ``optimizer/iter`` TF's ``assert_consumed()``
    would (rightly) report that value as unresolved.
    """

    def __init__(self) -> None:
        super().__init__(learning_rate=0.1, momentum=0.9)
        self.iter = tf.Variable(np.int64(0), name="iter")
        self._track_trackable(self.iter, name="iter")


def _tf_model() -> Any:
    m = tf.Module()
    m.shared = tf.Variable(np.zeros(2, np.float32))
    m.encoder = tf.Module()
    m.encoder.dense = tf.Module()
    m.encoder.dense.kernel = tf.Variable(np.zeros((3, 4), np.float32))
    m.encoder.dense.bias = tf.Variable(np.zeros(4, np.float32))
    m.encoder.shared = m.shared
    m.decoder = tf.Module()
    m.decoder.kernel = tf.Variable(np.zeros((4, 2), np.float32))
    m.decoder.bias = tf.Variable(np.zeros(2, np.float32))
    m.stack = [tf.Variable(np.zeros(2, np.float32)), tf.Variable(np.zeros(3, np.float32))]
    m.table = {"alpha": tf.Variable(np.zeros((2, 2), np.float32)), "beta": tf.Variable(np.float32(0))}
    m.names = tf.Variable(tf.constant([b""] * len(STRINGS)))
    m.half = tf.Variable(tf.zeros([len(HALF)], tf.bfloat16))
    return m


def _assert_tf_model_equals(tf_model: Any, tf_opt: Any, model: Any, optimizer: Any) -> None:
    for dotted in FLOAT_SHAPES:
        ours, theirs = _get(model, dotted), _get(tf_model, dotted)
        np.testing.assert_array_equal(theirs.numpy(), ours.numpy(), err_msg=dotted)
        slot, tf_slot = optimizer.get_slot(ours, "momentum"), tf_opt.get_slot(theirs, "momentum")
        if slot is None:
            assert tf_slot is None, f"TF created a slot for {dotted} that trackpoint never saved"
        else:
            assert tf_slot is not None, f"TF did not restore the momentum slot of {dotted}"
            np.testing.assert_array_equal(tf_slot.numpy(), slot.numpy(), err_msg=f"{dotted} momentum")
    assert list(tf_model.names.numpy()) == list(STRINGS)
    assert tf_model.half.numpy().view(np.uint16).tobytes() == HALF.view(np.uint16).tobytes()
    assert tf_model.encoder.shared is tf_model.shared


def test_tensorflow_restores_nested_model_with_slots(tmp_path: Path) -> None:
    model, optimizer = _trackpoint_model()
    path = tp.Checkpoint(model=model, optimizer=optimizer).save(str(tmp_path / "ckpt"))
    assert tf.train.latest_checkpoint(str(tmp_path)) == path

    tf_model, tf_opt = _tf_model(), _MomentumWithIter()
    ckpt = tf.train.Checkpoint(model=tf_model, optimizer=tf_opt)
    ckpt.restore(path).assert_consumed()
    _assert_tf_model_equals(tf_model, tf_opt, model, optimizer)
    assert int(ckpt.save_counter.numpy()) == 1
    assert int(tf_opt.iter.numpy()) == 1


def test_tensorflow_restores_deferred(tmp_path: Path) -> None:
    # TF's restore-on-create over a trackpoint checkpoint: objects built after restore().
    model, optimizer = _trackpoint_model()
    path = tp.Checkpoint(model=model, optimizer=optimizer).save(str(tmp_path / "ckpt"))
    holder, tf_opt = tf.Module(), _MomentumWithIter()
    status = tf.train.Checkpoint(model=holder, optimizer=tf_opt).restore(path)
    built = _tf_model()
    for name in ("shared", "encoder", "decoder", "stack", "table", "names", "half"):
        setattr(holder, name, getattr(built, name))
    status.assert_consumed()
    _assert_tf_model_equals(holder, tf_opt, model, optimizer)


def test_tensorflow_lists_and_reads_every_dtype(tmp_path: Path) -> None:
    c = tfcases.checkpoints("dtypes")[0]
    values = dict(c.tensors())
    objects = tfcases.expected("dtypes")["structure"]["objects"]
    variables = {n: tp.Variable(values[f"{n}/{VALUE}"], name=n) for n in objects}
    path = tp.Checkpoint(**variables).save(str(tmp_path / "ckpt"))
    assert [(n, list(s)) for n, s in tf.train.list_variables(path)] == c.list_variables
    reader = tf.train.load_checkpoint(path)
    dtypes = reader.get_variable_to_dtype_map()
    for key, want in values.items():
        got = reader.get_tensor(key)
        assert dtypes[key].name == c.dtypes[key], key
        if want.dtype.kind == "O":
            assert np.asarray(got, dtype=object).tolist() == want.tolist(), key
        else:
            assert np.ascontiguousarray(got).tobytes() == want.tobytes(), key


def test_tensorflow_reads_multi_shard_save(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    variables = {f"w{i}": tp.Variable(rng.standard_normal((30, 10)).astype(np.float32)) for i in range(6)}
    options = CheckpointOptions(max_shard_bytes=2500, num_writers=2)
    path = tp.Checkpoint(**variables).save(str(tmp_path / "ckpt"), options=options)
    data_files = sorted(p.name for p in tmp_path.glob("ckpt-1.data-*"))
    assert len(data_files) > 1 and data_files[0].endswith(f"-of-{len(data_files):05d}")

    restored = {name: tf.Variable(np.zeros((30, 10), np.float32)) for name in variables}
    tf.train.Checkpoint(**restored).restore(path).assert_consumed()
    for name, var in variables.items():
        np.testing.assert_array_equal(restored[name].numpy(), var.numpy(), err_msg=name)


@pytest.mark.parametrize("strategy", ["rename", "create"])
@pytest.mark.parametrize("shards", [1, 3])
def test_tensorflow_reads_overwritten_checkpoints(tmp_path: Path, strategy: str, shards: int) -> None:
    # Overwriting with an unchanged shard count names the data files for one more (empty) shard,
    # so the old checkpoint's files are never written over; TensorFlow reads every generation.
    from trackpoint.backends.bundle import BundleBackend
    from trackpoint.backends.stores import LocalFiles
    from trackpoint.storage import Capabilities, WriteItem

    caps = None if strategy == "rename" else Capabilities(conditional_create=True)
    backend = BundleBackend(LocalFiles(capabilities=caps))
    prefix = str(tmp_path / "ckpt")
    options = CheckpointOptions(max_shard_bytes=400 if shards > 1 else None, num_writers=1)
    counts = []
    for generation in range(3):
        items = [WriteItem(f"w{i}", np.full(100, generation * 10 + i, np.float32)) for i in range(3)]
        backend.save(prefix, items, options)
        counts.append(len(list(tmp_path.glob("ckpt.data-*"))))
        reader = tf.train.load_checkpoint(prefix)
        assert sorted(reader.get_variable_to_shape_map()) == ["w0", "w1", "w2"]
        for i in range(3):
            np.testing.assert_array_equal(reader.get_tensor(f"w{i}"), items[i].array)
    assert counts == [shards, shards + 1, shards]


def test_tensorflow_restores_a_checkpoint_written_twice_to_one_prefix(tmp_path: Path) -> None:
    variables = {f"w{i}": tp.Variable(np.full(4, i, np.float32)) for i in range(2)}
    ckpt = tp.Checkpoint(**variables)
    path = ckpt.write(str(tmp_path / "ckpt"))
    variables["w1"].assign(np.full(4, 7.0, np.float32))
    assert ckpt.write(str(tmp_path / "ckpt")) == path
    restored = {name: tf.Variable(np.zeros(4, np.float32)) for name in variables}
    # read(), the counterpart of write(): no save_counter is involved.
    tf.train.Checkpoint(**restored).read(path).assert_consumed()
    np.testing.assert_array_equal(restored["w0"].numpy(), np.zeros(4, np.float32))
    np.testing.assert_array_equal(restored["w1"].numpy(), np.full(4, 7.0, np.float32))


@pytest.mark.parametrize("sharded", [False, True], ids=["single", "sharded"])
def test_tensorflow_v1_saver_restores_trackpoint_saver(tmp_path: Path, sharded: bool) -> None:
    # TF1 name-based direction: trackpoint.Saver writes, tf.compat.v1.train.Saver restores in graph mode.
    ours = {
        "dense/kernel": tp.Variable(_vals((3, 2), 1.0), name="dense/kernel"),
        "dense/bias": tp.Variable(_vals((2,), 10.0), name="dense/bias"),
        "global_step": tp.Variable(np.int64(7), name="global_step"),
        "names": tp.Variable(STRINGS, name="names"),
    }
    # Small shards make sharded=True really write several data files.
    options = CheckpointOptions(max_shard_bytes=32) if sharded else None
    saver = tp.Saver(list(ours.values()), sharded=sharded, options=options)
    prefix = saver.save(str(tmp_path / "model.ckpt"), global_step=7)
    assert prefix == str(tmp_path / "model.ckpt-7")
    data_files = list(tmp_path.glob("model.ckpt-7.data-*"))
    assert (len(data_files) > 1) if sharded else (len(data_files) == 1), data_files
    assert tf.train.latest_checkpoint(str(tmp_path)) == prefix

    graph = tf.Graph()
    with graph.as_default():
        with tf.compat.v1.variable_scope("dense"):
            kernel = tf.compat.v1.get_variable("kernel", shape=[3, 2], initializer=tf.compat.v1.zeros_initializer())
            bias = tf.compat.v1.get_variable("bias", shape=[2], initializer=tf.compat.v1.zeros_initializer())
        step = tf.compat.v1.train.get_or_create_global_step()
        names = tf.compat.v1.get_variable("names", initializer=tf.constant([b""] * len(STRINGS)))
        tf_saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session(graph=graph) as sess:
            tf_saver.restore(sess, prefix)
            k, b, s, n = sess.run([kernel, bias, step, names])
    np.testing.assert_array_equal(k, ours["dense/kernel"].numpy())
    np.testing.assert_array_equal(b, ours["dense/bias"].numpy())
    assert int(s) == 7
    assert list(n) == list(STRINGS)


def test_tensorflow_checkpoint_manager_resumes_from_trackpoint_manager(tmp_path: Path) -> None:
    # trackpoint's CheckpointManager writes the state file (with timestamps) that TF's manager resumes from.
    step, w = tp.Variable(np.int64(0)), tp.Variable(np.zeros((2, 2), np.float32))
    manager = tp.CheckpointManager(tp.Checkpoint(step=step, w=w), str(tmp_path), max_to_keep=2)
    for i in (1, 2, 3):
        step.assign(i)
        w.assign(_vals((2, 2), float(i)))
        manager.save()
    assert sorted(p.name for p in tmp_path.glob("*.index")) == ["ckpt-2.index", "ckpt-3.index"]

    tf_step, tf_w = tf.Variable(np.int64(0)), tf.Variable(np.zeros((2, 2), np.float32))
    tf_ckpt = tf.train.Checkpoint(step=tf_step, w=tf_w)
    tf_manager = tf.train.CheckpointManager(tf_ckpt, str(tmp_path), max_to_keep=2)
    assert tf_manager.checkpoints == [str(tmp_path / "ckpt-2"), str(tmp_path / "ckpt-3")]
    assert tf_manager.latest_checkpoint == str(tmp_path / "ckpt-3")
    tf_ckpt.restore(tf_manager.latest_checkpoint).assert_consumed()
    assert int(tf_step.numpy()) == 3 and int(tf_ckpt.save_counter.numpy()) == 3
    np.testing.assert_array_equal(tf_w.numpy(), _vals((2, 2), 3.0))
    # TF continues the numbering and retention where trackpoint stopped.
    assert tf_manager.save() == str(tmp_path / "ckpt-4")
    assert sorted(p.name for p in tmp_path.glob("*.index")) == ["ckpt-3.index", "ckpt-4.index"]
    assert tp.latest_checkpoint(str(tmp_path)) == str(tmp_path / "ckpt-4")
