"""``trackpoint_checkpoint_deleted`` from the deletes outside ``CheckpointManager``.

The name-based ``Saver``'s ``max_to_keep`` retention and the retirement of a
checkpoint of another format that a copy replaced (``_resolve.retire``, after
``tp.convert(..., overwrite=True)``) fire the event as the manager does: once
per delete, done or failed, with the holder's backend name.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from observers import Deletes
from trackpoint.backends.bundle import BundleBackend
from trackpoint.errors import StorageError
from trackpoint.saver import Saver
from trackpoint.variables import Variable


def _saver(**kwargs: Any) -> Saver:
    return Saver({"w": Variable(np.arange(4, dtype=np.float32))}, **kwargs)


@pytest.mark.parametrize("backend", ["bundle", "zarr"])
def test_saver_retention_fires_one_event_per_checkpoint_it_deletes(
    tmp_path: Path, deletes: Deletes, backend: str
) -> None:
    saver = _saver(max_to_keep=1, options=tp.CheckpointOptions(backend=backend))
    paths = [saver.save(str(tmp_path / "model"), global_step=step) for step in (1, 2, 3)]
    assert deletes.plain == [
        {"path": paths[0], "backend": backend, "reason": "retention", "error": None},
        {"path": paths[1], "backend": backend, "reason": "retention", "error": None},
    ]
    assert [tp.checkpoint_exists(p) for p in paths] == [False, False, True]  # type: ignore[arg-type]


def test_saver_without_max_to_keep_fires_nothing(tmp_path: Path, deletes: Deletes) -> None:
    saver = _saver(max_to_keep=None)
    for step in (1, 2, 3):
        saver.save(str(tmp_path / "model"), global_step=step)
    assert deletes.plain == []


def test_a_failed_saver_retention_delete_fires_with_its_error_and_again_when_retried(
    tmp_path: Path, deletes: Deletes, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    saver = _saver(max_to_keep=1)
    first = saver.save(str(tmp_path / "model"), global_step=1)
    delete = BundleBackend.delete
    refused = StorageError("injected: the store refused the delete")

    def refuse_once(self: BundleBackend, prefix: str) -> None:
        monkeypatch.setattr(BundleBackend, "delete", delete)
        raise refused

    monkeypatch.setattr(BundleBackend, "delete", refuse_once)
    with caplog.at_level(logging.WARNING, logger="trackpoint"):
        second = saver.save(str(tmp_path / "model"), global_step=2)  # the save succeeds; its delete does not
    assert deletes.plain == [{"path": first, "backend": "bundle", "reason": "retention", "error": refused}]
    assert f"could not delete old checkpoint {first} (the next save retries)" in caplog.text
    assert tp.checkpoint_exists(first)  # type: ignore[arg-type]

    third = saver.save(str(tmp_path / "model"), global_step=3)  # retries the failed delete, then its own
    assert deletes.plain[1:] == [
        {"path": first, "backend": "bundle", "reason": "retention", "error": None},
        {"path": second, "backend": "bundle", "reason": "retention", "error": None},
    ]
    assert not tp.checkpoint_exists(first) and not tp.checkpoint_exists(second)  # type: ignore[arg-type]
    saver.save(str(tmp_path / "model"), global_step=4)
    assert [e["path"] for e in deletes.plain[3:]] == [third]


def test_a_delete_that_keeps_failing_does_not_hold_back_the_others(
    tmp_path: Path, deletes: Deletes, monkeypatch: pytest.MonkeyPatch
) -> None:
    saver = _saver(max_to_keep=1)
    stuck = saver.save(str(tmp_path / "model"), global_step=1)
    delete = BundleBackend.delete

    def refuse_stuck(self: BundleBackend, prefix: str) -> None:
        if prefix == stuck:
            raise StorageError("injected: this one cannot be deleted")
        delete(self, prefix)

    monkeypatch.setattr(BundleBackend, "delete", refuse_stuck)
    paths = [saver.save(str(tmp_path / "model"), global_step=step) for step in (2, 3, 4)]
    # Every save tried the stuck one again, and deleted the others as they left the window.
    assert [e["path"] for e in deletes.plain if e["error"] is not None] == [stuck] * 3
    assert [e["path"] for e in deletes.plain if e["error"] is None] == paths[:2]
    assert tp.checkpoint_exists(stuck) and tp.checkpoint_exists(paths[2])  # type: ignore[arg-type]
    assert not any(tp.checkpoint_exists(p) for p in paths[:2])  # type: ignore[arg-type]


def test_a_copy_replacing_another_format_fires_reason_delete_for_the_replaced_one(
    tmp_path: Path, deletes: Deletes
) -> None:
    ckpt = tp.Checkpoint(w=tp.Variable(np.zeros(4, np.float32)))
    source = ckpt.write(str(tmp_path / "source"))
    target = ckpt.write(str(tmp_path / "target"))
    # A zarr copy over the bundle checkpoint: readers without options would read the bundle one first, so the
    # copy deletes it once it is committed.
    zarr = tp.CheckpointOptions(backend="zarr")
    tp.convert(source, target, dst_options=zarr, overwrite=True)
    assert deletes.plain == [{"path": target, "backend": "bundle", "reason": "delete", "error": None}]
    assert not tp.checkpoint_exists(target, options=tp.CheckpointOptions(backend="bundle"))
    assert tp.checkpoint_exists(target, options=zarr)


def test_a_prefix_saved_again_while_its_delete_waits_for_a_retry_is_kept(
    tmp_path: Path, deletes: Deletes, monkeypatch: pytest.MonkeyPatch
) -> None:
    saver = _saver(max_to_keep=1)
    slot = saver.save(str(tmp_path / "model"), global_step=0)
    delete = BundleBackend.delete

    def refuse_once(self: BundleBackend, prefix: str) -> None:
        monkeypatch.setattr(BundleBackend, "delete", delete)
        raise StorageError("injected: the store refused the delete")

    monkeypatch.setattr(BundleBackend, "delete", refuse_once)
    other = saver.save(str(tmp_path / "model"), global_step=1)  # the delete of model-0 fails, queued for a retry
    again = saver.save(str(tmp_path / "model"), global_step=0)  # model-0 is the newest checkpoint now
    assert again == slot and tp.checkpoint_exists(slot)  # type: ignore[arg-type]
    assert not tp.checkpoint_exists(other)  # type: ignore[arg-type]
    assert [e["path"] for e in deletes.plain] == [slot, other]  # the failed attempt, then model-1's
    assert saver.last_checkpoints == [slot]
