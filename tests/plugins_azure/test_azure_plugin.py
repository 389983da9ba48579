"""The trackpoint-azure distribution as a plugin: its entry point, URL schemes, light loading, line budget."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import trackpoint as tp
from azurite import Azurite
from trackpoint import plugins
from trackpoint.errors import BackendError, BackendUnavailableError
from trackpoint.storage import CheckpointOptions

PACKAGE = Path(__file__).resolve().parents[2] / "plugins" / "azure"


@pytest.fixture(autouse=True)
def _fresh_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in ("TRACKPOINT_BACKEND", "TRACKPOINT_BLOCK_BACKENDS", "TRACKPOINT_DISABLE_PLUGIN_AUTOLOAD"):
        monkeypatch.delenv(var, raising=False)
    plugins.reset()
    yield
    plugins.reset()


def test_the_entry_point_registers_azure_for_az_and_abfs_urls() -> None:
    row = next(r for r in plugins.list_backends() if r.name == "azure")
    assert (row.schemes, row.plugin, row.distribution, row.available) == (
        ("az", "abfs"),
        "azure",
        "trackpoint-azure",
        True,
    )
    # The plugin module declares them without importing the store (OBJECT_STORE_CAPABILITIES); they are the store's.
    from trackpoint_azure.store import AzureStore

    assert row.capabilities == AzureStore.capabilities
    assert row.capabilities.conditional_create and not row.capabilities.atomic_rename
    assert plugins.select_backend("az://container/run/ckpt-1") == "azure"
    assert plugins.select_backend("abfs://container/run/ckpt-1") == "azure"
    assert plugins.detect_backends("az://container/run/ckpt-1") == ["azure"]


def test_loading_the_plugin_imports_no_azure_module_and_no_store() -> None:
    script = (
        "import json, sys, trackpoint\n"
        "names = [r.name for r in trackpoint.list_backends()]\n"
        "sdk = ('azure.storage.blob', 'azure.core', 'azure.identity', 'requests',"
        " 'trackpoint_azure.store', 'trackpoint.backends.stores.objectstore')\n"
        "print(json.dumps([names, sorted(m for m in sys.modules if m.startswith(sdk))]))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    names, heavy = json.loads(out.stdout)
    assert "azure" in names
    assert heavy == []


def test_a_missing_sdk_names_the_package_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "azure.storage.blob", None)
    monkeypatch.delitem(sys.modules, "trackpoint_azure.store", raising=False)
    with pytest.raises(
        BackendUnavailableError, match="backend 'azure' needs azure.storage.blob: pip install trackpoint-azure"
    ):
        plugins.open_backend("az://c/x", CheckpointOptions(storage_options={"account_name": "a", "anon": True}))


def test_configuration_mistakes_are_backend_errors_naming_the_way_out(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BackendError, match=r"azure: no storage account: give storage_options\['connection_string'\]"):
        plugins.open_backend("az://c/x")
    with pytest.raises(BackendError, match=r"backend_options\['part_size'\] must be a positive integer"):
        opts = CheckpointOptions(storage_options={"account_name": "a", "anon": True}, backend_options={"part_size": 0})
        plugins.open_backend("az://c/x", opts)


@pytest.mark.azure
def test_save_and_restore_with_the_connection_string_from_the_environment(
    azurite: Azurite, azurite_container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    ckpt = tp.Checkpoint(v=tp.Variable(np.arange(6.0).reshape(2, 3)), step=tp.Variable(np.int64(7)))
    path = ckpt.save(f"az://{azurite_container}/run/ckpt")
    assert path == f"az://{azurite_container}/run/ckpt-1"
    restored = tp.Checkpoint(v=tp.Variable(np.zeros((2, 3))), step=tp.Variable(np.int64(0)))
    restored.restore(f"abfs://{azurite_container}/run").assert_consumed()  # the other scheme, the directory
    np.testing.assert_array_equal(restored.v.numpy(), np.arange(6.0).reshape(2, 3))
    assert int(restored.step.numpy()) == 7
    assert tp.latest_checkpoint(f"az://{azurite_container}/run") == path


def _module_lines() -> dict[str, int]:
    """Lines of each module of trackpoint_azure, blank lines and comment-only lines left out."""
    return {
        p.name: sum(1 for line in p.read_text().splitlines() if line.strip() and not line.strip().startswith("#"))
        for p in sorted((PACKAGE / "trackpoint_azure").glob("*.py"))
    }


def test_the_module_code_stays_within_190_lines_and_the_readme_says_how_many() -> None:
    lines = _module_lines()
    total = sum(lines.values())
    assert total <= 190, f"trackpoint_azure has {total} lines of module code ({lines}); the budget is 190"
    readme = (PACKAGE / "README.md").read_text()
    recorded = re.search(r"\*\*(\d+) lines\*\* of module code", readme)
    assert recorded is not None, "plugins/azure/README.md must record the line count"
    assert int(recorded.group(1)) == total, "update the line count in plugins/azure/README.md"
