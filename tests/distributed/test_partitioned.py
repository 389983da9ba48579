"""Partitioned values across ranks: each rank writes its slices, one merged index; restores by any number of ranks.

A ``table`` is partitioned by rows over the N saving ranks (``SaveSliceInfo``) and a ``bias`` is replicated.
Every N -> M for N, M in 1..4 restores each rank's own rows, reading about the bytes of its rows only.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ranks import Ranks, needs_torch

import trackpoint as tp

pytestmark = [pytest.mark.xdist_group("ranks"), needs_torch]

ROWS, COLS = 240, 256


@pytest.fixture(scope="module")
def groups(torch2: Ranks, torch4: Ranks) -> Iterator[dict[int, Ranks]]:
    with Ranks(1, "torch") as one, Ranks(3, "torch") as three:
        yield {1: one, 2: torch2, 3: three, 4: torch4}


def _full() -> np.ndarray[Any, Any]:
    return np.arange(ROWS * COLS, dtype=np.float32).reshape(ROWS, COLS)


def test_partitioned_save_by_four_ranks_is_one_tensor(torch4: Ranks, tmp_path: Path) -> None:
    prefix = f"{tmp_path}/ckpt"
    assert torch4.values("partitioned_write", prefix=prefix, rows=ROWS, cols=COLS) == [prefix] * 4
    reader = tp.load_checkpoint(prefix)
    np.testing.assert_array_equal(reader.get_tensor("model/table/.ATTRIBUTES/VARIABLE_VALUE"), _full())
    np.testing.assert_array_equal(reader.get_tensor("model/bias/.ATTRIBUTES/VARIABLE_VALUE"), np.arange(COLS))
    # Every rank wrote its own rows: four data files hold the table's bytes once.
    data = sum(p.stat().st_size for p in tmp_path.glob("ckpt.data-*"))
    assert ROWS * COLS * 4 <= data < ROWS * COLS * 4 + COLS * 4 + 4096


@pytest.mark.parametrize(("n", "m"), [(2, 4), (4, 2)])
def test_optimizer_slots_of_partitioned_values_are_slices_too(
    torch2: Ranks, torch4: Ranks, tmp_path: Path, n: int, m: int
) -> None:
    by_size = {2: torch2, 4: torch4}
    prefix = f"{tmp_path}/ckpt"
    assert by_size[n].values("partitioned_train_write", prefix=prefix, rows=ROWS, cols=COLS) == [prefix] * n
    # The momentum of every rank's rows is one tensor in the checkpoint, as the table is.
    reader = tp.load_checkpoint(prefix)
    slot_key = "model/table/.OPTIMIZER_SLOT/opt/momentum/.ATTRIBUTES/VARIABLE_VALUE"
    gradient = (_full() % 7) - 3.0
    np.testing.assert_array_equal(reader.get_tensor(slot_key), gradient)
    outs = by_size[m].values("partitioned_train_read", prefix=prefix, rows=ROWS, cols=COLS)
    for r, out in enumerate(outs):
        a, b = ROWS * r // m, ROWS * (r + 1) // m
        assert out == {
            "table": True,
            "slot": True,
            "slot_slice": f"{ROWS} {COLS} {a},{b - a}:0,{COLS}",
            "iterations": 1,
        }


@pytest.mark.slow
def test_n_to_m_restores_read_only_each_ranks_rows(groups: dict[int, Ranks], tmp_path: Path) -> None:
    for n, saving in groups.items():
        prefix = f"{tmp_path}/by{n}"
        assert saving.values("partitioned_write", prefix=prefix, rows=ROWS, cols=COLS) == [prefix] * n
        for m, restoring in groups.items():
            for r, out in enumerate(restoring.values("partitioned_read", prefix=prefix, rows=ROWS, cols=COLS)):
                assert out["same"], (n, m, r)
                assert out["read"] <= 1.1 * out["needed"], (n, m, r, out)


def test_partitioned_save_and_resharded_restore_on_s3(
    torch2: Ranks, torch4: Ranks, s3_bucket: str, s3_storage_options: dict[str, Any]
) -> None:
    prefix = f"{s3_bucket}/run/ckpt"
    so = dict(s3_storage_options)
    torch4.values("partitioned_write", prefix=prefix, rows=ROWS, cols=COLS, storage_options=so)
    for out in torch2.values("partitioned_read", prefix=prefix, rows=ROWS, cols=COLS, storage_options=so):
        assert out["same"] and out["read"] <= 1.1 * out["needed"], out


def test_partitioned_zarr_by_four_ranks_restored_by_two(torch2: Ranks, torch4: Ranks, tmp_path: Path) -> None:
    prefix = f"{tmp_path}/ckpt"
    torch4.values("partitioned_write", prefix=prefix, rows=ROWS, cols=COLS, backend="zarr")
    reader = tp.load_checkpoint(prefix, tp.CheckpointOptions(backend="zarr"))
    np.testing.assert_array_equal(reader.get_tensor("model/table/.ATTRIBUTES/VARIABLE_VALUE"), _full())
    for out in torch2.values("partitioned_read", prefix=prefix, rows=ROWS, cols=COLS, backend="zarr"):
        assert out["same"], out


def test_a_restore_through_checkpoint_reads_only_the_slice(tmp_path: Path) -> None:
    """Checkpoint.read's reader (held by the checkpoint's backends) passes read_slice through to the format's."""
    from trackpoint.backends.stores import LocalFiles

    full = _full()
    saved = tp.AutoTrackable()
    saved.table = tp.Variable(full, save_slice_info=tp.SaveSliceInfo("table", [ROWS, COLS], [0, 0], [ROWS, COLS]))
    tp.Checkpoint(model=saved).write(f"{tmp_path}/ckpt")
    counted = [0]
    original = LocalFiles.read_ranges

    def count(self: LocalFiles, path: str, ranges: Any) -> None:
        counted[0] += sum(o.nbytes for _, o in ranges) if ".data-" in path else 0
        original(self, path, ranges)

    half = tp.AutoTrackable()
    info = tp.SaveSliceInfo("table", [ROWS, COLS], [ROWS // 2, 0], [ROWS // 2, COLS])
    half.table = tp.Variable(np.zeros((ROWS // 2, COLS), np.float32), save_slice_info=info)
    LocalFiles.read_ranges = count  # type: ignore[method-assign]
    try:
        tp.Checkpoint(model=half).read(f"{tmp_path}/ckpt").assert_consumed()
    finally:
        LocalFiles.read_ranges = original  # type: ignore[method-assign]
    np.testing.assert_array_equal(half.table.numpy(), full[ROWS // 2 :])
    assert 0 < counted[0] <= 1.1 * full.nbytes / 2
