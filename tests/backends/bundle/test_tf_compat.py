"""Checkpoints written by real TensorFlow 2.21 read, restored and re-written by trackpoint.

The fixtures and what TensorFlow reported about them live in
``tests/fixtures/tf/`` (see its README.md; ``generate.py`` there made them).
Four levels are checked:

* format: the storage reader and ``trackpoint.load_checkpoint`` /
  ``list_variables`` / ``object_metadata`` see exactly TF's variables, dtypes,
  shapes, bits and object graph (sliced variables assembled);
* objects: trackpoint objects of the same structure restore every value with
  ``assert_consumed()``, also when created after ``restore()`` (deferred);
* bytes: trackpoint writing the same objects produces TF's files byte for byte;
* damage: corrupted copies raise DataLossError / InvalidCheckpointError naming
  the file.

On S3 (moto) and GCS (fake-gcs-server): TF's files copied as they are into a
bucket are read, restored and checked for damage, and trackpoint saving into a
bucket leaves exactly TF's files, byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.protobuf import json_format

import trackpoint as tp
from fixtures.tf import tfcases
from fixtures.tf.tfcases import OBJECT_GRAPH_KEY, ExpectedCheckpoint, assert_same_tensor
from trackpoint._resolve import open_backend
from trackpoint.errors import (
    CheckpointNotFoundError,
    DataLossError,
    InvalidCheckpointError,
)

ALL = tfcases.checkpoints()
OBJECT_BASED = [c for c in ALL if c.case != "tf1_saver"]
VALUE = ".ATTRIBUTES/VARIABLE_VALUE"
SLOT = ".OPTIMIZER_SLOT/optimizer/momentum/" + VALUE


def _ids(cases: list[ExpectedCheckpoint]) -> list[str]:
    return [repr(c) for c in cases]


def _multiblock_key(i: int) -> str:
    return f"v{i:04d}/{VALUE}"


def _all_expected_tensors(c: ExpectedCheckpoint) -> dict[str, np.ndarray[Any, Any]]:
    """Every tensor of the checkpoint; ``multiblock`` is abridged in JSON, so its rule fills the rest."""
    tensors = dict(c.tensors())
    if c.case == "multiblock":
        for i in range(tfcases.expected("multiblock")["structure"]["num_variables"]):
            tensors.setdefault(_multiblock_key(i), np.array(i * 0.5, dtype=np.float32))
    return tensors


def _assert_listing(c: ExpectedCheckpoint, listed: list[tuple[str, list[int]]]) -> None:
    if c.case == "multiblock":
        # expected.json keeps the ends and a digest of TF's full list_variables output.
        assert listed[:3] + listed[-3:] == c.list_variables
        digest = hashlib.sha256(json.dumps([[n, s] for n, s in listed]).encode()).hexdigest()
        assert digest == c.record["list_variables_sha256"]
    else:
        assert listed == c.list_variables


# ---------------------------------------------------------------- format level: storage contract


@pytest.mark.parametrize("c", ALL, ids=_ids(ALL))
def test_storage_reader_keys_dtypes_shapes(c: ExpectedCheckpoint) -> None:
    backend = open_backend(c.prefix)
    with backend.open_reader(c.prefix) as reader:
        listed = [(k, list(reader.info(k).shape)) for k in reader.keys()]
        _assert_listing(c, listed)
        for key, tf_dtype in c.dtypes.items():
            assert reader.info(key).dtype == tfcases.numpy_dtype(tf_dtype), key


@pytest.mark.parametrize("c", ALL, ids=_ids(ALL))
def test_storage_reader_values_are_bit_exact(c: ExpectedCheckpoint) -> None:
    backend = open_backend(c.prefix)
    want = _all_expected_tensors(c)
    with backend.open_reader(c.prefix) as reader:
        got = reader.read_many([(k, None) for k in want])
        for (key, expected), actual in zip(want.items(), got, strict=True):
            assert_same_tensor(actual, expected, f"{c}:{key}")


@pytest.mark.parametrize("c", ALL, ids=_ids(ALL))
def test_storage_reader_reads_into_out(c: ExpectedCheckpoint) -> None:
    backend = open_backend(c.prefix)
    with backend.open_reader(c.prefix) as reader:
        for key, expected in c.tensors():
            if expected.dtype.kind == "O":
                continue
            out = np.zeros(expected.shape, expected.dtype)
            assert reader.read(key, out=out) is out
            assert_same_tensor(out, expected, f"{c}:{key}")


def test_sliced_fixture_really_is_split_across_files() -> None:
    # Guards the premise of the `sliced` case: without it the tests above prove nothing about slices.
    c = tfcases.checkpoints("sliced")[0]
    data_files = [f for f in c.record["files"] if ".data-" in f]
    assert len(data_files) == 5
    w = c.record["index"]["entries"][f"model/w/{VALUE}"]
    assert len(w["slices"]) == 6 and [[35, 5], [0, 2]] in w["slices"]
    # Slice entries are recorded under their hex-encoded keys: a NUL byte, then the escaped name.
    w_slices = (b"\x00" + f"model/w/{VALUE}".encode()).hex()
    shards = {e["shard_id"] for k, e in c.record["index"]["entries"].items() if k.startswith(w_slices)}
    assert len(shards) >= 2


def test_multiblock_fixture_has_two_index_data_blocks() -> None:
    assert tfcases.checkpoints("multiblock")[0].record["index"]["num_data_blocks"] > 1


# ---------------------------------------------------------------- format level: public readers


@pytest.mark.parametrize("c", ALL, ids=_ids(ALL))
def test_list_variables_matches_tensorflow(c: ExpectedCheckpoint) -> None:
    listed = [(name, list(shape)) for name, shape in tp.list_variables(c.prefix)]
    _assert_listing(c, listed)


@pytest.mark.parametrize("c", ALL, ids=_ids(ALL))
def test_load_checkpoint_matches_tensorflow(c: ExpectedCheckpoint) -> None:
    reader = tp.load_checkpoint(c.prefix)
    shapes = reader.get_variable_to_shape_map()
    dtypes = reader.get_variable_to_dtype_map()
    want = _all_expected_tensors(c)
    listed = set(want) | {OBJECT_GRAPH_KEY} if c.case == "multiblock" else set(want)
    assert set(shapes) == listed == set(dtypes)
    for key, expected in want.items():
        assert list(shapes[key]) == list(expected.shape), key
        assert np.dtype(dtypes[key]) == expected.dtype, key
        assert reader.has_tensor(key)
        assert_same_tensor(reader.get_tensor(key), expected, f"{c}:{key}")
    assert not reader.has_tensor("no/such/key")


def test_load_checkpoint_of_a_directory_reads_the_latest() -> None:
    latest = tfcases.checkpoints("manager")[-1]
    reader = tp.load_checkpoint(str(tfcases.FIXTURES / "manager"))
    assert_same_tensor(reader.get_tensor(f"step/{VALUE}"), latest.tensor(f"step/{VALUE}"), "step")
    assert int(reader.get_tensor(f"step/{VALUE}")) == 3


@pytest.mark.parametrize("c", [c for c in OBJECT_BASED if c.case != "multiblock"], ids=repr)
def test_object_metadata_is_tensorflows_graph(c: ExpectedCheckpoint) -> None:
    graph = tp.object_metadata(c.prefix)
    nodes = json_format.MessageToDict(graph, preserving_proto_field_name=True)["nodes"]
    assert nodes == c.record["object_graph"]


def test_object_metadata_of_multiblock() -> None:
    c = tfcases.checkpoints("multiblock")[0]
    graph = tp.object_metadata(c.prefix)
    assert len(graph.nodes) == c.record["object_graph"]["num_nodes"] == 6002
    root = json_format.MessageToDict(graph.nodes[0], preserving_proto_field_name=True)
    assert root["children"][:3] == c.record["object_graph"]["root"]


# ---------------------------------------------------------------- object level


def _zeros_like(expected: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    if expected.dtype.kind == "O":
        return np.full(expected.shape, b"", dtype=object)
    return np.zeros(expected.shape, expected.dtype)


def test_restore_simple() -> None:
    c = tfcases.checkpoints("simple")[0]
    v = tp.Variable(np.zeros(3, np.float32))
    ckpt = tp.Checkpoint(v=v)
    ckpt.restore(c.prefix).assert_consumed()
    assert_same_tensor(v.numpy(), c.tensor(f"v/{VALUE}"), "v")
    assert int(ckpt.save_counter.numpy()) == 1


def test_read_leaves_save_counter_unresolved_like_tf() -> None:
    # TF 2.21 on this fixture: read() does not create save_counter, so assert_consumed() fails
    # on it while assert_existing_objects_matched() passes; restore() creates and restores it.
    prefix = tfcases.prefix("simple")
    v = tp.Variable(np.zeros(3, np.float32))
    status = tp.Checkpoint(v=v).read(prefix)
    status.assert_existing_objects_matched()
    with pytest.raises(tp.MatchError, match="save_counter"):
        status.assert_consumed()
    status.expect_partial()
    np.testing.assert_array_equal(v.numpy(), [1.0, 2.0, 3.0])


@pytest.mark.parametrize(
    ("value", "error", "what"),
    [
        (np.zeros(3, np.float64), tp.DTypeMismatchError, "float32"),
        (np.zeros(4, np.float32), tp.ShapeMismatchError, r"\(3,\)"),
    ],
    ids=["dtype", "shape"],
)
def test_mismatched_variable_is_refused_and_left_unchanged(value: Any, error: type[Exception], what: str) -> None:
    # TF refuses these too ("expected dtype double does not equal original dtype float",
    # "Received incompatible tensor with shape (3,)"); nothing may be half-restored.
    v = tp.Variable(value)
    root = tp.Checkpoint(v=v)
    root.save_counter.assign(-1)  # would become 1 if the restore went ahead for the other values
    with pytest.raises(error, match=rf"v/\.ATTRIBUTES/VARIABLE_VALUE.*{what}"):
        root.restore(tfcases.prefix("simple"))
    assert not v.numpy().any()
    assert int(root.save_counter.numpy()) == -1


def test_restore_dtypes() -> None:
    c = tfcases.checkpoints("dtypes")[0]
    objects = tfcases.expected("dtypes")["structure"]["objects"]
    variables = {n: tp.Variable(_zeros_like(c.tensor(f"{n}/{VALUE}")), name=n) for n in objects}
    tp.Checkpoint(**variables).restore(c.prefix).assert_consumed()
    for name, var in variables.items():
        assert_same_tensor(var.numpy(), c.tensor(f"{name}/{VALUE}"), name)


def test_restore_sliced_variables_assembled() -> None:
    c = tfcases.checkpoints("sliced")[0]
    model: Any = tp.AutoTrackable()
    model.w = tp.Variable(np.zeros([40, 8], np.float32))
    model.b = tp.Variable(np.zeros([300], np.float32))
    model.step = tp.Variable(np.int64(0))
    model.tag = tp.Variable(b"")
    tp.Checkpoint(model=model).restore(c.prefix).assert_consumed()
    for attr in ("w", "b", "step", "tag"):
        assert_same_tensor(getattr(model, attr).numpy(), c.tensor(f"model/{attr}/{VALUE}"), attr)


def test_restore_multiblock() -> None:
    c = tfcases.checkpoints("multiblock")[0]
    n = tfcases.expected("multiblock")["structure"]["num_variables"]
    variables = {f"v{i:04d}": tp.Variable(np.float32(-1.0)) for i in range(n)}
    tp.Checkpoint(**variables).restore(c.prefix).assert_consumed()
    got = np.array([variables[f"v{i:04d}"].numpy() for i in range(n)])
    np.testing.assert_array_equal(got, np.arange(n, dtype=np.float32) * np.float32(0.5))


class JsonState(tp.PythonState):
    """Mirror of generate.py's JsonState: a dict saved as UTF-8 JSON."""

    def __init__(self, payload: dict[str, Any]) -> None:
        self.payload = payload

    def serialize(self) -> str:
        return json.dumps(self.payload, sort_keys=True, ensure_ascii=False)

    def deserialize(self, string_value: str | bytes) -> None:
        text = string_value.decode("utf-8") if isinstance(string_value, bytes) else string_value
        self.payload = json.loads(text)


