"""The source of trackpoint.convert is named as every reader names a checkpoint: a prefix, or a directory
meaning its latest checkpoint (what inspect, verify, diff and restore accept)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import trackpoint as tp
from trackpoint.errors import CheckpointExistsError, CheckpointNotFoundError
from trackpoint.storage import CheckpointOptions

ZARR = CheckpointOptions(backend="zarr")


def _run(tmp_path: Path) -> Path:
    """``run/`` holding ckpt-1 (bundle, kernel 1.0) and ckpt-2 (Zarr, kernel 2.0): the latest is in Zarr."""
    run = tmp_path / "run"
    model = tp.AutoTrackable()
    model.kernel = tp.Variable(np.full((2, 3), 1.0, np.float32))
    ckpt = tp.Checkpoint(model=model)
    ckpt.write(str(run / "ckpt-1"))
    model.kernel.assign(np.full((2, 3), 2.0, np.float32))
    ckpt.write(str(run / "ckpt-2"), options=ZARR)
    return run


def _kernel(prefix: str) -> np.ndarray:
    with tp.load_checkpoint(prefix) as reader:
        return np.asarray(reader.get_tensor("model/kernel/.ATTRIBUTES/VARIABLE_VALUE"))


@pytest.mark.parametrize("dst_options", [None, ZARR], ids=["to-bundle", "to-zarr"])
@pytest.mark.parametrize("spelling", ["run", "run/"])
def test_a_directory_source_is_its_latest_checkpoint(
    tmp_path: Path, dst_options: CheckpointOptions | None, spelling: str
) -> None:
    run = _run(tmp_path)
    source = str(run) + spelling[len("run") :]
    dst = str(tmp_path / "out" / "ckpt-9")
    tp.convert(source, dst, dst_options=dst_options)
    np.testing.assert_array_equal(_kernel(dst), np.full((2, 3), 2.0, np.float32))
    assert tp.diff(str(run), dst).equal  # diff resolves the directory the same way


def test_a_directory_source_with_a_selection_or_to_a_file(tmp_path: Path) -> None:
    run = _run(tmp_path)
    selected = str(tmp_path / "out" / "ckpt-1")
    tp.convert(str(run), selected, include=["model/*"])
    np.testing.assert_array_equal(_kernel(selected), np.full((2, 3), 2.0, np.float32))
    exported = tmp_path / "latest.npz"
    tp.convert(str(run), str(exported))
    with np.load(exported) as z:
        np.testing.assert_array_equal(z["model/kernel"], np.full((2, 3), 2.0, np.float32))


@pytest.mark.parametrize("include", [[], ["*"]], ids=["whole", "selected"])
def test_a_directory_resolving_to_the_destination_is_refused(tmp_path: Path, include: list[str]) -> None:
    run = _run(tmp_path)
    with pytest.raises(CheckpointExistsError, match="choose another destination"):
        tp.convert(str(run), str(run / "ckpt-2"), dst_options=ZARR, overwrite=True, include=include)
    np.testing.assert_array_equal(_kernel(str(run / "ckpt-2")), np.full((2, 3), 2.0, np.float32))


def test_a_directory_without_checkpoints_says_what_to_pass(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointNotFoundError, match="not a directory holding checkpoints"):
        tp.convert(str(tmp_path / "empty"), str(tmp_path / "out" / "ckpt-1"))
    assert not (tmp_path / "out").exists()


def test_an_existing_destination_names_the_python_argument(tmp_path: Path) -> None:
    """The API's message names ``overwrite=True``; only the command line names ``--overwrite``."""
    run = _run(tmp_path)
    with pytest.raises(CheckpointExistsError, match=r"already committed at .*; pass overwrite=True to replace it"):
        tp.convert(str(run), str(run / "ckpt-1"))
