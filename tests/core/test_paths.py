"""URL-aware path helpers."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import trackpoint as tp
from trackpoint import _paths
from trackpoint.backends.bundle import BundleBackend
from trackpoint.backends.stores import LocalFiles
from trackpoint.errors import InvalidPathError
from trackpoint.storage import WriteItem


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("s3://bucket/run/ckpt-1", "s3://bucket/run"),
        ("s3://bucket/ckpt-1", "s3://bucket"),
        ("gs://b/a/b/c", "gs://b/a/b"),
        ("zarr+s3://b/x/y", "zarr+s3://b/x"),
        ("memory://x/ckpt", "memory://x"),
        (os.path.join("run", "ckpt-3"), "run"),
        ("/abs/dir/ckpt", "/abs/dir"),
    ],
)
def test_dirname(path: str, expected: str) -> None:
    assert _paths.dirname(path) == expected


def test_join_and_relpath_round_trip() -> None:
    assert _paths.join("s3://b/run", "ckpt-2") == "s3://b/run/ckpt-2"
    assert _paths.join("s3://b", "ckpt") == "s3://b/ckpt"
    assert _paths.join("/d", "ckpt") == os.path.join("/d", "ckpt")
    assert _paths.join("s3://b/run", "gs://other/x") == "gs://other/x"
    assert _paths.relpath("s3://b/run/ckpt-2", "s3://b/run") == "ckpt-2"
    assert _paths.relpath("/d/run/ckpt-2", "/d/run") == "ckpt-2"
    # Different stores cannot be made relative: the absolute URL is kept.
    assert _paths.relpath("gs://b/run/ckpt", "s3://b/run") == "gs://b/run/ckpt"


def test_schemes() -> None:
    assert _paths.split_scheme("S3://B/k") == ("s3", "B/k")
    assert _paths.scheme("relative/path") == ""
    assert not _paths.is_url("file:///tmp/x")
    assert _paths.is_url("gs://b/x")
    assert _paths.strip_file_scheme("file:///tmp/x") == "/tmp/x"


def test_check_refuses_a_nul_byte_naming_path_and_position() -> None:
    assert _paths.check("s3://b/run/ckpt") == "s3://b/run/ckpt"
    with pytest.raises(InvalidPathError, match=r"path 'run/a\\x00b' contains a NUL character .* at index 5"):
        _paths.check("run/a\0b")


def _nul_urls(tmp: Path) -> list[str]:
    return [f"{tmp}/a\0b/ckpt", f"file://{tmp}/a\0b/ckpt", f"zarr://{tmp}/a\0b/ckpt", "memory://nul/a\0b/ckpt"]


def test_nul_byte_in_any_backend_path_is_an_invalid_path_error(tmp_path: Path) -> None:
    ckpt = tp.Checkpoint(v=tp.Variable(np.ones(3)))
    calls: list[Callable[[str], object]] = [
        ckpt.save,
        ckpt.write,
        ckpt.restore,
        tp.list_variables,
        tp.load_checkpoint,
        lambda p: tp.convert(f"{tmp_path}/src-1", p),
        lambda p: tp.convert(p, f"{tmp_path}/dst"),
        # The state file: the directory is read, listed and written.
        lambda p: tp.latest_checkpoint(_paths.dirname(p)),
        lambda p: tp.read_checkpoint_state(_paths.dirname(p)),
        lambda p: tp.CheckpointManager(ckpt, _paths.dirname(p), max_to_keep=1),
        lambda p: tp.Saver({"v": tp.Variable(np.ones(2))}).save(p),
    ]
    ckpt.write(f"{tmp_path}/src-1")
    for url in _nul_urls(tmp_path):
        for call in calls:
            with pytest.raises(InvalidPathError, match=r"contains a NUL character") as info:
                call(url)
            assert isinstance(info.value, ValueError)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src-1.data-00000-of-00001", "src-1.index"]


def test_nul_byte_through_a_backend_used_directly(tmp_path: Path) -> None:
    # Code that drives a backend itself (a plugin, a multi-process saver) skips backend selection.
    backend = BundleBackend(LocalFiles())
    prefix = f"{tmp_path}/a\0b/ckpt"
    with pytest.raises(InvalidPathError, match="NUL character"):
        backend.save(prefix, [WriteItem("x", np.zeros(2))])
    with pytest.raises(InvalidPathError, match="NUL character"):
        backend.write_file(_paths.join(str(tmp_path), "check\0point"), b"")
    with pytest.raises(InvalidPathError, match="NUL character"):
        backend.open_reader(prefix)
    assert list(tmp_path.iterdir()) == []


def test_normalize_local_resolves_dotdot_without_the_missing_directories(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    assert _paths.normalize_local(f"{tmp_path}/run/sub/../../up/ckpt") == f"{tmp_path}/up/ckpt"
    assert _paths.normalize_local("plain/relative/ckpt") == "plain/relative/ckpt"
    # A link before ``..`` is followed as the operating system follows it.
    (tmp_path / "deep" / "er").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "deep" / "er")
    assert _paths.normalize_local(f"{tmp_path}/link/../x") == f"{tmp_path}/deep/x"


def test_save_through_dotdot_creates_nothing_outside_the_resolved_directory(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    ckpt = tp.Checkpoint(v=tp.Variable(np.arange(3.0)))
    path = ckpt.save(f"{tmp_path}/run/sub/../../up/ckpt")
    assert path == f"{tmp_path}/run/sub/../../up/ckpt-1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "up"]
    assert list((tmp_path / "run").iterdir()) == [], "run/sub/ lies outside up/ and must not be created"
    assert sorted(p.name for p in (tmp_path / "up").iterdir()) == [
        "checkpoint",
        "ckpt-1.data-00000-of-00001",
        "ckpt-1.index",
    ]
    fresh = tp.Variable(np.zeros(3))
    tp.Checkpoint(v=fresh).restore(path).assert_consumed()
    np.testing.assert_array_equal(fresh.numpy(), np.arange(3.0))
    assert tp.latest_checkpoint(f"{tmp_path}/up") is not None


def test_file_url_with_localhost_names_the_local_absolute_path() -> None:
    # RFC 8089: file://localhost/x and file:///x are both /x; the host is not the first directory.
    for url in ("file://localhost/tmp/run/ckpt-1", "file://LOCALHOST/tmp/run/ckpt-1", "file:///tmp/run/ckpt-1"):
        assert _paths.strip_file_scheme(url) == "/tmp/run/ckpt-1"
        assert _paths.split_scheme(url) == ("file", "/tmp/run/ckpt-1")
        assert _paths.check(url) == url
    assert _paths.strip_file_scheme("file://localhost") == "/"
    assert _paths.dirname("file://localhost/tmp/run/ckpt-1") == "file:///tmp/run"
    # "localhost" is a host only as the whole first component.
    with pytest.raises(InvalidPathError, match="names the host 'localhostx'"):
        _paths.strip_file_scheme("file://localhostx/tmp")


@pytest.mark.parametrize("url", ["file://server/share/run/ckpt-1", "file://run/ckpt-1"])
def test_file_url_naming_another_host_is_refused(url: str) -> None:
    host, _, local = url[len("file://") :].partition("/")
    for call in (_paths.check, _paths.strip_file_scheme):
        with pytest.raises(InvalidPathError) as info:
            call(url)
        message = str(info.value)
        assert f"path {url!r} names the host {host!r}" in message
        # What to write instead: the local absolute path, or the relative one a user may have meant.
        assert f"file:///{local}" in message and f"{host}/{local} without file://" in message


@pytest.mark.parametrize("backend", [None, "zarr"])
def test_checkpoints_at_a_file_localhost_url_are_at_the_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str | None
) -> None:
    monkeypatch.chdir(tmp_path)  # where a reading as the relative path localhost/... would have written
    elsewhere = tmp_path / "elsewhere"
    options = tp.CheckpointOptions(backend=backend)
    url = f"file://localhost{elsewhere}/ckpt"
    tp.Checkpoint(v=tp.Variable(np.arange(3.0))).write(url, options=options)
    assert not (tmp_path / "localhost").exists()
    assert tp.list_variables(f"file://{elsewhere}/ckpt", options) == tp.list_variables(url, options)
    fresh = tp.Variable(np.zeros(3))
    tp.Checkpoint(v=fresh).read(str(elsewhere / "ckpt"), options=options).assert_consumed()
    np.testing.assert_array_equal(fresh.numpy(), np.arange(3.0))


def test_a_file_url_of_another_host_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ckpt = tp.Checkpoint(v=tp.Variable(np.ones(2)))
    with pytest.raises(InvalidPathError, match="names the host 'server'"):
        ckpt.write("file://server/run/ckpt")
    with pytest.raises(InvalidPathError, match="names the host 'server'"):
        tp.list_variables("file://server/run/ckpt")
    assert list(tmp_path.iterdir()) == []


def test_zarr_file_urls_name_localhost_paths_as_file_urls_do(tmp_path: Path) -> None:
    url = f"zarr+file://localhost{tmp_path}/ckpt-1"
    tp.Checkpoint(v=tp.Variable(np.ones(2))).write(url)
    assert os.listdir(tmp_path) == ["ckpt-1.zarr"]
    assert tp.load_variable(url, "v/.ATTRIBUTES/VARIABLE_VALUE").tolist() == [1.0, 1.0]


def test_joins_below_a_url_directory_drop_its_trailing_slashes_but_keep_the_root() -> None:
    assert _paths.join("s3://b/run//", "ckpt-1") == "s3://b/run/ckpt-1"
    assert _paths.join("memory://b/run/", "ckpt-1") == "memory://b/run/ckpt-1"
    assert _paths.join("file:///", "x") == "file:///x"
    assert _paths.join("s3://", "b") == "s3://b"