def test_restore_python_state() -> None:
    c = tfcases.checkpoints("python_state")[0]
    state = JsonState({})
    step = tp.Variable(np.int64(0))
    tp.Checkpoint(state=state, step=step).restore(c.prefix).assert_consumed()
    assert state.payload == tfcases.expected("python_state")["structure"]["state"]["payload"]
    assert int(step.numpy()) == 7


def test_restore_manager_latest_checkpoint() -> None:
    directory = str(tfcases.FIXTURES / "manager")
    latest = tp.latest_checkpoint(directory)
    assert latest == tfcases.prefix("manager", "ckpt-3")
    step, w = tp.Variable(np.int64(0)), tp.Variable(np.zeros([2, 2], np.float32))
    tp.Checkpoint(step=step, w=w).restore(latest).assert_consumed()
    assert int(step.numpy()) == 3
    np.testing.assert_array_equal(w.numpy(), np.arange(4, dtype=np.float32).reshape(2, 2) * 0.25 + 3)


# The `nested` structure (generate.py: Model/Encoder/Dense), built from trackpoint pieces.


def _populate(model: Any) -> None:
    """Give ``model`` the attributes of generate.py's Model, all zeros (so restored values show)."""
    model.shared = tp.Variable(np.zeros([2], np.float32))
    model.encoder = tp.AutoTrackable()
    model.encoder.dense = tp.AutoTrackable()
    model.encoder.dense.kernel = tp.Variable(np.zeros([3, 4], np.float32))
    model.encoder.dense.bias = tp.Variable(np.zeros([4], np.float32))
    model.encoder.shared = model.shared
    model.decoder = tp.AutoTrackable()
    model.decoder.kernel = tp.Variable(np.zeros([4, 2], np.float32))
    model.decoder.bias = tp.Variable(np.zeros([2], np.float32))
    model.stack = [tp.Variable(np.zeros([2], np.float32)), tp.Variable(np.zeros([3], np.float32))]
    model.table = {"alpha": tp.Variable(np.zeros([2, 2], np.float32)), "beta": tp.Variable(np.float32(0))}


