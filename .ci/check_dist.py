"""Check the built wheel and sdist against the source tree: what users install must be what the tests test.

``python .ci/check_dist.py DIST_DIR`` inspects the one ``*.whl`` and the one ``*.tar.gz`` in ``DIST_DIR``
(as ``python -m build`` leaves them) and exits with status 1, listing every problem, if:

- a package folder of the source tree is missing from the wheel. A package folder is a folder with an
  ``__init__.py`` under a folder of ``[tool.setuptools.package-dir]``; folders with their own
  ``pyproject.toml`` (``plugins/example-sqlite``) are separate distributions. Every module (``.py``),
  typing stub (``.pyi``), ``.proto`` and ``py.typed`` marker in them must ship;
- a folder under the mapping holds modules but no ``__init__.py`` (it would import from a checkout only);
- the wheel holds anything else: a module the source tree does not have, a file outside ``trackpoint/``
  and its ``.dist-info`` (tests, docs, benchmarks, ``core/`` or ``backends/`` at the top level), or a
  developer script (a module with an ``if __name__ == "__main__":`` block; such scripts live in ``.ci/``);
- ``LICENSE`` is missing from the wheel's ``.dist-info/licenses`` or from the sdist, or the sdist ships
  the tests or the CI scripts.

This file is a developer script: it lives in ``.ci/`` so that no distribution ships it.
"""

from __future__ import annotations

import os
import re
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parents[1]
#: Files in package folders that must ship; anything else there (a stray note) is not checked.
SHIPPED_SUFFIXES = (".py", ".pyi", ".proto")
SHIPPED_NAMES = ("py.typed",)
#: Folders never searched for packages: caches, build output, and node's dependency trees.
NOT_SOURCE = re.compile(r"^(__pycache__|build|dist|node_modules|\..*|.*\.egg-info)$")
SCRIPT_GUARD = re.compile(rb"""^if\s+__name__\s*==\s*["']__main__["']\s*:""", re.MULTILINE)


def source_files(root: Path = ROOT) -> tuple[dict[str, Path], list[str]]:
    """Return the files that must ship (wheel path -> source file) and the problems found in the tree."""
    mapping = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["package-dir"]
    expected: dict[str, Path] = {}
    problems: list[str] = []
    for package, folder in mapping.items():
        base = root / folder
        for dirpath, dirnames, filenames in os.walk(base):
            here = Path(dirpath)
            # Separate distributions and non-source folders are not part of this one.
            dirnames[:] = [
                d for d in dirnames if not NOT_SOURCE.match(d) and not (here / d / "pyproject.toml").exists()
            ]
            if "__init__.py" not in filenames:
                if any(name.endswith(".py") for name in filenames):
                    problems.append(f"{here.relative_to(root)} holds modules but no __init__.py: it cannot ship")
                continue
            parts = here.relative_to(base).parts
            if not all(part.isidentifier() for part in parts):
                problems.append(f"{here.relative_to(root)} has an __init__.py but is not an importable name")
                continue
            target = PurePosixPath(*package.split("."), *parts)
            for name in filenames:
                if name.endswith(SHIPPED_SUFFIXES) or name in SHIPPED_NAMES:
                    expected[str(target / name)] = here / name
    return expected, problems


def check_wheel(wheel: Path, root: Path = ROOT) -> list[str]:
    """Return every problem with ``wheel`` measured against the source tree at ``root``."""
    expected, problems = source_files(root)
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
        contents = {n: zf.read(n) for n in names if n.endswith(".py")}
        top_level = next((zf.read(n).decode().split() for n in names if n.endswith(".dist-info/top_level.txt")), [])
    dist_info = {n for n in names if PurePosixPath(n).parts[0].endswith(".dist-info")}
    shipped = set(names) - dist_info
    for name in sorted(expected.keys() - shipped):
        problems.append(f"wheel lacks {name} (from {expected[name].relative_to(root)})")
    for name in sorted(shipped - expected.keys()):
        if PurePosixPath(name).parts[0] != "trackpoint":
            problems.append(f"wheel ships {name} outside the trackpoint package")
        elif name.endswith(SHIPPED_SUFFIXES):
            problems.append(f"wheel ships {name}, which is not in the source tree's package folders")
    for name, text in sorted(contents.items()):
        if not name.endswith("/__main__.py") and SCRIPT_GUARD.search(text):
            problems.append(f"wheel ships {name}, a script (it has a __main__ block); developer scripts belong in .ci/")
    if top_level != ["trackpoint"]:
        problems.append(f"wheel installs the top-level names {top_level}, expected only ['trackpoint']")
    if not any(PurePosixPath(n).match("*.dist-info/licenses/LICENSE") for n in dist_info):
        problems.append("wheel lacks LICENSE in its .dist-info/licenses")
    return problems


def check_sdist(sdist: Path) -> list[str]:
    """Return every problem with ``sdist``: LICENSE present, no tests or CI scripts."""
    with tarfile.open(sdist) as tf:
        # Drop the leading "trackpoint-<version>/" folder.
        names = {str(PurePosixPath(*PurePosixPath(n).parts[1:])) for n in tf.getnames()}
    problems = [] if "LICENSE" in names else ["sdist lacks LICENSE"]
    for folder in ("tests", ".ci"):
        if any(n == folder or n.startswith(folder + "/") for n in names):
            problems.append(f"sdist ships {folder}/, which belongs to the repository only")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    dist = Path(argv[0])
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        print(f"expected one wheel and one sdist in {dist}, found {wheels + sdists}", file=sys.stderr)
        return 1
    problems = check_wheel(wheels[0]) + check_sdist(sdists[0])
    for problem in problems:
        print(f"DIST PROBLEM: {problem}", file=sys.stderr)
    if problems:
        return 1
    expected, _ = source_files()
    print(f"{wheels[0].name}: all {len(expected)} package files ship, nothing else")
    print(f"{sdists[0].name}: LICENSE, no tests or CI scripts")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
