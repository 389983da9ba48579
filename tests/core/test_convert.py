"""trackpoint.convert copies checkpoints between backends: values, dtypes and the object graph."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest

import trackpoint as tp
from stateful_objects import StateHolder
from trackpoint.errors import CheckpointExistsError, CheckpointNotFoundError
from trackpoint.plugins import open_backend
from trackpoint.storage import CheckpointOptions, ShardSpec, StorageBackend

ZARR = CheckpointOptions(backend="zarr")


def _model() -> tuple[tp.Checkpoint, tp.AutoTrackable]:
    model = tp.AutoTrackable()
    model.kernel = tp.Variable(np.arange(12, dtype=np.float32).reshape(3, 4))
    model.bias = tp.Variable(np.linspace(-1, 1, 5).astype(ml_dtypes.bfloat16))
    model.steps = tp.Variable(np.array(7, dtype=np.int64))
    model.names = tp.Variable(np.array([b"alpha", b"", b"\xff"], dtype=object))
    model.big = tp.Variable(np.arange(300_000, dtype=np.float64))
    return tp.Checkpoint(model=model), model


def _fresh() -> tuple[tp.Checkpoint, tp.AutoTrackable]:
    model = tp.AutoTrackable()
    model.kernel = tp.Variable(np.zeros((3, 4), np.float32))
    model.bias = tp.Variable(np.zeros(5, ml_dtypes.bfloat16))
    model.steps = tp.Variable(np.array(0, dtype=np.int64))
    model.names = tp.Variable(np.array([b"", b"", b""], dtype=object))
    model.big = tp.Variable(np.zeros(300_000, np.float64))
    return tp.Checkpoint(model=model), model


def _all_tensors(path: str, options: CheckpointOptions | None) -> dict[str, np.ndarray[Any, Any]]:
    backend = open_backend(path, options)
    with backend.open_reader(path) as reader:
        return {k: reader.read(k) for k in reader.keys()}


def _assert_same_tensors(a: dict[str, np.ndarray[Any, Any]], b: dict[str, np.ndarray[Any, Any]]) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        if a[key].dtype.kind == "O":
            assert list(a[key].flat) == list(b[key].flat), key
        else:
            assert a[key].tobytes() == b[key].tobytes(), key


@pytest.fixture
def memory_dir() -> str:
    return f"memory://convert-{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize(
    ("src_kind", "dst_kind"),
    [("bundle", "zarr"), ("zarr", "bundle"), ("memory", "zarr"), ("zarr", "memory"), ("bundle", "memory")],
)
def test_round_trip_through_checkpoint(tmp_path: Path, memory_dir: str, src_kind: str, dst_kind: str) -> None:
    where = {"bundle": (str(tmp_path / "b"), None), "zarr": (str(tmp_path / "z"), ZARR), "memory": (memory_dir, None)}
    src_dir, src_opts = where[src_kind]
    dst_dir, dst_opts = where[dst_kind]
    ckpt, model = _model()
    src = ckpt.write(f"{src_dir}/ckpt", src_opts)
    dst = f"{dst_dir}/converted"

    tp.convert(src, dst, src_options=src_opts, dst_options=dst_opts)

    _assert_same_tensors(_all_tensors(src, src_opts), _all_tensors(dst, dst_opts))
    assert tp.object_metadata(dst, dst_opts) == tp.object_metadata(src, src_opts)
    restored, fresh = _fresh()
    restored.read(dst, dst_opts).assert_consumed()
    for name in ("kernel", "bias", "steps", "big"):
        assert getattr(fresh, name).numpy().tobytes() == getattr(model, name).numpy().tobytes(), name
    assert list(fresh.names.numpy()) == [b"alpha", b"", b"\xff"]


def test_zarr_destination_options_apply(tmp_path: Path) -> None:
    import zarr

    ckpt, _ = _model()
    src = ckpt.write(str(tmp_path / "ckpt"))
    tp.convert(
        src, str(tmp_path / "z"), dst_options=CheckpointOptions(backend="zarr", backend_options={"compressor": "none"})
    )
    group = zarr.open_group(str(tmp_path / "z.zarr"), mode="r")
    big = next(name for name in group.array_keys() if "big" in name)
    assert [c.to_dict()["name"] for c in group[big].metadata.codecs] == ["bytes", "crc32c"]


class _CountingBackend:
    """Wraps a backend and records, per shard, the bytes handed to write_shard."""

    def __init__(self, inner: StorageBackend) -> None:
        self.inner = inner
        self.shard_bytes: list[int] = []

    def write_shard(self, prefix: str, spec: ShardSpec, items: Any) -> Any:
        self.shard_bytes.append(sum(int(it.array.nbytes) for it in items))
        return self.inner.write_shard(prefix, spec, items)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_copies_shard_by_shard_within_max_shard_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from trackpoint import _resolve

    src_backend = open_backend(str(tmp_path / "src"), ZARR)
    tensors = {f"t{i}": np.full(25_000, i, np.float64) for i in range(12)}  # 200 kB each
    src_backend.save(str(tmp_path / "src"), [tp_item(k, v) for k, v in tensors.items()])
    counting: list[_CountingBackend] = []
    real = _resolve.open_backend

    def spy(path: str, options: CheckpointOptions | None = None) -> Any:
        backend = real(path, options)
        if "dst" in path:
            counting.append(_CountingBackend(backend))
            return counting[-1]
        return backend

    monkeypatch.setattr(_resolve, "open_backend", spy)
    tp.convert(str(tmp_path / "src"), str(tmp_path / "dst"), src_options=ZARR,
               dst_options=CheckpointOptions(backend="zarr", max_shard_bytes=450_000))  # fmt: skip
    assert counting[0].shard_bytes == [400_000] * 6
    _assert_same_tensors(_all_tensors(str(tmp_path / "dst"), ZARR), tensors)


def tp_item(key: str, value: np.ndarray[Any, Any]) -> Any:
    from trackpoint.storage import WriteItem

    return WriteItem(key, value)


def test_existing_destination_needs_overwrite(tmp_path: Path) -> None:
    ckpt, _ = _model()
    src = ckpt.write(str(tmp_path / "a"))
    other = ckpt.write(str(tmp_path / "b"))
    with pytest.raises(CheckpointExistsError, match="already committed at .*pass overwrite=True"):
        tp.convert(src, other)
    tp.convert(src, other, overwrite=True)
    with pytest.raises(CheckpointExistsError, match="same checkpoint"):
        tp.convert(src, src, overwrite=True)


def test_missing_source(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFoundError):
        tp.convert(str(tmp_path / "nothing"), str(tmp_path / "out"), dst_options=ZARR)
    assert list(tmp_path.iterdir()) == []


def test_within_one_memory_store(memory_dir: str) -> None:
    ckpt, _ = _model()
    src = ckpt.write(f"{memory_dir}/a")
    tp.convert(src, f"{memory_dir}/b")
    assert sorted(open_backend(memory_dir).list_checkpoints(memory_dir)) == [f"{memory_dir}/a", f"{memory_dir}/b"]
    _assert_same_tensors(_all_tensors(src, None), _all_tensors(f"{memory_dir}/b", None))


@pytest.mark.parametrize(
    "store", [pytest.param("s3", marks=pytest.mark.s3), pytest.param("gcs", marks=pytest.mark.gcs)]
)
def test_bundle_to_zarr_on_an_object_store_and_back(tmp_path: Path, request: pytest.FixtureRequest, store: str) -> None:
    bucket = request.getfixturevalue(f"{store}_bucket")
    storage = request.getfixturevalue(f"{store}_storage_options")
    remote = CheckpointOptions(backend="zarr", storage_options=storage)
    ckpt, model = _model()
    src = ckpt.write(str(tmp_path / "ckpt"))
    dst = f"{bucket}/run/ckpt"

    tp.convert(src, dst, dst_options=remote)
    assert tp.object_metadata(dst, remote) == tp.object_metadata(src)
    restored, fresh = _fresh()
    restored.read(dst, remote).assert_consumed()
    assert fresh.big.numpy().tobytes() == model.big.numpy().tobytes()

    tp.convert(dst, str(tmp_path / "back"), src_options=remote)
    _assert_same_tensors(_all_tensors(src, None), _all_tensors(str(tmp_path / "back"), None))


@pytest.mark.parametrize(
    "store", [pytest.param("s3", marks=pytest.mark.s3), pytest.param("gcs", marks=pytest.mark.gcs)]
)
def test_overwrite_onto_an_existing_checkpoint_on_an_object_store(
    tmp_path: Path, request: pytest.FixtureRequest, store: str
) -> None:
    # The create-only commit writes data objects under their final names, so the old checkpoint must
    # go first; convert drives the save protocol, whose begin() does that (it once told the user to
    # pass the overwrite=True they had passed).
    bucket = request.getfixturevalue(f"{store}_bucket")
    remote = CheckpointOptions(storage_options=request.getfixturevalue(f"{store}_storage_options"))
    first, _ = _model()
    src = first.write(str(tmp_path / "ckpt"))
    dst = f"{bucket}/run/ckpt-1"
    tp.convert(src, dst, dst_options=remote)
    newer, model = _model()
    model.kernel.assign(np.full((3, 4), 5.0, np.float32))
    model.extra = tp.Variable(np.arange(3))
    src2 = newer.write(str(tmp_path / "ckpt-2"))
    with pytest.raises(CheckpointExistsError, match="already committed at .*pass overwrite=True"):
        tp.convert(src2, dst, dst_options=remote)
    tp.convert(src2, dst, dst_options=remote, overwrite=True)
    _assert_same_tensors(_all_tensors(src2, None), _all_tensors(dst, remote))
    backend = open_backend(dst, remote)
    assert backend.list_checkpoints(f"{bucket}/run") == [dst]
    # Nothing of the replaced checkpoint or of the copy's pieces is left beside it.
    leftovers = backend.cleanup(f"{bucket}/run", min_age=0)
    assert leftovers == []


def _damaged(directory: Path) -> str:
    """A checkpoint whose second large tensor has a flipped bit: found while copying, after a first shard is
    written (Zarr makes its directories there, the bundle in begin())."""
    model = tp.AutoTrackable()
    model.a = tp.Variable(np.arange(100_000, dtype=np.float32))
    model.w = tp.Variable(np.arange(100_000, dtype=np.float32))
    prefix = tp.Checkpoint(model=model).write(str(directory / "ckpt-1"))
    data = Path(f"{prefix}.data-00000-of-00001")
    raw = bytearray(data.read_bytes())
    raw[len(raw) * 3 // 4] ^= 0x01  # inside model/w, stored after model/a
    data.write_bytes(bytes(raw))
    return prefix


@pytest.mark.parametrize(
    ("dst", "backend", "include"),
    [
        ("new/sub/ckpt-1", None, ()),
        ("new/sub/ckpt-1", "zarr", ()),
        ("new/sub/ckpt-1", None, ("model/*",)),  # a selection: copied by the other path of convert
        ("file://{tmp}/new/sub/ckpt-1", None, ()),
        ("new/sub/../ckpt-1", None, ()),  # makes new/ only, as the OS resolves the ..
        ("new/sub/model.npz", None, ()),
    ],
)
def test_a_failed_copy_removes_the_directories_it_made(
    tmp_path: Path, dst: str, backend: str | None, include: tuple[str, ...]
) -> None:
    src = _damaged(tmp_path / "src")
    # One tensor per shard, so that a shard is written before the damaged tensor is read.
    options = CheckpointOptions(backend=backend, max_shard_bytes=400_000)
    target = dst.format(tmp=tmp_path) if dst.startswith("file://") else str(tmp_path / dst)
    with pytest.raises(tp.DataLossError, match="model/w"):
        tp.convert(src, target, dst_options=options, include=include)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
    # A directory that was there before is kept, empty as it is.
    (tmp_path / "kept").mkdir()
    kept = target.replace(str(tmp_path), str(tmp_path / "kept"))
    with pytest.raises(tp.DataLossError, match="model/w"):
        tp.convert(src, kept, dst_options=options, include=include)
    assert list((tmp_path / "kept").iterdir()) == []


def test_a_directory_another_writer_filled_is_kept(tmp_path: Path) -> None:
    ckpt, _ = _model()
    src = ckpt.write(str(tmp_path / "src" / "ckpt"))

    class Interrupted(Exception):
        pass

    def interrupt(done: int, total: int) -> None:
        # The destination's directories exist now (begin made them); another writer puts a file in one.
        (tmp_path / "new" / "other").write_text("not ours")
        raise Interrupted

    with pytest.raises(Interrupted):
        tp.convert(src, str(tmp_path / "new" / "sub" / "ckpt-1"), progress=interrupt)
    # new/sub was made by the copy and is empty again: removed; new/ holds another writer's file: kept.
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["other"]


@pytest.mark.parametrize("name", ["ckpt-1", "model.npz"])
def test_a_destination_with_a_nul_byte_is_an_invalid_path(tmp_path: Path, name: str) -> None:
    ckpt, _ = _model()
    src = ckpt.write(str(tmp_path / "src" / "ckpt"))
    with pytest.raises(tp.InvalidPathError, match="NUL character"):
        tp.convert(src, str(tmp_path / "a\0b" / name))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def _destinations(tmp_path: Path) -> None:
    """Things at local paths a destination may name by mistake (a symbolic link to /dev/null, as any device)."""
    (tmp_path / "null").symlink_to(os.devnull)
    os.mkfifo(tmp_path / "fifo")
    os.mkfifo(tmp_path / "fifo.npz")
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    (tmp_path / "directory").mkdir()


@pytest.mark.parametrize(
    ("dst", "backend", "message"),
    [
        ("null", None, r"it is a character device, not a checkpoint prefix \(a checkpoint there would be written"),
        ("null", "zarr", "it is a character device"),
        ("fifo", None, r"it is a named pipe \(FIFO\)"),
        ("fifo.npz", None, r"it is a named pipe \(FIFO\), not a regular file an export can replace"),
        ("notes.txt", None, "it is an existing file that holds no checkpoint"),
        ("directory", None, r"it is an existing directory.* pass a prefix inside it, such as '.*directory/ckpt-1'"),
        ("directory", "zarr", "zarr would write them next to the directory, not in it"),
        ("directory/", None, r"it names a directory \(it ends in '/'\).* such as '.*directory/ckpt-1'"),
        ("new/", None, r"it names a directory \(it ends in '/'\)"),
    ],
)
def test_a_destination_that_cannot_be_a_checkpoint_prefix_is_refused(
    tmp_path: Path, dst: str, backend: str | None, message: str
) -> None:
    ckpt, _ = _model()
    src = ckpt.write(str(tmp_path / "src" / "ckpt-1"))
    _destinations(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    for overwrite in (False, True):  # --overwrite replaces a checkpoint, never what is there
        with pytest.raises(tp.InvalidArgumentError, match=message):
            # Joined as text: a Path would drop the trailing '/' of 'directory/'.
            target = f"{tmp_path}/{dst}"
            tp.convert(src, target, dst_options=CheckpointOptions(backend=backend), overwrite=overwrite)
        # Refused before anything was written: no 'null.index' beside the link, no 'new/'.
        assert sorted(p.name for p in tmp_path.iterdir()) == before
        assert list((tmp_path / "directory").iterdir()) == []


def test_a_directory_or_file_at_a_committed_prefix_does_not_stand_in_the_way(tmp_path: Path) -> None:
    ckpt, _ = _model()
    src = ckpt.write(str(tmp_path / "src" / "ckpt-1"))
    # A directory named like a checkpoint committed beside it: the checkpoint is replaced, as a save replaces it.
    dst = ckpt.write(str(tmp_path / "run" / "ckpt-1"))
    (tmp_path / "run" / "ckpt-1").mkdir()
    tp.convert(src, dst, overwrite=True)
    with pytest.raises(CheckpointExistsError, match="pass overwrite=True"):
        tp.convert(src, dst)
    # A Zarr checkpoint's own directory is no obstacle either (its prefix is beside it, without '.zarr').
    tp.convert(src, str(tmp_path / "z" / "ckpt-1"), dst_options=ZARR)
    tp.convert(src, str(tmp_path / "z" / "ckpt-1"), dst_options=ZARR, overwrite=True)


# ------------------------------------------------------------------ strip_prefix
def _modules(tmp_path: Path) -> str:
    model = StateHolder({"0.weight": np.ones((2, 3), np.float32), "0.bias": np.zeros(2, np.float32)})
    optimizer = StateHolder({"state": {0: {"step": np.ones((), np.float32)}}, "param_groups": [{"lr": 0.1}]})
    return tp.Checkpoint(model=model, optimizer=optimizer).write(str(tmp_path / "run" / "ckpt-1"))


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_strip_prefix_names_a_module_by_its_own_keys(tmp_path: Path, suffix: str) -> None:
    """The export a torch module's load_state_dict takes as it is (docs/cli.md showed a Python workaround)."""
    from safetensors.numpy import load_file

    src = _modules(tmp_path)
    out = str(tmp_path / f"model{suffix}")
    tp.convert(src, out, include=["model/*"], exclude=["*STATE_DICT"], strip_prefix="model/.ATTRIBUTES/")
    if suffix == ".npz":
        with np.load(out) as exported:
            assert sorted(exported.files) == ["0.bias", "0.weight", "__trackpoint_metadata__"]
    else:
        assert sorted(load_file(out)) == ["0.bias", "0.weight"]
    # The file still records each tensor's key: imported, it is the checkpoint's model again.
    tp.convert(out, str(tmp_path / "back" / "ckpt-1"))
    back = _all_tensors(str(tmp_path / "back" / "ckpt-1"), None)
    assert sorted(k for k in back if not k.startswith("_")) == [
        "model/.ATTRIBUTES/0..bias",
        "model/.ATTRIBUTES/0..weight",
    ]


