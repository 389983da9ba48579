"""What users install is what the tests test: the built wheel and sdist against the source tree.

trackpoint 0.1's wheel shipped no Zarr backend because a hand-written package list in ``pyproject.toml``
missed ``trackpoint.backends.zarr``, and only the editable install was ever tested. ``setup.py`` now lists
the packages by walking the ``package-dir`` mapping; these tests build real distributions (from a copy of
the build inputs, so no ``build/`` or ``*.egg-info`` lands in the working tree) and hold them to
``.ci/check_dist.py``, which ``.ci/run`` also applies to the distributions it installs.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tarfile
import tomllib
import types
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Everything ``python -m build`` reads besides the mapped package folders.
BUILD_FILES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE")


def _load_check_dist() -> types.ModuleType:
    # A developer script in .ci/, not a module of the package.
    spec = importlib.util.spec_from_file_location("check_dist", ROOT / ".ci" / "check_dist.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check_dist = _load_check_dist()


def _copy_build_inputs(dest: Path) -> Path:
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["package-dir"]
    dest.mkdir(parents=True)
    for name in BUILD_FILES:
        shutil.copy2(ROOT / name, dest / name)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist", "node_modules", ".*")
    for folder in mapping.values():
        shutil.copytree(ROOT / folder, dest / folder, ignore=skip)
    return dest


def _build(source: Path, out: Path, *only: str) -> subprocess.CompletedProcess[str]:
    # --no-isolation: the dev extra installs setuptools and build, and a test must not need the network.
    cmd = [sys.executable, "-m", "build", "--no-isolation", *only, "--outdir", str(out), str(source)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A copy of the build inputs, and the wheel and sdist ``python -m build`` makes from it (wheel from sdist)."""
    base = tmp_path_factory.mktemp("dist")
    source = _copy_build_inputs(base / "src")
    result = _build(source, base / "out")
    assert result.returncode == 0, f"python -m build failed:\n{result.stdout}\n{result.stderr}"
    (wheel,) = (base / "out").glob("*.whl")
    (sdist,) = (base / "out").glob("*.tar.gz")
    return source, wheel, sdist


def _wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


def test_wheel_ships_every_package_folder_and_nothing_else(built: tuple[Path, Path, Path]) -> None:
    source, wheel, _ = built
    assert check_dist.check_wheel(wheel, source) == []
    names = _wheel_names(wheel)
    # The package the hand-written list forgot, and the data files that must ride along.
    assert {"trackpoint/backends/zarr/__init__.py", "trackpoint/backends/zarr/_backend.py"} <= names
    assert {"trackpoint/py.typed", "trackpoint/proto/checkpoint_state.proto"} <= names
    assert "trackpoint/backends/bundle/proto/tensor_bundle.proto" in names
    tops = {name.split("/")[0] for name in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"trackpoint"}
    assert not any("example_sqlite" in n or "example-sqlite" in n or "_generate" in n for n in names)


def test_license_ships_in_wheel_and_sdist(built: tuple[Path, Path, Path]) -> None:
    _, wheel, sdist = built
    license_text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    with zipfile.ZipFile(wheel) as zf:
        (licensed,) = [n for n in zf.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
        assert zf.read(licensed).decode() == license_text
        metadata = zf.read(licensed.replace("licenses/LICENSE", "METADATA")).decode()
    assert "License-Expression: Apache-2.0" in metadata
    assert "License-File: LICENSE" in metadata
    assert check_dist.check_sdist(sdist) == []
    with tarfile.open(sdist) as tf:
        member = next(m for m in tf.getmembers() if m.name.endswith("/LICENSE") and m.name.count("/") == 1)
        extracted = tf.extractfile(member)
        assert extracted is not None
        assert extracted.read().decode() == license_text


def test_check_dist_reports_a_missing_package_and_a_shipped_script(
    built: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    # What the 0.1 wheel looked like: no zarr package, and the protobuf generator script inside the package.
    source, wheel, _ = built
    doctored = tmp_path / wheel.name
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(doctored, "w") as dst:
        for item in src.infolist():
            if not item.filename.startswith("trackpoint/backends/zarr/"):
                dst.writestr(item, src.read(item))
        dst.writestr("trackpoint/proto/_generate.py", 'import sys\n\nif __name__ == "__main__":\n    sys.exit(0)\n')
        dst.writestr("core/__init__.py", "")
    problems = "\n".join(check_dist.check_wheel(doctored, source))
    assert "wheel lacks trackpoint/backends/zarr/__init__.py (from backends/zarr/__init__.py)" in problems
    assert "wheel ships trackpoint/proto/_generate.py, a script" in problems
    assert "wheel ships core/__init__.py outside the trackpoint package" in problems


def test_a_new_package_folder_ships_without_listing_it(tmp_path: Path) -> None:
    source = _copy_build_inputs(tmp_path / "src")
    new = source / "backends" / "newstore"
    new.mkdir()
    (new / "__init__.py").write_text('"""A backend nobody listed anywhere."""\n')
    (new / "_impl.py").write_text("VALUE = 1\n")
    result = _build(source, tmp_path / "out", "--wheel")
    assert result.returncode == 0, f"python -m build failed:\n{result.stdout}\n{result.stderr}"
    (wheel,) = (tmp_path / "out").glob("*.whl")
    assert {"trackpoint/backends/newstore/__init__.py", "trackpoint/backends/newstore/_impl.py"} <= _wheel_names(wheel)


def test_a_module_folder_without_init_stops_the_build(tmp_path: Path) -> None:
    source = _copy_build_inputs(tmp_path / "src")
    orphan = source / "backends" / "orphan"
    orphan.mkdir()
    (orphan / "store.py").write_text("VALUE = 1\n")
    result = _build(source, tmp_path / "out", "--wheel")
    assert result.returncode != 0
    assert "backends/orphan holds Python modules but no __init__.py" in result.stdout + result.stderr
    problems = check_dist.source_files(source)[1]
    assert problems == ["backends/orphan holds modules but no __init__.py: it cannot ship"]