def _nested_variables(model: Any) -> dict[str, Any]:
    """Checkpoint object path (as in TF's keys) -> the trackpoint Variable."""
    return {
        "model/shared": model.shared,
        "model/encoder/dense/kernel": model.encoder.dense.kernel,
        "model/encoder/dense/bias": model.encoder.dense.bias,
        "model/decoder/kernel": model.decoder.kernel,
        "model/decoder/bias": model.decoder.bias,
        "model/stack/0": model.stack[0],
        "model/stack/1": model.stack[1],
        "model/table/alpha": model.table["alpha"],
        "model/table/beta": model.table["beta"],
    }


def _assert_nested_restored(model: Any, optimizer: Any) -> None:
    c = tfcases.checkpoints("nested")[0]
    want = dict(c.tensors())
    for path, var in _nested_variables(model).items():
        assert_same_tensor(var.numpy(), want[f"{path}/{VALUE}"], path)
        slot = optimizer.get_slot(var, "momentum")
        if f"{path}/{SLOT}" in want:
            assert slot is not None, f"no momentum slot restored for {path}"
            assert_same_tensor(slot.numpy(), want[f"{path}/{SLOT}"], f"{path} momentum")
        else:
            assert slot is None, f"{path} got a slot the checkpoint does not have"


def test_restore_nested_into_existing_objects() -> None:
    model: Any = tp.AutoTrackable()
    optimizer = tp.optimizers.SGD(learning_rate=0.1, momentum=0.9)
    _populate(model)
    ckpt = tp.Checkpoint(model=model, optimizer=optimizer)
    ckpt.restore(tfcases.prefix("nested")).assert_consumed()
    _assert_nested_restored(model, optimizer)
    assert model.encoder.shared is model.shared


