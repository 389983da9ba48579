"""Async saves on every built-in backend: values assigned after ``save`` returns stay out, failures reach ``sync()``.

Each save goes through ``gated-<backend>`` (tests/gated.py), the real backend
behind a gate, so the assignments certainly happen while the write is in
flight; the checkpoints are read back through the real backend alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from gated import Gate, gated_backends
from trackpoint.errors import CheckpointError
from trackpoint.plugins.testing import DTYPES

BACKENDS = ["bundle", "zarr", "s3", "gcs"]


@pytest.fixture
def gate() -> Iterator[Gate]:
    with gated_backends() as g:
        yield g


def _location(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> tuple[str, tp.CheckpointOptions]:
    """Directory and options (storage only) for ``backend``."""
    if backend in ("bundle", "zarr"):
        return str(tmp_path / "run"), tp.CheckpointOptions()
    bucket = request.getfixturevalue(f"{backend}_bucket")  # a URL: s3://... or gs://...
    storage = request.getfixturevalue(f"{backend}_storage_options")
    return f"{bucket}/run", tp.CheckpointOptions(storage_options=storage)


def _dtype(d: Any) -> Any:
    return np.dtype(d)


def _values(seed: int) -> dict[str, np.ndarray]:
    out = {}
    for d in DTYPES:
        raw = (np.arange(6).reshape(2, 3) + seed) % (2 if d == np.bool_ else 100)
        out[np.dtype(_dtype(d)).name] = raw.astype(_dtype(d))
    out["string"] = np.array([f"s{seed}".encode(), b"x" * seed], dtype=object)
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_values_assigned_while_an_async_save_writes_stay_out_of_it_on_every_backend(
    request: pytest.FixtureRequest, gate: Gate, backend: str, tmp_path: Path
) -> None:
    directory, storage = _location(request, backend, tmp_path)
    variables = {name: tp.Variable(value) for name, value in _values(1).items()}
    ckpt = tp.Checkpoint(**variables)
    options = replace(storage, backend=f"gated-{backend}", enable_async=True)
    previous = ckpt.save(f"{directory}/ckpt", replace(storage, backend=backend))
    gate.open.clear()
    path = ckpt.save(f"{directory}/ckpt", options)
    assert gate.reached.wait(30)
    for name, value in _values(7).items():
        variables[name].assign(value)
    assert gate.writes == 0 and tp.latest_checkpoint(directory, storage) == previous
    gate.open.set()
    ckpt.sync()
    assert tp.latest_checkpoint(directory, storage) == path
    back = {
        name: tp.Variable(np.full(v.shape, b"", dtype=object) if name == "string" else np.zeros(v.shape, v.dtype))
        for name, v in variables.items()
    }
    tp.Checkpoint(**back).restore(path, storage).assert_consumed()
    for name, value in _values(1).items():
        np.testing.assert_array_equal(back[name].numpy(), value, err_msg=name)
        assert back[name].dtype == value.dtype


def test_a_failing_local_store_surfaces_its_error_at_sync(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    ckpt = tp.Checkpoint(v=tp.Variable(np.arange(3.0)))
    ckpt.save(str(tmp_path / "file" / "ckpt"), tp.CheckpointOptions(enable_async=True))
    with pytest.raises(CheckpointError, match="file") as info:
        ckpt.sync()
    assert isinstance(info.value, OSError)
    assert tp.latest_checkpoint(str(tmp_path)) is None


def test_a_missing_bucket_surfaces_at_sync_and_keeps_the_previous_checkpoint(
    s3_bucket: str, s3_storage_options: dict[str, Any]
) -> None:
    storage = tp.CheckpointOptions(storage_options=s3_storage_options)
    v = tp.Variable(np.arange(3.0))
    ckpt = tp.Checkpoint(v=v)
    kept = ckpt.save(f"{s3_bucket}/run/ckpt", storage)
    ckpt.write("s3://tp-no-such-bucket-async/run/ckpt", replace(storage, enable_async=True))
    with pytest.raises(CheckpointError, match="tp-no-such-bucket-async"):
        ckpt.sync()
    v.assign(np.zeros(3))
    ckpt.restore(kept, storage).assert_consumed()
    np.testing.assert_array_equal(v.numpy(), [0.0, 1.0, 2.0])
