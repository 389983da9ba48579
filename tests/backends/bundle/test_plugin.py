"""The ``bundle`` backend as a plugin: found through its entry point for local paths and file:// URLs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trackpoint.backends.bundle import BundleBackend
from trackpoint.backends.stores import LocalFiles
from trackpoint.plugins.manager import PluginHost
from trackpoint.storage import CheckpointOptions, WriteItem


def test_local_paths_and_file_urls_open_the_bundle_backend(tmp_path: Path) -> None:
    host = PluginHost()
    for url in (str(tmp_path / "ckpt-1"), "file://" + str(tmp_path / "ckpt-1")):
        backend = host.open(url, CheckpointOptions(num_writers=1))
        assert isinstance(backend, BundleBackend)
        assert isinstance(backend.files, LocalFiles)
        assert backend.name == "bundle"
        assert backend.capabilities.atomic_rename
        assert backend.options.num_writers == 1
    backend.save(url, [WriteItem("x", np.arange(4))])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-1.data-00000-of-00001", "ckpt-1.index"]


def test_listed_with_its_schemes() -> None:
    rows = {row.name: row for row in PluginHost().backends()}
    assert rows["bundle"].available
    assert set(rows["bundle"].schemes) == {"", "file"}
