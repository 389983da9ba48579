"""Rows of ``list_backends()`` print plain local paths as such, never as an empty scheme."""

from __future__ import annotations

import pytest

from trackpoint import plugins
from trackpoint.backends.memory import MemoryBackend
from trackpoint.plugins import LOCAL_PATHS, url_form


def _row(name: str) -> plugins.BackendInfo:
    return next(row for row in plugins.list_backends() if row.name == name)


def test_url_forms() -> None:
    assert url_form("") == LOCAL_PATHS == "(local paths)"
    assert url_form("s3") == "s3://"
    bundle = _row("bundle")
    assert bundle.schemes == ("", "file")  # the data keeps the scheme table's spelling
    assert bundle.urls == ("(local paths)", "file://")


@pytest.mark.parametrize("render", [str, repr])
def test_printed_rows_show_no_empty_scheme(render: type[str] | object) -> None:
    for row in plugins.list_backends():
        text = render(row)  # type: ignore[operator]
        assert "''" not in text.replace("reason=''", "")
        # "://" only ever follows a scheme name.
        assert " ://" not in text and "(://" not in text and "'://" not in text
    assert "(local paths), file://" in str(_row("bundle"))
    assert "urls=('(local paths)', 'file://')" in repr(_row("bundle"))


def test_str_of_a_row() -> None:
    assert str(_row("memory")) == "memory: memory:// [trackpoint " + str(_row("memory").version) + "] available"


def test_str_of_an_unavailable_runtime_row() -> None:
    spec = plugins.BackendSpec(
        "needy",
        lambda url, opts: MemoryBackend(),
        schemes=("needy",),
        requires=("tp_no_such_module",),
        install_hint="pip install needy",
    )

    class Plugin:
        @plugins.hookimpl
        def trackpoint_register_backends(self, register: object) -> None:
            register(spec)  # type: ignore[operator]

    plugins.register(Plugin(), "needy-plugin")
    assert str(_row("needy")) == (
        "needy: needy:// [plugin 'needy-plugin', registered at run time] "
        "unavailable: needs tp_no_such_module: pip install needy"
    )
