"""Missing optional dependencies, faulty factories and invalid specs are reported precisely."""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest

from trackpoint import plugins
from trackpoint.backends.memory import MemoryBackend
from trackpoint.errors import BackendUnavailableError, CheckpointNotFoundError, PluginError
from trackpoint.storage import CheckpointOptions

MISSING = "tp_module_that_is_not_installed"


def _never_called(url: str, opts: CheckpointOptions) -> MemoryBackend:
    raise AssertionError("the factory of an unavailable backend must not run")


def test_missing_requirement_names_the_extra(spec_plugin: type) -> None:
    plugins.register(
        spec_plugin(
            plugins.BackendSpec("needy", _never_called, schemes=("needy",), requires=("numpy", MISSING), extra="needy")
        ),
        "needy",
    )
    with pytest.raises(
        BackendUnavailableError, match=rf"backend 'needy' needs {MISSING}: pip install 'trackpoint\[needy\]'"
    ):
        plugins.open_backend("needy://x")
    with pytest.raises(ImportError):  # generic handlers keep working
        plugins.open_backend("needy://x")
    (row,) = [r for r in plugins.list_backends() if r.name == "needy"]
    assert not row.available
    assert row.reason == f"needs {MISSING}: pip install 'trackpoint[needy]'"
    assert MISSING not in sys.modules  # checked with find_spec, never imported


def test_missing_requirement_of_third_party_uses_its_hint(spec_plugin: type) -> None:
    spec = plugins.BackendSpec(
        "thirdparty", _never_called, requires=("tp_missing_parent.child",), install_hint="pip install tp-thirdparty"
    )
    plugins.register(spec_plugin(spec), "thirdparty")
    with pytest.raises(BackendUnavailableError, match="needs tp_missing_parent.child: pip install tp-thirdparty"):
        plugins.open_backend("/x", CheckpointOptions(backend="thirdparty"))


def test_factory_import_error_is_unavailable(spec_plugin: type) -> None:
    def factory(url: str, opts: CheckpointOptions) -> MemoryBackend:
        import tp_module_that_is_not_installed  # type: ignore[import-not-found]  # noqa: F401

        raise AssertionError("unreachable")

    plugins.register(spec_plugin(plugins.BackendSpec("lazy", factory, extra="lazy")), "lazy")
    with pytest.raises(
        BackendUnavailableError, match=rf"backend 'lazy' could not import {MISSING}: pip install 'trackpoint\[lazy\]'"
    ):
        plugins.open_backend("/x", CheckpointOptions(backend="lazy"))


def test_factory_failure_is_a_plugin_error_naming_the_plugin(spec_plugin: type) -> None:
    def factory(url: str, opts: CheckpointOptions) -> MemoryBackend:
        raise RuntimeError("boom")

    plugins.register(spec_plugin(plugins.BackendSpec("faulty", factory)), "faulty-plugin")
    with pytest.raises(
        PluginError,
        match=(
            r"backend 'faulty' \(plugin 'faulty-plugin' \(registered at run time\)\) "
            r"failed to open '/x': RuntimeError: boom"
        ),
    ) as info:
        plugins.open_backend("/x", CheckpointOptions(backend="faulty"))
    assert isinstance(info.value.__cause__, RuntimeError)


def test_factory_trackpoint_errors_pass_through(spec_plugin: type) -> None:
    def factory(url: str, opts: CheckpointOptions) -> MemoryBackend:
        raise CheckpointNotFoundError(f"no bucket for {url}")

    plugins.register(spec_plugin(plugins.BackendSpec("strict", factory)), "strict")
    with pytest.raises(CheckpointNotFoundError, match="no bucket for /x"):
        plugins.open_backend("/x", CheckpointOptions(backend="strict"))


def test_factory_must_return_a_storage_backend(spec_plugin: type) -> None:
    plugins.register(spec_plugin(plugins.BackendSpec("wrong", lambda url, opts: object())), "wrong")  # type: ignore[arg-type,return-value]
    with pytest.raises(PluginError, match="its factory returned object, not a trackpoint.storage.StorageBackend"):
        plugins.open_backend("/x", CheckpointOptions(backend="wrong"))


def test_register_hook_failure_disables_the_plugin(
    install_fake: Callable[[str], None], caplog: pytest.LogCaptureFixture
) -> None:
    install_fake("exploding")
    with caplog.at_level("WARNING", logger="trackpoint.plugins"):
        (row,) = [r for r in plugins.list_backends() if r.plugin == "exploding"]
        plugins.list_backends()
    assert not row.available
    assert (row.distribution, row.version) == ("trackpoint-fake-exploding", "0.2")
    assert row.reason == "trackpoint_register_backends raised RuntimeError: cannot describe myself"
    assert caplog.text.count("cannot describe myself") == 1  # reported once, not on every rebuild
    # Its other hooks are out too: its selection hook would route everything to "exploding".
    assert plugins.open_backend("memory://x").name == "memory"


def test_run_time_register_hook_failure_is_raised() -> None:
    class Exploding:
        @plugins.hookimpl
        def trackpoint_register_backends(self, register: object) -> None:
            raise RuntimeError("cannot describe myself")

    with pytest.raises(
        PluginError,
        match=r"cannot register plugin 'exploding' \(registered at run time\): trackpoint_register_backends raised "
        "RuntimeError: cannot describe myself",
    ):
        plugins.register(Exploding(), "exploding")
    assert plugins.get_plugin_manager().get_plugin("exploding") is None
    assert all(r.plugin != "exploding" for r in plugins.list_backends())


def test_register_passes_something_else(spec_plugin: type) -> None:
    class Sloppy:
        @plugins.hookimpl
        def trackpoint_register_backends(self, register: object) -> None:
            register({"name": "dict"})  # type: ignore[operator]

    with pytest.raises(PluginError, match=r"plugin 'sloppy' \(registered at run time\) passed dict to register\(\)"):
        plugins.register(Sloppy(), "sloppy")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "Bad Name"}, r"invalid backend name 'Bad Name'"),
        ({"name": ""}, r"invalid backend name ''"),
        ({"name": "ok", "factory": 3}, r"backend 'ok': factory must be callable, got int"),
        ({"name": "ok", "schemes": ["s3"]}, r"backend 'ok': schemes must be a tuple of lower-case URL schemes"),
        ({"name": "ok", "schemes": ("S3",)}, r"schemes must be a tuple of lower-case URL schemes, got \('S3',\)"),
        ({"name": "ok", "requires": ("not a module",)}, r"requires must be a tuple of module names"),
    ],
)
def test_invalid_specs_are_rejected(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"factory": _never_called} | kwargs
    with pytest.raises(PluginError, match=message):
        plugins.BackendSpec(**args)  # type: ignore[arg-type]
