"""The on-store layout: a consolidated Zarr v3 group that plain zarr opens and slices lazily."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
import zarr

from trackpoint.backends.zarr import decode_key, encode_key
from trackpoint.storage import OBJECT_GRAPH_KEY, CheckpointOptions, WriteItem

KERNEL = "model/dense/kernel/.ATTRIBUTES/VARIABLE_VALUE"


def _graph(data: bytes) -> np.ndarray[Any, Any]:
    g = np.empty((), dtype=object)
    g[()] = data
    return g


def _items() -> list[WriteItem]:
    return [
        WriteItem(OBJECT_GRAPH_KEY, _graph(b"\x0a\x03graph")),
        WriteItem(KERNEL, np.arange(400_000, dtype=np.float32).reshape(800, 500)),  # above pack_bytes
        WriteItem("step", np.array(42, dtype=np.int64)),
    ]


_PLAIN_READER = """
import json, sys
import numpy as np
import zarr

url, storage_options, key_name = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
group = zarr.open_group(url, mode="r", storage_options=storage_options or None)
meta = group.attrs["trackpoint"]
data = group[meta["data"]] if meta["data"] else group
arr = data[key_name]
entry = meta["tensors"]["step"]
packed = data[entry["packed"]][entry["offset"] : entry["offset"] + entry["nbytes"]]
print(json.dumps({
    "shape": list(arr.shape), "dtype": str(arr.dtype), "key": arr.attrs["trackpoint_key"],
    "slice": arr[123, 10:15].tolist(), "step": int(np.asarray(packed).view("<i8")[0]),
}))
"""


def _read_with_plain_zarr(where: Any, prefix: str, name: str) -> dict[str, Any]:
    # A fresh interpreter that never imports trackpoint: what a user without it would do.
    so = {**where.options.storage_options, "skip_instance_cache": True} if where.kind != "local" else {}
    url = prefix + ".zarr"
    env = dict(os.environ)
    if where.kind == "gcs":
        # Plain zarr opens gs:// with gcsfs' default class, which probes a gRPC API
        # the emulator lacks (60 s per call): the step docs/backends/zarr.md tells
        # plain-zarr users of emulators and private endpoints to take.
        env["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
    done = subprocess.run(
        [sys.executable, "-c", _PLAIN_READER, url, json.dumps(so), name],
        capture_output=True, text=True, timeout=120, check=False, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_local_group_sits_at_prefix_dot_zarr(local: Any) -> None:
    prefix = local.prefix("ckpt-1")
    local.backend.save(prefix, _items(), CheckpointOptions(num_writers=1))
    assert sorted(os.listdir(local.directory)) == ["ckpt-1.zarr"]
    root = json.loads(open(os.path.join(prefix + ".zarr", "zarr.json"), "rb").read())
    assert root["zarr_format"] == 3 and root["node_type"] == "group"
    attrs = root["attributes"]["trackpoint"]
    assert attrs["format"] == "trackpoint-zarr" and attrs["data"] == ""
    assert base64.b64decode(attrs["object_graph"]) == b"\x0a\x03graph"
    assert attrs["tensors"]["step"] == {
        "dtype": "int64", "shape": [], "packed": "_packed-00000", "offset": 0, "nbytes": 8,
    }  # fmt: skip
    assert attrs["tensors"][KERNEL] == {"dtype": "float32", "shape": [800, 500], "array": encode_key(KERNEL)}
    assert set(root["consolidated_metadata"]["metadata"]) == {encode_key(KERNEL), "_packed-00000"}


def _layout_items() -> list[WriteItem]:
    # A 2-D tensor in 20 chunks, small tensors packed into several shard objects, a string tensor.
    return [
        WriteItem("grid", np.arange(200_000, dtype=np.float32).reshape(400, 500)),
        *(WriteItem(f"small{i}", np.full(300, i, np.int32)) for i in range(40)),
        WriteItem("names", np.array([b"a", b"bc", b""], dtype=object)),
    ]


_LAYOUT_OPTIONS = CheckpointOptions(
    num_writers=1, backend_options={"chunk_bytes": 40_000, "pack_bytes": 4096, "packed_chunk_bytes": 4096}
)


def _assert_reads_back(backend: Any, prefix: str, items: list[WriteItem]) -> None:
    with backend.open_reader(prefix) as reader:
        outs = [np.zeros_like(it.array) if it.array.dtype != object else None for it in items]
        got = reader.read_many([(it.key, out) for it, out in zip(items, outs, strict=True)])
        for it, value in zip(items, got, strict=True):
            assert value.tolist() == it.array.tolist(), it.key


def test_every_chunk_sits_in_its_arrays_own_directory(local: Any) -> None:
    prefix = local.prefix()
    items = _layout_items()
    local.backend.save(prefix, items, _LAYOUT_OPTIONS)
    group = prefix + ".zarr"
    # One directory per array and nothing below it: a local save makes fewer directories durable.
    assert [d for d, subdirs, _ in os.walk(group) if subdirs] == [group]
    assert sorted(os.listdir(f"{group}/grid")) == sorted(["zarr.json", *(f"c.{r}.0" for r in range(20))])
    packed = sorted(os.listdir(f"{group}/_packed-00000"))
    assert len(packed) > 2 and packed == sorted(["zarr.json", *(f"c.{k}" for k in range(len(packed) - 1))])
    assert "c.0" in os.listdir(f"{group}/names")
    meta = json.loads(open(f"{group}/grid/zarr.json", "rb").read())
    assert meta["chunk_key_encoding"] == {"name": "default", "configuration": {"separator": "."}}
    _assert_reads_back(local.backend, prefix, items)
    assert zarr.open_group(group, mode="r")["grid"][399, 499] == 199_999  # plain zarr follows the encoding


def test_checkpoints_with_nested_chunk_keys_read_without_zarr(local: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from trackpoint.backends.zarr import _layout
    from trackpoint.backends.zarr._reader import ZarrReader

    # Earlier releases wrote Zarr's default nested keys (c/0/0); their checkpoints keep the fast path.
    prefix = local.prefix()
    items = _layout_items()
    with monkeypatch.context() as m:
        m.setattr(_layout, "CHUNK_SEPARATOR", "/")
        local.backend.save(prefix, items, _LAYOUT_OPTIONS)
    group = prefix + ".zarr"
    assert os.path.isfile(f"{group}/grid/c/19/0") and os.path.isfile(f"{group}/_packed-00000/c/1")
    through_zarr: list[str] = []
    opened = ZarrReader._array

    def recording(self: Any, name: str) -> Any:
        through_zarr.append(name)
        return opened(self, name)

    monkeypatch.setattr(ZarrReader, "_array", recording)
    _assert_reads_back(local.backend, prefix, items)
    assert set(through_zarr) == {"names"}  # only the string tensor needs zarr-python


def test_plain_zarr_opens_and_slices_lazily(where: Any) -> None:
    prefix = where.prefix()
    where.backend.save(prefix, _items())
    got = _read_with_plain_zarr(where, prefix, encode_key(KERNEL))
    assert got["shape"] == [800, 500] and got["dtype"] == "float32" and got["key"] == KERNEL
    assert got["slice"] == list(range(123 * 500 + 10, 123 * 500 + 15))
    # Small tensors: the bytes of a packed array at the offset the tensor table records.
    assert got["step"] == 42


def test_bfloat16_is_uint16_with_an_attribute(local: Any) -> None:
    import ml_dtypes

    value = np.linspace(-2, 2, 100_000).astype(ml_dtypes.bfloat16)
    local.backend.save(local.prefix(), [WriteItem("w", value)], CheckpointOptions(backend_options={"pack_bytes": 0}))
    arr = zarr.open_group(local.prefix() + ".zarr", mode="r")["w"]
    assert arr.dtype == np.uint16 and arr.attrs["trackpoint_dtype"] == "bfloat16"
    np.testing.assert_array_equal(arr[:10].view(ml_dtypes.bfloat16), value[:10])


def test_every_array_records_its_key(local: Any) -> None:
    keys = ["a", "a/b", "../up", "/abs", "x//y", "sp ce", "ünï"]
    local.backend.save(
        local.prefix(),
        [WriteItem(k, np.full(10, i)) for i, k in enumerate(keys)],
        CheckpointOptions(backend_options={"pack_bytes": 0}),
    )
    group = zarr.open_group(local.prefix() + ".zarr", mode="r")
    names = sorted(group.array_keys())
    assert sorted(decode_key(n) for n in names) == sorted(keys)
    for n in names:
        assert group[n].attrs["trackpoint_key"] == decode_key(n)
    # Nothing was written outside the group, whatever the keys said.
    assert sorted(os.listdir(local.directory)) == ["ckpt.zarr"]
    assert sorted(os.listdir(local.prefix() + ".zarr")) == sorted([*names, "zarr.json"])


def _objects(directory: str) -> int:
    return sum(len(files) for _, _, files in os.walk(directory))


def test_many_small_tensors_are_packed_into_few_objects(local: Any) -> None:
    items = [WriteItem(f"layer_{i}/bias/.ATTRIBUTES/VARIABLE_VALUE", np.full(16, i, np.float32)) for i in range(20_000)]
    local.backend.save(local.prefix(), items, CheckpointOptions(num_writers=2))
    # 2 shards -> 2 packed arrays, each zarr.json + one shard object, plus the root.
    assert _objects(local.prefix() + ".zarr") == 5
    with local.backend.open_reader(local.prefix()) as reader:
        got = reader.read_many([(it.key, None) for it in items[::997]])
        for it, value in zip(items[::997], got, strict=True):
            np.testing.assert_array_equal(value, it.array)
        np.testing.assert_array_equal(reader.read(items[12345].key), items[12345].array)


def test_without_packing_every_tensor_is_an_array(local: Any) -> None:
    items = [WriteItem(f"t{i}", np.full(4, i, np.int32)) for i in range(20)]
    local.backend.save(local.prefix(), items, CheckpointOptions(backend_options={"pack_bytes": 0}))
    assert _objects(local.prefix() + ".zarr") == 1 + 2 * 20


@pytest.mark.parametrize(("chunk_bytes", "chunks"), [(1 << 20, 1), (40_000, 20)])
def test_chunk_bytes_bounds_chunks(local: Any, chunk_bytes: int, chunks: int) -> None:
    value = np.zeros((400, 500), np.float32)  # 800,000 bytes; a row is 2,000
    local.backend.save(
        local.prefix(),
        [WriteItem("w", value)],
        CheckpointOptions(backend_options={"chunk_bytes": chunk_bytes, "pack_bytes": 0}),
    )
    arr = zarr.open_group(local.prefix() + ".zarr", mode="r")["w"]
    assert arr.nchunks == chunks
    assert int(np.prod(arr.chunks)) * 4 <= chunk_bytes


def test_compression_shrinks_compressible_data(local: Any) -> None:
    value = np.zeros((1000, 1000), np.float32)
    sizes = {}
    for comp in ("none", "zstd", "blosc", "gzip"):
        prefix = local.prefix(comp)
        local.backend.save(prefix, [WriteItem("w", value)], CheckpointOptions(backend_options={"compressor": comp}))
        sizes[comp] = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(prefix + ".zarr") for f in fs)
        with local.backend.open_reader(prefix) as reader:
            np.testing.assert_array_equal(reader.read("w"), value)
    assert sizes["none"] > value.nbytes
    assert max(sizes["zstd"], sizes["blosc"], sizes["gzip"]) < value.nbytes // 50


# ------------------------------------------------------------------ the root document's checksums
def _root(local: Any) -> tuple[str, bytes]:
    prefix = local.prefix()
    local.backend.save(prefix, _items(), CheckpointOptions(num_writers=1))
    path = os.path.join(prefix + ".zarr", "zarr.json")
    with open(path, "rb") as f:
        return path, f.read()


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def _kernel(local: Any) -> np.ndarray[Any, Any]:
    with local.backend.open_reader(local.prefix()) as reader:
        return reader.read(KERNEL)


def test_the_root_document_carries_a_checksum_of_its_own_bytes(local: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from trackpoint._crc32c import crc32c
    from trackpoint.backends.zarr import _layout

    _, raw = _root(local)
    value = json.loads(raw)["attributes"][_layout.RAW_CHECKSUM]
    field = f'"{_layout.RAW_CHECKSUM}":"'.encode()
    assert raw.count(field) == 1
    assert value == f"{crc32c(raw.replace(field + value.encode(), field + b'00000000')):08x}"

    # The bytes as written are trusted without re-encoding the tensor table for the canonical checksum.
    def refuse(*args: object) -> int:
        raise AssertionError("the canonical checksum was computed")

    monkeypatch.setattr(_layout, "root_checksum", refuse)
    assert _kernel(local).shape == (800, 500)


def test_a_root_document_rewritten_by_another_tool_is_checked_by_its_canonical_checksum(local: Any) -> None:
    from trackpoint.errors import DataLossError

    path, raw = _root(local)
    doc = json.loads(raw)
    doc["attributes"]["note"] = "added with plain zarr"
    _write(path, json.dumps(doc, indent=2).encode())
    np.testing.assert_array_equal(_kernel(local), np.arange(400_000, dtype=np.float32).reshape(800, 500))
    doc["attributes"]["trackpoint"]["tensors"][KERNEL]["shape"] = [500, 400]
    _write(path, json.dumps(doc, indent=2).encode())
    with pytest.raises(DataLossError, match="fails its checksum"):
        _kernel(local)


def test_a_root_document_altered_in_place_fails_both_checksums(local: Any) -> None:
    from trackpoint.errors import DataLossError

    path, raw = _root(local)
    altered = raw.replace(b'"shape":[800,500]', b'"shape":[500,800]', 1)
    assert altered != raw
    _write(path, altered)
    with pytest.raises(DataLossError, match="fails its checksum"):
        _kernel(local)


def test_a_root_document_without_the_raw_checksum_still_opens(local: Any) -> None:
    # As trackpoint wrote them before the raw checksum: the canonical checksum alone.
    from trackpoint.backends.zarr import _layout

    path, raw = _root(local)
    doc = json.loads(raw)
    del doc["attributes"][_layout.RAW_CHECKSUM]
    _write(path, json.dumps(doc, separators=(",", ":")).encode())
    assert _kernel(local)[123, 10] == 123 * 500 + 10
