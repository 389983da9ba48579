"""``Saver``'s TensorFlow 1 arguments and bookkeeping: reshape, restore_sequentially, restore memory,
set_last_checkpoints, recovered times, global_step by tensor name, graph-only arguments."""

from __future__ import annotations

import logging
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import trackpoint as tp
from trackpoint import restore as restore_module


def test_reshape_restores_a_value_of_another_shape_with_as_many_elements(tmp_path: Path) -> None:
    prefix = tp.Saver([tp.Variable(np.arange(6.0, dtype=np.float32).reshape(2, 3), name="w")]).save(str(tmp_path / "m"))
    target = tp.Variable(np.zeros((3, 2), np.float32), name="w")
    with pytest.raises(tp.ShapeMismatchError, match=r"has shape \(2, 3\).*Saver\(reshape=True\)"):
        tp.Saver([target]).restore(prefix)
    np.testing.assert_array_equal(target.numpy(), np.zeros((3, 2)))
    tp.Saver([target], reshape=True).restore(prefix)
    np.testing.assert_array_equal(target.numpy(), np.arange(6.0).reshape(3, 2))
    # TensorFlow's positional order: reshape is the second argument.
    flat = tp.Variable(np.zeros(6, np.float32), name="w")
    tp.Saver([flat], True).restore(prefix)
    np.testing.assert_array_equal(flat.numpy(), np.arange(6.0))
    wrong = tp.Variable(np.zeros(5, np.float32), name="w")
    with pytest.raises(tp.ShapeMismatchError, match="6 elements against 5, so even reshape=True cannot"):
        tp.Saver([wrong], reshape=True).restore(prefix)


def test_reshape_with_strings(tmp_path: Path) -> None:
    # Strings are not read into a buffer; they are reshaped when assigned.
    words = tp.Variable(np.array([[b"a", b"b"], [b"c", b"d"]], dtype=object), name="s")
    prefix = tp.Saver([words]).save(str(tmp_path / "m"))
    target = tp.Variable(np.array([b"", b"", b"", b""], dtype=object), name="s")
    tp.Saver([target], reshape=True).restore(prefix)
    assert target.numpy().tolist() == [b"a", b"b", b"c", b"d"]


@pytest.mark.parametrize("sequential", [False, True])
def test_restore_assigns_as_it_reads(tmp_path: Path, sequential: bool) -> None:
    # Eight 2 MiB variables: a restore that held every value before assigning would
    # allocate 16 MiB; reading into the variables' own buffers allocates next to nothing.
    size = 1 << 19
    variables = [tp.Variable(np.full(size, i, np.float32), name=f"v{i}") for i in range(8)]
    saver = tp.Saver(variables, restore_sequentially=sequential)
    prefix = saver.save(str(tmp_path / "m"))
    for v in variables:
        v.assign(np.zeros(size, np.float32))
    tracemalloc.start()
    try:
        saver.restore(prefix)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * size  # below one tensor (4 * size bytes), let alone the model
    assert [float(v.numpy()[-1]) for v in variables] == [float(i) for i in range(8)]


def test_restore_checks_every_variable_before_writing_any(tmp_path: Path) -> None:
    a, b = tp.Variable(np.ones(3, np.float32), name="a"), tp.Variable(np.ones(2, np.float32), name="b")
    prefix = tp.Saver([a, b]).save(str(tmp_path / "m"))
    a2, b2 = tp.Variable(np.zeros(3, np.float32), name="a"), tp.Variable(np.zeros(4, np.float32), name="b")
    with pytest.raises(tp.ShapeMismatchError):
        tp.Saver([a2, b2], restore_sequentially=True).restore(prefix)
    np.testing.assert_array_equal(a2.numpy(), np.zeros(3))  # "a" sorts first, yet was not written


def test_set_last_checkpoints_keeps_untimed_checkpoints(tmp_path: Path) -> None:
    v = tp.Variable(1.0, name="v")
    old = [tp.Saver([v]).save(str(tmp_path / "old"), global_step=i) for i in (1, 2)]
    saver = tp.Saver([v], max_to_keep=2)
    saver.set_last_checkpoints(list(old))
    assert saver.last_checkpoints == old
    saver.save(str(tmp_path / "new"), global_step=3)
    saver.save(str(tmp_path / "new"), global_step=4)
    # As in TensorFlow: their time is unknown (infinite), so leaving the window preserves them.
    assert saver.last_checkpoints == [str(tmp_path / "new-3"), str(tmp_path / "new-4")]
    assert all(tp.checkpoint_exists(p) for p in old)
    with pytest.raises(tp.TrackableError, match="must be a list of checkpoint prefixes") as info:
        saver.set_last_checkpoints(tuple(old))  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)


