"""trackpoint_configure_backend: plugins supply storage options; the user's own options win."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from trackpoint import plugins
from trackpoint.backends.memory import MemoryBackend
from trackpoint.errors import CheckpointError, PluginError, StoragePermissionError
from trackpoint.storage import CheckpointOptions


class _Recording(MemoryBackend):
    def __init__(self, options: CheckpointOptions) -> None:
        self.options = options


def _recording_spec() -> plugins.BackendSpec:
    return plugins.BackendSpec("rec", lambda url, opts: _Recording(opts), schemes=("rec",))


class _SiteConfig:
    """Supplies options for ``rec://`` URLs of one bucket only."""

    def __init__(self, answer: Any, bucket: str = "team") -> None:
        self.answer = answer
        self.bucket = bucket
        self.calls: list[tuple[str, str]] = []

    @plugins.hookimpl
    def trackpoint_configure_backend(self, name: str, url: str, options: CheckpointOptions) -> Mapping[str, Any] | None:
        self.calls.append((name, url))
        return self.answer if url.startswith(f"rec://{self.bucket}/") else None


def _open(url: str, options: CheckpointOptions | None = None) -> _Recording:
    backend = plugins.open_backend(url, options)
    assert isinstance(backend, _Recording)
    return backend


def test_plugin_options_reach_the_factory(spec_plugin: type) -> None:
    plugins.register(spec_plugin(_recording_spec()), "rec")
    site = _SiteConfig({"endpoint_url": "http://minio:9000", "key": "site-key"})
    plugins.register(site, "site")
    assert dict(_open("rec://team/run/ckpt").options.storage_options) == {
        "endpoint_url": "http://minio:9000",
        "key": "site-key",
    }
    assert dict(_open("rec://other/run/ckpt").options.storage_options) == {}
    assert site.calls == [("rec", "rec://team/run/ckpt"), ("rec", "rec://other/run/ckpt")]


def test_user_options_win_and_are_not_mutated(spec_plugin: type) -> None:
    plugins.register(spec_plugin(_recording_spec()), "rec")
    plugins.register(_SiteConfig({"endpoint_url": "http://site", "key": "site-key"}), "site")
    user = CheckpointOptions(storage_options={"key": "mine"}, max_shard_bytes=123)
    got = _open("rec://team/x", user).options
    assert dict(got.storage_options) == {"endpoint_url": "http://site", "key": "mine"}
    assert got.max_shard_bytes == 123
    assert dict(user.storage_options) == {"key": "mine"}


def test_last_registered_plugin_wins_per_key(spec_plugin: type) -> None:
    plugins.register(spec_plugin(_recording_spec()), "rec")
    plugins.register(_SiteConfig({"endpoint_url": "http://first", "region": "eu"}), "first")
    plugins.register(_SiteConfig({"endpoint_url": "http://second"}), "second")
    assert dict(_open("rec://team/x").options.storage_options) == {"endpoint_url": "http://second", "region": "eu"}


@pytest.mark.parametrize("answer", [["endpoint_url"], {1: "x"}, "key=value"], ids=["list", "int-key", "str"])
def test_malformed_answers_are_plugin_errors(spec_plugin: type, answer: object) -> None:
    plugins.register(spec_plugin(_recording_spec()), "rec")
    plugins.register(_SiteConfig(answer), "site")
    with pytest.raises(
        PluginError, match=r"trackpoint_configure_backend returned \w+ for backend 'rec' \(implemented by: site\)"
    ):
        plugins.open_backend("rec://team/x")


def test_failing_plugin_error_hides_the_message(spec_plugin: type) -> None:
    class Leaky:
        @plugins.hookimpl
        def trackpoint_configure_backend(self, name: str, url: str, options: CheckpointOptions) -> None:
            raise RuntimeError("token=SECRET123 rejected")

    plugins.register(spec_plugin(_recording_spec()), "rec")
    plugins.register(Leaky(), "leaky")
    with pytest.raises(
        PluginError, match=r"failed for backend 'rec' and 'rec://x' \(implemented by: leaky\): RuntimeError"
    ) as info:
        plugins.open_backend("rec://x")
    assert "SECRET123" not in str(info.value)  # a plugin's own message may carry credentials


def test_trackpoint_errors_from_plugins_pass_through(spec_plugin: type) -> None:
    class Denying:
        @plugins.hookimpl
        def trackpoint_configure_backend(self, name: str, url: str, options: CheckpointOptions) -> None:
            raise StoragePermissionError(f"no credentials for {url}; run `site-login`")

    plugins.register(spec_plugin(_recording_spec()), "rec")
    plugins.register(Denying(), "denying")
    with pytest.raises(StoragePermissionError, match="run `site-login`"):
        plugins.open_backend("rec://x")
    assert issubclass(StoragePermissionError, CheckpointError)
