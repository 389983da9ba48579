"""Coordinated saves and restores on every built-in backend and the Azure plugin, by two torch ranks.

On object stores every rank writes its data objects under their final names and rank 0 commits the merged
index (or Zarr root) with one conditional write: nothing is copied. The tests check what a single process
reads back, that a failed save leaves the previous checkpoint and nothing of its own, and a manager's
numbering and retention across ranks.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ranks import Ranks, needs_torch

import trackpoint as tp

pytestmark = [pytest.mark.xdist_group("ranks"), needs_torch]

SIZES = [3000, 20, 5000, 1, 800]
STORES = ["bundle", "zarr", "s3", "gcs", "zarr+s3", "azure"]


@dataclass
class Store:
    directory: str
    storage_options: dict[str, Any] = field(default_factory=dict)
    backend: str | None = None

    def options(self) -> tp.CheckpointOptions:
        return tp.CheckpointOptions(storage_options=self.storage_options, backend=self.backend)

    def kwargs(self) -> dict[str, Any]:
        return {"storage_options": self.storage_options, "backend": self.backend}


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    name = request.param
    if name == "bundle":
        return Store(str(tmp_path / "run"))
    if name == "zarr":
        return Store(str(tmp_path / "run"), backend="zarr")
    if name in ("s3", "zarr+s3"):
        bucket = request.getfixturevalue("s3_bucket")
        options = request.getfixturevalue("s3_storage_options")
        return Store(f"{name.replace('s3', '')}{bucket}/run", dict(options))
    if name == "gcs":
        return Store(
            f"{request.getfixturevalue('gcs_bucket')}/run", dict(request.getfixturevalue("gcs_storage_options"))
        )
    if shutil.which("node") is None:
        pytest.skip("Azurite needs node on PATH")
    azurite = request.getfixturevalue("azurite")
    container = request.getfixturevalue("azurite_container")
    return Store(f"az://{container}/run", {"connection_string": azurite.connection_string})


def _check(store: Store, prefix: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    reader = tp.load_checkpoint(prefix, store.options())
    for i, n in enumerate(SIZES):
        want = rng.standard_normal(n).astype(np.float32)
        np.testing.assert_array_equal(reader.get_tensor(f"model/v{i}/.ATTRIBUTES/VARIABLE_VALUE"), want)


def test_save_restore_and_failure(torch2: Ranks, store: Store) -> None:
    out = torch2.values("save_and_restore", directory=store.directory, sizes=SIZES, **store.kwargs())
    assert out[0] == out[1] and out[0]["same"] and out[0]["latest"] == f"{store.directory}/ckpt-1"
    _check(store, out[0]["path"], 1)
    # A rank failing mid-save: every rank raises, the previous checkpoint is intact, nothing new is listed.
    prefix = out[0]["path"]
    results = torch2.run("write_then_fail", prefix=prefix, failing=1, sizes=SIZES, seed=2, **store.kwargs())
    assert [r.error[0] if r.error else None for r in results] == ["StorageError", "StorageError"]
    assert "failed on rank 1" in results[0].error[1]  # type: ignore[index]
    _check(store, prefix, 1)
    assert torch2.values("read", prefix=prefix, sizes=SIZES, seed=1, **store.kwargs()) == [True, True]
    listed = tp.latest_checkpoint(store.directory, store.options())
    assert listed == prefix
    # An overwrite by both ranks then replaces it.
    torch2.values("write", prefix=prefix, sizes=SIZES, seed=3, **store.kwargs())
    _check(store, prefix, 3)


@pytest.mark.parametrize("store", ["s3"], indirect=True)
def test_manager_on_an_object_store(torch4: Ranks, store: Store) -> None:
    d = store.directory
    out = torch4.values("manager_run", directory=d, saves=3, max_to_keep=1, storage_options=store.storage_options)
    assert all(o == out[0] for o in out)
    assert out[0]["checkpoints"] == [f"{d}/ckpt-3"]
    again = torch4.values("manager_run", directory=d, saves=1, max_to_keep=1, storage_options=store.storage_options)
    assert all(o == again[0] for o in again) and again[0]["restored"] == f"{d}/ckpt-3"
    assert again[0]["checkpoints"] == [f"{d}/ckpt-4"]
    assert tp.latest_checkpoint(d, store.options()) == f"{d}/ckpt-4"


@pytest.mark.slow
@pytest.mark.parametrize("store", ["s3"], indirect=True)
def test_a_rank_killed_mid_save_on_an_object_store(store: Store) -> None:
    prefix = f"{store.directory}/ckpt"
    with Ranks(2, "torch") as group:
        group.values("write", prefix=prefix, sizes=SIZES, seed=1, **store.kwargs())
        results = group.run("write_and_die", prefix=prefix, dying=1, sizes=SIZES, seed=2, timeout=3.0, **store.kwargs())
    assert results[1].error is not None and results[1].error[0] == "died"
    assert results[0].error is not None and results[0].error[0] == "CoordinationTimeoutError", results[0]
    assert results[0].elapsed < 3.0 + 10.0
    # The previous checkpoint is intact; a later save by one process replaces it (the killed save's
    # leftovers do not block it).
    _check(store, prefix, 1)
    rng = np.random.default_rng(5)
    model = tp.AutoTrackable()
    for i, n in enumerate(SIZES):
        setattr(model, f"v{i}", tp.Variable(rng.standard_normal(n).astype(np.float32)))
    model.step = tp.Variable(np.int64(5))
    tp.Checkpoint(model=model).write(prefix, options=store.options())
    _check(store, prefix, 5)
