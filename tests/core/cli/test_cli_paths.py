"""Every path the command line prints can be given back to it: leftovers and cleanups in the directory's spelling.

The Zarr backend named what it finds as its store addresses it: ``ls --all zarr+s3://bucket/dir`` printed the
leftovers of crashed saves as ``s3://bucket/dir/...``, which selects another backend when pasted back, and
``zarr:///abs/run`` (or a relative ``run``) gave absolute local paths.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
import trackpoint.plugins
from trackpoint.storage import ShardSpec, WriteItem


def _crashed_save(prefix: str, options: tp.CheckpointOptions | None = None) -> None:
    """A save of ``prefix`` that wrote its data and never committed: a leftover."""
    backend = trackpoint.plugins.open_backend(prefix, options or tp.CheckpointOptions())
    try:
        backend.begin(prefix, "crashed")
        backend.write_shard(prefix, ShardSpec(0, 1, "crashed"), [WriteItem("x", np.zeros(3))])
    finally:
        backend.close()


def _storage_flags(options: dict[str, Any]) -> list[str]:
    return [arg for key, value in options.items() for arg in ("-o", f"{key}={value}")]


def _listed_and_cleaned(cli: Any, directory: str, *flags: str) -> tuple[list[str], list[str], list[str]]:
    """What ``ls --all`` prints and lists as leftovers, and what ``cleanup`` keeps (age guard) and removes."""
    listing = cli("ls", "--all", directory, *flags)
    assert listing.returncode == 0, listing.stderr
    printed = [line.strip() for line in listing.stdout.splitlines() if line.startswith("  ")]
    leftovers = json.loads(cli("ls", "--all", directory, "--json", *flags).stdout)["leftovers"]
    assert printed == leftovers
    kept = json.loads(cli("cleanup", directory, "--min-age", "86400", "--json", *flags).stdout)["kept"]
    removed = json.loads(cli("cleanup", directory, "--min-age", "0", "--json", *flags).stdout)["removed"]
    return leftovers, kept, removed


@pytest.mark.s3
def test_leftovers_of_a_zarr_url_keep_its_scheme(cli: Any, s3_bucket: str, s3_storage_options: dict[str, Any]) -> None:
    directory = f"zarr+{s3_bucket}/dir"
    options = tp.CheckpointOptions(storage_options=s3_storage_options)
    tp.Checkpoint(v=tp.Variable(np.ones(3, np.float32))).write(f"{directory}/ckpt-1", options)
    _crashed_save(f"{directory}/ckpt-9", options)
    flags = _storage_flags(s3_storage_options)
    leftovers, kept, removed = _listed_and_cleaned(cli, directory, *flags)
    assert leftovers == [f"{directory}/ckpt-9.zarr/v-crashed"]
    assert kept == leftovers and removed == leftovers
    # Given back, the path selects the Zarr backend again, as the directory does.
    assert trackpoint.plugins.select_backend(leftovers[0]) == "zarr"


@pytest.mark.parametrize("spelling", ["relative", "zarr-relative", "zarr-absolute", "zarr+file", "file", "absolute"])
def test_local_leftovers_are_under_the_directory_as_written(
    tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch, spelling: str
) -> None:
    monkeypatch.chdir(tmp_path)
    zarr = tp.CheckpointOptions(backend="zarr")
    tp.Checkpoint(v=tp.Variable(np.ones(3, np.float32))).write("run/ckpt-1", zarr)
    _crashed_save("run/ckpt-9", zarr)
    directory = {
        "relative": "run",
        "zarr-relative": "zarr://run",
        "zarr-absolute": f"zarr://{tmp_path}/run",
        "zarr+file": f"zarr+file://{tmp_path}/run",
        "file": f"file://{tmp_path}/run/",
        "absolute": str(tmp_path / "run"),
    }[spelling]
    leftovers, kept, removed = _listed_and_cleaned(cli, directory)
    assert leftovers == [f"{directory.rstrip('/')}/ckpt-9.zarr.tmp-crashed"]
    assert kept == leftovers and removed == leftovers
    assert not os.path.exists(tmp_path / "run" / "ckpt-9.zarr.tmp-crashed")


def test_a_path_outside_the_directory_is_reported_as_the_store_gives_it() -> None:
    from trackpoint.backends.zarr._backend import _as_given

    found = ["s3://b/run/x", "s3://b/other/y", "s3://b/runs/z"]
    assert _as_given("zarr+s3://b/run", "s3://b/run", found) == ["zarr+s3://b/run/x", "s3://b/other/y", "s3://b/runs/z"]
    # An unfinished upload is described starting with its path.
    assert _as_given("zarr+s3://b/run/", "s3://b/run", ["s3://b/run/k (unfinished upload, id 1)"]) == [
        "zarr+s3://b/run/k (unfinished upload, id 1)"
    ]
    assert _as_given("s3://b/run", "s3://b/run", ["s3://b/run/x"]) == ["s3://b/run/x"]
