"""Third-party entry points: new schemes, deliberate overrides, clashes, listing provenance."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import trackpoint as tp
from trackpoint import plugins
from trackpoint.errors import PluginError, UnknownBackendError
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


def test_duplicate_name_leaves_the_later_out(
    install_fake: Callable[[str], None], caplog: pytest.LogCaptureFixture
) -> None:
    """A name registered twice without override=True no longer breaks every backend: the first one stays."""
    install_fake("duplicate")
    with caplog.at_level("WARNING", logger="trackpoint.plugins"):
        assert type(plugins.open_backend("memory://x/y")).__name__ == "MemoryBackend"
        assert plugins.open_backend("/tmp/x").name == "bundle"
    (row,) = [r for r in plugins.list_backends() if r.plugin == "dupmemory"]
    assert (row.name, row.available, row.distribution) == ("memory", False, "trackpoint-fake-dup")
    assert row.reason.startswith(
        "backend name 'memory' is registered by plugin 'memory' from trackpoint 0.1.0 and by plugin 'dupmemory' "
        "from trackpoint-fake-dup 0.1; the second is left out. Set BackendSpec(override=True) in the second"
    )
    # The block that resolves it names a plugin: the backend name 'memory' would block both.
    assert "TRACKPOINT_BLOCK_BACKENDS=<its plugin name> ('memory' or 'dupmemory'" in row.reason
    assert caplog.text.count("backend name 'memory' is registered by") == 1


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
        PluginError,
        match=r"cannot register plugin 'other-plugin' \(registered at run time\): URL scheme memory:// is claimed "
        r"by backend 'memory' .*and by backend 'other' .*BackendSpec\(name='memory', override=True\)",
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


def test_a_scheme_clash_between_distributions_breaks_only_the_later_claimant(
    install_fake: Callable[[str], None], caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """Two installed plugins claiming kv://: every other backend works, kv:// stays with the first by load
    order, and the second is listed as unusable with advice that resolves it (it used to break every save)."""
    install_fake("scheme_clash")
    with caplog.at_level("WARNING", logger="trackpoint.plugins"):
        ckpt = tp.Checkpoint(v=tp.Variable(np.arange(3.0)))
        ckpt.save(str(tmp_path / "ckpt"))  # a local save, unrelated to the clash
        assert type(plugins.open_backend("kv://x/ckpt")).__name__ == "KvBackend"
        assert plugins.detect_backends("kv://x/ckpt") == ["kv"]  # kv2's detection hook names a left-out backend
    rows = {row.name: row for row in plugins.list_backends()}
    assert rows["kv"].available and rows["memory"].available
    kv2 = rows["kv2"]
    assert (kv2.available, kv2.distribution, kv2.schemes) == (False, "trackpoint-fake-kv2", ("kv", "kv2"))
    expected = (
        "URL scheme kv:// is claimed by backend 'kv' (plugin 'kvplugin' from trackpoint-fake-kv 0.1) and by backend "
        "'kv2' (plugin 'kv2plugin' from trackpoint-fake-kv2 0.2); a scheme has one backend, so 'kv2' is left out and "
        "'kv' keeps serving URL scheme kv://. To use 'kv2' instead, block 'kv' with TRACKPOINT_BLOCK_BACKENDS=kv; to "
        "keep 'kv' and drop this warning, block 'kv2' with TRACKPOINT_BLOCK_BACKENDS=kv2; or uninstall one of "
        "trackpoint-fake-kv and trackpoint-fake-kv2. A plugin meant to replace 'kv' registers under that name: "
        "BackendSpec(name='kv', override=True)"
    )
    assert kv2.reason == expected
    assert caplog.text.count(expected) == 1  # logged once, however often the table is rebuilt
    # Whatever asks for it gets the reason: by name, and by its other scheme.
    with pytest.raises(PluginError, match=r"backend 'kv2' \(chosen by CheckpointOptions\(backend=...\)\) is unusable"):
        plugins.open_backend("kv://x/ckpt", CheckpointOptions(backend="kv2"))
    with pytest.raises(UnknownBackendError, match="no backend serves the URL scheme 'kv2'"):
        plugins.open_backend("kv2://x/ckpt")


def test_the_advice_for_a_scheme_clash_works(
    install_fake: Callable[[str], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake("scheme_clash")
    monkeypatch.setenv("TRACKPOINT_BLOCK_BACKENDS", "kv")  # "to use 'kv2' instead, block 'kv'"
    plugins.reset()
    assert type(plugins.open_backend("kv://x/ckpt")).__name__ == "Kv2Backend"
    assert all(row.available for row in plugins.list_backends() if row.name == "kv2")
    monkeypatch.setenv("TRACKPOINT_BLOCK_BACKENDS", "kv2")  # "to keep 'kv', block 'kv2'"
    plugins.reset()
    assert type(plugins.open_backend("kv://x/ckpt")).__name__ == "KvBackend"
    assert all(row.available for row in plugins.list_backends())
