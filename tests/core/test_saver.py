"""``trackpoint.Saver``: TF1 name-based checkpoints without sessions."""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from trackpoint import state
from trackpoint._resolve import open_backend
from trackpoint.errors import (
    CheckpointKeyError,
    CheckpointNotFoundError,
    InvalidCheckpointError,
    NameConflictError,
    ShapeMismatchError,
    StorageError,
    TrackableError,
)
from trackpoint.saver import Saver
from trackpoint.variables import Variable

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tf"


@pytest.fixture
def run() -> str:
    return f"memory://saver-{uuid.uuid4().hex[:8]}"


def _vars() -> tuple[Variable, Variable]:
    return (
        Variable(np.arange(6, dtype=np.float32).reshape(2, 3), name="dense/kernel"),
        Variable(np.int64(7), name="global_step"),
    )


class _Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# ------------------------------------------------------------ construction
def test_var_list_is_required() -> None:
    with pytest.raises(TrackableError, match=r"needs `var_list`"):
        Saver()


def test_duplicate_names_are_rejected() -> None:
    with pytest.raises(NameConflictError, match=r"At least two variables have the same name: 'v'"):
        Saver([Variable(1.0, name="v"), Variable(2.0, name="v")])


def test_same_variable_under_two_names_is_rejected() -> None:
    v = Variable(1.0)
    with pytest.raises(NameConflictError, match=r"saved under two names: 'a' and 'b'"):
        Saver({"a": v, "b": v})


@pytest.mark.parametrize(
    ("var_list", "match"),
    [
        ([np.zeros(2)], r"must hold trackpoint.Variable objects, got ndarray"),
        ({"a": 1.0}, r"var_list\['a'\] must be a trackpoint.Variable, got float"),
        ({"": Variable(1.0)}, r"keys must be non-empty strings"),
        (Variable(1.0), r"should be passed in a dict or a list, got Variable"),
    ],
)
def test_bad_var_list(var_list: Any, match: str) -> None:
    with pytest.raises(TrackableError, match=match):
        Saver(var_list)


def test_empty_var_list_needs_allow_empty(run: str) -> None:
    with pytest.raises(TrackableError, match=r"No variables to save"):
        Saver([])
    saver = Saver([], allow_empty=True)
    assert saver.save(f"{run}/model") is None
    saver.restore(f"{run}/model")  # nothing to restore: no error, nothing written
    assert open_backend(run).list_checkpoints(run) == []


# --------------------------------------------------------------- round trip
def test_round_trip_by_name(run: str) -> None:
    kernel, step = _vars()
    saver = Saver([kernel, step])
    prefix = saver.save(f"{run}/model")
    assert prefix == f"{run}/model"
    with open_backend(run).open_reader(prefix) as reader:
        # Keys are the variable names: no object graph, no .ATTRIBUTES paths.
        assert list(reader.keys()) == ["dense/kernel", "global_step"]
    kernel.assign(np.zeros((2, 3), np.float32))
    step.assign(0)
    saver.restore(prefix)
    np.testing.assert_array_equal(kernel.numpy(), np.arange(6, dtype=np.float32).reshape(2, 3))
    assert step.numpy() == 7


def test_dict_names_override_variable_names(run: str) -> None:
    v = Variable(np.float32(3.5), name="ignored")
    prefix = Saver({"custom/name": v}).save(f"{run}/m")
    assert prefix is not None
    with open_backend(run).open_reader(prefix) as reader:
        assert list(reader.keys()) == ["custom/name"]
    w = Variable(np.float32(0), name="other")
    Saver({"custom/name": w}).restore(prefix)
    assert w.numpy() == np.float32(3.5)


def test_global_step_suffix_and_padding(run: str) -> None:
    kernel, step = _vars()
    assert Saver([kernel]).save(f"{run}/model", global_step=42) == f"{run}/model-42"
    assert Saver([kernel]).save(f"{run}/model", global_step=step) == f"{run}/model-7"
    assert Saver([kernel], pad_step_number=True).save(f"{run}/p", global_step=42) == f"{run}/p-00000042"
    with pytest.raises(TrackableError, match=r"global_step must be an integer"):
        Saver([kernel]).save(f"{run}/model", global_step=1.5)


