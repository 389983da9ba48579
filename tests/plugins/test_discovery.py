"""Entry points are read from distribution metadata on ``sys.path`` as ``importlib.metadata`` reads them."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from trackpoint.plugins import _discovery
from trackpoint.plugins._discovery import FoundEntryPoint, entry_points

GROUP = "trackpoint.backends"


def _dist(root: Path, dirname: str, metadata: str, entry_points_txt: str | None) -> Path:
    info = root / dirname
    info.mkdir(parents=True)
    (info / ("PKG-INFO" if dirname.endswith(".egg-info") else "METADATA")).write_text(metadata)
    if entry_points_txt is not None:
        (info / "entry_points.txt").write_text(entry_points_txt)
    return info


def _as_tuples(found: list[FoundEntryPoint]) -> set[tuple[str, str, str | None, str | None]]:
    return {(ep.name, ep.value, ep.distribution, ep.version) for ep in found}


def test_agrees_with_importlib_metadata_here() -> None:
    expected = {
        (ep.name, ep.value, ep.dist.metadata["Name"] if ep.dist else None, ep.dist.version if ep.dist else None)
        for ep in importlib.metadata.entry_points(group=GROUP)
    }
    assert _as_tuples(entry_points(GROUP)) == expected
    assert {"bundle", "memory", "s3", "gcs", "zarr"} <= {ep.name for ep in entry_points(GROUP)}


def test_reads_only_the_group_and_the_metadata_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _dist(
        tmp_path,
        "my_plugin-2.0.1.dist-info",
        "Metadata-Version: 2.1\nName: My.Plugin\nVersion: 2.0.1\n\nName: not-this\nVersion: 9\n",
        "# generated\n[console_scripts]\nmy = my_plugin.cli:main\n\n"
        f"[{GROUP}]\n# a comment\n  first = my_plugin.hooks:Plugin.instance [extra1]\nsecond=my_plugin\n"
        "[other.group]\nthird = my_plugin:x\n",
    )
    legacy = "Metadata-Version: 1.0\nName: legacy\nVersion: 0.3\n"
    _dist(tmp_path, "legacy.egg-info", legacy, f"[{GROUP}]\nold = legacy\n")
    _dist(tmp_path, "unrelated-1.0.dist-info", "Name: unrelated\nVersion: 1.0\n", "[console_scripts]\nu = u:main\n")
    _dist(tmp_path, "no_entry_points-1.0.dist-info", "Name: no-entry-points\nVersion: 1.0\n", None)
    monkeypatch.setattr(sys, "path", [str(tmp_path), str(tmp_path / "missing")])
    found = entry_points(GROUP)
    assert _as_tuples(found) == {
        ("first", "my_plugin.hooks:Plugin.instance [extra1]", "My.Plugin", "2.0.1"),
        ("second", "my_plugin", "My.Plugin", "2.0.1"),
        ("old", "legacy", "legacy", "0.3"),
    }
    # What importlib.metadata answers for the same path (it also parses METADATA with the email package).
    monkeypatch.setattr(sys, "path", [str(tmp_path)])
    assert _as_tuples(_discovery._from_importlib_metadata(GROUP)) == _as_tuples(found)


def test_first_distribution_on_the_path_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    _dist(first, "trackpoint_dup-1.0.dist-info", "Name: trackpoint-dup\nVersion: 1.0\n", f"[{GROUP}]\nd = new\n")
    # The same project under another spelling of its name, further down the path.
    _dist(second, "Trackpoint.Dup-0.9.dist-info", "Name: trackpoint-dup\nVersion: 0.9\n", f"[{GROUP}]\nd = old\n")
    monkeypatch.setattr(sys, "path", [str(first), str(second)])
    assert _as_tuples(entry_points(GROUP)) == {("d", "new", "trackpoint-dup", "1.0")}


def test_load_follows_the_attribute_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tp_discovery_target.py").write_text("class Outer:\n    class Inner:\n        value = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert FoundEntryPoint("x", "tp_discovery_target:Outer.Inner.value", None, None).load() == 42
    module = FoundEntryPoint("x", "tp_discovery_target [extra]", None, None).load()
    assert getattr(module, "__name__", None) == "tp_discovery_target"
    with pytest.raises(ValueError, match="malformed value 'not a value!'"):
        FoundEntryPoint("x", "not a value!", None, None).load()
    with pytest.raises(AttributeError):
        FoundEntryPoint("x", "tp_discovery_target:Missing", None, None).load()


@pytest.fixture
def zipped_plugin(tmp_path: Path) -> Iterator[Path]:
    archive = tmp_path / "plugins.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("zipped_plugin-1.0.dist-info/METADATA", "Name: zipped-plugin\nVersion: 1.0\n")
        z.writestr("zipped_plugin-1.0.dist-info/entry_points.txt", f"[{GROUP}]\nzipped = zipped_plugin\n")
        z.writestr("zipped_plugin.py", "")
    yield archive


def test_a_zip_on_the_path_is_read_through_importlib_metadata(
    zipped_plugin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "path", [str(zipped_plugin), *sys.path])
    assert _discovery._scan(GROUP) is None  # the scan does not read archives...
    # ...so the answer comes from importlib.metadata, with the plugin in the archive.
    assert ("zipped", "zipped_plugin", "zipped-plugin", "1.0") in _as_tuples(entry_points(GROUP))


def test_an_egg_on_the_path_is_read_through_importlib_metadata(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    egg = tmp_path / "egged-1.0-py3.11.egg"
    info = egg / "EGG-INFO"
    info.mkdir(parents=True)
    (info / "PKG-INFO").write_text("Metadata-Version: 1.1\nName: egged\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{GROUP}]\negged = egged\n")
    monkeypatch.setattr(sys, "path", [str(egg), *sys.path])
    assert _discovery._scan(GROUP) is None
    assert ("egged", "egged", "egged", "1.0") in _as_tuples(entry_points(GROUP))


def test_a_finder_publishing_distributions_is_asked_through_importlib_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = _dist(tmp_path, "hooked-3.0.dist-info", "Name: hooked\nVersion: 3.0\n", f"[{GROUP}]\nhooked = hooked\n")

    class Finder:
        """An import hook that serves one distribution from outside sys.path (as PEX or Bazel do)."""

        @staticmethod
        def find_spec(*args: object) -> None:
            return None

        @staticmethod
        def find_distributions(context: object = None) -> list[importlib.metadata.Distribution]:
            return [importlib.metadata.PathDistribution(info)]  # type: ignore[arg-type]

    monkeypatch.setattr(sys, "meta_path", [*sys.meta_path, Finder])
    assert _discovery._scan(GROUP) is None
    assert ("hooked", "hooked", "hooked", "3.0") in _as_tuples(entry_points(GROUP))


@pytest.mark.parametrize("backend", ["bundle", "zarr"])
def test_first_read_of_a_local_checkpoint_imports_no_metadata_parser(tmp_path: Path, backend: str) -> None:
    # importlib.metadata (with email) and crc32c's own package (which reads its version through it, and
    # imports argparse) cost a process tens of milliseconds on its first checkpoint; socket a few more.
    script = f"""
import json, sys
import numpy as np
import trackpoint as tp
options = tp.CheckpointOptions(backend={backend!r})
root = tp.AutoTrackable()
root.v = tp.Variable(np.arange(3, dtype=np.float32))
ckpt = tp.Checkpoint(model=root)
path = ckpt.write({str(tmp_path / "ckpt")!r}, options=options)
root.v.assign(np.zeros(3, np.float32))
ckpt.read(path, options=options).assert_consumed()
heavy = ("importlib.metadata", "email", "argparse", "crc32c", "socket")
print(json.dumps({{"values": root.v.numpy().tolist(), "loaded": [m for m in heavy if m in sys.modules]}}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"values": [0.0, 1.0, 2.0], "loaded": []}
