"""Package discovery for trackpoint's folder mapping; everything else about the build is in ``pyproject.toml``.

setuptools' own discovery (``[tool.setuptools.packages.find]``) names packages after their folders, so it
cannot follow ``[tool.setuptools.package-dir]`` (``core/`` -> ``trackpoint``, ``backends/`` ->
``trackpoint.backends``, ``plugins/`` -> ``trackpoint.plugins``). The hand-written ``packages`` list this
replaces once left out ``trackpoint.backends.zarr``, so a regular install had no Zarr backend while the
editable install the tests used did.

Here the mapping is walked instead: every folder with an ``__init__.py``, reached from a mapped folder
through folders that are packages themselves, ships. A folder with its own ``pyproject.toml`` (such as
``plugins/example-sqlite``) is a separate distribution and is never entered. A folder that holds Python
modules but no ``__init__.py`` stops the build, because it would import from a source checkout and be
missing from every installed copy.
"""

from __future__ import annotations

import tomllib
from collections.abc import Collection
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent


def discover_packages(root: Path) -> list[str]:
    """Return every import package under the ``package-dir`` mapping of ``root/pyproject.toml``, sorted."""
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    mapping: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    mapped = {(root / folder).resolve() for folder in mapping.values()}
    packages: list[str] = []
    for name, folder in mapping.items():
        packages += _walk(name, root / folder, mapped)
    return sorted(packages)


def _walk(name: str, folder: Path, mapped: Collection[Path]) -> list[str]:
    if not (folder / "__init__.py").is_file():
        raise SystemExit(f"error: {folder} is mapped to the package {name!r} but has no __init__.py; add one")
    found = [name]
    for child in sorted(p for p in folder.iterdir() if p.is_dir()):
        if child.name == "__pycache__" or (child / "pyproject.toml").exists() or child.resolve() in mapped:
            continue  # bytecode, a separate distribution, or a folder mapped to a package of its own
        if (child / "__init__.py").is_file():
            if not child.name.isidentifier():
                raise SystemExit(f"error: {child} has an __init__.py but {child.name!r} is not an importable name")
            found += _walk(f"{name}.{child.name}", child, mapped)
        elif any(child.glob("*.py")):
            raise SystemExit(
                f"error: {child} holds Python modules but no __init__.py, so it would be left out of the "
                f"distribution; add an __init__.py (or a pyproject.toml if it is a separate distribution)"
            )
    return found


if __name__ == "__main__":
    setup(packages=discover_packages(ROOT))
