"""Zarr groups trackpoint did not write are no checkpoints, whatever they are named.

Plain zarr writes groups ``dir/x-9.zarr`` too. Listings (the backend's, ``latest_checkpoint``, a
``CheckpointManager``'s, ``trackpoint ls``) show only the groups trackpoint committed, and a restore of
another group says what it is and how to read it.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

import trackpoint as tp
from trackpoint.cli import main
from trackpoint.errors import InvalidCheckpointError
from trackpoint.storage import WriteItem


def _foreign_group(path: Path, arrays: int = 1) -> None:
    """A group written by zarr-python alone; many ``arrays`` make its consolidated ``zarr.json`` large."""
    group = zarr.open_group(str(path), mode="w")
    group.attrs["written_by"] = "someone else"
    for i in range(arrays):
        group.create_array(f"a{i}", data=np.arange(4.0))
    if arrays > 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # consolidated metadata is not in the v3 specification yet
            zarr.consolidate_metadata(str(path))


def _upload(where: Any, local: Path, name: str) -> None:
    """Copy the local group ``local`` into the directory of ``where`` as ``name`` (on any store)."""
    target = where.raw_path(where.directory).rstrip("/") + "/" + name
    for root, _, files in os.walk(local):
        for file in files:
            rel = os.path.relpath(os.path.join(root, file), local)
            where.raw.makedirs(os.path.dirname(f"{target}/{rel}"), exist_ok=True)
            where.raw.put_file(os.path.join(root, file), f"{target}/{rel}")


def test_listings_show_only_groups_trackpoint_wrote(where: Any, tmp_path: Path) -> None:
    backend = where.backend
    backend.save(where.prefix("ckpt-1"), [WriteItem("w", np.arange(6, dtype=np.float32))])
    backend.save(where.prefix("ckpt-2"), [WriteItem(f"w{i}", np.full(3, i, np.float32)) for i in range(200)])
    # Another tool rewrote ckpt-2's root with a large attribute first: the format is named beyond its start.
    root = where.raw_path(where.prefix("ckpt-2")) + ".zarr/zarr.json"
    doc = json.loads(where.raw.cat_file(root))
    doc["attributes"] = {"note": "x" * 8000, **doc["attributes"]}
    where.raw.pipe_file(root, json.dumps(doc, indent=4).encode())
    source = tmp_path / "written-by-zarr"
    _foreign_group(source / "x-9.zarr")
    _upload(where, source / "x-9.zarr", "x-9.zarr")
    _foreign_group(source / "y-3.zarr", arrays=60)  # a root document larger than the start read to tell
    assert (source / "y-3.zarr" / "zarr.json").stat().st_size > 16 << 10
    _upload(where, source / "y-3.zarr", "y-3.zarr")
    assert backend.list_checkpoints(where.directory) == [where.prefix("ckpt-1"), where.prefix("ckpt-2")]
    with backend.open_reader(where.prefix("ckpt-2")) as reader:
        np.testing.assert_array_equal(reader.read("w7"), np.full(3, 7, np.float32))


@pytest.mark.parametrize("backend", [None, "zarr"])
def test_latest_checkpoint_manager_and_ls_pass_over_a_foreign_group(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], backend: str | None
) -> None:
    _foreign_group(tmp_path / "ckpt-9.zarr")
    options = tp.CheckpointOptions(backend=backend)
    assert tp.latest_checkpoint(str(tmp_path), options) is None
    model = tp.AutoTrackable()
    model.v = tp.Variable(np.arange(3, dtype=np.float32))
    manager = tp.CheckpointManager(tp.Checkpoint(model=model), str(tmp_path), max_to_keep=2, options=options)
    assert manager.latest_checkpoint is None and manager.checkpoints == []
    saved = manager.save(checkpoint_number=1)
    assert tp.latest_checkpoint(str(tmp_path), options) == saved
    assert main(["ls", str(tmp_path), "--json"]) == 0
    listed = json.dumps(json.loads(capsys.readouterr().out))
    assert "ckpt-1" in listed and "ckpt-9" not in listed, listed
    # The manager's retention never takes the foreign group for one of its own.
    manager.save(checkpoint_number=2)
    manager.save(checkpoint_number=3)
    assert (tmp_path / "ckpt-9.zarr" / "zarr.json").exists()
    assert zarr.open_group(str(tmp_path / "ckpt-9.zarr"), mode="r").attrs["written_by"] == "someone else"


@pytest.mark.parametrize("backend", [None, "zarr"])
def test_restoring_a_foreign_group_says_it_is_no_checkpoint_and_how_to_read_it(
    tmp_path: Path, backend: str | None
) -> None:
    _foreign_group(tmp_path / "x-9.zarr")
    group = str(tmp_path / "x-9.zarr")
    ckpt = tp.Checkpoint(v=tp.Variable(np.zeros(4)))
    with pytest.raises(InvalidCheckpointError) as caught:
        ckpt.read(str(tmp_path / "x-9"), tp.CheckpointOptions(backend=backend))
    message = str(caught.value)
    assert "is a Zarr group not written by trackpoint" in message, message
    assert f"zarr.open_group({group!r}, mode='r')" in message, message
    assert isinstance(caught.value, ValueError)
