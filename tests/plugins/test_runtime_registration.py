"""register / unregister at run time, name clashes, and thread-safe lazy loading."""

from __future__ import annotations

import threading

import pluggy
import pytest

from trackpoint import plugins
from trackpoint.backends.memory import MemoryBackend
from trackpoint.errors import PluginError, UnknownBackendError


class _Custom(MemoryBackend):
    pass


def _spec(name: str = "custom") -> plugins.BackendSpec:
    return plugins.BackendSpec(name, lambda url, opts: _Custom(), schemes=(name,))


def test_register_then_unregister(spec_plugin: type) -> None:
    plugins.register(spec_plugin(_spec()), "custom-plugin")
    assert isinstance(plugins.open_backend("custom://x"), _Custom)
    plugins.unregister("custom-plugin")
    with pytest.raises(UnknownBackendError, match="scheme 'custom'"):
        plugins.open_backend("custom://x")


def test_unregister_unknown_lists_loaded_plugins() -> None:
    with pytest.raises(PluginError, match=r"no plugin named 'ghost' is loaded; loaded plugins: .*memory"):
        plugins.unregister("ghost")


def test_plugin_name_clash_names_both(spec_plugin: type) -> None:
    with pytest.raises(
        PluginError,
        match=(
            r"two plugins are named 'memory': plugin 'memory' from trackpoint 0\.1\.0 "
            r"and plugin 'memory' \(registered at run time\); register it under another name, or take the first "
            r"out with trackpoint\.plugins\.unregister\('memory'\) first"
        ),
    ):
        plugins.register(spec_plugin(_spec()), "memory")


def test_blocked_name_cannot_be_registered(spec_plugin: type) -> None:
    plugins.block("custom-plugin")
    with pytest.raises(PluginError, match="cannot register plugin 'custom-plugin': that name is blocked"):
        plugins.register(spec_plugin(_spec()), "custom-plugin")


def test_invalid_hook_implementation_is_rejected(caplog: pytest.LogCaptureFixture) -> None:
    class WrongArgs:
        @plugins.hookimpl
        def trackpoint_register_backends(self, registrar: object) -> None:
            raise AssertionError("never called")

    with pytest.raises(
        PluginError, match=r"cannot register plugin 'wrong' \(registered at run time\): invalid hook implementation"
    ):
        plugins.register(WrongArgs(), "wrong")
    assert plugins.get_plugin_manager().get_plugin("wrong") is None
    # Raised to the caller, and not also logged as an unusable plugin.
    assert "is not usable" not in caplog.text


def test_reset_forgets_run_time_plugins(spec_plugin: type) -> None:
    plugins.register(spec_plugin(_spec()), "custom-plugin")
    plugins.reset()
    assert "custom" not in {row.name for row in plugins.list_backends()}


def test_concurrent_first_use_loads_once() -> None:
    managers: list[pluggy.PluginManager] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def use() -> None:
        try:
            barrier.wait()
            assert plugins.open_backend("memory://t/x").name == "memory"
            managers.append(plugins.get_plugin_manager())
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(managers) == 8 and all(m is managers[0] for m in managers)


def test_misspelt_hook_is_rejected() -> None:
    class Misspelt:
        @plugins.hookimpl
        def trackpoint_register_backend(self, register: object) -> None:  # missing "s"
            raise AssertionError("never called")

    with pytest.raises(
        PluginError,
        match=r"cannot register plugin 'misspelt' .*implements unknown hook\(s\) trackpoint_register_backend; "
        r"known hooks: trackpoint_checkpoint_deleted, trackpoint_configure_backend, trackpoint_detect_backends, "
        r"trackpoint_register_backends, "
        r"trackpoint_restore_failed, trackpoint_restore_finished, trackpoint_restore_progress, "
        r"trackpoint_restore_started, trackpoint_save_committed, trackpoint_save_failed, trackpoint_save_progress, "
        r"trackpoint_save_started, trackpoint_select_backend",
    ):
        plugins.register(Misspelt(), "misspelt")
    assert plugins.get_plugin_manager().get_plugin("misspelt") is None


def test_unmarked_hook_function_is_rejected() -> None:
    class Unmarked:
        def trackpoint_register_backends(self, register: object) -> None:
            raise AssertionError("never called")

    with pytest.raises(
        PluginError, match=r"trackpoint_register_backends lacks the @trackpoint.plugins.hookimpl decorator"
    ):
        plugins.register(Unmarked(), "unmarked")
