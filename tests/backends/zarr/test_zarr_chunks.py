"""Chunks of a tensor's own array are written and read by trackpoint, byte for byte as zarr-python does."""

from __future__ import annotations

import os
from typing import Any

import ml_dtypes
import numpy as np
import pytest
import zarr

from trackpoint.backends.zarr import _chunks
from trackpoint.errors import DataLossError
from trackpoint.storage import CheckpointOptions, WriteItem


@pytest.mark.parametrize("compressor", ["none", "zstd", "blosc", "gzip"])
@pytest.mark.parametrize(
    ("shape", "dtype"),
    [((17, 300), "float32"), ((5, 3, 200), "int16"), ((), "float64"), ((1001,), "bfloat16"), ((3000, 1), "uint8")],
    ids=str,
)
def test_chunk_objects_match_zarr_and_read_back(local: Any, compressor: str, shape: Any, dtype: str) -> None:
    _check_against_zarr(local, compressor, shape, dtype)


@pytest.mark.parametrize("checksum", [True, False])
def test_uncompressed_chunks_written_in_pieces_match_zarr(
    local: Any, monkeypatch: pytest.MonkeyPatch, checksum: bool
) -> None:
    # Uncompressed chunks are checksummed and written piece by piece (4 MiB in use): pieces that end
    # inside a chunk, and the zero padding of the short edge chunk, must give zarr's bytes and checksum.
    monkeypatch.setattr(_chunks, "_PIECE", 700)
    _check_against_zarr(local, "none", (17, 300), "float32", checksum=checksum)


def _check_against_zarr(local: Any, compressor: str, shape: Any, dtype: str, *, checksum: bool = True) -> None:
    dt = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    rng = np.random.default_rng(3)
    value = rng.integers(0, 256, size=int(np.prod(shape)) * dt.itemsize, dtype=np.uint8).view(dt).reshape(shape)
    prefix = local.prefix()
    # Small chunks: several per tensor, with a short edge chunk padded to full size.
    options = {"compressor": compressor, "pack_bytes": 0, "chunk_bytes": 2000, "checksum": checksum}
    local.backend.save(prefix, [WriteItem("w", value)], CheckpointOptions(backend_options=options))
    with local.backend.open_reader(prefix) as reader:
        got = reader.read("w")
        assert got.dtype == dt and got.tobytes() == value.tobytes()
        out = np.empty_like(value)
        reader.read_many([("w", out)])
        assert out.tobytes() == value.tobytes()
    path = prefix + ".zarr/w"
    ours = zarr.open_array(path, mode="r")
    theirs = zarr.create_array(
        store=zarr.storage.MemoryStore(),
        shape=ours.shape,
        chunks=ours.chunks,
        dtype=ours.dtype,
        fill_value=0,
        compressors=ours.compressors,
        chunk_key_encoding=ours.metadata.chunk_key_encoding,
        config={"write_empty_chunks": True},
    )
    stored = ours[...]
    assert stored.tobytes() == value.tobytes()  # plain zarr reads the same bits
    theirs[...] = stored
    expected = {k: v.to_bytes() for k, v in theirs.store._store_dict.items() if k.startswith("c")}
    found = {}
    for d, _, files in os.walk(path):
        for f in files:
            if f != "zarr.json":
                key = os.path.relpath(os.path.join(d, f), path)
                with open(os.path.join(d, f), "rb") as fh:
                    found[key] = fh.read()
    if compressor in ("none", "zstd"):
        assert found == expected
    else:
        # gzip headers carry a time, blosc frames the library's choices: equal content is what counts.
        assert found.keys() == expected.keys()


@pytest.mark.parametrize("compressor", ["none", "zstd"])
def test_a_flipped_or_truncated_chunk_is_data_loss(local: Any, compressor: str) -> None:
    prefix = local.prefix()
    value = np.arange(5000, dtype=np.float64)
    options = {"compressor": compressor, "pack_bytes": 0, "chunk_bytes": 8000}
    local.backend.save(prefix, [WriteItem("w", value)], CheckpointOptions(backend_options=options))
    chunk = prefix + ".zarr/w/c.1"
    with open(chunk, "r+b") as f:
        f.seek(10)
        byte = f.read(1)
        f.seek(10)
        f.write(bytes([byte[0] ^ 1]))
    with local.backend.open_reader(prefix) as reader, pytest.raises(DataLossError, match="'w'.*corrupted"):
        reader.read("w")
    os.truncate(chunk, 3)
    with local.backend.open_reader(prefix) as reader, pytest.raises(DataLossError, match="'w'.*corrupted"):
        reader.read_many([("w", np.empty_like(value))])


@pytest.mark.parametrize("compressor", ["none", "zstd", "blosc", "gzip"])
@pytest.mark.parametrize("dtype", ["float32", "uint16", "bool", "complex64", "int64", "float16", "uint8"])
def test_metadata_documents_are_zarrs(compressor: str, dtype: str) -> None:
    import json

    from zarr.core.buffer import default_buffer_prototype

    from trackpoint.backends.zarr import ZarrOptions, _layout

    opts = ZarrOptions(compressor=compressor)
    dt = np.dtype(dtype)

    def zarrs(shape: Any, **spec: Any) -> Any:
        # Chunk keys as c.0.1: every chunk in its array's directory (the separator is trackpoint's choice).
        encoding = {"name": "default", "separator": "."}
        made = zarr.create_array(
            store=zarr.storage.MemoryStore(), shape=shape, zarr_format=3, fill_value=0, chunk_key_encoding=encoding,
            **spec,
        )  # fmt: skip
        return json.loads(made.metadata.to_buffer_dict(default_buffer_prototype())["zarr.json"].to_bytes())

    codecs = _layout.codec_metadata(opts, dt.itemsize)
    ours = _layout.array_metadata((7, 3), dt, (4, 3), codecs, {"trackpoint_key": "k"})
    theirs = zarrs(
        (7, 3), chunks=(4, 3), dtype=dt, compressors=_layout.codecs(opts), attributes={"trackpoint_key": "k"}
    )
    assert ours == theirs
    packed = _layout.packed_metadata(100, 64, 16, opts)
    assert packed == zarrs(
        (100,), chunks=(16,), shards=(64,), dtype="uint8", compressors=_layout.codecs(opts),
        attributes={"trackpoint_packed": True},
    )  # fmt: skip


def test_numeric_saves_and_restores_do_not_import_zarr_or_ml_dtypes(tmp_path: Any) -> None:
    import subprocess
    import sys

    code = f"""
import sys
import numpy as np
import trackpoint as tp
model = tp.AutoTrackable()
model.w = tp.Variable(np.arange(30000.0))
model.b = tp.Variable(np.ones(3, np.float32))
ckpt = tp.Checkpoint(model=model)
path = ckpt.write({str(tmp_path / "ckpt")!r}, options=tp.CheckpointOptions(backend="zarr"))
ckpt.read(path, options=tp.CheckpointOptions(backend="zarr")).assert_consumed()
print(sorted(m for m in sys.modules if m.split(".")[0] in ("zarr", "numcodecs", "ml_dtypes")))
"""
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    # Importing zarr, or ml_dtypes, costs more than a small save; numpy's own dtypes never need them.
    assert out.strip() == "[]"
