"""trackpoint.verify: every byte and checksum on every backend, or the structure only."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from trackpoint.errors import CheckpointNotFoundError, DataLossError
from trackpoint.storage import OBJECT_GRAPH_KEY, CheckpointOptions, CheckpointReader, TensorInfo, WriteItem

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tf"


def _flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))


def _save(url: str, options: CheckpointOptions | None = None) -> str:
    model = tp.AutoTrackable()
    model.w = tp.Variable(np.arange(4096, dtype=np.float32))
    model.b = tp.Variable(np.ones(3, np.float64))
    return tp.Checkpoint(model=model).save(url, options=options)


@pytest.mark.parametrize("case", ["simple", "nested", "dtypes", "sliced", "multiblock", "python_state"])
def test_tensorflow_checkpoints_are_intact(case: str) -> None:
    report = tp.verify(FIXTURES / case / "ckpt-1")
    assert report.ok, report.problems
    assert report.backend == "bundle" and not report.quick
    assert report.tensors == len(tp.list_variables(FIXTURES / case / "ckpt-1")) - 1


def test_a_directory_means_its_latest_checkpoint() -> None:
    report = tp.verify(FIXTURES / "manager")
    assert report.prefix is not None and report.prefix.endswith("ckpt-3")


def test_a_bit_flip_names_the_damaged_file_and_key(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "nested", tmp_path / "nested")
    _flip(tmp_path / "nested" / "ckpt-1.data-00000-of-00001", 10)
    report = tp.verify(tmp_path / "nested" / "ckpt-1")
    assert not report.ok
    assert [(p.key, p.error) for p in report.problems] == [("model/shared/.ATTRIBUTES/VARIABLE_VALUE", "DataLossError")]
    assert "ckpt-1.data-00000-of-00001" in report.problems[0].message
    # Structure only: the data is not read, so the flip goes unseen.
    assert tp.verify(tmp_path / "nested" / "ckpt-1", quick=True).ok


def test_a_damaged_index_is_one_problem_of_the_checkpoint(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "simple", tmp_path / "simple")
    index = tmp_path / "simple" / "ckpt-1.index"
    _flip(index, index.stat().st_size - 60)
    report = tp.verify(tmp_path / "simple" / "ckpt-1", quick=True)
    assert not report.ok and report.prefix is None
    assert report.problems[0].key is None and report.problems[0].error == "DataLossError"


def test_zarr_chunk_damage_is_found(tmp_path: Path) -> None:
    prefix = _save(str(tmp_path / "ckpt"), CheckpointOptions(backend="zarr"))
    assert tp.verify(prefix).ok
    chunks = sorted(p for p in Path(prefix + ".zarr").rglob("*") if p.is_file() and p.name != "zarr.json")
    target = max(chunks, key=lambda p: p.stat().st_size)
    _flip(target, target.stat().st_size // 2)
    report = tp.verify(prefix)
    assert report.backend == "zarr"
    # Small tensors may share the damaged object with `w` (Zarr packs them); each is named.
    assert "model/w/.ATTRIBUTES/VARIABLE_VALUE" in [p.key for p in report.problems]
    assert {p.error for p in report.problems} == {"DataLossError"}


def test_the_memory_backend_is_checked_too() -> None:
    prefix = _save("memory://verify/ckpt")
    report = tp.verify(prefix)
    assert report.ok and report.backend == "memory" and report.nbytes == 4096 * 4 + 3 * 8 + 8  # save_counter


def test_the_object_graph_must_name_stored_tensors(tmp_path: Path) -> None:
    graph = tp.object_metadata(FIXTURES / "simple" / "ckpt-1")
    backend = tp.plugins.open_backend(str(tmp_path / "ckpt-1"))
    raw = np.empty((), dtype=object)
    raw[()] = graph.SerializeToString()
    # Every tensor but `v`, which the graph names.
    backend.save(
        str(tmp_path / "ckpt-1"),
        [WriteItem("save_counter/.ATTRIBUTES/VARIABLE_VALUE", np.array(1, np.int64)), WriteItem(OBJECT_GRAPH_KEY, raw)],
    )
    report = tp.verify(tmp_path / "ckpt-1", quick=True)
    assert [p.key for p in report.problems] == ["v/.ATTRIBUTES/VARIABLE_VALUE"]
    assert "does not store" in report.problems[0].message


def test_nothing_there_is_an_error_not_a_verdict(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFoundError, match="no checkpoint at"):
        tp.verify(tmp_path / "missing")


def test_progress_counts_every_byte() -> None:
    seen: list[tuple[int, int]] = []
    tp.verify(FIXTURES / "nested" / "ckpt-1", progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (308, 308) and seen == sorted(seen)


def test_tensors_are_read_in_batches_and_only_a_damaged_batch_tensor_by_tensor(
    tmp_path: Path, bundle_reads: dict[str, int]
) -> None:
    # One request per tensor made verify take minutes on an object store for a checkpoint of many small tensors.
    prefix = tp.Checkpoint(v=[tp.Variable(np.full(3, float(i))) for i in range(200)]).write(str(tmp_path / "c"))
    calls = bundle_reads
    assert tp.verify(prefix).ok
    assert calls["read_many"] == 1 and calls["read"] <= 1  # the object graph's own check may read it
    _flip(Path(prefix + ".data-00000-of-00001"), 40)
    calls.update(read=0, read_many=0)
    report = tp.verify(prefix)
    assert [p.key for p in report.problems] == ["v/1/.ATTRIBUTES/VARIABLE_VALUE"]
    assert calls["read_many"] == 1 and calls["read"] >= 200  # the failed batch, again tensor by tensor


@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_an_unreadable_object_graph_is_one_problem(tmp_path: Path, damage: str) -> None:
    """The graph's check reads the object graph's tensor; reading every tensor does not report it again."""
    prefix = _save(str(tmp_path / "ckpt"))
    stored = sorted(key for key, _ in tp.list_variables(prefix))  # every tensor, the object graph's included
    assert OBJECT_GRAPH_KEY in stored
    data = Path(f"{prefix}.data-00000-of-00001")
    if damage == "missing":
        data.unlink()
    else:
        os.truncate(data, 5)
    report = tp.verify(prefix)
    assert sorted(p.key or "" for p in report.problems) == stored
    assert {p.error for p in report.problems} == {"DataLossError"}
    # A quick check reads the graph too (to check it against the stored keys), and reports it once as well.
    assert [p.key for p in tp.verify(prefix, quick=True).problems] == [OBJECT_GRAPH_KEY]


def test_an_object_graph_whose_info_cannot_be_read_is_one_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A graph tensor that cannot even be described is reported once, not again by the graph's check."""
    import trackpoint.interchange._convert as interchange

    class GraphInfoFails(CheckpointReader):
        def __init__(self, reader: CheckpointReader) -> None:
            self.prefix, self._reader = reader.prefix, reader

        def keys(self) -> Sequence[str]:
            return self._reader.keys()

        def info(self, key: str) -> TensorInfo:
            if key == OBJECT_GRAPH_KEY:
                raise DataLossError(f"the index entry of {key!r} is damaged")
            return self._reader.info(key)

        def read(self, key: str, out: np.ndarray[Any, Any] | None = None) -> np.ndarray[Any, Any]:
            if key == OBJECT_GRAPH_KEY:  # a damaged index entry: its tensor cannot be read either
                raise DataLossError(f"the index entry of {key!r} is damaged")
            return self._reader.read(key, out)

        def close(self) -> None:
            self._reader.close()

    prefix = _save(str(tmp_path / "ckpt"))
    opened = interchange.open_source

    def open_source(path: str, options: CheckpointOptions | None = None) -> tuple[str, str, CheckpointReader]:
        name, backend, reader = opened(path, options)
        return name, backend, GraphInfoFails(reader)

    monkeypatch.setattr(interchange, "open_source", open_source)
    for quick in (True, False):
        report = tp.verify(prefix, quick=quick)
        assert [(p.key, p.error) for p in report.problems] == [(OBJECT_GRAPH_KEY, "DataLossError")]


