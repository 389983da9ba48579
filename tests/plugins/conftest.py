"""A fresh plugin manager per test, third-party autoload off unless a test installs a fake distribution."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from trackpoint import plugins

FAKE_DIST = Path(__file__).parent / "fake_dist"

#: Installs the fake distributions of ``fake_dist/<scenario>`` (``*.dist-info`` plus plugin modules).
InstallFake = Callable[[str], None]


@pytest.fixture(autouse=True)
def fresh_plugin_manager(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in ("TRACKPOINT_BACKEND", "TRACKPOINT_BLOCK_BACKENDS"):
        monkeypatch.delenv(var, raising=False)
    # Only the trackpoint distribution's own entry points, so an installed
    # third-party plugin cannot change what these tests see.
    monkeypatch.setenv("TRACKPOINT_DISABLE_PLUGIN_AUTOLOAD", "1")
    plugins.reset()
    yield
    plugins.reset()


@pytest.fixture
def install_fake(monkeypatch: pytest.MonkeyPatch) -> InstallFake:
    """Put a fake distribution on ``sys.path`` and turn third-party autoload on."""

    def install(scenario: str) -> None:
        path = FAKE_DIST / scenario
        assert path.is_dir(), path
        monkeypatch.syspath_prepend(str(path))
        monkeypatch.delenv("TRACKPOINT_DISABLE_PLUGIN_AUTOLOAD", raising=False)
        plugins.reset()

    return install


class SpecPlugin:
    """A run-time plugin that registers the given specs."""

    def __init__(self, *specs: plugins.BackendSpec) -> None:
        self.specs = specs

    @plugins.hookimpl
    def trackpoint_register_backends(self, register: Callable[[plugins.BackendSpec], None]) -> None:
        for spec in self.specs:
            register(spec)


@pytest.fixture
def spec_plugin() -> type[SpecPlugin]:
    """The :class:`SpecPlugin` class (fixtures avoid importing from a conftest module)."""
    return SpecPlugin


#: Registers a run-time plugin for the test (see :func:`register`).
Register = Callable[[object], None]


@pytest.fixture
def register() -> Iterator[Register]:
    """``register(plugin)`` for the test; every plugin registered is unregistered afterwards."""
    names: list[str] = []

    def add(plugin: object) -> None:
        name = f"test-plugin-{uuid.uuid4().hex[:8]}"
        plugins.register(plugin, name)
        names.append(name)

    yield add
    for name in names:
        plugins.unregister(name)
