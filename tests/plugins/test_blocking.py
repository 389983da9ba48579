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
    # The scheme of a blocked backend: the message says it is blocked, and by what.
    with pytest.raises(
        UnknownBackendError,
        match=r"the URL scheme 'memory' of 'memory://x' is served by backend 'memory', which is blocked by "
        r"TRACKPOINT_BLOCK_BACKENDS \(the environment variable, set to ' memory , s3'\); "
        r"remove 'memory' from TRACKPOINT_BLOCK_BACKENDS",
    ):
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


def test_blocked_third_party_plugin_is_not_imported(
    install_fake: Callable[[str], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake("broken")
    monkeypatch.setenv("TRACKPOINT_BLOCK_BACKENDS", "broken")
    plugins.reset()
    assert all(row.name != "broken" for row in plugins.list_backends())


def test_autoload_disabled_skips_third_party_only(
    install_fake: Callable[[str], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake("scheme")
    assert "fake" in _names()
    monkeypatch.setenv("TRACKPOINT_DISABLE_PLUGIN_AUTOLOAD", "1")
    plugins.reset()
    assert "fake" not in _names()
    assert "memory" in _names()  # built-ins still load
    with pytest.raises(UnknownBackendError, match="scheme 'fake'"):
        plugins.open_backend("fake://x")


@pytest.mark.parametrize("url", ["zarr:///tmp/run/ckpt", "zarr+s3://bucket/run/ckpt", "ZARR+GS://bucket/ckpt"])
def test_scheme_of_a_backend_blocked_by_environment_says_so(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    # The zarr plugin is never imported when blocked, so the scheme's own name ties it to the block.
    monkeypatch.setenv("TRACKPOINT_BLOCK_BACKENDS", "zarr")
    plugins.reset()
    with pytest.raises(
        UnknownBackendError, match=r"is served by backend 'zarr', which is blocked by TRACKPOINT_BLOCK_BACKENDS"
    ) as info:
        plugins.open_backend(url)
    assert "install or register a plugin" not in str(info.value).lower()


def test_scheme_of_a_backend_blocked_by_api_says_so() -> None:
    assert "zarr" in _names()  # loaded first: the blocked backend's schemes are then known exactly
    plugins.block("zarr")
    with pytest.raises(
        UnknownBackendError,
        match=r"the URL scheme 'zarr\+file' of 'zarr\+file:///x' is served by backend 'zarr', which is blocked by "
        r"trackpoint.plugins.block\('zarr'\); call trackpoint.plugins.reset\(\) to lift",
    ):
        plugins.open_backend("zarr+file:///x")


def test_scheme_of_a_blocked_backend_name_with_another_plugin_name(install_fake: Callable[[str], None]) -> None:
    install_fake("scheme")  # plugin "fakescheme" registers backend "fake" for fake://
    assert "fake" in _names()
    plugins.block("fake")
    with pytest.raises(
        UnknownBackendError, match=r"scheme 'fake' of 'fake://x' is served by backend 'fake', which is blocked"
    ):
        plugins.open_backend("fake://x")


def test_unrelated_unknown_scheme_still_lists_the_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACKPOINT_BLOCK_BACKENDS", "zarr")
    plugins.reset()
    with pytest.raises(
        UnknownBackendError,
        match=r"no backend serves the URL scheme 'nope' .*; blocked backends and plugins \(one may serve it\): "
        r"zarr \(by TRACKPOINT_BLOCK_BACKENDS",
    ):
        plugins.open_backend("nope://x")