def test_restore_nested_deferred_objects_created_after_restore() -> None:
    model: Any = tp.AutoTrackable()
    optimizer = tp.optimizers.SGD(learning_rate=0.1, momentum=0.9)
    status = tp.Checkpoint(model=model, optimizer=optimizer).restore(tfcases.prefix("nested"))
    _populate(model)  # every variable is created after restore(): values arrive on assignment
    status.assert_consumed()
    _assert_nested_restored(model, optimizer)


def test_restore_nested_deferred_optimizer_attached_after_restore() -> None:
    model: Any = tp.AutoTrackable()
    optimizer = tp.optimizers.SGD(learning_rate=0.1, momentum=0.9)
    _populate(model)
    ckpt = tp.Checkpoint(model=model)
    status = ckpt.restore(tfcases.prefix("nested"))
    ckpt.optimizer = optimizer  # slot values wait for the optimizer, then arrive
    status.assert_consumed()
    _assert_nested_restored(model, optimizer)


def test_restore_nested_partial_model_is_reported() -> None:
    model: Any = tp.AutoTrackable()
    model.shared = tp.Variable(np.zeros([2], np.float32))
    status = tp.Checkpoint(model=model).restore(tfcases.prefix("nested"))
    status.assert_existing_objects_matched()
    want = tfcases.checkpoints("nested")[0].tensor(f"model/shared/{VALUE}")
    np.testing.assert_array_equal(model.shared.numpy(), want)
    with pytest.raises(tp.MatchError, match="encoder"):
        status.assert_consumed()
    status.expect_partial()