def test_strip_prefix_takes_the_longest_prefix_and_keeps_other_names(tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    src = _modules(tmp_path)
    out = str(tmp_path / "all.safetensors")
    tp.convert(src, out, strip_prefix=["model/", "model/.ATTRIBUTES/", "optimizer/.ATTRIBUTES/"])
    # The two .STATE_DICT strings would share a name, but safetensors keeps strings in its metadata by key.
    assert sorted(load_file(out)) == ["0.bias", "0.weight", "state.0.step"]


def test_strip_prefix_refuses_names_that_collide_or_vanish(tmp_path: Path) -> None:
    src = _modules(tmp_path)
    prefixes = ["model/.ATTRIBUTES/", "optimizer/.ATTRIBUTES/"]
    # In an .npz file the strings are tensors: both .STATE_DICT would be named '.STATE_DICT'.
    with pytest.raises(tp.NameConflictError, match=r"would both be named '\.STATE_DICT' once the prefixes"):
        tp.convert(src, str(tmp_path / "both.npz"), strip_prefix=prefixes)
    whole = "model/.ATTRIBUTES/0.bias"
    with pytest.raises(tp.NameConflictError, match=rf"named '{whole}', all of it the prefix '{whole}'"):
        tp.convert(src, str(tmp_path / "none.npz"), strip_prefix=whole)
    assert not (tmp_path / "both.npz").exists() and not (tmp_path / "none.npz").exists()


def test_strip_prefix_refuses_a_prefix_no_name_starts_with(tmp_path: Path) -> None:
    src = _modules(tmp_path)
    with pytest.raises(tp.CheckpointKeyError, match=r"starts with the prefix 'modle/' .* like 'model/"):
        tp.convert(src, str(tmp_path / "m.safetensors"), strip_prefix=["model/.ATTRIBUTES/", "modle/"])
    assert not (tmp_path / "m.safetensors").exists()


def test_strip_prefix_is_for_exports_only(tmp_path: Path) -> None:
    src = _modules(tmp_path)
    with pytest.raises(tp.InvalidArgumentError, match="renames the tensors of an exported file"):
        tp.convert(src, str(tmp_path / "copy" / "ckpt-1"), strip_prefix="model/")
    with pytest.raises(tp.InvalidArgumentError, match="empty prefix"):
        tp.convert(src, str(tmp_path / "m.npz"), strip_prefix=[""])
    with pytest.raises(tp.ArgumentTypeError, match="strip_prefix must be a str or a sequence of str"):
        tp.convert(src, str(tmp_path / "m.npz"), strip_prefix=3)  # type: ignore[arg-type]
    assert not (tmp_path / "copy").exists()


def test_strip_prefix_with_keys_and_another_separator(tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    model = tp.AutoTrackable()
    model.dense = tp.AutoTrackable()
    model.dense.kernel = tp.Variable(np.ones((2, 2), np.float32))
    src = tp.Checkpoint(model=model).write(str(tmp_path / "ckpt-1"))
    dotted = str(tmp_path / "dotted.safetensors")
    tp.convert(src, dotted, include=["model/*"], separator=".", strip_prefix="model.")
    assert sorted(load_file(dotted)) == ["dense.kernel"]
    keys = str(tmp_path / "keys.safetensors")
    tp.convert(src, keys, include=["model/*"], names="keys", strip_prefix="model/")
    assert sorted(load_file(keys)) == ["dense/kernel/.ATTRIBUTES/VARIABLE_VALUE"]


def test_include_and_exclude_take_one_pattern_as_a_string(tmp_path: Path) -> None:
    # A string is one pattern, as strip_prefix takes one: iterated as characters, "model/*" held "*",
    # which selected every tensor (and exclude="other/*" left none).
    model, other = tp.AutoTrackable(), tp.AutoTrackable()
    model.w = tp.Variable(np.ones(2, np.float32))
    other.v = tp.Variable(np.zeros(3, np.float32))
    src = tp.Checkpoint(model=model, other=other).write(str(tmp_path / "src" / "ckpt-1"))
    as_list = str(tmp_path / "list.npz")
    tp.convert(src, as_list, include=["model/*"])
    for given in ({"include": "model/*"}, {"exclude": "other/*"}):
        out = str(tmp_path / f"{sorted(given)[0]}.npz")
        tp.convert(src, out, **given)  # type: ignore[arg-type]
        assert [k for k, _ in tp.list_variables(out)] == [k for k, _ in tp.list_variables(as_list)]
    assert "other/v/.ATTRIBUTES/VARIABLE_VALUE" not in dict(tp.list_variables(as_list))


@pytest.mark.parametrize("given", [3, [b"model/*"], ["model/*", None]])
def test_include_and_exclude_refuse_what_is_no_pattern(tmp_path: Path, given: object) -> None:
    src = tp.Checkpoint(w=tp.Variable(np.ones(2, np.float32))).write(str(tmp_path / "src" / "ckpt-1"))
    for name in ("include", "exclude"):
        with pytest.raises(tp.ArgumentTypeError, match=rf"convert: {name} must be a str or a sequence of str"):
            tp.convert(src, str(tmp_path / "out.npz"), **{name: given})  # type: ignore[arg-type]
    assert not (tmp_path / "out.npz").exists()
