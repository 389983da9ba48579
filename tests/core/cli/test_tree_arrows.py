"""``trackpoint inspect --tree``: an object reached along several edges is drawn once, and every arrow points there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

import trackpoint as tp


def _tree(cli: Any, path: str) -> list[str]:
    result = cli("inspect", "--tree", path)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    lines: list[str] = result.stdout.splitlines()
    return lines


def test_a_shared_value_is_drawn_at_its_key_and_the_other_edge_points_there(tmp_path: Path, cli: Any) -> None:
    # Depth first, `m/a/deep/v` comes first; breadth first (how TensorFlow names it, and its key) `m/b/0` does.
    root = tp.AutoTrackable()
    root.a = tp.AutoTrackable()
    root.a.deep = tp.AutoTrackable()
    v = tp.Variable(np.ones(2, np.float32))
    root.a.deep.v = v
    root.b = [v]
    path = tp.Checkpoint(m=root).write(str(tmp_path / "ck"))
    assert [k for k, _ in tp.list_variables(path) if "VARIABLE_VALUE" in k] == ["m/b/0/.ATTRIBUTES/VARIABLE_VALUE"]
    assert _tree(cli, path) == [
        "(root)",
        "└── m",
        "    ├── a",
        "    │   └── deep",
        "    │       └── v  -> m/b/0 (shared)",
        "    └── b",
        "        └── 0  float32 [2]",
    ]


def test_every_arrow_names_a_path_that_is_drawn(tmp_path: Path, cli: Any) -> None:
    # A diamond of containers: each shared object is drawn once, and each arrow names a drawn line's path.
    leaf = tp.AutoTrackable()
    leaf.w = tp.Variable(np.zeros(3, np.float32))
    mid = tp.AutoTrackable()
    mid.inner = {"leaf": leaf}
    root = tp.AutoTrackable()
    root.x = tp.AutoTrackable()
    root.x.y = mid
    root.z = mid
    root.q = [leaf]
    path = tp.Checkpoint(r=root).write(str(tmp_path / "ck"))
    lines = _tree(cli, path)
    drawn: dict[str, str] = {}
    stack: list[str] = []
    for line in lines[1:]:
        body = line.lstrip("│├└─ ")
        depth = (len(line) - len(body)) // 4 - 1
        label, _, text = body.partition("  ")
        del stack[depth:]
        stack.append(label)
        drawn["/".join(stack)] = text
    arrows = {where: text[3 : -len(" (shared)")] for where, text in drawn.items() if text.startswith("-> ")}
    assert arrows == {"r/x/y": "r/z", "r/z/inner/leaf": "r/q/0"}
    assert all(not drawn[target].startswith("->") for target in arrows.values())
    assert drawn["r/q/0/w"] == "float32 [3]"