# ---------------------------------------------------------------- byte identity


def _assert_same_files(ours: Path, case: str, *, state_file: bool = True) -> None:
    theirs = tfcases.FIXTURES / case
    skip = {"expected.json"} if state_file else {"expected.json", "checkpoint"}
    names = sorted(p.name for p in theirs.iterdir() if p.name not in skip)
    # The local backend serializes state-file updates with a lock file beside it (TF has none);
    # anything else extra, such as a leftover temp directory, is a failure.
    ours_names = sorted(p.name for p in ours.iterdir() if p.name != "checkpoint.lock")
    assert ours_names == names, "trackpoint left different files than TF"
    for name in names:
        assert (ours / name).read_bytes() == (theirs / name).read_bytes(), f"{case}: {name} differs from TF's"


def test_save_simple_is_byte_identical(tmp_path: Path) -> None:
    ckpt = tp.Checkpoint(v=tp.Variable(np.array([1.0, 2.0, 3.0], np.float32)))
    assert ckpt.save(str(tmp_path / "ckpt")) == str(tmp_path / "ckpt-1")
    _assert_same_files(tmp_path, "simple")


def test_write_simple_is_byte_identical(tmp_path: Path) -> None:
    # write() neither counts nor touches the state file; with save_counter set by hand its
    # .index and .data equal those of TF's save().
    ckpt = tp.Checkpoint(v=tp.Variable(np.array([1.0, 2.0, 3.0], np.float32)))
    ckpt.save_counter.assign(1)
    assert ckpt.write(str(tmp_path / "ckpt-1")) == str(tmp_path / "ckpt-1")
    _assert_same_files(tmp_path, "simple", state_file=False)


def test_save_dtypes_is_byte_identical(tmp_path: Path) -> None:
    c = tfcases.checkpoints("dtypes")[0]
    objects = tfcases.expected("dtypes")["structure"]["objects"]
    variables = {n: tp.Variable(c.tensor(f"{n}/{VALUE}"), name=n) for n in objects}
    tp.Checkpoint(**variables).save(str(tmp_path / "ckpt"))
    _assert_same_files(tmp_path, "dtypes")


def test_save_python_state_is_byte_identical(tmp_path: Path) -> None:
    payload = tfcases.expected("python_state")["structure"]["state"]["payload"]
    ckpt = tp.Checkpoint(state=JsonState(dict(payload)), step=tp.Variable(np.int64(7), name="step"))
    ckpt.save(str(tmp_path / "ckpt"))
    _assert_same_files(tmp_path, "python_state")


