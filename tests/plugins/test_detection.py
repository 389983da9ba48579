"""``trackpoint_detect_backends`` and ``detect_backends``: which backends readers ask for a URL, in which order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from trackpoint import plugins
from trackpoint.backends.memory import MemoryBackend
from trackpoint.errors import PluginError
from trackpoint.storage import CheckpointOptions


class Detector:
    """A run-time plugin answering ``trackpoint_detect_backends`` with fixed names for plain paths."""

    def __init__(self, answer: Any, *specs: plugins.BackendSpec) -> None:
        self.answer = answer
        self.specs = specs
        self.calls: list[str] = []

    @plugins.hookimpl
    def trackpoint_register_backends(self, register: Any) -> None:
        for spec in self.specs:
            register(spec)

    @plugins.hookimpl
    def trackpoint_detect_backends(self, url: str, options: CheckpointOptions) -> Sequence[str] | None:
        self.calls.append(url)
        assert options.backend is None  # only asked when nothing was chosen explicitly
        return self.answer if "://" not in url else None


def _spec(name: str, **kwargs: Any) -> plugins.BackendSpec:
    return plugins.BackendSpec(name, lambda url, opts: MemoryBackend(), **kwargs)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("/run/ckpt-1", ["bundle", "zarr"]),
        ("run", ["bundle", "zarr"]),
        ("file:///run/ckpt-1", ["bundle", "zarr"]),
        ("s3://bucket/run", ["s3", "zarr"]),
        ("gs://bucket/run", ["gcs", "zarr"]),
        ("gcs://bucket/run", ["gcs", "zarr"]),
        # Stores only one backend writes to, and format schemes that name their format.
        ("memory://run", ["memory"]),
        ("zarr+s3://bucket/run", ["zarr"]),
        ("zarr:///run", ["zarr"]),
        ("s3a://bucket/run", ["s3"]),
    ],
)
def test_builtin_order(url: str, expected: list[str]) -> None:
    assert plugins.detect_backends(url) == expected


def test_an_explicit_backend_is_asked_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    assert plugins.detect_backends("/run", CheckpointOptions(backend="zarr")) == ["zarr"]
    assert plugins.detect_backends("/run", CheckpointOptions(backend="bundle")) == ["bundle"]
    monkeypatch.setenv("TRACKPOINT_BACKEND", "bundle")
    assert plugins.detect_backends("/run") == ["bundle"]


def test_a_selection_hook_choice_comes_first_and_the_scheme_owner_is_still_asked() -> None:
    class Router:
        @plugins.hookimpl
        def trackpoint_select_backend(self, url: str, options: CheckpointOptions) -> str | None:
            return "zarr" if url.startswith("s3://arrays/") else None

    plugins.register(Router(), "router")
    assert plugins.detect_backends("s3://arrays/run") == ["zarr", "s3"]
    assert plugins.detect_backends("s3://other/run") == ["s3", "zarr"]


def test_a_third_party_backend_is_asked_in_registration_order() -> None:
    detector = Detector(["npz", "zarr"], _spec("npz"))
    plugins.register(detector, "npz-plugin")
    # zarr registered before npz (built-ins load first), whatever order the answers came in.
    assert plugins.detect_backends("/run/ckpt-1") == ["bundle", "zarr", "npz"]
    assert plugins.detect_backends("s3://b/run") == ["s3", "zarr"]
    assert detector.calls == ["/run/ckpt-1", "s3://b/run"]


def test_blocked_and_unavailable_backends_are_left_out() -> None:
    plugins.register(
        Detector(["needy"], _spec("needy", requires=("trackpoint_module_that_does_not_exist",))), "needy-plugin"
    )
    assert plugins.detect_backends("/run") == ["bundle", "zarr"]
    plugins.block("zarr")
    assert plugins.detect_backends("/run") == ["bundle"]


def test_naming_an_unregistered_backend_is_a_plugin_error() -> None:
    plugins.register(Detector(["nosuch"]), "typo")
    with pytest.raises(
        PluginError,
        match=r"trackpoint_detect_backends named unregistered backend\(s\) 'nosuch' for '/run' "
        r"\(implemented by: .*typo.*\); registered backends: bundle, gcs, memory, s3, zarr",
    ):
        plugins.detect_backends("/run")


@pytest.mark.parametrize("answer", ["zarr", {"zarr": 1}, [b"zarr"], 3])
def test_an_answer_that_is_not_a_list_of_names_is_a_plugin_error(answer: Any) -> None:
    plugins.register(Detector(answer), "sloppy")
    with pytest.raises(
        PluginError,
        match=r"trackpoint_detect_backends returned .* \(implemented by: .*sloppy.*\); return a list or tuple",
    ):
        plugins.detect_backends("/run")


def test_a_failing_implementation_is_a_plugin_error() -> None:
    class Exploding:
        @plugins.hookimpl
        def trackpoint_detect_backends(self, url: str) -> list[str]:
            raise RuntimeError("boom")

    plugins.register(Exploding(), "exploding")
    with pytest.raises(
        PluginError,
        match=r"trackpoint_detect_backends failed for '/run' \(implemented by: .*exploding.*\): RuntimeError: boom",
    ):
        plugins.detect_backends("/run")


def test_empty_answers_add_nothing() -> None:
    plugins.register(Detector([]), "quiet")
    plugins.register(Detector(None), "silent")
    assert plugins.detect_backends("/run") == ["bundle", "zarr"]