def test_string_variables_round_trip(run: str) -> None:
    v = Variable(np.array([b"a", b"", "\u00e9".encode()], dtype=object), name="tags")
    prefix = Saver([v]).save(f"{run}/s")
    assert prefix is not None
    v.assign(np.array([b"x", b"y", b"z"], dtype=object))
    Saver([v]).restore(prefix)
    assert list(v.numpy()) == [b"a", b"", "\u00e9".encode()]


# ------------------------------------------------------------------ errors
def test_latest_filename_with_path_components(run: str) -> None:
    with pytest.raises(InvalidCheckpointError, match=r"'latest_filename' must not contain path components"):
        Saver(list(_vars())).save(f"{run}/model", latest_filename="sub/checkpoint")


def test_latest_filename_colliding_with_save_path(run: str) -> None:
    with pytest.raises(InvalidCheckpointError, match=r"'latest_filename' collides with 'save_path'"):
        Saver(list(_vars())).save(f"{run}/checkpoint")
    with pytest.raises(InvalidCheckpointError, match=r"collides"):
        Saver(list(_vars())).save(f"{run}/latest", latest_filename="latest")
    # With a step the prefix is latest-1, no collision.
    assert Saver(list(_vars())).save(f"{run}/latest", global_step=1, latest_filename="latest") == f"{run}/latest-1"


def test_none_paths(run: str) -> None:
    saver = Saver(list(_vars()))
    with pytest.raises(CheckpointNotFoundError, match=r"Can't load save_path when it is None"):
        saver.restore(None)
    with pytest.raises(TrackableError, match=r"save_path must be a non-empty str"):
        saver.save(None)  # type: ignore[arg-type]


def test_restore_of_missing_checkpoint(run: str) -> None:
    with pytest.raises(CheckpointNotFoundError, match=r"not a valid checkpoint: .*nothing-here"):
        Saver(list(_vars())).restore(f"{run}/nothing-here")


def test_save_below_a_file_says_the_location_is_not_writable(tmp_path: Path) -> None:
    # The parent exists; it cannot hold files. "Doesn't exist" would send the user looking for the wrong fault.
    (tmp_path / "afile").write_text("not a directory")
    with pytest.raises(StorageError, match=r"not writable, because '.*afile' is a file, not a directory") as info:
        Saver(list(_vars())).save(str(tmp_path / "afile" / "model"))
    assert not isinstance(info.value, CheckpointNotFoundError)


def test_missing_variable_names_likely_cause(run: str) -> None:
    kernel, step = _vars()
    prefix = Saver([kernel]).save(f"{run}/model")
    assert prefix is not None
    with pytest.raises(CheckpointKeyError, match=r"missing from the checkpoint.*\['global_step'\]"):
        Saver([kernel, step]).restore(prefix)


def test_failed_restore_changes_no_variable(run: str) -> None:
    kernel, step = _vars()
    prefix = Saver({"a": step, "b": kernel}).save(f"{run}/model")
    assert prefix is not None
    a = Variable(np.int64(-1))
    b = Variable(np.zeros((3, 2), np.float32))  # wrong shape
    with pytest.raises(ShapeMismatchError, match=r"'b' .* has shape \(2, 3\), Variable 'Variable' has shape \(3, 2\)"):
        Saver({"a": a, "b": b}).restore(prefix)
    assert a.numpy() == -1  # checked before anything was assigned


# -------------------------------------------------------------- bookkeeping
def test_max_to_keep_deletes_old_checkpoints(run: str) -> None:
    saver = Saver(list(_vars()), max_to_keep=2)
    paths = [saver.save(f"{run}/model", global_step=i) for i in range(1, 5)]
    backend = open_backend(run)
    assert saver.last_checkpoints == paths[2:]
    assert [backend.exists(p) for p in paths] == [False, False, True, True]  # type: ignore[arg-type]
    st = state.read_checkpoint_state(run)
    assert st is not None
    assert list(st.all_model_checkpoint_paths) == paths[2:]
    assert st.model_checkpoint_path == paths[-1]