def test_recover_last_checkpoints_takes_the_stores_times(tmp_path: Path) -> None:
    v = tp.Variable(1.0, name="v")
    paths = [tp.Saver([v]).save(str(tmp_path / "m"), global_step=i) for i in (1, 2)]
    start = 1_000_000.0
    # The first checkpoint was written 5 hours after this saver's clock starts; the second 10 minutes after.
    os.utime(tmp_path / "m-1.index", (start + 5 * 3600, start + 5 * 3600))
    os.utime(tmp_path / "m-2.index", (start + 600, start + 600))
    saver = tp.Saver([v], max_to_keep=1, keep_checkpoint_every_n_hours=1.0, clock=lambda: start)
    saver.recover_last_checkpoints([*paths, str(tmp_path / "m-9")])
    assert saver.last_checkpoints == paths  # the missing one is dropped
    saver.save(str(tmp_path / "m"), global_step=3)  # m-1 leaves the window: newer than an hour, preserved
    saver.save(str(tmp_path / "m"), global_step=4)  # m-2 leaves it: not preserved, deleted
    assert tp.checkpoint_exists(paths[0])
    assert not tp.checkpoint_exists(paths[1])


def test_global_step_as_a_tensor_name(tmp_path: Path) -> None:
    step = tp.Variable(np.int64(12), name="global_step")
    saver = tp.Saver([tp.Variable(1.0, name="w"), step])
    assert saver.save(str(tmp_path / "m"), global_step="global_step:0") == str(tmp_path / "m-12")
    assert saver.save(str(tmp_path / "m"), global_step="global_step") == str(tmp_path / "m-12")
    keyed = tp.Saver({"w": tp.Variable(1.0, name="w"), "step": step})
    assert keyed.save(str(tmp_path / "k"), global_step="step:0") == str(tmp_path / "k-12")
    with pytest.raises(tp.TrackableError, match=r"global_step 'step:0' names no variable of this Saver"):
        saver.save(str(tmp_path / "m"), global_step="step:0")


def test_graph_only_arguments(tmp_path: Path) -> None:
    v = tp.Variable(1.0, name="v")
    saver = tp.Saver([v], name="save_1", defer_build=True, write_version=2)  # accepted, no effect
    assert saver.save(str(tmp_path / "m")) == str(tmp_path / "m")
    with pytest.raises(tp.UnsupportedOptionError, match=r"write_version=1.*only the V2 format"):
        tp.Saver([v], write_version=1)
    for name in ("saver_def", "builder", "filename"):
        with pytest.raises(tp.UnsupportedOptionError, match=rf"Saver\({name}=...\) configures TensorFlow's graph"):
            tp.Saver([v], **{name: object()})


def test_name_based_status_gives_the_re_encode_advice_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(restore_module, "_name_based_advice_given", False)
    prefix = tp.Saver([tp.Variable(1.0, name="v")]).save(str(tmp_path / "names"))
    with caplog.at_level(logging.WARNING, logger="trackpoint"):
        tp.Checkpoint(v=tp.Variable(0.0, name="v")).restore(prefix)
        tp.Checkpoint(v=tp.Variable(0.0, name="v")).restore(prefix)
    advice = [r for r in caplog.records if "re-encoding training checkpoints in the object-based format" in r.message]
    assert len(advice) == 1
    assert "run save() on the object-based saver" in advice[0].message


def test_errors_derive_from_the_builtins_tensorflow_raises(tmp_path: Path) -> None:
    v = tp.Variable(1.0, name="v")
    with pytest.raises(ValueError, match="The passed save_path is not a valid checkpoint") as info:
        tp.Saver([v]).restore(str(tmp_path / "nothing"))
    assert isinstance(info.value, tp.InvalidSavePathError) and isinstance(info.value, FileNotFoundError)
    with pytest.raises(TypeError, match="Variables to save should be passed in a dict or a list"):
        tp.Saver(v)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Variable to save is not a Variable"):
        tp.Saver([np.zeros(2)])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="must be a dict mapping string names"):
        tp.Saver({3: v})  # type: ignore[dict-item]
    assert issubclass(tp.SavePathIsNoneError, tp.InvalidSavePathError)
