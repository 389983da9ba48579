"""The save protocol shared by the commit strategies: :class:`CommitStrategy` and its steps."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar, NamedTuple

from trackpoint.backends.bundle._names import index_name
from trackpoint.backends.bundle._writer import Row, describe_shard
from trackpoint.backends.stores import FileLayer
from trackpoint.errors import CheckpointExistsError, InvalidCheckpointError
from trackpoint.storage import Capabilities, ShardResult, ShardSpec, WriteItem

__all__ = ["CommitStrategy", "Staged"]


class Staged(NamedTuple):
    """Where :meth:`CommitStrategy.write_shard` puts one shard's data."""

    #: The data file to write.
    data_path: str
    #: The ``-of-`` count the shard's final data file name uses.
    file_count: int
    #: Handed to ``_publish`` (the create strategy's marker version).
    token: str


class CommitStrategy(ABC):
    """The save protocol of the bundle format on one kind of store.

    Subclasses decide where a shard's data goes while the save runs and how
    ``commit`` publishes it; the shared steps (writing the data file, the
    piece table, merging manifests, checking the shard list) live here.
    Instances are thread-safe: shards of one save may be written concurrently.
    """

    #: Shown in ``repr(BundleBackend)`` and messages.
    name: ClassVar[str]

    def __init__(self, files: FileLayer) -> None:
        self.files = files
        self._lock = threading.Lock()

    @classmethod
    @abstractmethod
    def suits(cls, capabilities: Capabilities) -> bool:
        """Whether a store with ``capabilities`` supports this strategy."""

    # ------------------------------------------------------------------ begin
    def begin(self, prefix: str, save_id: str, *, overwrite: bool) -> None:
        """Step 1 of a save; the backend has validated ``prefix`` and ``save_id``.

        The default refuses an existing checkpoint when ``overwrite`` is
        false and creates the prefix's directory, so an unwritable location
        fails before any data is written.
        """
        if not overwrite:
            self._refuse_committed(prefix)
        self.files.makedirs(self.files.dirname(prefix))

    def _refuse_committed(self, prefix: str) -> None:
        """Raise CheckpointExistsError if a checkpoint is committed at ``prefix``.

        The check of a save without ``overwrite``, in ``begin`` and again in ``_commit``; one message for both.
        """
        if self.files.exists(index_name(prefix)):
            raise CheckpointExistsError(
                f"bundle: a checkpoint is already committed at {prefix!r}; pass overwrite=True to replace it"
            )

    # ------------------------------------------------------------ write_shard
    def write_shard(self, prefix: str, spec: ShardSpec, items: Sequence[WriteItem]) -> ShardResult:
        """Write one shard where this strategy keeps uncommitted data; return its manifest."""
        staged = self._stage(prefix, spec)
        rows = self._write(prefix, spec, staged, items)
        shard = describe_shard(spec, rows, staged.file_count, piece=self._keeps_piece(spec))
        if shard.piece_table is not None:
            self._publish(prefix, spec, staged, shard.piece_table)
        return shard.result

    def _keeps_piece(self, spec: ShardSpec) -> bool:
        """Whether shard ``spec`` gets a piece table, stored by :meth:`_publish` (the default: every shard)."""
        return True

    @abstractmethod
    def _stage(self, prefix: str, spec: ShardSpec) -> Staged:
        """Prepare shard ``spec``: where its data goes."""

    @abstractmethod
    def _write(self, prefix: str, spec: ShardSpec, staged: Staged, items: Sequence[WriteItem]) -> list[Row]:
        """Write the shard's data file."""

    @abstractmethod
    def _publish(self, prefix: str, spec: ShardSpec, staged: Staged, piece_table: bytes) -> None:
        """Store the shard's piece table once its data is durable."""

    # ----------------------------------------------------------------- commit
    def commit(self, prefix: str, shards: Sequence[ShardResult], *, overwrite: bool) -> None:
        """Publish ``shards`` as the checkpoint ``prefix``."""
        n = len(shards)
        if not n or any(
            r.spec.shard_id != i or r.spec.num_shards != n or r.spec.save_id != shards[0].spec.save_id
            for i, r in enumerate(shards)
        ):
            raise InvalidCheckpointError(
                f"bundle: commit of {prefix!r} needs every shard of one save exactly once, in shard_id order"
            )
        self._commit(prefix, shards, overwrite=overwrite)

    @abstractmethod
    def _commit(self, prefix: str, shards: Sequence[ShardResult], *, overwrite: bool) -> None:
        """Publish a validated shard list."""

    # ------------------------------------------------------------------ abort
    def abort(self, prefix: str, save_id: str) -> None:
        """Remove what the save ``save_id`` wrote; never a committed checkpoint.

        Best effort within the store's clean-up budget (``FileLayer.cleaning_up``): after a save failed
        because the store stopped answering, each listing and deletion must not wait out the retry limits
        again. What is left, ``cleanup`` removes.
        """
        with self.files.cleaning_up():
            self._abort(prefix, save_id)

    @abstractmethod
    def _abort(self, prefix: str, save_id: str) -> None:
        """Remove this strategy's pieces of ``save_id``."""

    # ----------------------------------------------------------- housekeeping
    def staging_base(self, name: str) -> str | None:
        """The prefix base name whose staging directory ``name`` is; ``None`` if it is none."""
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} on {self.files.store_name}>"