def _without_full_names(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for node in nodes:
        node = dict(node)
        if "attributes" in node:
            node["attributes"] = [{k: v for k, v in a.items() if k != "full_name"} for a in node["attributes"]]
        out.append(node)
    return out


def test_rewrite_of_nested_keeps_tf_graph_and_data_order(tmp_path: Path) -> None:
    # Restore TF's nested checkpoint and write it back. Only the variables' full_name strings may
    # differ (TF names slots "<var>/Momentum"); node order (BFS, the diamond, slots appended in TF's
    # order) and the data layout must be TF's, so the data files agree up to the object graph.
    c = tfcases.checkpoints("nested")[0]
    model: Any = tp.AutoTrackable()
    optimizer = tp.optimizers.SGD(learning_rate=0.1, momentum=0.9)
    _populate(model)
    ckpt = tp.Checkpoint(model=model, optimizer=optimizer)
    ckpt.restore(c.prefix).assert_consumed()
    ckpt.write(str(tmp_path / "ckpt-1"))
    ours = json_format.MessageToDict(tp.object_metadata(str(tmp_path / "ckpt-1")), preserving_proto_field_name=True)
    assert _without_full_names(ours["nodes"]) == _without_full_names(c.record["object_graph"])
    graph_offset = c.record["index"]["entries"][OBJECT_GRAPH_KEY]["offset"]
    data = "ckpt-1.data-00000-of-00001"
    theirs = (tfcases.FIXTURES / "nested" / data).read_bytes()
    assert (tmp_path / data).read_bytes()[:graph_offset] == theirs[:graph_offset]


# ---------------------------------------------------------------- TF's files on object stores

STORES = [pytest.param("s3", marks=pytest.mark.s3), pytest.param("gcs", marks=pytest.mark.gcs)]


def _upload(
    request: pytest.FixtureRequest, store: str, cases: tuple[str, ...]
) -> tuple[str, Any, tp.CheckpointOptions]:
    """Copy fixture cases byte for byte into a fresh bucket, bypassing trackpoint."""
    bucket: str = request.getfixturevalue(f"{store}_bucket")
    raw = request.getfixturevalue(f"{store}_raw")
    for case in cases:
        for path in sorted((tfcases.FIXTURES / case).rglob("*")):
            if path.is_file() and path.name != "expected.json":
                raw.pipe_file(f"{bucket}/{path.relative_to(tfcases.FIXTURES).as_posix()}", path.read_bytes())
    return bucket, raw, tp.CheckpointOptions(storage_options=request.getfixturevalue(f"{store}_storage_options"))


@pytest.mark.parametrize("store", STORES)
def test_tf_checkpoints_uploaded_to_object_store_restore(request: pytest.FixtureRequest, store: str) -> None:
    # A TF checkpoint copied to a bucket as-is (e.g. with gsutil/aws s3 cp) is read by the bundle-on-object-store path.
    cases = ("nested", "sliced", "manager", "tf1_saver")
    bucket, _, options = _upload(request, store, cases)
    for c in tfcases.checkpoints(*cases):
        url = f"{bucket}/{c.case}/{c.name}"
        reader = tp.load_checkpoint(url, options=options)
        assert [(n, list(s)) for n, s in tp.list_variables(url, options=options)] == c.list_variables
        for key, expected in c.tensors():
            assert_same_tensor(reader.get_tensor(key), expected, f"{url}:{key}")
    assert tp.latest_checkpoint(f"{bucket}/manager", options=options) == f"{bucket}/manager/ckpt-3"
    sharded = f"{bucket}/tf1_saver/sharded"
    assert tp.latest_checkpoint(sharded, options=options) == f"{sharded}/model.ckpt-3"
    model: Any = tp.AutoTrackable()
    optimizer = tp.optimizers.SGD(learning_rate=0.1, momentum=0.9)
    status = tp.Checkpoint(model=model, optimizer=optimizer).restore(f"{bucket}/nested/ckpt-1", options=options)
    _populate(model)
    status.assert_consumed()
    _assert_nested_restored(model, optimizer)


@pytest.mark.parametrize("store", STORES)
def test_save_to_object_store_is_byte_identical_to_tf(request: pytest.FixtureRequest, store: str) -> None:
    # What trackpoint leaves in the bucket is exactly TF's local files: same objects, same bytes.
    bucket: str = request.getfixturevalue(f"{store}_bucket")
    raw = request.getfixturevalue(f"{store}_raw")
    options = tp.CheckpointOptions(storage_options=request.getfixturevalue(f"{store}_storage_options"))
    simple = tp.Checkpoint(v=tp.Variable(np.array([1.0, 2.0, 3.0], np.float32)))
    assert simple.save(f"{bucket}/simple/ckpt", options=options) == f"{bucket}/simple/ckpt-1"
    c = tfcases.checkpoints("dtypes")[0]
    objects = tfcases.expected("dtypes")["structure"]["objects"]
    tp.Checkpoint(**{n: tp.Variable(c.tensor(f"{n}/{VALUE}"), name=n) for n in objects}).save(
        f"{bucket}/dtypes/ckpt", options=options
    )
    for case in ("simple", "dtypes"):
        names = sorted(p.name for p in (tfcases.FIXTURES / case).iterdir() if p.name != "expected.json")
        listed = sorted(Path(p).name for p in raw.find(f"{bucket}/{case}"))
        assert listed == names
        for name in names:
            ours = raw.cat_file(f"{bucket}/{case}/{name}")
            assert ours == (tfcases.FIXTURES / case / name).read_bytes(), f"{store}: {case}/{name} differs from TF's"


@pytest.mark.parametrize("store", STORES)
def test_tf_checkpoint_damaged_on_object_store_is_data_loss(request: pytest.FixtureRequest, store: str) -> None:
    bucket, raw, options = _upload(request, store, ("sliced",))
    name = f"{bucket}/sliced/ckpt-1.data-00003-of-00005"
    data = bytearray(raw.cat_file(name))
    data[10] ^= 0x01
    raw.pipe_file(name, bytes(data))
    reader = tp.load_checkpoint(f"{bucket}/sliced/ckpt-1", options=options)
    with pytest.raises(DataLossError, match=r"ckpt-1\.data-00003-of-00005"):
        reader.get_tensor(f"model/b/{VALUE}")
    assert reader.get_tensor(f"model/step/{VALUE}") == 42


# ---------------------------------------------------------------- damaged copies


def _flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))


