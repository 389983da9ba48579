"""Run mypy --strict on the trackpoint package as it is installed.

The package maps folders (core/ -> trackpoint, backends/ -> trackpoint.backends,
plugins/ -> trackpoint.plugins) through setuptools' editable import hook, which
mypy cannot follow. This script mirrors that mapping as a tree of symlinks in
a temporary directory and type-checks it, so errors still point at real files.

Usage: python .ci/typecheck.py            # the whole package and the example plugin
       python .ci/typecheck.py core/x.py  # only modules under these paths
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAPPING = {"core": "trackpoint", "backends": "trackpoint/backends", "plugins": "trackpoint/plugins"}
# The example third-party plugin is its own distribution with a plain layout.
EXAMPLE = ROOT / "plugins" / "example-sqlite"


def _link_tree(dest: Path) -> None:
    for src_rel, dst_rel in MAPPING.items():
        src = ROOT / src_rel
        target = dest / dst_rel
        target.mkdir(parents=True, exist_ok=True)
        for entry in src.iterdir():
            if entry.name.startswith((".", "__pycache__")) or "-" in entry.name:
                continue  # hyphenated folders are separate distributions (example plugin)
            link = target / entry.name
            if not link.exists():
                os.symlink(entry, link)


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="tp-mypy-") as tmp:
        tree = Path(tmp)
        _link_tree(tree)
        cmd = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")]
        if argv:
            targets = []
            for a in argv:
                rel = Path(a).resolve().relative_to(ROOT)
                top, *rest = rel.parts
                targets.append(str(tree / MAPPING[top] / Path(*rest)) if rest else str(tree / MAPPING[top]))
            cmd += targets
        else:
            cmd += ["-p", "trackpoint", "-p", "trackpoint_example_sqlite"]
        env = dict(os.environ, MYPYPATH=os.pathsep.join([str(tree), str(EXAMPLE)]))
        return subprocess.run(cmd, cwd=tmp, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
