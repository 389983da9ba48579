"""TensorFlow's write callbacks: called once per commit, with the path or nothing; retention only after a commit."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from trackpoint import plugins
from trackpoint.backends.memory import MemoryBackend
from trackpoint.errors import StorageError
from trackpoint.storage import ShardResult


def test_called_after_the_commit_with_the_path(tmp_path: Path) -> None:
    seen: list[tuple[str, bool, bool]] = []

    def callback(path: str) -> None:
        # Committed (visible to a reader), and, as in TensorFlow, before save() records it in the state file.
        seen.append((path, tp.checkpoint_exists(path), tp.read_checkpoint_state(str(tmp_path)) is None))

    called: list[str] = []
    options = tp.CheckpointOptions(experimental_write_callbacks=[callback, lambda: called.append("no argument")])
    path = tp.Checkpoint(v=tp.Variable([1.0])).save(str(tmp_path / "ckpt"), options=options)
    assert seen == [(path, True, True)] and called == ["no argument"]
    state = tp.read_checkpoint_state(str(tmp_path))
    assert state is not None and state.model_checkpoint_path == path


def test_every_writer_runs_them_once(tmp_path: Path) -> None:
    seen: list[str] = []
    options = tp.CheckpointOptions(experimental_write_callbacks=[seen.append])
    ckpt = tp.Checkpoint(v=tp.Variable(np.arange(4.0)))
    written = ckpt.write(str(tmp_path / "w"), options=options)
    manager = tp.CheckpointManager(ckpt, str(tmp_path / "run"), max_to_keep=1, options=options)
    managed = manager.save()
    saver = tp.Saver([tp.Variable(1.0, name="x")], options=options)
    by_name = saver.save(str(tmp_path / "tf1" / "model"))
    tp.convert(written, str(tmp_path / "copy"), dst_options=options)
    tp.convert(written, str(tmp_path / "out.npz"), dst_options=options)
    assert seen == [written, managed, by_name, str(tmp_path / "copy"), str(tmp_path / "out.npz")]


def test_order_is_kept_and_an_error_propagates_after_the_commit(tmp_path: Path) -> None:
    order: list[str] = []

    def failing(path: str) -> None:
        order.append("failing")
        raise RuntimeError(f"upload of {path} failed")

    options = tp.CheckpointOptions(
        experimental_write_callbacks=[lambda: order.append("first"), failing, lambda: order.append("never")]
    )
    ckpt = tp.Checkpoint(v=tp.Variable([1.0]))
    with pytest.raises(RuntimeError, match=r"upload of .*ckpt-1 failed"):
        ckpt.save(str(tmp_path / "ckpt"), options=options)
    assert order == ["first", "failing"]
    assert tp.checkpoint_exists(str(tmp_path / "ckpt-1"))  # the checkpoint stays committed


@pytest.mark.parametrize(
    ("callback", "message"),
    [
        (lambda a, b: None, r"takes \(a, b\); it must accept the checkpoint path as its only argument"),
        ("not callable", r"holds 'not callable', which is not callable"),
    ],
)
def test_a_callback_that_cannot_be_called_is_refused_at_once(callback: Any, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        tp.CheckpointOptions(experimental_write_callbacks=[callback])


def test_options_keep_a_copy_and_differ_only_in_callbacks() -> None:
    callbacks: list[Any] = [print]
    options = tp.CheckpointOptions(experimental_write_callbacks=callbacks)
    callbacks.append(len)
    assert options.experimental_write_callbacks == (print,)
    # Callbacks select no backend: options differing only in them share one held backend.
    assert options == tp.CheckpointOptions()


# ------------------------------------------------------------------ retention only after a commit
class _Flaky(MemoryBackend):
    """The memory backend whose commit fails while ``fail`` is set."""

    fail = False

    def commit(self, prefix: str, shards: Sequence[ShardResult], *, overwrite: bool = True) -> None:
        if _Flaky.fail:
            raise StorageError(f"flaky: commit of {prefix!r} refused")
        super().commit(prefix, shards, overwrite=overwrite)


class _FlakyPlugin:
    @plugins.hookimpl
    def trackpoint_register_backends(self, register: Any) -> None:
        register(
            plugins.BackendSpec(
                name="memory", factory=lambda url, options: _Flaky(), schemes=("memory",), override=True
            )
        )


@pytest.fixture
def flaky() -> Iterator[type[_Flaky]]:
    plugins.register(_FlakyPlugin(), "flaky")
    yield _Flaky
    _Flaky.fail = False


def test_manager_applies_retention_only_after_a_commit(flaky: type[_Flaky]) -> None:
    ckpt = tp.Checkpoint(v=tp.Variable([1.0]))
    during: list[list[str]] = []
    manager = tp.CheckpointManager(ckpt, "memory://run", max_to_keep=1)
    first = manager.save()
    assert first is not None

    flaky.fail = True
    with pytest.raises(StorageError, match="commit of 'memory://run/ckpt-2' refused"):
        manager.save()
    # Nothing retired, nothing recorded: the one committed checkpoint is still kept and listed.
    assert manager.checkpoints == [first] and tp.checkpoint_exists(first)
    assert tp.latest_checkpoint("memory://run") == first

    flaky.fail = False
    options = tp.CheckpointOptions(
        experimental_write_callbacks=[
            lambda: during.append(sorted(tp.plugins.open_backend("memory://run").list_checkpoints("memory://run")))
        ]
    )
    third = manager.save(options=options)
    # The callback ran after the commit and before retention (TensorFlow's order): both were there.
    assert during == [[first, third]]
    assert manager.checkpoints == [third] and not tp.checkpoint_exists(first)
