"""Arguments and options refused by name, with trackpoint's errors, before anything is written.

Each case was a builtin error from deep inside (``AttributeError``, ``RecursionError``, a ``TypeError``
of a regular expression) or silently did the wrong thing (a method replaced, ``-1.index`` written into
the working directory, ``out.pt.index``, a trackable saving nothing).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from stateful_objects import StateHolder
from trackpoint.cli import main
from trackpoint.errors import ArgumentTypeError, InvalidArgumentError, InvalidPathError

VALUE = "/.ATTRIBUTES/VARIABLE_VALUE"


def _files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


# ------------------------------------------------------------------ 1. CheckpointOptions and options=
@pytest.mark.parametrize(
    ("fields", "error", "message"),
    [
        ({"max_shard_bytes": 0}, InvalidArgumentError, r"max_shard_bytes must be positive, got 0"),
        ({"max_shard_bytes": -5}, InvalidArgumentError, r"max_shard_bytes must be positive, got -5"),
        ({"max_shard_bytes": 1.5}, ArgumentTypeError, r"max_shard_bytes must be an int or None, got float"),
        ({"num_writers": 0}, InvalidArgumentError, r"num_writers must be positive, got 0"),
        ({"num_writers": "2"}, ArgumentTypeError, r"num_writers must be an int or None, got str \('2'\)"),
        ({"num_writers": True}, ArgumentTypeError, r"num_writers must be an int or None, got bool"),
        ({"async_memory_bytes": -1}, InvalidArgumentError, r"async_memory_bytes must be a non-negative int, got -1"),
        ({"async_memory_bytes": "1G"}, ArgumentTypeError, r"async_memory_bytes must be an int or None, got str"),
        ({"async_when_busy": "x"}, InvalidArgumentError, r"async_when_busy must be one of 'wait', 'raise'.*got 'x'"),
        ({"async_when_busy": 3}, ArgumentTypeError, r"async_when_busy must be one of 'wait', 'raise' \(a str\)"),
        (
            {"enable_async": "yes"},
            ArgumentTypeError,
            r"enable_async must be True or False \(or None, 0, 1\), got 'yes'",
        ),
        (
            {"experimental_enable_async_checkpoint": 2},
            ArgumentTypeError,
            r"experimental_enable_async_checkpoint must be True or False \(or None, 0, 1\), got 2",
        ),
        ({"experimental_skip_slot_variables": "no"}, ArgumentTypeError, r"skip_slot_variables must be True or False"),
        ({"experimental_io_device": 3}, ArgumentTypeError, r"experimental_io_device must be a str or None, got 3"),
        ({"backend": 3}, ArgumentTypeError, r"backend must be a str or None, got 3"),
        ({"backend": "/job:worker"}, InvalidArgumentError, r"that is a device name"),
        ({"storage_options": 3}, ArgumentTypeError, r"storage_options must be a mapping"),
        ({"backend_options": {1: 2}}, ArgumentTypeError, r"backend_options takes option names as str keys, got 1"),
        ({"progress": "x"}, ArgumentTypeError, r"progress must be True, False or None, got 'x'"),
        ({"coordinator": 3}, ArgumentTypeError, r"coordinator must be a trackpoint.distributed.Coordinator"),
        ({"experimental_write_callbacks": print}, ArgumentTypeError, r"must be a sequence .* pass \[print\]"),
        ({"experimental_write_callbacks": [3]}, ArgumentTypeError, r"holds 3, which is not callable"),
        ({"experimental_write_callbacks": [lambda a, b: 0]}, ArgumentTypeError, r"takes \(a, b\)"),
    ],
)
def test_every_field_of_checkpoint_options_is_refused_with_an_argument_error(
    fields: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message) as caught:
        tp.CheckpointOptions(**fields)
    assert type(caught.value) is error  # not merely a subclass: the type refusals are ArgumentTypeErrors
    # What existing `except ValueError` / `except TypeError` clauses catch stays the same.
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, TypeError) == (error is ArgumentTypeError)


def test_numpy_counts_and_switches_are_taken_as_python_values() -> None:
    options = tp.CheckpointOptions(
        max_shard_bytes=np.int64(1024), num_writers=np.int32(2), async_memory_bytes=np.uint8(0), enable_async=np.True_
    )
    assert (options.max_shard_bytes, options.num_writers, options.async_memory_bytes) == (1024, 2, 0)
    assert all(type(v) is int for v in (options.max_shard_bytes, options.num_writers, options.async_memory_bytes))
    assert options.enable_async is True
    assert options == tp.CheckpointOptions(max_shard_bytes=1024, num_writers=2, async_memory_bytes=0, enable_async=True)


@pytest.mark.parametrize("call", ["write", "save", "read", "restore"])
def test_a_dict_as_options_is_refused_by_the_checkpoint_call_before_anything_happens(call: str) -> None:
    ckpt = tp.Checkpoint(v=tp.Variable([1.0]))
    path = ckpt.write("memory://args/options/ckpt")
    secret = {"backend": "memory", "storage_options": {"token": "hunter2"}}
    with pytest.raises(ArgumentTypeError, match=rf"Checkpoint\.{call}: options must be a trackpoint") as caught:
        getattr(ckpt, call)("memory://args/options/other" if call in ("write", "save") else path, options=secret)
    message = str(caught.value)
    assert "CheckpointOptions(**options)" in message and "'storage_options'" in message
    assert "hunter2" not in message  # only the mapping's keys are shown
    assert not tp.checkpoint_exists("memory://args/options/other")
    assert ckpt.save_counter.numpy() == 0  # a refused save takes no number


def test_a_dict_as_options_is_refused_by_the_other_public_calls() -> None:
    ckpt = tp.Checkpoint(v=tp.Variable([1.0]))
    path = ckpt.write("memory://args/others/ckpt")
    given: Any = {"backend": "memory"}
    with pytest.raises(ArgumentTypeError, match=r"load_checkpoint: options must be"):
        tp.load_checkpoint(path, given)
    with pytest.raises(ArgumentTypeError, match=r"checkpoint_exists: options must be"):
        tp.checkpoint_exists(path, options=given)
    with pytest.raises(ArgumentTypeError, match=r"convert\(dst_options=\.\.\.\): options must be"):
        tp.convert(path, "memory://args/others/copy", dst_options=given)
    with pytest.raises(ArgumentTypeError, match=r"convert\(src_options=\.\.\.\): options must be"):
        tp.convert(path, "memory://args/others/copy", src_options=given)
    manager = tp.CheckpointManager(ckpt, "memory://args/others/run", max_to_keep=1)
    with pytest.raises(ArgumentTypeError, match=r"options must be a trackpoint.CheckpointOptions or None, got dict"):
        manager.save(options=given)
    assert manager.latest_checkpoint is None


# ------------------------------------------------------------------ 2. load_variable and get_tensor
def test_load_variable_refuses_a_name_that_is_no_str() -> None:
    path = tp.Checkpoint(w=tp.Variable([1.0])).write("memory://args/names/ckpt")
    for name in (None, 3):
        with pytest.raises(ArgumentTypeError, match=r"load_variable: the tensor name must be a str") as caught:
            tp.load_variable(path, name)  # type: ignore[arg-type]
        assert isinstance(caught.value, TypeError)
    with (
        tp.load_checkpoint(path) as reader,
        pytest.raises(ArgumentTypeError, match=r"TensorReader.get_tensor: the tensor name must be a str"),
    ):
        reader.get_tensor(None)  # type: ignore[arg-type]
    # TensorFlow's reader takes bytes keys.
    assert tp.load_variable(path, b"w" + VALUE.encode()).tolist() == [1.0]


def test_a_missing_tensor_named_by_its_object_path_suggests_the_full_keys() -> None:
    model = tp.AutoTrackable()
    model.a, model.b = tp.Variable([1.0]), tp.Variable([2.0])
    path = tp.Checkpoint(w=tp.Variable([3.0]), model=model).write("memory://args/short/ckpt")
    for short in ("w", "w:0", "w/"):
        with pytest.raises(tp.CheckpointKeyError, match=rf"full key '{'w' + VALUE}': pass that key"):
            tp.load_variable(path, short)
    with pytest.raises(tp.CheckpointKeyError, match=rf"'model/a{VALUE}', 'model/b{VALUE}': pass one"):
        tp.load_variable(path, "model")
    with tp.load_checkpoint(path) as reader:
        with pytest.raises(tp.CheckpointKeyError, match=rf"full key '{'w' + VALUE}'"):
            reader.get_tensor("w")
        with pytest.raises(tp.CheckpointKeyError, match=rf"full key '{'w' + VALUE}'"):
            reader.get_slice("w", [0], [1])
    with pytest.raises(tp.CheckpointKeyError) as caught:
        tp.load_variable(path, "nothing")
    assert "full key" not in str(caught.value)  # nothing to suggest: the refusal as it was


def test_a_missing_tensor_named_as_the_program_names_it_or_misspelt_suggests_its_key() -> None:
    # A state dict's entry "0.weight" is stored as "0..weight" under ".ATTRIBUTES/": users give the former.
    holder = StateHolder({"0.weight": np.ones(2), "steps": np.zeros(1)})
    path = tp.Checkpoint(model=holder, weights=tp.Variable([3.0])).write("memory://args/near/ckpt")
    stored = "model/.ATTRIBUTES/0..weight"
    for given in ("model/0.weight", "model/.ATTRIBUTES/0.weight", "model/0.wieght"):
        expected = rf"has no tensor '{re.escape(given)}'; did you mean '{stored}'"
        with pytest.raises(tp.CheckpointKeyError, match=expected):
            tp.load_variable(path, given)
    with pytest.raises(tp.CheckpointKeyError, match=rf"did you mean 'weights{VALUE}'"):
        tp.load_variable(path, "weigths")
    with pytest.raises(tp.CheckpointKeyError) as caught:
        tp.load_variable(path, "optimizer/m")
    assert "did you mean" not in str(caught.value)  # nothing close: the refusal as it was


# ------------------------------------------------------------------ 3. bytes and PathLike paths
def test_bytes_and_pathlike_paths_are_taken_by_save_write_read_and_restore(tmp_path: Path) -> None:
    ckpt = tp.Checkpoint(v=tp.Variable([1.0, 2.0]))
    saved = ckpt.save(os.fsencode(tmp_path / "run" / "ckpt"))
    assert saved == str(tmp_path / "run" / "ckpt-1")
    assert ckpt.write(Path(tmp_path / "run" / "w")) == str(tmp_path / "run" / "w")
    assert ckpt.write(os.fsencode(tmp_path / "run" / "b")) == str(tmp_path / "run" / "b")
    assert {"ckpt-1.index", "w.index", "b.index", "checkpoint"} <= set(_files(tmp_path / "run"))
    assert not any(name.startswith("b'") for name in _files(tmp_path))  # not the repr of the bytes

    other = tp.Checkpoint(v=tp.Variable([0.0, 0.0]))
    other.restore(saved.encode()).assert_consumed()
    assert other.v.numpy().tolist() == [1.0, 2.0]
    other.v.assign([0.0, 0.0])
    other.read(Path(tmp_path / "run" / "w")).assert_consumed()
    assert other.v.numpy().tolist() == [1.0, 2.0]


@pytest.mark.parametrize("call", ["write", "save", "read", "restore"])
def test_a_path_of_another_type_is_refused_by_name(call: str) -> None:
    ckpt = tp.Checkpoint(v=tp.Variable([1.0]))
    argument = "file_prefix" if call in ("write", "save") else "save_path"
    with pytest.raises(ArgumentTypeError, match=rf"Checkpoint\.{call}: {argument} must be a path or URL.*got int"):
        getattr(ckpt, call)(3)
    with pytest.raises(tp.InvalidPathError, match=rf"Checkpoint\.{call}: {argument} .* is not UTF-8"):
        getattr(ckpt, call)(b"memory://args/\xff")


# ------------------------------------------------------------------ 4. keywords naming Checkpoint's attributes
@pytest.mark.parametrize("name", ["save", "restore", "read", "write", "sync", "close", "save_counter", "add_variable"])
def test_a_keyword_naming_an_attribute_of_checkpoint_is_refused(name: str) -> None:
    with pytest.raises(tp.NameConflictError, match=rf"Checkpoint\({name}=\.\.\.\): '{name}' is the name of") as caught:
        tp.Checkpoint(**{name: np.zeros(2)})
    assert f"tp.Checkpoint(**{{'{name}_': value}})" in str(caught.value)
    assert f"tp.Checkpoint(state={{'{name}': value}})" in str(caught.value)
    # The suggested spellings work.
    path = tp.Checkpoint(**{f"{name}_": np.ones(2)}, state={name: np.ones(2)}).write(f"memory://args/kw/{name}")
    keys = {key for key, _ in tp.list_variables(path)}
    assert {f"{name}_{VALUE}", f"state/{name}{VALUE}"} <= keys


def test_assigning_to_an_attribute_of_checkpoint_is_refused_and_the_method_keeps_working() -> None:
    ckpt = tp.Checkpoint()
    for name in ("save", "restore", "save_counter"):
        with pytest.raises(tp.NameConflictError, match=rf"Checkpoint\.{name} = \.\.\.: '{name}' is the name of"):
            setattr(ckpt, name, np.zeros(2))
    ckpt.save_ = np.ones(2)
    assert callable(ckpt.save) and callable(ckpt.restore)
    assert ckpt.save("memory://args/assign/ckpt") == "memory://args/assign/ckpt-1"
    assert f"save_{VALUE}" in {key for key, _ in tp.list_variables("memory://args/assign/ckpt-1")}


# ------------------------------------------------------------------ 5. an empty prefix
@pytest.mark.parametrize("call", ["save", "write"])
@pytest.mark.parametrize("prefix", ["", b""])
def test_an_empty_prefix_is_refused_and_nothing_is_written(
    call: str, prefix: str | bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    ckpt = tp.Checkpoint(v=tp.Variable([1.0]))
    with pytest.raises(InvalidArgumentError, match=rf"Checkpoint\.{call}: file_prefix is empty"):
        getattr(ckpt, call)(prefix)
    assert _files(tmp_path) == []
    assert ckpt.save_counter.numpy() == 0


# ------------------------------------------------------------------ 6. convert to a foreign file suffix
@pytest.mark.parametrize(("dst", "what"), [("out.pt", "PyTorch"), ("x.h5", "HDF5"), ("M.ONNX", "ONNX")])
def test_convert_refuses_a_destination_named_like_a_file_it_does_not_write(dst: str, what: str, tmp_path: Path) -> None:
    src = tp.Checkpoint(v=tp.Variable([1.0])).write(str(tmp_path / "src" / "ckpt-1"))
    with pytest.raises(InvalidArgumentError, match=rf"convert: cannot write .*is the suffix of {what}") as caught:
        tp.convert(src, str(tmp_path / dst))
    # The formats it writes: files by suffix, and checkpoints of the installed backends.
    assert ".safetensors and .npz files" in str(caught.value)
    assert "backends: bundle, memory" in str(caught.value)
    assert not [name for name in _files(tmp_path) if not name.startswith("src")]
    # A backend chosen explicitly writes a checkpoint under that very name.
    tp.convert(src, str(tmp_path / dst), dst_options=tp.CheckpointOptions(backend="bundle"))
    assert tp.checkpoint_exists(str(tmp_path / dst))


def test_convert_keeps_writing_prefixes_without_a_file_suffix(tmp_path: Path) -> None:
    src = tp.Checkpoint(v=tp.Variable([1.0])).write(str(tmp_path / "src" / "ckpt-1"))
    for dst in ("out/ckpt-1", "model.ckpt", "model.ckpt-1000", "run.v2/ckpt"):
        tp.convert(src, str(tmp_path / dst))
        assert tp.checkpoint_exists(str(tmp_path / dst))
    with pytest.raises(InvalidArgumentError, match=r"a file of the TensorBundle checkpoint .*: pass '.*out/ckpt-2'"):
        tp.convert(src, str(tmp_path / "out" / "ckpt-2.index"))


def test_the_cli_refuses_such_a_destination_as_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tp.Checkpoint(v=tp.Variable([1.0])).write(str(tmp_path / "ckpt-1"))
    assert main(["convert", src, str(tmp_path / "model.pt")]) == 2
    err = capsys.readouterr().err
    assert "'.pt' is the suffix of PyTorch" in err and "--dst-backend bundle" in err
    assert not (tmp_path / "model.pt.index").exists()


# ------------------------------------------------------------------ 7. state dicts that hold themselves, or nest deeply
class _Stateful:
    def __init__(self, state: Any) -> None:
        self.state = state

    def state_dict(self) -> Any:
        return self.state

    def load_state_dict(self, state: Any) -> None:
        self.state = state


def test_a_state_dict_that_holds_itself_is_refused_naming_where() -> None:
    state: dict[str, Any] = {"w": np.ones(2), "inner": {"b": [np.zeros(1)]}}
    state["inner"]["b"].append(state)
    with pytest.raises(tp.TrackableError, match=r"Checkpoint\.m\['inner'\]\['b'\]\[1\] is a dict that also holds it"):
        tp.Checkpoint(m=_Stateful(state)).write("memory://args/cycle/ckpt")
    shared = {"w": np.ones(2)}
    tp.Checkpoint(m=_Stateful({"a": shared, "b": [shared]})).write("memory://args/cycle/shared")  # no cycle


def _nested(depth: int, leaf: Any) -> Any:
    for level in range(depth):
        leaf = {"a": leaf} if level % 2 else [leaf]
    return leaf


def test_a_state_dict_nested_too_deeply_is_refused_cleanly() -> None:
    from trackpoint.stateful import MAX_STATE_DICT_DEPTH

    for depth in (150, 330, 2000):
        with pytest.raises(tp.TrackableError, match=r"Checkpoint\.m: _Stateful\.state_dict\(\) nests containers"):
            tp.Checkpoint(m=_Stateful({"x": _nested(depth, np.ones(1))})).write("memory://args/deep/ckpt")
    # Up to the limit, a save restores.
    saved = _Stateful({"x": _nested(MAX_STATE_DICT_DEPTH - 1, np.arange(3.0))})
    path = tp.Checkpoint(m=saved).write("memory://args/deep/ok")
    target = _Stateful({})
    tp.Checkpoint(m=target).read(path).assert_consumed()
    assert target.state["x"] is not None
    leaf = target.state["x"]
    while not isinstance(leaf, np.ndarray):
        leaf = leaf["a"] if isinstance(leaf, dict) else leaf[0]
    assert leaf.tolist() == [0.0, 1.0, 2.0]


# ------------------------------------------------------------------ 8. what _serialize_to_tensors returns
class _Returns(tp.Trackable):
    def __init__(self, returned: Any) -> None:
        self.returned = returned

    def _serialize_to_tensors(self) -> Any:
        return self.returned


@pytest.mark.parametrize(
    ("returned", "message"),
    [
        (None, r"_Returns\._serialize_to_tensors\(\) of the object at 't' returned None; it must return a dict"),
        ([np.ones(1)], r"_Returns\._serialize_to_tensors\(\) of the object at 't' returned list"),
        ([], r"returned list \[\]; it must return a dict \{attribute_name: array\}"),
        ((np.ones(1),), r"returned tuple"),
        ({0: np.ones(1)}, r"returned a dict with the key 0 \(int\).*with str names"),
        ({"a": np.ones(1), 7: np.ones(1)}, r"returned a dict with the key 7 \(int\)"),
    ],
)
def test_a_wrong_return_value_of_serialize_to_tensors_is_refused_naming_the_class(returned: Any, message: str) -> None:
    with pytest.raises(tp.NotTrackableError, match=message):
        tp.Checkpoint(t=_Returns(returned)).write("memory://args/serialize/bad")
    assert not tp.checkpoint_exists("memory://args/serialize/bad")


@pytest.mark.parametrize("inner", [{"x": np.ones(1)}, {"x": {"y": np.ones(1)}}])
def test_nested_dicts_from_serialize_to_tensors_are_refused_as_no_slices(inner: dict[str, Any]) -> None:
    with pytest.raises(
        tp.TrackableError, match=r"returned a dict for the attribute 'n', which is read as TensorFlow's"
    ):
        tp.Checkpoint(t=_Returns({"n": inner})).write("memory://args/serialize/nested")


def test_an_empty_dict_saves_nothing_and_a_restore_refuses_none_too() -> None:
    path = tp.Checkpoint(t=_Returns({}), v=tp.Variable([1.0])).write("memory://args/serialize/empty")
    assert not [key for key, _ in tp.list_variables(path) if key.startswith("t/")]
    saved = tp.Checkpoint(t=_Returns({"a": np.ones(1)})).write("memory://args/serialize/a")
    with pytest.raises(tp.NotTrackableError, match=r"_Returns\._serialize_to_tensors\(\) returned None"):
        tp.Checkpoint(t=_Returns(None)).restore(saved)

    root = _Returns({"a": np.ones(1)})
    frozen = tp.frozen_saver(root)
    root.returned = None
    with pytest.raises(tp.NotTrackableError, match=r"_Returns\._serialize_to_tensors\(\) returned None"):
        frozen.save("memory://args/serialize/frozen")


def test_a_method_can_still_be_patched_with_a_callable(tmp_path: Path) -> None:
    from unittest import mock

    ckpt = tp.Checkpoint(w=np.ones(2))
    with mock.patch.object(ckpt, "save") as patched:
        ckpt.save("anywhere")
    assert patched.called
    assert not (tmp_path / "anywhere-1.index").exists()
    assert [name for name, _ in tp.list_variables(ckpt.write(str(tmp_path / "c")))] == [
        "_CHECKPOINTABLE_OBJECT_GRAPH",
        "w/.ATTRIBUTES/VARIABLE_VALUE",
    ]  # the mock was never tracked


@pytest.mark.parametrize(
    ("path", "url"),
    [
        ("s3:/bucket/run/ckpt", "s3://bucket/run/ckpt-1"),
        ("gs:/b/ckpt", "gs://b/ckpt-1"),
        ("file:/x/c", "file:///x/c-1"),
    ],
)
def test_a_url_with_one_slash_is_refused_not_saved_locally(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str, url: str
) -> None:
    monkeypatch.chdir(tmp_path)
    ckpt = tp.Checkpoint(w=np.ones(2))
    with pytest.raises(InvalidPathError, match=rf"a URL scheme with one slash.*Write .*\({re.escape(url)}\)"):
        ckpt.save(path)
    directory = path.split("/", 1)[0]
    with pytest.raises(InvalidPathError, match="one slash"):
        tp.CheckpointManager(ckpt, f"{directory}/bucket/run", max_to_keep=1)
    with pytest.raises(InvalidPathError, match="one slash"):
        tp.latest_checkpoint(f"{directory}/bucket/run")
    assert list(tmp_path.iterdir()) == []  # nothing written in the working directory
    assert tp.Checkpoint(w=np.ones(2)).write(f"./{directory}/local/ckpt") == f"./{directory}/local/ckpt"


@pytest.mark.parametrize(
    ("prefix", "example"),
    [
        ("s3://", "s3://<bucket>/ckpt"),
        ("s3://bucket", "s3://bucket/ckpt"),
        ("gs://bucket/", "gs://bucket/ckpt"),
        ("zarr+s3://bucket", "zarr+s3://bucket/ckpt"),
        ("az://container", "az://container/ckpt"),
        ("run/", "run/ckpt"),
    ],
)
def test_a_prefix_naming_a_bucket_or_directory_is_refused(tmp_path: Path, prefix: str, example: str) -> None:
    ckpt = tp.Checkpoint(w=np.ones(2))
    for call in (ckpt.save, ckpt.write):
        with pytest.raises(
            InvalidArgumentError, match=rf"names a .*, not a checkpoint.*such as .*{re.escape(example)}$"
        ):
            call(prefix if "://" in prefix else str(tmp_path / prefix) + "/")
    assert int(ckpt.save_counter.numpy()) == 0


@pytest.mark.parametrize("value", [None, 0, 1, np.int64(1), np.bool_(True)])
def test_a_switch_takes_what_tensorflow_takes_by_its_truth(value: object) -> None:
    options = tp.CheckpointOptions(enable_async=value)  # type: ignore[arg-type]
    assert options.enable_async is bool(value)


def test_stores_without_buckets_take_a_prefix_at_their_root(tmp_path: Path) -> None:
    ckpt = tp.Checkpoint(w=np.ones(2))
    name = f"memory://root-{os.getpid()}-{id(ckpt)}"
    assert ckpt.save(name) == f"{name}-1"
    assert ckpt.write(name) == name
    local = tmp_path.as_uri() + "/ckpt"  # file:///tmp/.../ckpt: a local path
    assert ckpt.write(local) == local
    assert tp.list_variables(local)
