"""Selection precedence: explicit option > TRACKPOINT_BACKEND > select hook > scheme table > default."""

from __future__ import annotations

import traceback

import pytest

from trackpoint import plugins
from trackpoint.backends.memory import MemoryBackend
from trackpoint.errors import PluginError, StoragePermissionError, UnknownBackendError
from trackpoint.storage import CheckpointOptions


class _Selector:
    """Routes every URL containing "route-me" to the backend ``target``."""

    def __init__(self, target: str | None) -> None:
        self.target = target

    @plugins.hookimpl
    def trackpoint_select_backend(self, url: str, options: CheckpointOptions) -> str | None:
        return self.target if "route-me" in url else None


def _memory_named(name: str, *schemes: str) -> plugins.BackendSpec:
    return plugins.BackendSpec(name, lambda url, opts: MemoryBackend(), schemes=schemes)


@pytest.fixture
def levels(spec_plugin: type, monkeypatch: pytest.MonkeyPatch) -> None:
    """Backends "by-option", "by-env", "by-hook" and "by-scheme" (serving scheme ``sch://``)."""
    plugins.register(
        spec_plugin(
            _memory_named("by-option"),
            _memory_named("by-env"),
            _memory_named("by-hook"),
            _memory_named("by-scheme", "sch"),
        ),
        "levels",
    )
    plugins.register(_Selector("by-hook"), "selector")


URL = "sch://route-me/ckpt"


@pytest.mark.usefixtures("levels")
def test_explicit_option_beats_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACKPOINT_BACKEND", "by-env")
    assert plugins.select_backend(URL, CheckpointOptions(backend="by-option")) == "by-option"
    assert plugins.open_backend(URL, CheckpointOptions(backend="by-option")).name == "by-option"


@pytest.mark.usefixtures("levels")
def test_environment_beats_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACKPOINT_BACKEND", "by-env")
    assert plugins.open_backend(URL).name == "by-env"


@pytest.mark.usefixtures("levels")
def test_hook_beats_scheme() -> None:
    assert plugins.open_backend(URL).name == "by-hook"
    assert plugins.open_backend("sch://elsewhere/ckpt").name == "by-scheme"  # hook answers None


def test_scheme_beats_default(spec_plugin: type) -> None:
    # bundle itself claims "" and "file"; with it blocked, the table is free for another backend.
    plugins.block("bundle")
    plugins.register(spec_plugin(_memory_named("local-override", "", "file")), "local")
    assert plugins.select_backend("/tmp/run/ckpt") == "local-override"
    assert plugins.select_backend("file:///tmp/run/ckpt") == "local-override"


def test_default_is_bundle_for_local_paths() -> None:
    plugins.block("bundle")  # so the answer comes from the default, not from bundle's schemes
    for url in ("/tmp/run/ckpt", "relative/ckpt", "file:///tmp/run/ckpt"):
        assert plugins.select_backend(url) == "bundle"
    with pytest.raises(
        UnknownBackendError, match=r"backend 'bundle' \(chosen by the default for local paths .*is blocked"
    ):
        plugins.open_backend("/tmp/run/ckpt")


def test_compound_schemes_are_plain_table_entries(spec_plugin: type) -> None:
    plugins.register(spec_plugin(_memory_named("zarrish", "zarr+mem", "zarr+mem2")), "zarrish")
    assert plugins.select_backend("zarr+mem://b/ckpt") == "zarrish"
    assert plugins.select_backend("ZARR+MEM2://b/ckpt") == "zarrish"


def test_unknown_scheme_lists_known_schemes() -> None:
    with pytest.raises(
        UnknownBackendError, match=r"no backend serves the URL scheme 'nope' of 'nope://x'; known schemes: .*memory://"
    ):
        plugins.open_backend("nope://x")


