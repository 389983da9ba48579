"""A retention delete that fails with any trackpoint error leaves the committed save a success, and is retried.

The delete runs after the save's commit point: whatever it raises (a store failure, or a backend refusing
with an error that is no ``StorageError``), the save returns its path, the manager lists the checkpoint,
and the checkpoint that could not be deleted stays listed, oldest first, for the next save to retire.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

import trackpoint as tp
from gated import GatedBackend
from trackpoint import plugins
from trackpoint.backends.bundle import BundleBackend
from trackpoint.backends.stores import LocalFiles
from trackpoint.errors import InvalidCheckpointError, StorageError
from trackpoint.manager import CheckpointManager
from trackpoint.storage import CheckpointOptions, ShardResult, ShardSpec, StorageBackend, WriteItem


class _DeleteRefused(GatedBackend):
    """The bundle backend on a local disk, without the gate; while ``refuse`` is set, ``delete`` raises.

    With an :class:`~trackpoint.errors.InvalidCheckpointError`: a trackpoint error that is no
    :class:`~trackpoint.errors.StorageError` (the backend refused, the store did not fail).
    """

    refuse = False
    refused: ClassVar[list[str]] = []

    def write_shard(self, prefix: str, spec: ShardSpec, items: Sequence[WriteItem]) -> ShardResult:
        return self.inner.write_shard(prefix, spec, items)

    def delete(self, prefix: str) -> None:
        if _DeleteRefused.refuse:
            _DeleteRefused.refused.append(prefix)
            raise InvalidCheckpointError(f"{self.name}: refusing to delete {prefix!r} (test)")
        self.inner.delete(prefix)


@pytest.fixture
def refusing() -> Iterator[type[_DeleteRefused]]:
    class Plugin:
        @plugins.hookimpl
        def trackpoint_register_backends(self, register: Any) -> None:
            def make(url: str, options: CheckpointOptions) -> StorageBackend:
                return _DeleteRefused(BundleBackend(LocalFiles()))

            register(plugins.BackendSpec("delete-refused", make, schemes=()))

    plugins.register(Plugin(), "delete-refused-plugin")
    try:
        yield _DeleteRefused
    finally:
        _DeleteRefused.refuse = False
        _DeleteRefused.refused = []
        plugins.unregister("delete-refused-plugin")


def test_a_retention_delete_failing_with_no_storage_error_keeps_the_save_and_is_retried(
    tmp_path: Path, refusing: type[_DeleteRefused], caplog: pytest.LogCaptureFixture
) -> None:
    assert not issubclass(InvalidCheckpointError, StorageError)  # what this test is about
    run = str(tmp_path / "run")
    options = CheckpointOptions(backend="delete-refused")
    v = tp.Variable(np.zeros(4, np.float32))
    m = CheckpointManager(tp.Checkpoint(v=v), run, max_to_keep=1, options=options)
    first = m.save()

    refusing.refuse = True
    v.assign(np.ones(4, np.float32))
    with caplog.at_level(logging.WARNING, logger="trackpoint"):
        second = m.save()  # committed: the refused delete must not make it raise

    assert second == f"{run}/ckpt-2"
    assert refusing.refused == [first]
    # The new checkpoint is the manager's and the latest; the one not deleted stays listed, oldest first.
    assert m.latest_checkpoint == second
    assert m.checkpoints == [first, second]
    assert tp.latest_checkpoint(run, options) == second
    assert any("refusing to delete" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)

    refusing.refuse = False
    third = m.save()  # retries the delete of the first, and retires the second
    assert m.checkpoints == [third]
    backend = plugins.open_backend(run, options)
    assert backend.list_checkpoints(run) == [third]
    back = tp.Variable(np.zeros(4, np.float32))
    tp.Checkpoint(v=back).restore(third, options=options)
    np.testing.assert_array_equal(back.numpy(), np.ones(4, np.float32))
