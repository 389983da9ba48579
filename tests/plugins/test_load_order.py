"""The documented load order: built-ins in a fixed order, then third-party by distribution, then run time."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from trackpoint import plugins
from trackpoint.backends.memory import MemoryBackend
from trackpoint.plugins import _discovery, manager
from trackpoint.plugins._discovery import FoundEntryPoint
from trackpoint.plugins.manager import BUILTIN_ORDER


def _plugin_names() -> list[str]:
    # pluggy keeps plugins in registration order (blocked names are listed with None).
    return [name for name, plugin in plugins.get_plugin_manager().list_name_plugin() if plugin is not None]


class _Late(MemoryBackend):
    pass


def test_builtins_load_in_fixed_order() -> None:
    names = _plugin_names()
    assert "memory" in names
    builtins = [n for n in names if n in BUILTIN_ORDER]
    assert builtins == [n for n in BUILTIN_ORDER if n in builtins]
    # A built-in either loaded or is reported with a reason; none is silently dropped.
    assert set(BUILTIN_ORDER) <= {row.plugin for row in plugins.list_backends()}


def test_third_party_after_builtins_sorted_by_distribution(install_fake: Callable[[str], None]) -> None:
    install_fake("ordering")
    names = _plugin_names()
    # Entry point "zz" of trackpoint-fake-a loads before "aa" of trackpoint-fake-b:
    # distribution first, entry-point name second.
    assert names.index("zz") < names.index("aa")
    assert max(names.index(n) for n in BUILTIN_ORDER if n in names) < names.index("zz")
    # Both replace "memory"; the later one in load order wins.
    (memory,) = [row for row in plugins.list_backends() if row.name == "memory"]
    assert (memory.description, memory.plugin, memory.distribution) == ("from b", "aa", "trackpoint-fake-b")


def test_run_time_plugins_come_last(install_fake: Callable[[str], None], spec_plugin: type) -> None:
    install_fake("scheme")
    plugins.register(
        spec_plugin(plugins.BackendSpec("late", lambda url, opts: _Late(), schemes=("late",))), "late-plugin"
    )
    names = _plugin_names()
    assert names[-1] == "late-plugin"
    assert names.index("fakescheme") < names.index("late-plugin")
    (late,) = [row for row in plugins.list_backends() if row.name == "late"]
    assert (late.plugin, late.distribution, late.version) == ("late-plugin", None, None)
    assert isinstance(plugins.open_backend("late://x/y"), _Late)


def test_entry_point_metadata_is_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = manager.entry_points

    def counting(group: str) -> list[FoundEntryPoint]:
        calls.append(group)
        return real(group)

    monkeypatch.setattr(manager, "entry_points", counting)
    plugins.list_backends()
    plugins.open_backend("memory://a/b")
    plugins.register(_NoHooks(), "nohooks")  # rebuilds the backend table, not the entry-point list
    plugins.list_backends()
    assert calls == ["trackpoint.backends"]


class _NoHooks:
    """A plugin implementing no hook at all (valid in pluggy)."""


def test_each_distributions_metadata_is_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # The trackpoint distribution has one entry point per built-in; its metadata file (name and version of
    # every provider) is read once, not for every entry point.
    reads: list[str] = []
    real = _discovery._name_and_version

    def counting(info: str, suffix: str) -> tuple[str | None, str | None]:
        reads.append(info)
        return real(info, suffix)

    monkeypatch.setattr(_discovery, "_name_and_version", counting)
    rows = plugins.list_backends()
    assert {row.plugin for row in rows} >= set(BUILTIN_ORDER)
    # The built-ins' distribution: its dist-info, or the egg-info setuptools leaves in a source tree, which
    # `python -m pytest` puts first on sys.path.
    assert any(os.path.basename(path).startswith(("trackpoint-", "trackpoint.")) for path in reads), reads
    assert len(reads) == len(set(reads)), reads