@pytest.mark.parametrize("max_to_keep", [None, 0])
def test_max_to_keep_none_keeps_everything(run: str, max_to_keep: int | None) -> None:
    saver = Saver(list(_vars()), max_to_keep=max_to_keep)
    paths = [saver.save(f"{run}/model", global_step=i) for i in range(1, 4)]
    assert all(open_backend(run).exists(p) for p in paths if p)
    assert saver.last_checkpoints == []
    st = state.read_checkpoint_state(run)
    assert st is not None and list(st.all_model_checkpoint_paths) == [paths[-1]]


def test_keep_checkpoint_every_n_hours(run: str) -> None:
    clock = _Clock()
    saver = Saver(list(_vars()), max_to_keep=1, keep_checkpoint_every_n_hours=1.0, clock=clock)
    paths = []
    for i in range(1, 7):
        clock.t += 1800.0  # half an hour per save
        paths.append(saver.save(f"{run}/model", global_step=i))
    backend = open_backend(run)
    # Saved at +0.5h, +1h, +1.5h, ...: the first one saved after +1h (model-3 at +1.5h)
    # is preserved, then the first after +2h (model-5 at +2.5h); the rest leave.
    assert [backend.exists(p) for p in paths] == [False, False, True, False, True, True]  # type: ignore[arg-type]
    assert saver.last_checkpoints == [paths[-1]]


def test_write_state_false_leaves_no_state_file(run: str) -> None:
    saver = Saver(list(_vars()))
    saver.save(f"{run}/model", global_step=1, write_state=False)
    assert open_backend(run).read_file(f"{run}/checkpoint") is None
    assert saver.last_checkpoints == []


def test_custom_latest_filename(run: str) -> None:
    Saver(list(_vars())).save(f"{run}/model", global_step=3, latest_filename="latest")
    assert state.latest_checkpoint(run, latest_filename="latest") == f"{run}/model-3"
    assert open_backend(run).read_file(f"{run}/checkpoint") is None


def test_state_paths_absolute_by_default_relative_on_request(run: str) -> None:
    Saver(list(_vars())).save(f"{run}/a", global_step=1)
    raw = open_backend(run).read_file(f"{run}/checkpoint")
    assert raw is not None and f'"{run}/a-1"'.encode() in raw.data
    Saver(list(_vars()), save_relative_paths=True).save(f"{run}/a", global_step=2)
    raw = open_backend(run).read_file(f"{run}/checkpoint")
    assert raw is not None and raw.data.startswith(b'model_checkpoint_path: "a-2"\n')


def test_recover_last_checkpoints_drops_missing_ones(run: str) -> None:
    first = Saver(list(_vars()), max_to_keep=3)
    paths = [first.save(f"{run}/model", global_step=i) for i in range(1, 4)]
    open_backend(run).delete(paths[0])  # type: ignore[arg-type]
    # A new process: rebuild the bookkeeping from the state file.
    st = state.read_checkpoint_state(run)
    assert st is not None
    second = Saver(list(_vars()), max_to_keep=2)
    second.recover_last_checkpoints(list(st.all_model_checkpoint_paths))
    assert second.last_checkpoints == paths[1:]
    second.save(f"{run}/model", global_step=4)
    assert second.last_checkpoints == [paths[2], f"{run}/model-4"]
    assert not open_backend(run).exists(paths[1])  # type: ignore[arg-type]


def test_set_last_checkpoints_with_time(run: str) -> None:
    saver = Saver(list(_vars()), max_to_keep=5)
    saver.set_last_checkpoints_with_time([(f"{run}/x-1", 1.0), (f"{run}/x-2", 2.0)])
    assert saver.last_checkpoints == [f"{run}/x-1", f"{run}/x-2"]
    with pytest.raises(TrackableError, match=r"must be a list of \(prefix, time\) pairs"):
        saver.set_last_checkpoints_with_time(((f"{run}/x-1", 1.0),))  # type: ignore[arg-type]


