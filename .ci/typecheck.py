"""Run mypy --strict on the trackpoint package as it is installed.

The package maps folders (core/ -> trackpoint, backends/ -> trackpoint.backends,
plugins/ -> trackpoint.plugins) through setuptools' editable import hook, which
mypy cannot follow. This script mirrors that mapping as a tree of symlinks in
a temporary directory and type-checks it, so errors still point at real files.

Only what ships is linked: modules, and folders that are packages (an
``__init__.py``) and not separate distributions (their own ``pyproject.toml``),
the same rule ``setup.py`` uses to list the packages. The developer scripts in
``.ci/`` are checked too.

Usage: python .ci/typecheck.py            # the package, the example and Azure plugins, and .ci/*.py
       python .ci/typecheck.py core/x.py  # only modules under these paths
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CI = ROOT / ".ci"
MAPPING = {"core": "trackpoint", "backends": "trackpoint/backends", "plugins": "trackpoint/plugins"}
# The example third-party plugin and the Azure plugin are their own distributions with a plain layout.
EXAMPLE = ROOT / "plugins" / "example-sqlite"
AZURE = ROOT / "plugins" / "azure"


def _link_tree(dest: Path) -> None:
    for src_rel, dst_rel in MAPPING.items():
        src = ROOT / src_rel
        target = dest / dst_rel
        target.mkdir(parents=True, exist_ok=True)
        for entry in src.iterdir():
            if entry.name.startswith((".", "__pycache__")):
                continue
            if entry.is_dir() and (not (entry / "__init__.py").is_file() or (entry / "pyproject.toml").exists()):
                continue  # not a package, or a separate distribution (plugins/example-sqlite)
            link = target / entry.name
            if not link.exists():
                os.symlink(entry, link)


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="tp-mypy-") as tmp:
        tree = Path(tmp)
        _link_tree(tree)
        # Module names come from the MYPYPATH roots: plugins/azure would otherwise be read as a
        # subpackage of plugins/ (it is a valid identifier and plugins/ has an __init__.py).
        cmd = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), "--explicit-package-bases"]
        if argv:
            targets = []
            for a in argv:
                rel = Path(a).resolve().relative_to(ROOT)
                top, *rest = rel.parts
                if top == CI.name:
                    targets.append(str(ROOT / rel))
                else:
                    targets.append(str(tree / MAPPING[top] / Path(*rest)) if rest else str(tree / MAPPING[top]))
            cmd += targets
        else:
            # Files and folders rather than -p: mypy takes one or the other, and the .ci scripts are files.
            cmd += [
                str(tree / "trackpoint"),
                str(EXAMPLE / "trackpoint_example_sqlite"),
                str(AZURE / "trackpoint_azure"),
            ]
            cmd += [str(script) for script in sorted(CI.glob("*.py"))]
        env = dict(os.environ, MYPYPATH=os.pathsep.join([str(tree), str(EXAMPLE), str(AZURE)]))
        return subprocess.run(cmd, cwd=tmp, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
