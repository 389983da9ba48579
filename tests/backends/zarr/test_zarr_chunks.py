"""Chunks of a tensor's own array are written and read by trackpoint, byte for byte as zarr-python does."""

from __future__ import annotations

import os
from typing import Any

import ml_dtypes
import numpy as np
import pytest
import zarr

from trackpoint.errors import DataLossError
from trackpoint.storage import CheckpointOptions, WriteItem


@pytest.mark.parametrize("compressor", ["none", "zstd", "blosc", "gzip"])
@pytest.mark.parametrize(
    ("shape", "dtype"),
    [((17, 300), "float32"), ((5, 3, 200), "int16"), ((), "float64"), ((1001,), "bfloat16"), ((3000, 1), "uint8")],
    ids=str,
)
def test_chunk_objects_match_zarr_and_read_back(local: Any, compressor: str, shape: Any, dtype: str) -> None:
    dt = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    rng = np.random.default_rng(3)
    value = rng.integers(0, 256, size=int(np.prod(shape)) * dt.itemsize, dtype=np.uint8).view(dt).reshape(shape)
    prefix = local.prefix()
    # Small chunks: several per tensor, with a short edge chunk padded to full size.
    options = {"compressor": compressor, "pack_bytes": 0, "chunk_bytes": 2000}
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
    chunk = prefix + ".zarr/w/c/1"
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
