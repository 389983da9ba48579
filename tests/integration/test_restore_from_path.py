"""The path ``save()`` returns restores as it is: no options, any store, a fresh process.

A checkpoint written with an option that picked its backend (``CheckpointOptions(backend="zarr")`` at a
plain path or an ``s3://`` URL, a third-party format) is found from its path alone by every reader:
``Checkpoint.restore``, ``load_checkpoint``, ``list_variables``, ``object_metadata``,
``latest_checkpoint`` and a restarted ``CheckpointManager``. A directory holding two formats lists both,
numbered together; a prefix committed in two formats is read from the selected backend.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from trackpoint import _paths, plugins
from trackpoint._resolve import open_store
from trackpoint.errors import (
    CheckpointExistsError,
    CheckpointKeyError,
    CheckpointNotFoundError,
    ConcurrentModificationError,
)
from trackpoint.storage import (
    ANY_VERSION,
    Capabilities,
    CheckpointOptions,
    CheckpointReader,
    ShardResult,
    ShardSpec,
    StorageBackend,
    TensorInfo,
    VersionedBytes,
    WriteItem,
    _AnyVersion,
)

KEY = "v/.ATTRIBUTES/VARIABLE_VALUE"


# ---------------------------------------------------------------- where and how a test saves
@dataclass(frozen=True)
class Case:
    """A store, the options a save used to pick its backend, and what a reader may pass (never a backend)."""

    directory: str
    save: CheckpointOptions | None
    read: CheckpointOptions | None


def _case(request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> Case:
    local = str(tmp_path / "run")
    if kind == "bundle":
        return Case(local, None, None)
    if kind == "zarr-plain-path":
        return Case(local, CheckpointOptions(backend="zarr"), None)
    if kind == "zarr-file-url":
        return Case(f"file://{local}", CheckpointOptions(backend="zarr"), None)
    if kind == "zarr-scheme":
        return Case(f"zarr+file://{local}", None, None)
    if kind == "memory":
        return Case(f"memory://restore-{uuid.uuid4().hex[:10]}/run", CheckpointOptions(backend="memory"), None)
    if kind == "sqlite":
        if importlib.util.find_spec("trackpoint_example_sqlite") is None:
            pytest.skip("the example sqlite plugin is not installed")
        return Case(f"sqlite://{tmp_path}/runs.sqlite/run", None, None)
    store, _, backend = kind.partition("-")  # "s3-zarr", "gcs-bundle", ...
    bucket: str = request.getfixturevalue(f"{store}_bucket")
    storage = CheckpointOptions(storage_options=request.getfixturevalue(f"{store}_storage_options"))
    chosen = CheckpointOptions(backend=backend, storage_options=storage.storage_options)
    return Case(f"{bucket}/run", chosen if backend == "zarr" else storage, storage)


KINDS = [
    "bundle",
    "zarr-plain-path",
    "zarr-file-url",
    "zarr-scheme",
    "memory",
    "sqlite",
    pytest.param("s3-zarr", marks=pytest.mark.s3),
    pytest.param("s3-s3", marks=pytest.mark.s3),
    pytest.param("gcs-zarr", marks=pytest.mark.gcs),
]


def _values(n: int) -> np.ndarray[Any, Any]:
    return np.arange(4, dtype=np.float32) * n


@pytest.mark.parametrize("kind", KINDS)
def test_saved_with_a_backend_option_restores_from_its_path_alone(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    case = _case(request, tmp_path, kind)
    ckpt = tp.Checkpoint(v=tp.Variable(np.zeros(4, np.float32)))
    paths = []
    for n in (1, 2):
        ckpt.v.assign(_values(n))
        paths.append(ckpt.save(f"{case.directory}/ckpt", case.save))
    assert paths == [f"{case.directory}/ckpt-1", f"{case.directory}/ckpt-2"]
    # Every reader, with no backend chosen: each finds the checkpoint from its path.
    for n, path in enumerate(paths, start=1):
        fresh = tp.Checkpoint(v=tp.Variable(np.zeros(4, np.float32)))
        fresh.restore(path, case.read).assert_consumed()
        np.testing.assert_array_equal(fresh.v.numpy(), _values(n))
    assert tp.latest_checkpoint(case.directory, case.read) == paths[-1]
    assert (KEY, [4]) in tp.list_variables(paths[0], case.read)
    assert [c.local_name for c in tp.object_metadata(paths[0], case.read).nodes[0].children] == ["v", "save_counter"]
    with tp.load_checkpoint(case.directory, case.read) as reader:
        np.testing.assert_array_equal(reader.get_tensor(KEY), _values(2))
    from_directory = tp.Checkpoint(v=tp.Variable(np.zeros(4, np.float32)))
    from_directory.restore(case.directory, case.read).assert_consumed()
    np.testing.assert_array_equal(from_directory.v.numpy(), _values(2))
    # A run restarted without the option resumes where it stopped: no fresh start at step 0.
    resumed = tp.Checkpoint(v=tp.Variable(np.zeros(4, np.float32)))
    manager = tp.CheckpointManager(resumed, case.directory, max_to_keep=2, options=case.read)
    assert manager.restore_or_initialize() == paths[-1]
    assert int(resumed.save_counter.numpy()) == 2
    np.testing.assert_array_equal(resumed.v.numpy(), _values(2))
    assert manager.save() == f"{case.directory}/ckpt-3"
    assert tp.latest_checkpoint(case.directory, case.read) == f"{case.directory}/ckpt-3"


# ------------------------------------------------------------------------- a fresh process
SAVE = """
import sys, numpy as np, trackpoint as tp
ckpt = tp.Checkpoint(v=tp.Variable(np.arange(5.0)))
print(ckpt.save(sys.argv[1], tp.CheckpointOptions(backend="zarr")))
"""

RESTORE = """
import sys, numpy as np, trackpoint as tp
ckpt = tp.Checkpoint(v=tp.Variable(np.zeros(5)))
ckpt.restore(sys.argv[1]).assert_consumed()
print(ckpt.v.numpy().tolist(), tp.latest_checkpoint(sys.argv[2]))
"""


def _python(code: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKPOINT_")}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_zarr_saved_at_a_plain_path_restores_in_a_fresh_process_without_options(tmp_path: Path) -> None:
    run = tmp_path / "run"
    path = _python(SAVE, str(run / "ckpt"))
    assert path == str(run / "ckpt-1")
    assert sorted(os.listdir(run)) == ["checkpoint", "ckpt-1.zarr"]
    assert _python(RESTORE, path, str(run)) == f"[0.0, 1.0, 2.0, 3.0, 4.0] {path}"


# ----------------------------------------------------------------- two formats, one directory
def test_a_directory_holding_two_formats_lists_both_numbered_together(tmp_path: Path) -> None:
    run = str(tmp_path)
    ckpt = tp.Checkpoint(v=tp.Variable(np.zeros(4, np.float32)))
    zarr = CheckpointOptions(backend="zarr")
    for n, options in ((1, None), (2, zarr), (3, None), (4, zarr)):
        ckpt.v.assign(_values(n))
        ckpt.save(f"{run}/ckpt", options)
    assert sorted(os.listdir(run)) == [
        "checkpoint",
        "ckpt-1.data-00000-of-00001",
        "ckpt-1.index",
        "ckpt-2.zarr",
        "ckpt-3.data-00000-of-00001",
        "ckpt-3.index",
        "ckpt-4.zarr",
    ]
    assert open_store(run).list_checkpoints(run) == [f"{run}/ckpt-{n}" for n in (1, 2, 3, 4)]
    os.remove(f"{run}/checkpoint")  # listing alone decides: the highest -N of any format
    assert tp.latest_checkpoint(run) == f"{run}/ckpt-4"
    # Explicit options still win: each backend alone sees its own format only.
    assert tp.latest_checkpoint(run, CheckpointOptions(backend="bundle")) == f"{run}/ckpt-3"
    with pytest.raises(CheckpointNotFoundError):
        tp.load_checkpoint(f"{run}/ckpt-4", CheckpointOptions(backend="bundle"))
    # A manager retires checkpoints of either format.
    m = tp.CheckpointManager(tp.Checkpoint(v=tp.Variable(np.zeros(4, np.float32))), run, max_to_keep=2)
    assert m.restore_or_initialize() == f"{run}/ckpt-4"
    m.save()
    m.save()
    assert sorted(os.listdir(run)) == [
        "checkpoint",
        "ckpt-5.data-00000-of-00001",
        "ckpt-5.index",
        "ckpt-6.data-00000-of-00001",
        "ckpt-6.index",
    ]


def test_a_prefix_committed_in_two_formats_is_read_from_the_selected_backend(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = str(tmp_path)
    # The URL's own format written over another one: readers ask it first, so the other is left.
    tp.Checkpoint(v=tp.Variable(_values(2))).write(f"{run}/dup-1", CheckpointOptions(backend="zarr"))
    tp.Checkpoint(v=tp.Variable(_values(1))).write(f"{run}/dup-1")
    with caplog.at_level(logging.WARNING, logger="trackpoint"):
        assert open_store(run).list_checkpoints(run) == [f"{run}/dup-1"]
        assert tp.latest_checkpoint(run) == f"{run}/dup-1"
    assert caplog.text.count("is committed in two formats, by backend 'bundle' and by backend 'zarr'") == 1
    fresh = tp.Checkpoint(v=tp.Variable(np.zeros(4, np.float32)))
    fresh.read(f"{run}/dup-1").assert_consumed()
    np.testing.assert_array_equal(fresh.v.numpy(), _values(1))  # the URL's own backend wins
    fresh.read(f"{run}/dup-1", CheckpointOptions(backend="zarr")).assert_consumed()
    np.testing.assert_array_equal(fresh.v.numpy(), _values(2))
    open_store(run).delete(f"{run}/dup-1")  # both go, so neither can resurface
    assert os.listdir(run) == []


def test_a_save_in_another_format_over_the_urls_own_is_refused(tmp_path: Path) -> None:
    # Readers without options ask the URL's own format first: the old bundle would hide the new zarr save.
    run = str(tmp_path)
    tp.Checkpoint(v=tp.Variable(_values(1))).write(f"{run}/ckpt-1")
    before = sorted(os.listdir(run))
    zarr = CheckpointOptions(backend="zarr")
    with pytest.raises(tp.CheckpointExistsError, match=r"a bundle checkpoint is committed there.*nothing was written"):
        tp.Checkpoint(v=tp.Variable(_values(2))).write(f"{run}/ckpt-1", zarr)
    assert sorted(os.listdir(run)) == before
    # A manager writing zarr into a directory of an earlier run's bundles refuses rather than hide or delete them.
    manager = tp.CheckpointManager(tp.Checkpoint(v=tp.Variable(_values(3))), run, max_to_keep=2, options=zarr)
    with pytest.raises(tp.CheckpointExistsError, match="a bundle checkpoint is committed there"):
        manager.save()
    assert sorted(os.listdir(run)) == before
    # Both formats committed already (the URL's own written over the other): still refused, still hidden.
    tp.Checkpoint(v=tp.Variable(_values(4))).write(f"{run}/both-1", zarr)
    tp.Checkpoint(v=tp.Variable(_values(5))).write(f"{run}/both-1")
    with pytest.raises(tp.CheckpointExistsError, match="a bundle checkpoint is committed there"):
        tp.Checkpoint(v=tp.Variable(_values(6))).write(f"{run}/both-1", zarr)
    tp.remove_checkpoint(f"{run}/both-1")
    tp.remove_checkpoint(f"{run}/ckpt-1")
    assert manager.save() == f"{run}/ckpt-1"
    fresh = tp.Checkpoint(v=tp.Variable(np.zeros(4, np.float32)))
    fresh.read(f"{run}/ckpt-1").assert_existing_objects_matched()
    np.testing.assert_array_equal(fresh.v.numpy(), _values(3))


def test_convert_to_another_format_at_a_taken_prefix_needs_overwrite_and_then_replaces_it(tmp_path: Path) -> None:
    run = str(tmp_path)
    source = tp.Checkpoint(v=tp.Variable(_values(2))).write(f"{run}/src-1")
    tp.Checkpoint(v=tp.Variable(_values(1))).write(f"{run}/dst-1")
    zarr = CheckpointOptions(backend="zarr")
    with pytest.raises(tp.CheckpointExistsError, match=r"already committed at .*dst-1' \(backend 'bundle'\)"):
        tp.convert(source, f"{run}/dst-1", dst_options=zarr)
    assert sorted(os.listdir(run))[2:] == ["src-1.data-00000-of-00001", "src-1.index"]
    tp.convert(source, f"{run}/dst-1", dst_options=zarr, overwrite=True)
    assert "dst-1.zarr" in os.listdir(run) and "dst-1.index" not in os.listdir(run)
    fresh = tp.Checkpoint(v=tp.Variable(np.zeros(4, np.float32)))
    fresh.read(f"{run}/dst-1").assert_consumed()
    np.testing.assert_array_equal(fresh.v.numpy(), _values(2))


# ------------------------------------------------------------- a third-party format, and cost
def _encode(array: np.ndarray[Any, Any]) -> dict[str, Any]:
    if array.dtype.kind == "O":
        items = [x.encode() if isinstance(x, str) else bytes(x) for x in array.flat]
        return {"dtype": "string", "shape": list(array.shape), "items": [base64.b64encode(x).decode() for x in items]}
    return {"dtype": array.dtype.str, "shape": list(array.shape), "data": base64.b64encode(array.tobytes()).decode()}


class _JsonReader(CheckpointReader):
    def __init__(self, prefix: str, table: dict[str, Any]) -> None:
        self.prefix = prefix
        self._table = table

    def keys(self) -> list[str]:
        return sorted(self._table)

    def _entry(self, key: str) -> dict[str, Any]:
        if key not in self._table:
            raise CheckpointKeyError(f"jsonfile: no tensor {key!r} in {self.prefix!r}")
        entry: dict[str, Any] = self._table[key]
        return entry

    def info(self, key: str) -> TensorInfo:
        e = self._entry(key)
        dtype = np.dtype(object) if e["dtype"] == "string" else np.dtype(e["dtype"])
        return TensorInfo(dtype, tuple(e["shape"]))

    def read(self, key: str, out: np.ndarray[Any, Any] | None = None) -> np.ndarray[Any, Any]:
        e = self._entry(key)
        if e["dtype"] == "string":
            values = np.empty(len(e["items"]), dtype=object)
            values[:] = [base64.b64decode(x) for x in e["items"]]
            return values.reshape(e["shape"])
        return np.frombuffer(base64.b64decode(e["data"]), np.dtype(e["dtype"])).reshape(e["shape"]).copy()


class JsonFileBackend(StorageBackend):
    """A third-party format: a whole checkpoint as one JSON file ``<prefix>.tpjson`` on a local disk."""

    capabilities = Capabilities(atomic_rename=True, parallel_writes=False)
    opened = 0

    def __init__(self) -> None:
        JsonFileBackend.opened += 1
        self._lock = threading.Lock()

    @staticmethod
    def _file(prefix: str) -> str:
        return _paths.strip_file_scheme(prefix) + ".tpjson"

    def write_shard(self, prefix: str, spec: ShardSpec, items: Sequence[WriteItem]) -> ShardResult:
        table = {it.key: _encode(np.asarray(it.array)) for it in items}
        return ShardResult(spec, tuple(table), 0, json.dumps(table).encode())

    def commit(self, prefix: str, shards: Sequence[ShardResult], *, overwrite: bool = False) -> None:
        path = self._file(prefix)
        if os.path.exists(path) and not overwrite:
            raise CheckpointExistsError(f"jsonfile: {path!r} exists")
        table: dict[str, Any] = {}
        for shard in shards:
            table.update(json.loads(shard.payload))
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        Path(path + ".tmp").write_text(json.dumps(table))
        os.replace(path + ".tmp", path)

    def abort(self, prefix: str, save_id: str) -> None:
        pass  # nothing is written before commit

    def open_reader(self, prefix: str) -> CheckpointReader:
        try:
            return _JsonReader(prefix, json.loads(Path(self._file(prefix)).read_text()))
        except FileNotFoundError as exc:
            raise CheckpointNotFoundError(f"jsonfile: nothing committed at {prefix!r}") from exc

    def exists(self, prefix: str) -> bool:
        return os.path.exists(self._file(prefix))

    def delete(self, prefix: str) -> None:
        if self.exists(prefix):
            os.remove(self._file(prefix))

    def list_checkpoints(self, directory: str) -> list[str]:
        local = _paths.strip_file_scheme(directory)
        names = os.listdir(local) if os.path.isdir(local) else []
        return sorted(_paths.join(directory, n[: -len(".tpjson")]) for n in names if n.endswith(".tpjson"))

    def read_file(self, path: str) -> VersionedBytes | None:
        p = Path(_paths.strip_file_scheme(path))
        return VersionedBytes(p.read_bytes(), str(p.stat().st_mtime_ns)) if p.exists() else None

    def write_file(self, path: str, data: bytes, *, if_version: str | _AnyVersion | None = ANY_VERSION) -> str:
        with self._lock:
            current = self.read_file(path)
            if if_version is not ANY_VERSION and (current.version if current else None) != if_version:
                raise ConcurrentModificationError(f"jsonfile: {path!r} changed")
            p = Path(_paths.strip_file_scheme(path))
            p.parent.mkdir(parents=True, exist_ok=True)
            p.with_suffix(".tmp").write_bytes(data)
            os.replace(p.with_suffix(".tmp"), p)
            return str(p.stat().st_mtime_ns)

    def delete_file(self, path: str) -> None:
        Path(_paths.strip_file_scheme(path)).unlink(missing_ok=True)


class JsonFilePlugin:
    """Registers ``jsonfile`` (no scheme of its own) and claims plain local paths for detection."""

    @plugins.hookimpl
    def trackpoint_register_backends(self, register: Any) -> None:
        register(plugins.BackendSpec("jsonfile", lambda url, opts: JsonFileBackend(), description="JSON files"))

    @plugins.hookimpl
    def trackpoint_detect_backends(self, url: str, options: CheckpointOptions) -> list[str] | None:
        return ["jsonfile"] if _paths.scheme(url) in ("", "file") else None


@pytest.fixture
def jsonfile() -> Iterator[None]:
    plugins.register(JsonFilePlugin(), "jsonfile-plugin")
    JsonFileBackend.opened = 0
    try:
        yield
    finally:
        plugins.unregister("jsonfile-plugin")


@pytest.mark.usefixtures("jsonfile")
def test_a_third_party_format_is_found_through_the_hook(tmp_path: Path) -> None:
    run = str(tmp_path)
    ckpt = tp.Checkpoint(v=tp.Variable(_values(3)))
    path = ckpt.save(f"{run}/ckpt", CheckpointOptions(backend="jsonfile"))
    assert sorted(os.listdir(run)) == ["checkpoint", "ckpt-1.tpjson"]
    fresh = tp.Checkpoint(v=tp.Variable(np.zeros(4, np.float32)))
    fresh.restore(path).assert_consumed()
    np.testing.assert_array_equal(fresh.v.numpy(), _values(3))
    assert tp.latest_checkpoint(run) == path
    assert plugins.detect_backends(path) == ["bundle", "zarr", "jsonfile"]


@pytest.mark.usefixtures("jsonfile")
def test_the_selected_backend_is_asked_first_and_the_others_only_when_needed(tmp_path: Path) -> None:
    run = str(tmp_path)
    ckpt = tp.Checkpoint(v=tp.Variable(_values(1)))
    path = ckpt.save(f"{run}/ckpt")  # a bundle
    ckpt.restore(path).assert_consumed()
    assert tp.list_variables(path)
    assert tp.latest_checkpoint(run) == path  # the state file names it: only bundle is asked
    assert JsonFileBackend.opened == 0
    # A manager whose backend is chosen lists its series in the formats it hides too, once, so that it never
    # starts over beside a newer checkpoint of another format.
    tp.CheckpointManager(ckpt, run, max_to_keep=None, options=CheckpointOptions(backend="bundle")).save()
    assert JsonFileBackend.opened == 1
    # Listing a directory needs every format.
    os.remove(f"{run}/checkpoint")
    assert tp.latest_checkpoint(run) == f"{run}/ckpt-2"
    assert JsonFileBackend.opened == 2


# ---------------------------------------------------------------- writing through a view
@pytest.mark.parametrize("kind", ["zarr-plain-path", "zarr-file-url", pytest.param("s3-zarr", marks=pytest.mark.s3)])
def test_convert_finds_its_source_from_the_path_alone(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str
) -> None:
    case = _case(request, tmp_path, kind)
    path = tp.Checkpoint(v=tp.Variable(_values(5))).save(f"{case.directory}/ckpt", case.save)
    copy = str(tmp_path / "copy" / "ckpt-1")
    # No src_options: the source is recognised where it is stored, as restore() does.
    tp.convert(path, copy, src_options=case.read)
    fresh = tp.Checkpoint(v=tp.Variable(np.zeros(4, np.float32)))
    fresh.restore(copy).assert_consumed()
    np.testing.assert_array_equal(fresh.v.numpy(), _values(5))
    assert plugins.select_backend(copy) == "bundle"


def test_a_store_view_begins_with_the_selected_backend(tmp_path: Path) -> None:
    prefix = str(tmp_path / "new" / "sub" / "ckpt-1")
    view = open_store(prefix)
    assert view.names == ["bundle", "zarr"]  # type: ignore[attr-defined]
    # The bundle backend's begin creates the directory (the default begin would not)
    # and checks the save id.
    view.begin(prefix, "save-1", overwrite=False)
    assert (tmp_path / "new" / "sub").is_dir()
    with pytest.raises(tp.TrackableError, match="save_id 'no/slash'"):
        view.begin(prefix, "no/slash")


def test_a_store_view_commit_overwrites_by_default_like_the_contract(tmp_path: Path) -> None:
    prefix = tp.Checkpoint(v=tp.Variable(_values(1))).save(str(tmp_path / "ckpt"))
    view = open_store(prefix)
    assert len(view.names) > 1  # type: ignore[attr-defined]
    view.begin(prefix, "second")
    shard = view.write_shard(prefix, ShardSpec(0, 1, "second"), [WriteItem("x", np.arange(3))])
    view.commit(prefix, [shard])  # no overwrite argument: replaces, as StorageBackend.commit does
    assert tp.list_variables(prefix) == [("x", [3])]


def test_a_file_of_a_checkpoint_passed_for_its_prefix_names_the_prefix(tmp_path: Path) -> None:
    """``ckpt-1.index`` (as a file browser offers it): not found, saying which prefix to pass, for every reader."""
    path = tp.Checkpoint(v=tp.Variable(np.ones(3, np.float32))).save(str(tmp_path / "ckpt"))
    for file in (f"{path}.index", f"{path}.data-00000-of-00001"):
        for read in (
            lambda p: tp.Checkpoint(v=tp.Variable(np.zeros(3, np.float32))).restore(p),
            tp.load_checkpoint,
            tp.list_variables,
        ):
            with pytest.raises(CheckpointNotFoundError, match=rf"is a file of the checkpoint '{path}'; pass that"):
                read(file)
    # A file where a directory is expected holds no checkpoints, as in TensorFlow.
    assert tp.latest_checkpoint(f"{path}.index") is None
    assert tp.latest_checkpoint(str(tmp_path / "checkpoint")) is None


@pytest.mark.parametrize(
    ("marker", "library"), [("_CHECKPOINT_METADATA", "Orbax"), (".metadata", "PyTorch distributed checkpointing")]
)
def test_another_librarys_checkpoint_directory_is_named_as_such(tmp_path: Path, marker: str, library: str) -> None:
    step = tmp_path / "100"
    step.mkdir()
    (step / marker).write_bytes(b"{}")
    for read in (tp.load_tree, tp.list_variables, lambda p: tp.Checkpoint(v=tp.Variable(1.0)).restore(p)):
        # Readers that look further (list_variables, restore) name an Orbax step as they name an Orbax run.
        with pytest.raises(
            CheckpointNotFoundError, match=rf"it is (a checkpoint of {library}|an {library} checkpoint) .*does not read"
        ):
            read(str(step))


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_a_flat_file_restores_as_convert_imports_it(tmp_path: Path, suffix: str) -> None:
    pytest.importorskip("safetensors")
    path = tp.Checkpoint(v=tp.Variable(_values(3))).save(str(tmp_path / "ckpt"))
    flat = str(tmp_path / f"export{suffix}")
    tp.convert(path, flat)
    fresh = tp.Checkpoint(v=tp.Variable(np.zeros(4, np.float32)))
    fresh.restore(flat).assert_consumed()
    np.testing.assert_array_equal(fresh.v.numpy(), _values(3))
    assert int(fresh.save_counter.numpy()) == 1
    with pytest.raises(CheckpointNotFoundError, match="Error when restoring from checkpoint .*no file"):
        fresh.restore(str(tmp_path / f"missing{suffix}"))