def _read_all(prefix: str) -> None:
    with open_backend(prefix).open_reader(prefix) as reader:
        for key in reader.keys():
            reader.read(key)


def test_flipped_data_byte_is_data_loss(tmp_path: Path) -> None:
    d = tfcases.copy_case("simple", tmp_path)
    _flip(d / "ckpt-1.data-00000-of-00001", 4)  # inside v's 12 bytes
    prefix = str(d / "ckpt-1")
    with pytest.raises(DataLossError, match=r"ckpt-1\.data-00000-of-00001"):
        tp.load_checkpoint(prefix).get_tensor(f"v/{VALUE}")
    with pytest.raises(DataLossError, match=r"ckpt-1\.data-00000-of-00001"):
        tp.Checkpoint(v=tp.Variable(np.zeros(3, np.float32))).restore(prefix)
    # An undamaged tensor of the same file still reads.
    assert int(tp.load_checkpoint(prefix).get_tensor(f"save_counter/{VALUE}")) == 1


def test_flipped_string_byte_is_data_loss(tmp_path: Path) -> None:
    c = tfcases.checkpoints("python_state")[0]
    entry = c.record["index"]["entries"]["state/.ATTRIBUTES/py_state"]
    d = tfcases.copy_case("python_state", tmp_path)
    _flip(d / "ckpt-1.data-00000-of-00001", entry["offset"] + entry["size"] - 1)
    with pytest.raises(DataLossError, match=r"ckpt-1\.data-00000-of-00001"):
        tp.load_checkpoint(str(d / "ckpt-1")).get_tensor("state/.ATTRIBUTES/py_state")


