"""Third-party entry points: new schemes, deliberate overrides, clashes, listing provenance."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from trackpoint import plugins
from trackpoint.errors import PluginError
from trackpoint.storage import CheckpointOptions


def test_plugin_adds_a_scheme(install_fake: Callable[[str], None]) -> None:
    install_fake("scheme")
    backend = plugins.open_backend("fake://bucket/run/ckpt")
    assert type(backend).__name__ == "FakeBackend"
    assert backend.name == "fake"
    assert plugins.select_backend("FAKE://x") == "fake"  # schemes are case-insensitive


def test_listing_shows_distribution_and_version(install_fake: Callable[[str], None]) -> None:
    install_fake("scheme")
    rows = {row.name: row for row in plugins.list_backends()}
    fake = rows["fake"]
    assert (fake.plugin, fake.distribution, fake.version) == ("fakescheme", "trackpoint-fake-scheme", "0.3")
    assert fake.schemes == ("fake",) and fake.available and fake.reason == ""
    assert fake.description == "fake scheme for tests"
    assert (rows["memory"].distribution, rows["memory"].plugin) == ("trackpoint", "memory")


def test_override_replaces_a_builtin(install_fake: Callable[[str], None]) -> None:
    install_fake("override")
    backend = plugins.open_backend("memory://x/ckpt")
    assert type(backend).__name__ == "FastMemoryBackend"
    assert backend.name == "memory"
    (row,) = [r for r in plugins.list_backends() if r.name == "memory"]
    assert (row.plugin, row.distribution, row.version) == ("fastmemory", "trackpoint-fake-override", "1.2")


def test_duplicate_name_names_both_providers(install_fake: Callable[[str], None]) -> None:
    install_fake("duplicate")
    with pytest.raises(
        PluginError,
        match=r"backend name 'memory' is registered by plugin 'memory' from trackpoint 0\.1\.0 "
        r"and by plugin 'dupmemory' from trackpoint-fake-dup 0\.1; set BackendSpec\(override=True\)",
    ):
        plugins.open_backend("memory://x/y")


def test_duplicate_can_be_resolved_by_blocking(
    install_fake: Callable[[str], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake("duplicate")
    monkeypatch.setenv("TRACKPOINT_BLOCK_BACKENDS", "dupmemory")
    plugins.reset()
    assert type(plugins.open_backend("memory://x/y")).__name__ == "MemoryBackend"


def test_scheme_claimed_twice_names_both(spec_plugin: type) -> None:
    from trackpoint.backends.memory import MemoryBackend

    spec = plugins.BackendSpec("other", lambda url, opts: MemoryBackend(), schemes=("memory",))
    with pytest.raises(
        PluginError, match=r"URL scheme memory:// is claimed by backend 'memory' .*and by backend 'other'"
    ):
        plugins.register(spec_plugin(spec), "other-plugin")
    # The rejected plugin is not kept: everything else still works.
    assert plugins.get_plugin_manager().get_plugin("other-plugin") is None
    assert plugins.open_backend("memory://x/y").name == "memory"


def test_broken_entry_point_is_reported_not_fatal(
    install_fake: Callable[[str], None], caplog: pytest.LogCaptureFixture
) -> None:
    install_fake("broken")
    with caplog.at_level("WARNING", logger="trackpoint.plugins"):
        rows = {row.name: row for row in plugins.list_backends()}
    broken = rows["broken"]
    assert not broken.available
    assert broken.distribution == "trackpoint-fake-broken"
    assert "No module named 'tp_fake_module_that_does_not_exist'" in broken.reason
    assert "plugin 'broken' from trackpoint-fake-broken 0.1 is not usable" in caplog.text
    # Other backends are unaffected; asking for the broken one says why it fails.
    assert plugins.open_backend("memory://x/y").name == "memory"
    with pytest.raises(
        PluginError, match=r"backend 'broken' .* is unusable: .*failed to import 'tp_fake_module_that_does_not_exist'"
    ):
        plugins.open_backend("/tmp/x", CheckpointOptions(backend="broken"))
