"""trackpoint.verify: every byte and checksum on every backend, or the structure only."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import trackpoint as tp
from trackpoint.errors import CheckpointNotFoundError
from trackpoint.storage import OBJECT_GRAPH_KEY, CheckpointOptions, WriteItem

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
    assert seen[-1] == (308, 308) and len(seen) == 19
