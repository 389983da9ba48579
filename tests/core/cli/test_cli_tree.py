"""``trackpoint inspect --tree``: nested state, one entry per line.

A torch module's, optimizer's or scheduler's state dict (saved as attributes of one node plus its
``.STATE_DICT`` structure) used to be printed on the node's line as one comma-separated list of every
attribute, and a ``PythonState`` only as ``.py_state: string []``. The tree now draws them as they nest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from stateful_objects import StateHolder
from trackpoint.cli import _render


class _Config(tp.PythonState):
    def __init__(self, text: str) -> None:
        self.text = text

    def serialize(self) -> str:
        return self.text

    def deserialize(self, string_value: str | bytes) -> None:
        self.text = string_value.decode() if isinstance(string_value, bytes) else string_value


def _tree(cli: Any, path: str) -> list[str]:
    result = cli("inspect", "--tree", path)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    lines: list[str] = result.stdout.splitlines()
    return lines


def test_a_torch_model_and_optimizer_are_drawn_as_their_state_dicts_nest(tmp_path: Path, cli: Any) -> None:
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.ones(3, 4)).sum().backward()
    opt.step()
    path = tp.Checkpoint(model=net, optimizer=opt).write(str(tmp_path / "ckpt-1"))
    lines = _tree(cli, path)
    assert lines[:6] == [
        "(root)",
        "├── model  state dict",
        "│   ├── 0.weight  float32 [8, 4]",
        "│   ├── 0.bias  float32 [8]",
        "│   ├── 2.weight  float32 [2, 8]",
        "│   └── 2.bias  float32 [2]",
    ]
    start = lines.index("└── optimizer  state dict")
    assert lines[start + 1 : start + 4] == [
        "    ├── state",
        "    │   ├── 0",
        "    │   │   └── momentum_buffer  float32 [8, 4]",
    ]
    groups = lines.index("    └── param_groups")
    assert lines[groups + 1] == "        └── [0]"
    assert "            ├── lr  0.1" in lines
    assert "            ├── momentum  0.9" in lines
    assert "            └── params  [0, 1, 2, 3]" in lines
    # One entry per line: no line lists several attributes, none is the structure string itself.
    assert not any(".STATE_DICT" in line or ", ." in line for line in lines)


def test_state_dict_values_are_shown_and_long_ones_cut(tmp_path: Path, cli: Any) -> None:
    settings = StateHolder(
        dict(
            lr=0.5,
            name="x" * 200,
            params=list(range(300)),
            betas=(0.9, 0.999),
            blob=b"\x01\x02",
            groups=[{"weight": np.ones(2, np.float32), "decay": 0.0}],
            empty={},
        )
    )
    path = tp.Checkpoint(opt=settings).write(str(tmp_path / "ckpt-1"))
    lines = _tree(cli, path)
    assert lines == [
        "(root)",
        "└── opt  state dict",
        "    ├── lr  0.5",
        f"    ├── name  '{'x' * (_render.VALUE_WIDTH - 4)}...",
        "    ├── params  [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, ... (300 items)]",
        "    ├── betas  (0.9, 0.999)",
        "    ├── blob  b'\\x01\\x02'",
        "    ├── groups",
        "    │   └── [0]",
        "    │       ├── weight  float32 [2]",
        "    │       └── decay  0.0",
        "    └── empty  {}",
    ]
    assert all(len(line) <= _render.VALUE_WIDTH + 20 for line in lines)


def test_a_python_state_shows_its_value_and_the_json_it_holds(tmp_path: Path, cli: Any) -> None:
    config = _Config(json.dumps({"epoch": 3, "losses": [0.5, 0.25], "data": {"seed": 7}}))
    path = tp.Checkpoint(config=config, note=_Config("plain " * 30)).write(str(tmp_path / "ckpt-1"))
    lines = _tree(cli, path)
    assert lines[:6] == [
        "(root)",
        "├── config  .py_state: JSON",
        "│   ├── epoch  3",
        "│   ├── losses  [0.5, 0.25]",
        "│   └── data",
        "│       └── seed  7",
    ]
    assert lines[6].startswith("└── note  .py_state: 'plain plain") and lines[6].endswith("...")


def test_nesting_deeper_than_the_tree_draws_is_summarised(tmp_path: Path, cli: Any) -> None:
    """A crafted PythonState of 5,000 nested lists: no RecursionError, a summary at the depth limit."""
    path = tp.Checkpoint(deep=_Config("[" * 900 + "]" * 900), deeper=_Config("[" * 5000 + "]" * 5000)).write(
        str(tmp_path / "ckpt-1")
    )
    lines = _tree(cli, path)
    assert lines[-2].endswith("└── [0]  [...] (1 item)")
    assert len(lines) == 2 + _render.VALUE_DEPTH + 1 + 1  # root, deep, its levels, the summary, deeper


def test_a_damaged_structure_lists_the_attributes_one_per_line(tmp_path: Path) -> None:
    """The tree still shows what is stored when the ``.STATE_DICT`` string is no structure trackpoint reads."""
    from trackpoint.interchange._convert import open_source, read_graph

    path = tp.Checkpoint(opt=StateHolder(dict(lr=0.5, w=np.zeros(3, np.float32)))).write(str(tmp_path / "ckpt-1"))
    _, _, reader = open_source(path)
    with reader:
        graph = read_graph(reader)
        infos = {key: reader.info(key) for key in reader.keys()}
    assert graph is not None
    broken = _render.tree(graph, infos, lambda key: np.array(b"{not json", dtype=object))
    assert broken == ["(root)", "└── opt", "    ├── .w  float32 [3]", "    └── ..STATE_DICT  string []"]
    # Without a reader (nothing read), the same.
    assert _render.tree(graph, infos) == broken
