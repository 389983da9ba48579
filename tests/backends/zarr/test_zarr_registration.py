"""The backend registers as an ordinary plugin, is chosen by name or scheme, and imports zarr lazily."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from trackpoint.errors import UnknownBackendError
from trackpoint.plugins import open_backend
from trackpoint.plugins.manager import list_backends, select_backend
from trackpoint.storage import CheckpointOptions, WriteItem


def test_import_trackpoint_does_not_import_zarr() -> None:
    code = (
        "import sys, trackpoint, trackpoint.backends.zarr as z\n"
        "from trackpoint.plugins.manager import list_backends\n"
        "assert any(b.name == 'zarr' and b.available for b in list_backends())\n"
        "assert 'zarr' not in sys.modules and 'fsspec' not in sys.modules, sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_listed_as_an_available_plugin() -> None:
    (row,) = [b for b in list_backends() if b.name == "zarr"]
    assert row.available and row.plugin == "zarr"
    assert tuple(row.schemes) == ("zarr", "zarr+file", "zarr+s3", "zarr+gs", "zarr+gcs")


@pytest.mark.parametrize("url", ["zarr:///x", "zarr+file:///x", "zarr+s3://b/x", "zarr+gs://b/x", "zarr+gcs://b/x"])
def test_schemes_select_zarr(url: str) -> None:
    assert select_backend(url) == "zarr"


def test_backend_option_selects_zarr_for_plain_urls() -> None:
    for url in ("/tmp/x", "s3://b/x", "gs://b/x"):
        assert select_backend(url, CheckpointOptions(backend="zarr")) == "zarr"


@pytest.mark.parametrize("form", ["zarr://{d}", "zarr+file://{d}", "{d}"])
def test_local_forms_reach_the_same_checkpoint(tmp_path: Path, form: str) -> None:
    url = form.format(d=tmp_path)
    backend = open_backend(url, CheckpointOptions(backend="zarr" if "://" not in url else None))
    assert backend.name == "zarr"
    backend.save(backend.join(url, "ck"), [WriteItem("x", np.arange(3))])
    assert (tmp_path / "ck.zarr" / "zarr.json").is_file()
    assert backend.list_checkpoints(url) == [backend.join(url, "ck")]


def test_unsupported_url_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnknownBackendError, match="zarr: cannot store checkpoints at 'ftp://h/x'"):
        open_backend("ftp://h/x", CheckpointOptions(backend="zarr"))
