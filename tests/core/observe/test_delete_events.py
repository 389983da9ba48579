"""``trackpoint_checkpoint_deleted``: one event per delete of a committed checkpoint, done or failed."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from observers import Deletes
from trackpoint import observe, plugins


def _ckpt() -> tp.Checkpoint:
    return tp.Checkpoint(w=tp.Variable(np.zeros(4, np.float32)))


def _fields(event: dict[str, Any]) -> dict[str, Any]:
    assert event["seconds"] >= 0
    return {k: v for k, v in event.items() if k != "seconds"}


def test_retention_fires_one_event_per_checkpoint_it_deletes(tmp_path: Path, deletes: Deletes) -> None:
    manager = tp.CheckpointManager(_ckpt(), str(tmp_path), max_to_keep=1)
    first = manager.save()
    assert deletes.events == []  # nothing left the window
    manager.save()
    assert [_fields(e) for e in deletes.events] == [
        {"path": first, "backend": "bundle", "reason": "retention", "error": None}
    ]


def test_manager_delete_and_remove_checkpoint_fire_reason_delete(tmp_path: Path, deletes: Deletes) -> None:
    manager = tp.CheckpointManager(_ckpt(), str(tmp_path), max_to_keep=None)
    one, two = manager.save(), manager.save()
    manager.delete(1)
    zarr = tp.CheckpointOptions(backend="zarr")
    three = _ckpt().write(str(tmp_path / "other-3"), options=zarr)
    tp.remove_checkpoint(three)  # found in its format from the path alone, and named after it
    tp.remove_checkpoint(str(tmp_path / "nothing-1"))  # nothing there: no event
    assert [_fields(e) for e in deletes.events] == [
        {"path": one, "backend": "bundle", "reason": "delete", "error": None},
        {"path": three, "backend": "zarr", "reason": "delete", "error": None},
    ]
    assert manager.checkpoints == [two]


def test_success_is_one_info_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    manager = tp.CheckpointManager(_ckpt(), str(tmp_path), max_to_keep=1)
    first = manager.save()
    with caplog.at_level(logging.INFO, logger="trackpoint"):
        manager.save()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("deleted")]
    assert len(lines) == 1 and re.fullmatch(rf"deleted {re.escape(first)} \(retention\) in \d+\.\d{{3}} s", lines[0])


def test_nobody_listening_names_no_backend(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # No observer, the logger below INFO: the backend (a request to find) is not looked up, nothing is logged.
    store = plugins.open_backend(str(tmp_path))
    asked: list[str] = []

    def name() -> str:
        asked.append("asked")
        return "bundle"

    prefixes = [_ckpt().write(str(tmp_path / f"ckpt-{n}")) for n in (1, 2)]
    with caplog.at_level(logging.WARNING, logger="trackpoint"):
        assert observe._relay is None
        observe.delete_checkpoint(store, prefixes[0], reason="delete", backend=name)
        assert asked == [] and not store.exists(prefixes[0])
        assert [r for r in caplog.records if r.name.startswith("trackpoint")] == []
        observer = Deletes()
        plugins.register(observer, "late")
        observe.delete_checkpoint(store, prefixes[1], reason="delete", backend=name)
    assert asked == ["asked"] and [e["path"] for e in observer.events] == [prefixes[1]]


# ---------------------------------------------------------------- a store that refuses deletes
def _refuse_deletes_of(name: str) -> Any:
    """A rule refusing S3's batch deletes (``POST ?delete``) of the files of checkpoint ``name``."""
    from faultproxy import Rule

    denied = b"<Error><Code>AccessDenied</Code><Message>injected</Message></Error>"
    return Rule("POST", r"\?delete", status=403, body=denied, body_match=rf"/{name}\.".encode(), times=1000)


@pytest.mark.s3
def test_a_failed_retention_delete_fires_with_its_error_and_again_when_retried(
    s3_endpoint: str,
    s3_bucket: str,
    s3_storage_options: dict[str, Any],
    deletes: Deletes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from faultproxy import FaultProxy

    run = f"{s3_bucket}/run"
    with FaultProxy(s3_endpoint) as proxy:
        options = tp.CheckpointOptions(
            storage_options={**s3_storage_options, "endpoint_url": proxy.url},
            backend_options={"retries": 1, "retry_base_delay": 0.01, "retry_max_delay": 0.02},
        )
        manager = tp.CheckpointManager(_ckpt(), run, max_to_keep=1, options=options)
        first = manager.save()
        proxy.add(_refuse_deletes_of("ckpt-1"))
        with caplog.at_level(logging.WARNING):
            second = manager.save()  # the save succeeds; its retention delete does not
        assert [(e["path"], e["backend"], e["reason"]) for e in deletes.events] == [(first, "s3", "retention")]
        assert isinstance(deletes.events[0]["error"], tp.StorageError)
        assert f"could not delete old checkpoint {first} (the next save retries)" in caplog.text
        assert manager.checkpoints == [first, second]  # still listed, so retried

        proxy.clear()
        manager.save()
    assert [(e["path"], e["reason"], e["error"]) for e in deletes.events[1:]] == [
        (first, "retention", None),
        (second, "retention", None),
    ]


@pytest.mark.s3
def test_a_failed_manager_delete_fires_with_the_error_it_raises(
    s3_endpoint: str, s3_bucket: str, s3_storage_options: dict[str, Any], deletes: Deletes
) -> None:
    from faultproxy import FaultProxy

    with FaultProxy(s3_endpoint) as proxy:
        options = tp.CheckpointOptions(
            storage_options={**s3_storage_options, "endpoint_url": proxy.url},
            backend_options={"retries": 1, "retry_base_delay": 0.01, "retry_max_delay": 0.02},
        )
        manager = tp.CheckpointManager(_ckpt(), f"{s3_bucket}/run", max_to_keep=None, options=options)
        first = manager.save()
        proxy.add(_refuse_deletes_of("ckpt-1"))
        with pytest.raises(tp.StorageError) as info:
            manager.delete(1)
    assert [_fields(e) for e in deletes.events] == [
        {"path": first, "backend": "s3", "reason": "delete", "error": info.value}
    ]