def test_flipped_byte_in_one_slice_is_data_loss(tmp_path: Path) -> None:
    d = tfcases.copy_case("sliced", tmp_path)
    _flip(d / "ckpt-1.data-00003-of-00005", 10)  # a slice of model/b
    prefix = str(d / "ckpt-1")
    with pytest.raises(DataLossError, match=r"ckpt-1\.data-00003-of-00005"):
        tp.load_checkpoint(prefix).get_tensor(f"model/b/{VALUE}")
    assert tp.load_checkpoint(prefix).get_tensor(f"model/step/{VALUE}") == 42


def test_truncated_data_file_is_data_loss(tmp_path: Path) -> None:
    d = tfcases.copy_case("nested", tmp_path)
    data = d / "ckpt-1.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(DataLossError, match=r"ckpt-1\.data-00000-of-00001"):
        _read_all(str(d / "ckpt-1"))


def test_zeroed_data_file_is_data_loss(tmp_path: Path) -> None:
    d = tfcases.copy_case("dtypes", tmp_path)
    data = d / "ckpt-1.data-00000-of-00001"
    data.write_bytes(bytes(data.stat().st_size))
    with pytest.raises(DataLossError, match=r"ckpt-1\.data-00000-of-00001"):
        tp.load_checkpoint(str(d / "ckpt-1")).get_tensor(f"f32_mat/{VALUE}")


def test_missing_data_file_names_it(tmp_path: Path) -> None:
    d = tfcases.copy_case("sliced", tmp_path)
    (d / "ckpt-1.data-00001-of-00005").unlink()
    with pytest.raises((CheckpointNotFoundError, DataLossError), match=r"ckpt-1\.data-00001-of-00005"):
        _read_all(str(d / "ckpt-1"))


@pytest.mark.parametrize("keep", [0, 20, 48, 200], ids=lambda n: f"first{n}bytes")
def test_truncated_index_is_data_loss(tmp_path: Path, keep: int) -> None:
    d = tfcases.copy_case("simple", tmp_path)
    index = d / "ckpt-1.index"
    index.write_bytes(index.read_bytes()[:keep])
    with pytest.raises(DataLossError, match=r"ckpt-1\.index is truncated"):
        tp.load_checkpoint(str(d / "ckpt-1"))


@pytest.mark.parametrize(
    "garbage",
    [b'model_checkpoint_path: "ckpt-1"\n' * 4, os.urandom(249), b"\x00" * 4096],
    ids=["text", "random", "zeros"],
)
def test_garbage_index_is_invalid(tmp_path: Path, garbage: bytes) -> None:
    d = tfcases.copy_case("simple", tmp_path)
    (d / "ckpt-1.index").write_bytes(garbage)
    with pytest.raises(InvalidCheckpointError, match=r"ckpt-1\.index"):
        tp.load_checkpoint(str(d / "ckpt-1"))
    with pytest.raises(InvalidCheckpointError, match=r"ckpt-1\.index"):
        tp.Checkpoint(v=tp.Variable(np.zeros(3, np.float32))).restore(str(d / "ckpt-1"))


def test_flipped_index_block_byte_is_data_loss(tmp_path: Path) -> None:
    d = tfcases.copy_case("simple", tmp_path)
    _flip(d / "ckpt-1.index", 40)  # inside the data block, whose CRC then fails
    with pytest.raises(DataLossError, match=r"ckpt-1\.index"):
        tp.load_checkpoint(str(d / "ckpt-1"))


def test_fixture_files_match_their_recorded_digests() -> None:
    # Damage tests work on copies; the committed fixtures must stay exactly what TF wrote.
    for c in ALL:
        for name, meta in c.record["files"].items():
            data = (tfcases.FIXTURES / c.case / name).read_bytes()
            assert hashlib.sha256(data).hexdigest() == meta["sha256"], f"{c.case}/{name} was modified"