# ------------------------------------------------------------------ sharded
def test_sharded_save_writes_several_data_files(tmp_path: Path) -> None:
    vs = [Variable(np.full((64,), i, np.float32), name=f"v{i}") for i in range(3)]
    prefix = Saver(vs, sharded=True).save(str(tmp_path / "model"), global_step=1)
    data = sorted(p.name for p in tmp_path.iterdir() if ".data-" in p.name)
    assert data == [f"model-1.data-0000{i}-of-00003" for i in range(3)]
    for v in vs:
        v.assign(np.zeros(64, np.float32))
    Saver(vs).restore(prefix)
    assert [float(v.numpy()[0]) for v in vs] == [0.0, 1.0, 2.0]


def test_unsharded_save_writes_one_data_file(tmp_path: Path) -> None:
    vs = [Variable(np.full((64,), i, np.float32), name=f"v{i}") for i in range(3)]
    Saver(vs).save(str(tmp_path / "model"))
    assert sorted(p.name for p in tmp_path.iterdir() if ".data-" in p.name) == ["model.data-00000-of-00001"]


# ------------------------------------------------------- TensorFlow fixtures
def _tf1_expected() -> dict[str, Any]:
    return json.loads((FIXTURES / "tf1_saver" / "expected.json").read_text())  # type: ignore[no-any-return]


def _tf1_vars() -> dict[str, Variable]:
    return {
        "dense/kernel": Variable(np.zeros((3, 2), np.float32), name="dense/kernel"),
        "dense/bias": Variable(np.zeros(2, np.float32), name="dense/bias"),
        "embedding": Variable(np.zeros((6, 3), np.float32), name="embedding"),
        "global_step": Variable(np.int64(0), name="global_step"),
    }


@pytest.mark.parametrize("prefix", ["model.ckpt-1", "model.ckpt-2", "sharded/model.ckpt-3"])
def test_restores_tensorflow_saver_checkpoints(prefix: str) -> None:
    expected = _tf1_expected()["checkpoints"][prefix]["tensors"]
    vs = _tf1_vars()
    Saver(list(vs.values())).restore(str(FIXTURES / "tf1_saver" / prefix))
    for name, var in vs.items():
        want = np.frombuffer(bytes.fromhex(expected[name]["hex"]), dtype=var.dtype).reshape(var.shape)
        np.testing.assert_array_equal(var.numpy(), want, err_msg=name)


def test_tensorflow_state_file_resolves(tmp_path: Path) -> None:
    # The fixture's state file is relative: it still works from a copy.
    copy = tmp_path / "copy"
    shutil.copytree(FIXTURES / "tf1_saver", copy)
    assert state.latest_checkpoint(str(copy)) == str(copy / "model.ckpt-2")
    assert state.latest_checkpoint(str(copy / "sharded")) == str(copy / "sharded" / "model.ckpt-3")
    vs = _tf1_vars()
    saver = Saver(list(vs.values()))
    saver.restore(state.latest_checkpoint(str(copy)))
    assert vs["global_step"].numpy() == 200


def test_saver_restores_object_based_tensorflow_checkpoint(caplog: pytest.LogCaptureFixture) -> None:
    # tf.train.Checkpoint(v=tf.Variable([1., 2., 3.])): the variable's full_name is "Variable".
    v = Variable(np.zeros(3, np.float32))
    counter = Variable(np.int64(0), name="save_counter")
    with caplog.at_level(logging.WARNING, logger="trackpoint.saver"):
        Saver([v, counter]).restore(str(FIXTURES / "simple" / "ckpt-1"))
    np.testing.assert_array_equal(v.numpy(), [1.0, 2.0, 3.0])
    assert counter.numpy() == 1
    assert "object-based checkpoint using a name-based Saver" in caplog.text


def test_object_based_checkpoint_with_unknown_name_suggests_checkpoint() -> None:
    with pytest.raises(CheckpointKeyError, match=r"object-based checkpoint .*\['nope'\].*trackpoint.Checkpoint"):
        Saver([Variable(np.zeros(3, np.float32), name="nope")]).restore(str(FIXTURES / "simple" / "ckpt-1"))


