"""A backend chosen explicitly (``backend=``, ``TRACKPOINT_BACKEND``) must not hide a run's checkpoints.

Such a backend reads its own format alone. A manager given one in a directory where another format holds
the newest checkpoints of its series refuses to start over (or go back) beside them; ``latest_checkpoint``
with such options keeps answering for that format, and warns about the newer ones it does not read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from solo_coordinator import SoloCoordinator
from trackpoint.errors import CheckpointExistsError


def _checkpoint() -> tuple[tp.Variable, tp.Checkpoint]:
    step = tp.Variable(0)
    model = tp.AutoTrackable()
    model.w = tp.Variable(np.zeros((4, 4), np.float32))
    return step, tp.Checkpoint(model=model, step=step)


def _run(directory: str, saves: int, options: tp.CheckpointOptions | None = None) -> list[str]:
    """Save ``saves`` checkpoints with a manager resuming in ``directory``; its checkpoints."""
    step, ckpt = _checkpoint()
    with tp.CheckpointManager(ckpt, directory, max_to_keep=3, options=options) as manager:
        manager.restore_or_initialize()
        for _ in range(saves):
            step.assign_add(1)
            manager.save()
        return manager.checkpoints


@pytest.fixture(params=["local", "s3"])
def where(request: pytest.FixtureRequest, tmp_path: Any) -> tuple[str, dict[str, Any], str]:
    """A directory, its storage options and the backend writing there when none is chosen."""
    if request.param == "local":
        return str(tmp_path / "run"), {}, "bundle"
    bucket: str = request.getfixturevalue("s3_bucket")
    return f"{bucket}/run", request.getfixturevalue("s3_storage_options"), "s3"


@pytest.fixture(params=["option", "environment"])
def forced(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], str]:
    """``force(name)`` chooses the backend ``name`` one way or the other; how it is named in messages."""

    def force(name: str) -> str:
        if request.param == "environment":
            monkeypatch.setenv("TRACKPOINT_BACKEND", name)
            return "chosen by the TRACKPOINT_BACKEND environment variable"
        return "chosen by CheckpointOptions(backend=...)"

    return force


def _options(how: str, name: str, storage: dict[str, Any]) -> tp.CheckpointOptions:
    """The options of a reader choosing ``name`` the way ``how`` says (in the environment: none in the options)."""
    return tp.CheckpointOptions(backend=None if "TRACKPOINT_BACKEND" in how else name, storage_options=storage)


def test_a_forced_backend_refuses_to_start_over_beside_another_formats_run(
    where: tuple[str, dict[str, Any], str], forced: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    directory, storage, other = where
    plain = tp.CheckpointOptions(storage_options=storage)
    kept = _run(directory, 5, plain)
    assert [p.rsplit("/", 1)[1] for p in kept] == ["ckpt-3", "ckpt-4", "ckpt-5"]

    how = forced("zarr")
    options = _options(how, "zarr", storage)
    initialized: list[bool] = []
    step, ckpt = _checkpoint()
    manager = tp.CheckpointManager(
        ckpt, directory, max_to_keep=3, options=options, init_fn=lambda: initialized.append(True)
    )
    with pytest.raises(CheckpointExistsError) as refused:
        manager.restore_or_initialize()
    message = str(refused.value)
    assert "ckpt-3, ckpt-4, ckpt-5" in message and f"backend {other!r}" in message
    assert "'zarr'" in message and how in message and "Nothing was restored or initialized" in message
    assert "unset TRACKPOINT_BACKEND" in message and "tp.convert(" in message and "another directory" in message
    assert not initialized and int(step.numpy()) == 0
    # Saving anyway (without restoring) would start the series over at ckpt-1 beside them: refused too.
    step.assign_add(1)
    with pytest.raises(CheckpointExistsError, match=r"refused to write ckpt-1: .*ckpt-5 \(backend"):
        manager.save()
    manager.close()

    monkeypatch.delenv("TRACKPOINT_BACKEND", raising=False)
    # Nothing was written or forgotten: the run goes on where it was, in its own format.
    assert tp.latest_checkpoint(directory, options=plain) == kept[-1]
    assert (
        tp.latest_checkpoint(directory, options=tp.CheckpointOptions(backend="zarr", storage_options=storage)) is None
    )
    assert _run(directory, 1, plain) == [*kept[1:], f"{directory}/ckpt-6"]


def test_latest_checkpoint_with_a_forced_backend_warns_of_newer_checkpoints_it_does_not_read(
    where: tuple[str, dict[str, Any], str], forced: Callable[[str], str], caplog: pytest.LogCaptureFixture
) -> None:
    directory, storage, other = where
    _run(directory, 2, tp.CheckpointOptions(storage_options=storage))
    how = forced("zarr")
    options = _options(how, "zarr", storage)
    with caplog.at_level(logging.WARNING, logger="trackpoint"):
        # Documented: a backend chosen explicitly reads its own format alone, so none of its checkpoints is there.
        assert tp.latest_checkpoint(directory, options=options) is None
        assert tp.latest_checkpoint(directory, options=options) is None
    warnings = [r.getMessage() for r in caplog.records if "reads only the format" in r.getMessage()]
    assert len(warnings) == 1  # once per directory: polling loops call it again and again
    assert "ckpt-1, ckpt-2" in warnings[0] and f"backend {other!r}" in warnings[0] and how in warnings[0]


def test_a_forced_manager_does_not_go_back_to_an_older_checkpoint_of_its_own_format(tmp_path: Any) -> None:
    directory = str(tmp_path)
    zarr = tp.CheckpointOptions(backend="zarr")
    _run(directory, 2, zarr)  # zarr ckpt-1, ckpt-2
    _run(directory, 2)  # resumed without a choice: bundle ckpt-3, ckpt-4
    step, ckpt = _checkpoint()
    manager = tp.CheckpointManager(ckpt, directory, max_to_keep=3, options=zarr)
    assert manager.latest_checkpoint == f"{directory}/ckpt-2"
    with pytest.raises(CheckpointExistsError, match=r"up to ckpt-4 .*: ckpt-3, ckpt-4 \(backend 'bundle'\)"):
        manager.restore_or_initialize()
    assert int(step.numpy()) == 0


def test_a_coordinated_forced_manager_refuses_on_every_rank(tmp_path: Any) -> None:
    directory = str(tmp_path)
    _run(directory, 2)
    options = tp.CheckpointOptions(backend="zarr", coordinator=SoloCoordinator("forced-solo"))
    _, ckpt = _checkpoint()
    manager = tp.CheckpointManager(ckpt, directory, max_to_keep=3, options=options)
    # What rank 0 found reaches every rank through the bookkeeping it shares.
    with pytest.raises(CheckpointExistsError, match=r"ckpt-1, ckpt-2 \(backend 'bundle'\)"):
        manager.restore_or_initialize()


def test_a_forced_manager_whose_format_holds_the_newest_goes_on_and_names_the_older_ones(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    directory = str(tmp_path)
    _run(directory, 2)  # bundle ckpt-1, ckpt-2
    zarr = tp.CheckpointOptions(backend="zarr")
    # The newest copied into zarr, as the refusal suggests: the manager goes on from it.
    newest = f"{directory}/ckpt-2"
    tp.convert(newest, newest, dst_options=zarr, overwrite=True)
    step, ckpt = _checkpoint()
    with caplog.at_level(logging.WARNING, logger="trackpoint"):
        manager = tp.CheckpointManager(ckpt, directory, max_to_keep=3, options=zarr)
    assert manager.restore_or_initialize() == newest and int(step.numpy()) == 2
    warned = [r.getMessage() for r in caplog.records if "neither lists nor retires" in r.getMessage()]
    assert len(warned) == 1 and "ckpt-1 (backend 'bundle')" in warned[0] and "older than its newest" in warned[0]
    assert manager.save() == f"{directory}/ckpt-3"
    manager.close()
