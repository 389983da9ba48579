"""Flat files whose headers or metadata hold what their format does not allow: refused by name, never a crash.

A ``.safetensors`` header and an ``.npz`` metadata member are JSON read from a file, which may be damaged or
made to break a reader. Each bad value must be an error of trackpoint's hierarchy that names the file and the
tensor or entry, whichever reader meets it first (an import, ``inspect``, ``verify``, ``diff``).
"""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from trackpoint.errors import DataLossError, InvalidArgumentError, InvalidCheckpointError
from trackpoint.interchange._convert import META_GRAPH, META_KEYS, FlatReader, open_source
from trackpoint.interchange._files import NPZ_DTYPES, NPZ_METADATA, NpzFile, SafetensorsFile


def _safetensors(path: Path, header: dict[str, Any], data: int = 8) -> str:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(data))
    return str(path)


def _w(**fields: Any) -> dict[str, Any]:
    """The header of one float32 tensor ``w`` of shape [2], with ``fields`` replaced."""
    return {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8], **fields}}


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (_w(data_offsets=["a", 8]), r"data_offsets \[\"a\", 8\], not a list of two integers"),
        (_w(data_offsets=[0, "8"]), "data_offsets .*not a list of two integers"),
        (_w(data_offsets=[0, 8.0]), "data_offsets .*not a list of two integers"),
        (_w(data_offsets=[0, 8, 8]), "data_offsets .*not a list of two integers"),
        (_w(data_offsets={"begin": 0, "end": 8}), "data_offsets .*not a list of two integers"),
        (_w(data_offsets=[0, True]), "data_offsets .*not a list of two integers"),
        (_w(data_offsets=None), "data_offsets null, not a list of two integers"),
        (_w(data_offsets=[8, 0]), r"byte range \[8, 0\), outside the 8 data bytes"),
        (_w(data_offsets=[-8, 0]), r"byte range \[-8, 0\), outside"),
        (_w(shape=[4], data_offsets=[0, 16]), r"byte range \[0, 16\), outside the 8 data bytes"),
        (_w(data_offsets=[0, 4]), r"byte range \[0, 4\) of 4 bytes, but F32 \[2\] takes 8 bytes"),
        (_w(shape=[2.5]), r"shape \[2.5\], not a list of integers >= 0"),
        (_w(shape=[True, 2]), "shape .*not a list of integers >= 0"),
        (_w(shape=[-1, -2]), "shape .*not a list of integers >= 0"),
        (_w(shape="ab"), 'shape "ab", not a list of integers >= 0'),
        (_w(shape=[10**30]), "takes 4" + "0" * 30 + " bytes"),
        (_w(dtype=5), "dtype 5, which is a number, not a string"),
        (_w(dtype=["F32"]), "dtype .*which is a list, not a string"),
        ({"w": "F32"}, "tensor 'w' has no dtype, shape and data_offsets .*a string"),
        ({"w": {"dtype": "F32", "shape": [2]}}, "tensor 'w' has no data_offsets"),
        ({"__metadata__": {"a": 1}}, "__metadata__ is not a JSON object of strings"),
        ({"__metadata__": "a"}, "__metadata__ is not a JSON object of strings"),
    ],
)
def test_every_field_of_a_safetensors_header_is_checked(tmp_path: Path, header: dict[str, Any], message: str) -> None:
    path = _safetensors(tmp_path / "bad file.safetensors", header)
    with pytest.raises(DataLossError, match=message) as info:
        SafetensorsFile(path)
    assert str(info.value).startswith(f"{path!r} is not a valid safetensors file: ")
    # Every reader of the file reports the same error, not a TypeError of its own.
    for read in (open_source, lambda p: tp.diff(p, p), lambda p: tp.convert(p, str(tmp_path / "out.npz"))):
        with pytest.raises(DataLossError, match=message):
            read(path)
    report = tp.verify(path)
    assert not report.ok and report.problems[0].error == "DataLossError"


def test_a_safetensors_header_nested_too_deep_to_parse_is_data_loss(tmp_path: Path) -> None:
    raw = b"[" * 100_000 + b"]" * 100_000
    path = tmp_path / "deep.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    with pytest.raises(DataLossError, match="its header is not JSON"):
        SafetensorsFile(str(path))


def _npz(path: Path, metadata: bytes | np.ndarray[Any, Any] | None, **arrays: np.ndarray[Any, Any]) -> str:
    members: dict[str, Any] = {"w": np.ones(2, np.float32), **arrays}
    if metadata is not None:
        members[NPZ_METADATA] = np.frombuffer(metadata, np.uint8) if isinstance(metadata, bytes) else metadata
    np.savez(path, **members)  # type: ignore[arg-type]
    return str(path)


