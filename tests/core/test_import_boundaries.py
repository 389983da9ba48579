"""The object-graph core imports no storage code (dependencies point inward)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "core"
PURE_MODULES = ["graph.py", "trackable.py", "restore.py", "autotrackable.py", "variables.py", "data_structures.py"]
FORBIDDEN = (
    "trackpoint._resolve",
    "trackpoint.backends",
    "trackpoint.plugins",
    "trackpoint.checkpoint",
    "trackpoint.reader",
    "trackpoint.state",
)
# Only value types and constants of the storage contract may be named, never I/O classes.
ALLOWED_FROM_STORAGE = {"CheckpointReader", "TensorInfo", "OBJECT_GRAPH_KEY"}


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, [alias.name for alias in node.names]))
    return found


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_module_imports_no_storage(module: str) -> None:
    for name, names in _imports(CORE / module):
        assert not name.startswith(FORBIDDEN), f"{module} imports {name}"
        if name == "trackpoint.storage":
            assert set(names) <= ALLOWED_FROM_STORAGE, (
                f"{module} imports {set(names) - ALLOWED_FROM_STORAGE} from storage"
            )
        if name == "trackpoint":
            assert not set(names) & {"_resolve", "backends", "plugins", "storage"}, f"{module} imports {names}"


def test_checker_detects_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from trackpoint._resolve import open_backend\nfrom trackpoint.storage import StorageBackend\n")
    imports = _imports(bad)
    assert ("trackpoint._resolve", ["open_backend"]) in imports
    assert ("trackpoint.storage", ["StorageBackend"]) in imports
