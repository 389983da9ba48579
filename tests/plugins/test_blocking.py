"""Blocking by name (environment and API) and turning third-party autoload off."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from trackpoint import plugins
from trackpoint.errors import UnknownBackendError
from trackpoint.storage import CheckpointOptions


def _names() -> set[str]:
    return {row.name for row in plugins.list_backends()}


def test_block_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACKPOINT_BLOCK_BACKENDS", " memory , s3")
    plugins.reset()
    assert "memory" not in _names() and "s3" not in _names()
    pm = plugins.get_plugin_manager()
    assert pm.is_blocked("memory") and pm.get_plugin("memory") is None
    with pytest.raises(UnknownBackendError, match=r"backend 'memory' .* is blocked by TRACKPOINT_BLOCK_BACKENDS"):
        plugins.open_backend("memory://x", CheckpointOptions(backend="memory"))
    with pytest.raises(UnknownBackendError, match="no backend serves the URL scheme 'memory'"):
        plugins.open_backend("memory://x")


def test_block_by_api_after_loading() -> None:
    assert plugins.open_backend("memory://x").name == "memory"
    plugins.block("memory")
    assert "memory" not in _names()
    with pytest.raises(UnknownBackendError, match="is blocked"):
        plugins.open_backend("memory://x", CheckpointOptions(backend="memory"))


def test_block_drops_a_backend_name_whoever_registers_it(install_fake: Callable[[str], None]) -> None:
    install_fake("override")  # plugin "fastmemory" registers the backend name "memory"
    plugins.block("memory")
    assert "memory" not in _names()
    assert plugins.get_plugin_manager().get_plugin("fastmemory") is not None


def test_blocked_third_party_plugin_is_not_imported(install_fake: Callable[[str], None], monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake("broken")
    monkeypatch.setenv("TRACKPOINT_BLOCK_BACKENDS", "broken")
    plugins.reset()
    assert all(row.name != "broken" for row in plugins.list_backends())


def test_autoload_disabled_skips_third_party_only(install_fake: Callable[[str], None], monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake("scheme")
    assert "fake" in _names()
    monkeypatch.setenv("TRACKPOINT_DISABLE_PLUGIN_AUTOLOAD", "1")
    plugins.reset()
    assert "fake" not in _names()
    assert "memory" in _names()  # built-ins still load
    with pytest.raises(UnknownBackendError, match="scheme 'fake'"):
        plugins.open_backend("fake://x")