def test_saver_round_trip_local_matches_tensorflow_layout(tmp_path: Path) -> None:
    vs = _tf1_vars()
    Saver(list(vs.values())).restore(str(FIXTURES / "tf1_saver" / "model.ckpt-1"))
    out = Saver(list(vs.values()), save_relative_paths=True).save(str(tmp_path / "model.ckpt"), global_step=1)
    assert out == str(tmp_path / "model.ckpt-1")
    assert (tmp_path / "checkpoint").read_text() == (
        'model_checkpoint_path: "model.ckpt-1"\nall_model_checkpoint_paths: "model.ckpt-1"\n'
    )
    assert os.path.exists(str(tmp_path / "model.ckpt-1.index"))


def test_checkpoint_restores_tensorflow_saver_checkpoint_by_name() -> None:
    # The other direction of cross-loading: an object-based restore of a name-based checkpoint.
    vs = _tf1_vars()
    ckpt = tp.Checkpoint(
        kernel=vs["dense/kernel"], bias=vs["dense/bias"], embedding=vs["embedding"], step=vs["global_step"]
    )
    ckpt.restore(str(FIXTURES / "tf1_saver" / "model.ckpt-2")).assert_consumed()
    assert vs["global_step"].numpy() == 200
    np.testing.assert_array_equal(vs["dense/bias"].numpy(), np.arange(2, dtype=np.float32) * 0.25 + 11)


def test_savers_run_no_full_collection_during_a_save_or_restore(
    tmp_path: Path, eager_full_collections: list[int]
) -> None:
    # As Checkpoint's: a full collection scans the whole model, and the name-based and object-based
    # savers of many variables allocate enough to start several. The young generations run as usual.
    import gc

    variables = [Variable(np.full(3, i, np.float32), name=f"v{i}") for i in range(1500)]
    root = tp.AutoTrackable()
    root.vs = variables
    threshold = gc.get_threshold()
    savers: list[tuple[Any, Any]] = [
        (Saver(variables), lambda s, p: s.restore(p)),
        (tp.TrackableSaver(root), lambda s, p: s.restore(p)),
        (tp.frozen_saver(root), lambda s, p: s.restore(p)),
    ]
    for saver, restore in savers:
        eager_full_collections.clear()
        path = saver.save(str(tmp_path / type(saver).__name__ / "ckpt"))
        restore(saver, path)
        assert 2 not in eager_full_collections, type(saver).__name__
        assert 0 in eager_full_collections
        assert gc.get_threshold() == threshold
    assert variables[7].numpy().tolist() == [7.0] * 3


def test_a_save_in_another_format_over_the_urls_own_is_refused(tmp_path: Path) -> None:
    # As for Checkpoint.write: readers without options ask the bundle first, and would read the old one.
    prefix = str(tmp_path / "model")
    tp.Checkpoint(v=Variable(np.ones(3, np.float32))).write(prefix)
    before = sorted(os.listdir(tmp_path))
    zarr = tp.CheckpointOptions(backend="zarr")
    root = tp.AutoTrackable()
    root.v = Variable(np.full(3, 2.0, np.float32))
    savers = [
        ("Saver.save", lambda: Saver({"v": root.v}).save(None, prefix, options=zarr)),
        ("TrackableSaver.save", lambda: tp.TrackableSaver(root).save(prefix, options=zarr)),
        ("FrozenSaver.save", lambda: tp.frozen_saver(root).save(prefix, options=zarr)),
    ]
    for call, save in savers:
        with pytest.raises(tp.CheckpointExistsError, match=rf"{call} refused .*a bundle checkpoint is committed there"):
            save()
        assert sorted(os.listdir(tmp_path)) == before, call
    fresh = tp.Checkpoint(v=Variable(np.zeros(3, np.float32)))
    fresh.read(prefix).assert_consumed()
    np.testing.assert_array_equal(fresh.v.numpy(), np.ones(3, np.float32))