def _entry(value: str) -> bytes:
    return json.dumps({NPZ_DTYPES: value}).encode()


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        (b"[1, 2]", r"the metadata member '__trackpoint_metadata__' is \[1, 2\], not a JSON object of strings"),
        (b'"text"', 'the metadata member .* is "text", not a JSON object of strings'),
        (b'{"a": 1}', "the metadata member .*, not a JSON object of strings"),
        (b"not json", r"the metadata member .* is not UTF-8 JSON \(Expecting value"),
        (b"\xff\xfe", "the metadata member .* is not UTF-8 JSON"),
        (b"[" * 100_000, "the metadata member .* is not UTF-8 JSON"),
        (np.ones((2, 2), np.float32), "is an array of dtype float32 and shape \\[2, 2\\], not the uint8 vector"),
        (np.array([b"{}"]), "is an array of dtype object .*not the uint8 vector"),
        (_entry("[1, 2]"), r"the metadata entry 'trackpoint.ml_dtypes' .* is \[1, 2\], not a JSON object of array"),
        (_entry('{"w": 3}'), "the metadata entry 'trackpoint.ml_dtypes' .*not a JSON object of array names"),
        (_entry("not json"), r"the metadata entry 'trackpoint.ml_dtypes' .* is not JSON \(Expecting value"),
        (_entry('{"w": "nosuch"}'), "names 'nosuch' as the type of array 'w', which is no type of the installed"),
        (_entry('{"w": "__class__"}'), "names '__class__' as the type of array 'w', which is no type"),
        (_entry('{"w": "finfo"}'), "names 'finfo' as the type of array 'w', which is no type"),
    ],
)
def test_npz_metadata_that_is_not_what_trackpoint_writes_is_data_loss(
    tmp_path: Path, metadata: bytes | np.ndarray[Any, Any], message: str
) -> None:
    path = _npz(tmp_path / "bad file.npz", metadata)
    with pytest.raises(DataLossError, match=message) as info:
        NpzFile(path).close()
    assert str(info.value).startswith(f"{path!r}: the metadata ")
    assert "use an intact copy" in str(info.value)
    for read in (open_source, lambda p: tp.diff(p, p), lambda p: tp.convert(p, str(tmp_path / "ck" / "ckpt-1"))):
        with pytest.raises(DataLossError, match=message):
            read(path)
    report = tp.verify(path)
    assert not report.ok and report.problems[0].error == "DataLossError"


def test_npz_ml_dtypes_entries_still_read_back_what_they_name(tmp_path: Path) -> None:
    import ml_dtypes

    values = np.arange(3).astype(ml_dtypes.bfloat16)
    metadata = _entry(json.dumps({"b": "bfloat16", "gone": "bfloat16"}))  # an array the file lacks is no damage
    path = _npz(tmp_path / "typed.npz", metadata, b=values.view("V2"))
    npz = NpzFile(path)
    try:
        assert npz.info("b").dtype == np.dtype(ml_dtypes.bfloat16)
        np.testing.assert_array_equal(npz.read("b"), values)
    finally:
        npz.close()


def _export(tmp_path: Path, keys: dict[str, Any]) -> str:
    """An .npz with trackpoint's metadata recording ``keys`` (name -> checkpoint key) for tensors a and b."""
    meta = {META_KEYS: json.dumps(keys), META_GRAPH: base64.b64encode(b"").decode(), "trackpoint.format": "1"}
    path = tmp_path / "export.npz"
    np.savez(
        path,
        a=np.ones(2, np.float32),
        b=np.zeros(2, np.float32),
        **{NPZ_METADATA: np.frombuffer(json.dumps(meta).encode(), np.uint8)},
    )
    return str(path)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"a": "k", "b": "k"}, "tensors 'a' and 'b' are both recorded under the key 'k'"),
        ({"a": 1, "b": "k"}, "the key 1 of tensor 'a' is not a string"),
        ({"a": "_CHECKPOINTABLE_OBJECT_GRAPH", "b": "k"}, "tensor 'a' is recorded under the object graph's key"),
    ],
)
def test_recorded_keys_that_would_merge_or_rename_tensors_are_refused(
    tmp_path: Path, keys: dict[str, Any], message: str
) -> None:
    path = _export(tmp_path, keys)
    with pytest.raises(InvalidCheckpointError, match=f"{path!r}: trackpoint's metadata entry 'trackpoint.keys' "):
        FlatReader(path, "npz")
    with pytest.raises(InvalidCheckpointError, match=message):
        tp.convert(path, str(tmp_path / "ck" / "ckpt-1"))


def test_recorded_keys_read_as_recorded(tmp_path: Path) -> None:
    path = _export(tmp_path, {"a": "model/a", "b": "model/b"})
    reader = FlatReader(path, "npz")
    try:
        assert sorted(reader.keys()) == ["model/a", "model/b"]
        np.testing.assert_array_equal(reader.read("model/b"), np.zeros(2, np.float32))
    finally:
        reader.close()


def test_an_empty_separator_is_an_argument_error(tmp_path: Path) -> None:
    path = _npz(tmp_path / "plain.npz", None)
    with pytest.raises(InvalidArgumentError, match=r"separator must be a non-empty string .* got ''"):
        FlatReader(path, "npz", separator="")
    with pytest.raises(InvalidArgumentError, match="separator must be a non-empty string"):
        tp.convert(path, str(tmp_path / "ck" / "ckpt-1"), separator="")
