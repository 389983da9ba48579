"""trackpoint.convert to and from safetensors and .npz files, checked with the files' own readers."""

from __future__ import annotations

import base64
import json
import struct
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy

import trackpoint as tp
from trackpoint.errors import (
    BackendUnavailableError,
    CheckpointExistsError,
    CheckpointKeyError,
    CheckpointNotFoundError,
    DataLossError,
    InvalidPathError,
    NameConflictError,
    StorageError,
    UnsupportedDTypeError,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "tf"
NESTED = str(FIXTURES / "nested" / "ckpt-1")


def _tensors(prefix: str) -> dict[str, np.ndarray]:
    with tp.load_checkpoint(prefix) as reader:
        return {k: np.asarray(reader.get_tensor(k)) for k in reader.get_variable_to_shape_map()}


def _assert_same_checkpoint(a: str, b: str) -> None:
    ta, tb = _tensors(a), _tensors(b)
    assert ta.keys() == tb.keys()
    for key in ta:
        assert ta[key].dtype == tb[key].dtype and ta[key].shape == tb[key].shape, key
        np.testing.assert_array_equal(ta[key], tb[key], err_msg=key)


def test_tensorflow_checkpoint_to_safetensors_and_back_is_exact(tmp_path: Path) -> None:
    out = str(tmp_path / "model.safetensors")
    tp.convert(NESTED, out)
    # The safetensors package itself reads the file, under object-graph paths.
    loaded = safetensors.numpy.load_file(out)
    expected = _tensors(NESTED)
    assert loaded["model/encoder/dense/kernel"].shape == (3, 4)
    np.testing.assert_array_equal(
        loaded["model/encoder/dense/kernel"], expected["model/encoder/dense/kernel/.ATTRIBUTES/VARIABLE_VALUE"]
    )
    assert loaded["save_counter"].shape == ()  # scalars stay scalars
    assert len(loaded) == 18
    # Back: the very checkpoint, keys and object graph included.
    tp.convert(out, str(tmp_path / "back" / "ckpt-1"))
    _assert_same_checkpoint(NESTED, str(tmp_path / "back" / "ckpt-1"))
    assert tp.diff(NESTED, str(tmp_path / "back" / "ckpt-1")).equal


def test_the_imported_checkpoint_restores_slots_into_an_optimizer(tmp_path: Path) -> None:
    out = str(tmp_path / "model.safetensors")
    tp.convert(NESTED, out)
    tp.convert(out, str(tmp_path / "back" / "ckpt-1"))
    graph = tp.object_metadata(tmp_path / "back" / "ckpt-1")
    assert sum(len(n.slot_variables) for n in graph.nodes) == 8


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_every_dtype_the_format_holds_round_trips(tmp_path: Path, suffix: str) -> None:
    model = tp.AutoTrackable()
    values = {
        "f16": np.array([1.5, -0.0, np.inf], np.float16),
        "bf16": np.array([1.5, -2.0, np.nan], ml_dtypes.bfloat16),
        "f8e5m2": np.array([1.5, -2.0, np.inf], ml_dtypes.float8_e5m2),  # kind "f", unlike the other ml_dtypes
        "f8e4m3": np.array([1.5, -2.0, 448.0], ml_dtypes.float8_e4m3fn),
        "f64": np.arange(6, dtype=np.float64).reshape(2, 3),
        "i8": np.array([-128, 127], np.int8),
        "u64": np.array([2**64 - 1], np.uint64),
        "flag": np.array([True, False]),
        "c64": np.array([1 + 2j], np.complex64),
        "empty": np.zeros((0, 3), np.float32),
        "scalar": np.array(7, np.int64),
    }
    for name, value in values.items():
        setattr(model, name, tp.Variable(value))
    src = tp.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    out = str(tmp_path / f"all{suffix}")
    tp.convert(src, out)
    if suffix == ".npz":  # numpy itself reads every member (ml_dtypes types as raw bytes)
        with np.load(out, allow_pickle=False) as z:
            assert all(z[name].size >= 0 for name in z.files)
    tp.convert(out, str(tmp_path / "back" / "ckpt-1"))
    _assert_same_checkpoint(src, str(tmp_path / "back" / "ckpt-1"))


def test_npz_is_what_numpy_loads_and_strings_are_bytes(tmp_path: Path) -> None:
    out = str(tmp_path / "model.npz")
    tp.convert(FIXTURES / "python_state" / "ckpt-1", out)
    with np.load(out, allow_pickle=False) as z:
        assert z["step"] == 7
        assert z["state/.ATTRIBUTES/py_state"].dtype.kind == "S"
        assert "__trackpoint_metadata__" in z.files
    tp.convert(out, str(tmp_path / "back" / "ckpt-1"))
    _assert_same_checkpoint(str(FIXTURES / "python_state" / "ckpt-1"), str(tmp_path / "back" / "ckpt-1"))


def test_keep_keys_exports_checkpoint_keys(tmp_path: Path) -> None:
    out = str(tmp_path / "model.safetensors")
    tp.convert(NESTED, out, names="keys")
    loaded = safetensors.numpy.load_file(out)
    assert "model/decoder/kernel/.ATTRIBUTES/VARIABLE_VALUE" in loaded
    tp.convert(out, str(tmp_path / "back" / "ckpt-1"))
    _assert_same_checkpoint(NESTED, str(tmp_path / "back" / "ckpt-1"))


def test_include_and_exclude_select_by_path_or_key(tmp_path: Path) -> None:
    out = str(tmp_path / "model.safetensors")
    tp.convert(NESTED, out, include=["model/*"], exclude=["*OPTIMIZER_SLOT*", "model/table/*"])
    assert sorted(safetensors.numpy.load_file(out)) == [
        "model/decoder/bias",
        "model/decoder/kernel",
        "model/encoder/dense/bias",
        "model/encoder/dense/kernel",
        "model/shared",
        "model/stack/0",
        "model/stack/1",
    ]
    out2 = str(tmp_path / "keys.npz")
    tp.convert(NESTED, out2, include=["*/.ATTRIBUTES/VARIABLE_VALUE"], exclude=["*OPTIMIZER_SLOT*"])
    with np.load(out2) as z:
        assert len([f for f in z.files if not f.startswith("__")]) == 10
    with pytest.raises(CheckpointKeyError, match="no tensor .* is selected"):
        tp.convert(NESTED, str(tmp_path / "none.npz"), include=["nothing*"])


def test_a_selected_copy_between_checkpoints_prunes_the_object_graph(tmp_path: Path) -> None:
    dst = str(tmp_path / "slim" / "ckpt-1")
    tp.convert(NESTED, dst, exclude=["*OPTIMIZER_SLOT*"])
    assert not any("OPTIMIZER_SLOT" in k for k, _ in tp.list_variables(dst))
    graph = tp.object_metadata(dst)
    stored = {k for k, _ in tp.list_variables(dst)}
    assert all(a.checkpoint_key in stored for n in graph.nodes for a in n.attributes)
    assert tp.verify(dst).ok
    model = tp.AutoTrackable()
    model.decoder = tp.AutoTrackable()
    model.decoder.kernel = tp.Variable(np.zeros((4, 2), np.float32))
    tp.Checkpoint(model=model).restore(dst).expect_partial()
    np.testing.assert_array_equal(
        model.decoder.kernel.numpy(), _tensors(NESTED)["model/decoder/kernel/.ATTRIBUTES/VARIABLE_VALUE"]
    )


def test_a_foreign_file_restores_by_path(tmp_path: Path) -> None:
    # A file trackpoint did not write: dotted names as PyTorch and Hugging Face use them.
    src = str(tmp_path / "foreign.safetensors")
    weight = np.arange(6, dtype=np.float32).reshape(2, 3)
    safetensors.numpy.save_file({"encoder.layer.weight": weight, "encoder.layer.bias": np.ones(2, np.float32)}, src)
    dst = str(tmp_path / "imported" / "ckpt-1")
    tp.convert(src, dst, separator=".")
    model = tp.AutoTrackable()
    model.layer = tp.AutoTrackable()
    model.layer.weight = tp.Variable(np.zeros((2, 3), np.float32))
    model.layer.bias = tp.Variable(np.zeros(2, np.float32))
    # Every tensor of the file is used; only the new Checkpoint's save_counter has no value.
    tp.Checkpoint(encoder=model).restore(dst).assert_nontrivial_match().expect_partial()
    np.testing.assert_array_equal(model.layer.weight.numpy(), weight)
    np.testing.assert_array_equal(model.layer.bias.numpy(), np.ones(2, np.float32))


def test_an_edited_export_falls_back_to_its_names(tmp_path: Path) -> None:
    # Metadata that no longer matches the tensors (one was added) is ignored, never trusted.
    out = str(tmp_path / "model.safetensors")
    tp.convert(FIXTURES / "simple" / "ckpt-1", out)
    data = safetensors.numpy.load_file(out)
    with open(out, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        meta = json.loads(fh.read(n))["__metadata__"]
    data["extra/w"] = np.zeros(2, np.float32)
    safetensors.numpy.save_file(data, out, metadata=meta)
    dst = str(tmp_path / "back" / "ckpt-1")
    tp.convert(out, dst)
    assert {k for k, _ in tp.list_variables(dst)} == {
        "_CHECKPOINTABLE_OBJECT_GRAPH",
        "extra/w/.ATTRIBUTES/VARIABLE_VALUE",
        "save_counter/.ATTRIBUTES/VARIABLE_VALUE",
        "v/.ATTRIBUTES/VARIABLE_VALUE",
    }


def test_strings_go_to_safetensors_metadata_and_come_back(tmp_path: Path) -> None:
    # safetensors holds no strings: a PythonState's (or a torch module's .STATE_DICT) refused the whole export.
    src = FIXTURES / "python_state" / "ckpt-1"
    out = str(tmp_path / "x.safetensors")
    tp.convert(src, out)
    assert sorted(safetensors.numpy.load_file(out)) == ["save_counter", "step"]  # other readers see the numbers
    back = str(tmp_path / "back" / "ckpt-1")
    tp.convert(out, back)
    _assert_same_checkpoint(str(src), back)
    reader = tp.load_checkpoint(out)
    assert reader.get_tensor("state/.ATTRIBUTES/py_state") == tp.load_checkpoint(str(src)).get_tensor(
        "state/.ATTRIBUTES/py_state"
    )
    # The record is checksummed with the other metadata: an altered string is found, not restored.
    with open(out, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
    meta = header["__metadata__"]
    strings = json.loads(meta["trackpoint.strings"])
    entry = next(iter(strings.values()))
    entry["values"][0] = base64.b64encode(b"tampered").decode()
    meta["trackpoint.strings"] = json.dumps(strings, sort_keys=True)
    safetensors.numpy.save_file(safetensors.numpy.load_file(out), out, metadata=meta)
    with pytest.raises(DataLossError, match="trackpoint.strings"):
        tp.load_checkpoint(out)


def test_a_torch_module_and_optimizer_round_trip_through_safetensors(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(torch.nn.Linear(3, 2))
    opt = torch.optim.Adam(net.parameters())
    for parameter in net.parameters():
        parameter.grad = torch.ones_like(parameter)
    opt.step()
    path = tp.Checkpoint(model=net, optimizer=opt).save(str(tmp_path / "ckpt"))
    out = str(tmp_path / "model.safetensors")
    tp.convert(path, out)
    net2 = torch.nn.Sequential(torch.nn.Linear(3, 2))
    opt2 = torch.optim.Adam(net2.parameters(), lr=0.5)
    tp.Checkpoint(model=net2, optimizer=opt2).restore(out).assert_consumed()
    assert torch.equal(net2[0].weight, net[0].weight) and opt2.param_groups[0]["lr"] == 1e-3
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_an_existing_file_is_kept_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "model.npz"
    out.write_bytes(b"precious")
    with pytest.raises(CheckpointExistsError, match="overwrite"):
        tp.convert(NESTED, str(out))
    assert out.read_bytes() == b"precious"
    tp.convert(NESTED, str(out), overwrite=True)
    assert np.load(out)["model/stack/1"].shape == (3,)


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_an_export_gets_the_mode_of_a_new_file_or_of_the_file_it_replaces(tmp_path: Path, suffix: str) -> None:
    import os
    import stat

    out = tmp_path / f"model{suffix}"
    previous = os.umask(0o027)
    try:
        tp.convert(NESTED, str(out))
    finally:
        os.umask(previous)
    assert stat.S_IMODE(out.stat().st_mode) == 0o640  # the safetensors package alone makes it 0600
    out.chmod(0o604)
    tp.convert(NESTED, str(out), overwrite=True)
    assert stat.S_IMODE(out.stat().st_mode) == 0o604


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_an_export_makes_its_directory_as_a_save_does(tmp_path: Path, suffix: str) -> None:
    out = tmp_path / "exports" / "run-1" / f"model{suffix}"
    tp.convert(NESTED, str(out))
    tp.convert(str(out), str(tmp_path / "back" / "ckpt"))
    assert tp.list_variables(str(tmp_path / "back" / "ckpt")) == tp.list_variables(NESTED)
    in_the_way = tmp_path / "a-file"
    in_the_way.write_bytes(b"")
    with pytest.raises(StorageError, match=r"a file is in the way of its directory"):
        tp.convert(NESTED, str(in_the_way / f"model{suffix}"))


def test_writing_safetensors_without_the_package_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "safetensors", None)  # makes the import fail
    with pytest.raises(BackendUnavailableError, match=r"pip install 'trackpoint\[safetensors\]'"):
        tp.convert(NESTED, str(tmp_path / "model.safetensors"))
    # Reading needs no package.
    src = tmp_path / "in.safetensors"
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    src.write_bytes(struct.pack("<Q", len(header)) + header + np.array([1, 2], "<f4").tobytes())
    tp.convert(str(src), str(tmp_path / "ck" / "ckpt-1"))
    assert tp.load_checkpoint(tmp_path / "ck" / "ckpt-1").get_tensor("w/.ATTRIBUTES/VARIABLE_VALUE").tolist() == [1, 2]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x01", "fewer than the 8"),
        (struct.pack("<Q", 1000) + b"{}", "does not fit"),
        (struct.pack("<Q", 2) + b"[]", "not a JSON object"),
        (struct.pack("<Q", 5) + b"{bad}", "not JSON"),
    ],
)
def test_damaged_safetensors_headers_are_data_loss(tmp_path: Path, content: bytes, message: str) -> None:
    src = tmp_path / "bad.safetensors"
    src.write_bytes(content)
    with pytest.raises(DataLossError, match=message):
        tp.convert(str(src), str(tmp_path / "ck" / "ckpt-1"))


def test_a_truncated_safetensors_tensor_is_data_loss(tmp_path: Path) -> None:
    src = tmp_path / "t.safetensors"
    safetensors.numpy.save_file({"w": np.ones(100, np.float32)}, str(src))
    src.write_bytes(src.read_bytes()[:-10])
    with pytest.raises(DataLossError, match=r"tensor 'w' .* outside"):
        tp.convert(str(src), str(tmp_path / "ck" / "ckpt-1"))


def test_unknown_safetensors_dtypes_and_pickled_npz_are_refused(tmp_path: Path) -> None:
    src = tmp_path / "f8.safetensors"
    header = json.dumps({"w": {"dtype": "F8_E8M0", "shape": [1], "data_offsets": [0, 1]}}).encode()
    src.write_bytes(struct.pack("<Q", len(header)) + header + b"\0")
    with pytest.raises(UnsupportedDTypeError, match="'F8_E8M0'.*exclude"):
        tp.convert(str(src), str(tmp_path / "a" / "ckpt-1"))
    npz = tmp_path / "objects.npz"
    np.savez(npz, o=np.array([{"a": 1}], dtype=object))
    with pytest.raises(UnsupportedDTypeError, match="never unpickles"):
        tp.convert(str(npz), str(tmp_path / "b" / "ckpt-1"))


def test_a_bit_flip_in_an_npz_member_is_data_loss(tmp_path: Path) -> None:
    out = tmp_path / "m.npz"
    np.savez(out, w=np.arange(1000, dtype=np.float64))
    raw = bytearray(out.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    out.write_bytes(bytes(raw))
    report = tp.verify(str(out))
    assert not report.ok and report.problems[0].key == "w/.ATTRIBUTES/VARIABLE_VALUE"
    assert "CRC" in report.problems[0].message or "Bad" in report.problems[0].message


def test_missing_files_and_remote_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFoundError, match="no file"):
        tp.convert(str(tmp_path / "missing.npz"), str(tmp_path / "ck" / "ckpt-1"))
    with pytest.raises(InvalidPathError, match="local file system only"):
        tp.convert(NESTED, "s3://bucket/model.safetensors")


def test_progress_reports_every_byte(tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    tp.convert(NESTED, str(tmp_path / "m.npz"), progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (308, 308)
    seen.clear()
    tp.convert(NESTED, str(tmp_path / "copy" / "ckpt-1"), progress=lambda done, total: seen.append((done, total)))
    # A checkpoint copy writes the object graph too, a tensor of its own (in a flat file it is metadata).
    graph = tp.load_checkpoint(NESTED).get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH")
    assert seen[-1][0] == seen[-1][1] > 308 + len(graph)


def _metadata(path: str) -> dict[str, str]:
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        meta: dict[str, str] = json.loads(fh.read(n))["__metadata__"]
    return meta


def test_a_safetensors_export_records_a_crc32c_of_every_tensor_and_its_import_checks_them(tmp_path: Path) -> None:
    from trackpoint._crc32c import crc32c

    out = str(tmp_path / "model.safetensors")
    tp.convert(NESTED, out)
    loaded = safetensors.numpy.load_file(out)  # still an ordinary safetensors file
    record = json.loads(_metadata(out)["trackpoint.crc32c"])
    assert set(record["tensors"]) == set(loaded)
    kernel = loaded["model/decoder/kernel"]
    assert record["tensors"]["model/decoder/kernel"] == crc32c(kernel.astype(kernel.dtype.newbyteorder("<")).tobytes())
    assert set(record["metadata"]) == {"trackpoint.format", "trackpoint.keys", "trackpoint.object_graph"}
    # One bit of the kernel's data flipped: the import refuses the file rather than copy a changed value.
    raw = bytearray(Path(out).read_bytes())
    n = struct.unpack("<Q", raw[:8])[0]
    begin, _ = json.loads(raw[8 : 8 + n])["model/decoder/kernel"]["data_offsets"]
    raw[8 + n + begin] ^= 0x01
    Path(out).write_bytes(bytes(raw))
    with pytest.raises(DataLossError, match=r"CRC-32C mismatch for tensor 'model/decoder/kernel'.*export the file"):
        tp.convert(out, str(tmp_path / "back" / "ckpt-1"))
    assert not (tmp_path / "back").exists()


def _slash_named(tmp_path: Path) -> str:
    model = tp.AutoTrackable()
    model.params = {"dense/kernel": tp.Variable(np.ones(2, np.float32)), "bias": tp.Variable(np.zeros(2, np.float32))}
    return tp.Checkpoint(model=model).write(str(tmp_path / "c-1"))


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_keys_need_no_path_names_when_a_local_name_holds_the_separator(tmp_path: Path, suffix: str) -> None:
    src = _slash_named(tmp_path)
    kernel = "model/params/dense.Skernel/.ATTRIBUTES/VARIABLE_VALUE"
    # By path, the name 'dense/kernel' cannot be told from two nested objects: refused, saying what works.
    with pytest.raises(NameConflictError, match=r"'dense/kernel'.*names='keys'.*exclude pattern"):
        tp.convert(src, str(tmp_path / f"paths{suffix}"))
    # What the message suggests works: the keys,
    keys = str(tmp_path / f"keys{suffix}")
    tp.convert(src, keys, names="keys")
    tp.convert(keys, str(tmp_path / "back" / "ckpt-1"))
    assert tp.diff(src, str(tmp_path / "back" / "ckpt-1")).equal
    # with a selection too, matching the path as one would write it,
    tp.convert(src, str(tmp_path / f"kernel{suffix}"), names="keys", include=["model/params/dense/kernel"])
    # and paths once the tensor is left out.
    tp.convert(src, str(tmp_path / f"bias{suffix}"), exclude=[kernel])
    if suffix == ".npz":
        with np.load(tmp_path / "bias.npz") as z:
            assert sorted(z.files) == ["__trackpoint_metadata__", "model/params/bias"]
        with np.load(tmp_path / "kernel.npz") as z:
            assert sorted(z.files) == ["__trackpoint_metadata__", kernel]
    else:
        assert list(safetensors.numpy.load_file(str(tmp_path / "bias.safetensors"))) == ["model/params/bias"]
        assert list(safetensors.numpy.load_file(str(tmp_path / "kernel.safetensors"))) == [kernel]


def test_a_filtered_copy_between_checkpoints_needs_no_path_names(tmp_path: Path) -> None:
    src = _slash_named(tmp_path)
    dst = str(tmp_path / "copy" / "ckpt-1")
    tp.convert(src, dst, exclude=["*bias*"])
    assert {k for k, _ in tp.list_variables(dst)} == {
        "_CHECKPOINTABLE_OBJECT_GRAPH",
        "model/params/dense.Skernel/.ATTRIBUTES/VARIABLE_VALUE",
    }
    assert tp.verify(dst).ok