def test_unknown_name_lists_registered_names(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(
        UnknownBackendError,
        match=(
            r"unknown backend 'nope' \(chosen by CheckpointOptions\(backend=\.\.\.\)\); "
            r"registered backends: .*memory"
        ),
    ):
        plugins.open_backend("memory://x", CheckpointOptions(backend="nope"))
    monkeypatch.setenv("TRACKPOINT_BACKEND", "nope-env")
    with pytest.raises(
        UnknownBackendError,
        match=r"unknown backend 'nope-env' \(chosen by the TRACKPOINT_BACKEND environment variable\)",
    ):
        plugins.open_backend("memory://x")


def test_hook_answer_must_be_registered() -> None:
    plugins.register(_Selector("ghost"), "selector")
    with pytest.raises(
        UnknownBackendError, match=r"unknown backend 'ghost' \(chosen by the trackpoint_select_backend hook"
    ):
        plugins.open_backend("memory://route-me")


def test_resolve_seam_uses_the_manager() -> None:
    from trackpoint import _resolve

    assert _resolve.open_backend("memory://a/b").name == "memory"


def test_selection_errors_carry_the_url_and_backend() -> None:
    with pytest.raises(UnknownBackendError) as unknown_scheme:
        plugins.open_backend("nosuch://bucket/run")
    assert unknown_scheme.value.url == "nosuch://bucket/run"
    with pytest.raises(UnknownBackendError) as unknown_name:
        plugins.open_backend("/run", CheckpointOptions(backend="nosuch"))
    assert unknown_name.value.backend == "nosuch"


def test_errors_of_a_factory_get_the_backend_and_url_they_lack(spec_plugin: type) -> None:
    def refuse(url: str, options: CheckpointOptions) -> MemoryBackend:
        raise StoragePermissionError("no credentials; run `site-login`")

    def broken(url: str, options: CheckpointOptions) -> MemoryBackend:
        raise RuntimeError("boom")

    plugins.register(
        spec_plugin(plugins.BackendSpec("refusing", refuse, schemes=("ref",)), _spec("broken", broken, "brk")), "f"
    )
    with pytest.raises(StoragePermissionError) as refused:
        plugins.open_backend("ref://b/run")
    assert (refused.value.backend, refused.value.url) == ("refusing", "ref://b/run")
    assert str(refused.value) == "no credentials; run `site-login` (backend 'refusing', url 'ref://b/run')"
    with pytest.raises(PluginError, match="failed to open 'brk://b/run': RuntimeError: boom") as failed:
        plugins.open_backend("brk://b/run")
    assert (failed.value.backend, failed.value.url) == ("broken", "brk://b/run")


def test_a_factory_error_quoting_a_credential_shows_it_nowhere(spec_plugin: type) -> None:
    """Storage options never reach a message: not the PluginError's, not its traceback's chained errors."""

    def quoting(url: str, options: CheckpointOptions) -> MemoryBackend:
        token = options.storage_options["credentials"]["token"]
        raise ConnectionError(f"cannot reach https://auth.example/check?access_token={token}&x=1 ({token})")

    plugins.register(spec_plugin(_spec("quoting", quoting, "quo")), "q")
    secret = "ya29.a0-SECRET/TOKEN+123"
    opts = CheckpointOptions(
        storage_options={"endpoint_url": "https://store.example", "credentials": {"token": secret}}
    )
    with pytest.raises(PluginError) as failed:
        plugins.open_backend("quo://b/run", opts)
    shown = "".join(traceback.format_exception(failed.value))
    assert "SECRET" not in shown and "access_token=<redacted>&x=1 (<redacted>)" in str(failed.value)
    assert failed.value.__cause__ is None


def _spec(name: str, factory: plugins.BackendFactory, scheme: str) -> plugins.BackendSpec:
    return plugins.BackendSpec(name, factory, schemes=(scheme,))


def test_the_bundle_chosen_by_name_takes_its_store_from_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """As for ``zarr``, a name chooses the format and the URL the store; a store it lacks is named as such."""
    monkeypatch.setenv("TRACKPOINT_BACKEND", "bundle")  # applies to every URL of the program
    assert "on local (rename commit)" in repr(plugins.open_backend("/tmp/run/ckpt"))
    assert "on local (rename commit)" in repr(plugins.open_backend("file:///tmp/run/ckpt"))
    assert "on s3 (create-only commit)" in repr(plugins.open_backend("s3://bucket/run/ckpt"))
    # Anonymous: gcsfs would otherwise look for credentials, waiting on a metadata server that is not there.
    anonymous = CheckpointOptions(storage_options={"token": "anon"})
    assert "on gcs (create-only commit)" in repr(plugins.open_backend("gs://bucket/run/ckpt", anonymous))
    with pytest.raises(
        UnknownBackendError,
        match=r"cannot store checkpoints at 'memory://run/ckpt'.*for memory:// leave CheckpointOptions\.backend "
        r"\(and TRACKPOINT_BACKEND\) unset",
    ) as err:
        plugins.open_backend("memory://run/ckpt")
    assert err.value.backend == "bundle" and err.value.url == "memory://run/ckpt"
    monkeypatch.delenv("TRACKPOINT_BACKEND")
    assert plugins.open_backend("memory://run/ckpt").name == "memory"