# ------------------------------------------------------------- flat files
def _header(path: Path) -> tuple[int, bytes]:
    """Where a safetensors file's JSON header starts, and the header."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return 8, raw[8 : 8 + n]


def test_a_safetensors_file_without_checksums_is_unverified_not_intact(tmp_path: Path) -> None:
    import safetensors.numpy

    path = tmp_path / "foreign.safetensors"
    safetensors.numpy.save_file({"a.w": np.arange(4, dtype=np.float32), "b": np.ones(2, np.int64)}, str(path))
    report = tp.verify(path)
    # Read whole without error, yet not called intact: a flipped bit would read back as a valid value.
    assert report.problems == () and report.nbytes == 32
    assert report.unverified == ("a..w/.ATTRIBUTES/VARIABLE_VALUE", "b/.ATTRIBUTES/VARIABLE_VALUE")
    assert not report.ok
    # A quick check reads no data, so it claims nothing of it.
    quick = tp.verify(path, quick=True)
    assert quick.ok and quick.unverified == ()
    # Every .npz member has its zip CRC-32, whoever wrote the file.
    np.savez(tmp_path / "foreign.npz", w=np.arange(4, dtype=np.float32))
    npz = tp.verify(tmp_path / "foreign.npz")
    assert npz.ok and npz.unverified == ()


def test_a_bit_flip_in_an_exported_safetensors_file_is_found(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    tp.convert(_save(str(tmp_path / "ckpt")), str(path))
    report = tp.verify(path)
    assert report.ok and report.unverified == ()  # the export records a CRC-32C of every tensor
    _flip(path, path.stat().st_size - 100)  # inside model/w, the file's largest tensor
    report = tp.verify(path)
    assert not report.ok and report.unverified == ()
    assert [(p.key, p.error) for p in report.problems] == [("model/w/.ATTRIBUTES/VARIABLE_VALUE", "DataLossError")]
    assert "CRC-32C mismatch for tensor 'model/w'" in report.problems[0].message
    assert str(path) in report.problems[0].message


def test_a_changed_key_in_an_exports_metadata_is_found(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    tp.convert(_save(str(tmp_path / "ckpt")), str(path))
    start, header = _header(path)
    # A key recorded in the metadata changes, and the header stays valid JSON: without a checksum of the
    # metadata the tensor would be read under another key.
    at = header.index(b"model/b/.ATTRIBUTES")
    raw = bytearray(path.read_bytes())
    raw[start + at + len("model/")] = ord("c")
    path.write_bytes(bytes(raw))
    report = tp.verify(path)
    assert [(p.key, p.error) for p in report.problems] == [(None, "DataLossError")]
    assert "'trackpoint.keys'" in report.problems[0].message
