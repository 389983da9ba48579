"""How a bundle save becomes a committed checkpoint: commit strategies as objects.

A :class:`CommitStrategy` carries out the save protocol (``begin`` ->
``write_shard`` -> ``commit``, or ``abort``) on one kind of store. The
strategy is chosen from the store's declared capabilities by
:func:`choose_strategy`, never from the store's type:

* :class:`RenameCommit` (``atomic_rename``; local disks). Each shard is written
  as a complete one-shard bundle ``<prefix>_temp/part-<save_id>-iiiii-of-NNNNN``
  (data file fsynced, piece index beside it). ``commit`` merges the pieces the
  way TensorFlow's ``MergeV2Checkpoints`` does, from the shard manifests and
  without re-reading data: data files are renamed to
  ``<prefix>.data-iiiii-of-NNNNN``, the merged index is written inside the
  ``_temp`` directory and renamed to ``<prefix>.index`` last, the directory is
  fsynced and the ``_temp`` directory removed.
* :class:`CreateCommit` (``conditional_create`` without atomic rename; object
  stores). Data objects are written once, create-only, under their final
  names; a per-shard piece index ``<prefix>.part-iiiii-of-NNNNN.<save_id>.piece``
  is the only other temporary object. It is created (empty) before the shard's
  data and is the save's ownership marker: an overwriting save removes every
  marker before any data object. ``commit`` is one create-only write of
  ``<prefix>.index`` between two checks that the save's markers still exist
  (the index is retracted if the second fails), after which the pieces are
  deleted.

In both, ``<prefix>.index`` is the commit point: it is written last, and
removed first by ``delete`` and by an overwriting save.
"""

from __future__ import annotations

import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar, Final

from trackpoint.backends.bundle._names import (
    DATA_RE,
    MIN_AGE,
    PART_RE,
    basename,
    data_filename,
    index_name,
    part_index,
    piece_save_id,
    temp_dir,
)
from trackpoint.backends.bundle._writer import Row, describe_shard, merge_index, write_data
from trackpoint.backends.files import FileLayer
from trackpoint.errors import (
    BackendError,
    CheckpointExistsError,
    CheckpointNotFoundError,
    ConcurrentModificationError,
    DataLossError,
    InvalidCheckpointError,
    StorageError,
)
from trackpoint.storage import Capabilities, ShardResult, ShardSpec, WriteItem

__all__ = ["CommitStrategy", "CreateCommit", "RenameCommit", "choose_strategy"]


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
        # Piece indexes of one-shard saves written by this process, by (prefix, save_id):
        # a one-shard save's piece index already is its final index.
        self._single: dict[tuple[str, str], bytes] = {}

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
        if not overwrite and self.files.exists(index_name(prefix)):
            raise CheckpointExistsError(
                f"bundle: a checkpoint is already committed at {prefix!r}; pass overwrite=True or choose another prefix"
            )
        self.files.makedirs(self.files.dirname(prefix))

    # ------------------------------------------------------------ write_shard
    def write_shard(self, prefix: str, spec: ShardSpec, items: Sequence[WriteItem]) -> ShardResult:
        """Write one shard where this strategy keeps uncommitted data; return its manifest."""
        data_path, token = self._stage(prefix, spec)
        rows = self._write(prefix, spec, data_path, items)
        shard = describe_shard(spec, rows)
        self._publish(prefix, spec, token, shard.piece_table)
        if spec.num_shards == 1:
            with self._lock:
                self._single[(prefix, spec.save_id)] = shard.piece_table
        return shard.result

    @abstractmethod
    def _stage(self, prefix: str, spec: ShardSpec) -> tuple[str, str]:
        """Prepare shard ``spec``: return the path of its data file and a token for :meth:`_publish`."""

    @abstractmethod
    def _write(self, prefix: str, spec: ShardSpec, path: str, items: Sequence[WriteItem]) -> list[Row]:
        """Write the shard's data file at ``path``."""

    @abstractmethod
    def _publish(self, prefix: str, spec: ShardSpec, token: str, piece_table: bytes) -> None:
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
        with self._lock:
            single = self._single.pop((prefix, shards[0].spec.save_id), None)
        self._commit(prefix, shards, single, overwrite=overwrite)

    @abstractmethod
    def _commit(self, prefix: str, shards: Sequence[ShardResult], single: bytes | None, *, overwrite: bool) -> None:
        """Publish a validated shard list; ``single`` is the piece table of a one-shard save, if known."""

    # ------------------------------------------------------------------ abort
    def abort(self, prefix: str, save_id: str) -> None:
        """Remove what the save ``save_id`` wrote; never a committed checkpoint."""
        with self._lock:
            self._single.pop((prefix, save_id), None)
        self._abort(prefix, save_id)

    @abstractmethod
    def _abort(self, prefix: str, save_id: str) -> None:
        """Remove this strategy's pieces of ``save_id``."""

    # ----------------------------------------------------------- housekeeping
    def delete(self, prefix: str) -> None:
        """Delete every file of ``prefix``, committed or left over by any save, index first."""
        index = index_name(prefix)
        directory = self.files.dirname(prefix)
        self.files.delete([index])
        self.files.sync_dir(directory)
        # Piece indexes go before data objects: they are the ownership markers
        # of running saves, whose commits then refuse instead of indexing data
        # that is about to be replaced. The index is removed once more because
        # such a save may have created it after the first removal and before
        # its markers went.
        self.files.delete(self.part_files(prefix))
        self.files.delete([index])
        self.files.sync_dir(directory)
        self.files.delete(self.listed(prefix, DATA_RE))
        temp = temp_dir(prefix)
        self.files.delete([self.files.join(temp, n) for n in self.files.listdir(temp)])
        self.files.remove_dir(temp)

    def staging_base(self, name: str) -> str | None:
        """The prefix base name whose staging directory ``name`` is; ``None`` if it is none."""
        return None

    def old_enough(self, paths: Sequence[str], now: float, min_age: float) -> bool:
        """Whether the newest of ``paths`` was modified at least ``min_age`` seconds ago.

        An unknown (or vanished) modification time counts as young unless
        ``min_age`` is 0: removing a running save's pieces is worse than
        keeping a crashed one's.
        """
        if min_age <= 0:
            return True
        newest = -1.0
        for path in paths:
            t = self.files.modified(path)
            if t is None:
                return False
            newest = max(newest, t)
        return now - newest >= min_age

    def listed(self, prefix: str, pattern: re.Pattern[str]) -> list[str]:
        """Paths in ``prefix``'s directory whose name matches ``pattern`` for this prefix."""
        directory = self.files.dirname(prefix)
        base = basename(prefix)
        out = []
        for name in self.files.listdir(directory):
            m = pattern.match(name)
            if m is not None and m.group("base") == base:
                out.append(self.files.join(directory, name))
        return out

    def part_files(self, prefix: str, save_id: str | None = None) -> list[str]:
        """Piece indexes of the create strategy at ``prefix`` (of one save, or of all)."""
        pieces = self.listed(prefix, PART_RE)
        if save_id is None:
            return pieces
        return [p for p in pieces if piece_save_id(basename(p)) == save_id]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} on {self.files.store_name}>"


class RenameCommit(CommitStrategy):
    """Shards staged as one-shard bundles in ``<prefix>_temp/``, renamed into place by ``commit``."""

    name: ClassVar[str] = "rename"

    @classmethod
    def suits(cls, capabilities: Capabilities) -> bool:
        # docstring inherited
        return capabilities.atomic_rename

    def _piece(self, prefix: str, spec: ShardSpec) -> str:
        return self.files.join(temp_dir(prefix), f"part-{spec.save_id}-{spec.shard_id:05d}-of-{spec.num_shards:05d}")

    def _stage(self, prefix: str, spec: ShardSpec) -> tuple[str, str]:
        # docstring inherited
        self.files.makedirs(temp_dir(prefix))
        return data_filename(self._piece(prefix, spec), 0, 1), ""

    def _write(self, prefix: str, spec: ShardSpec, path: str, items: Sequence[WriteItem]) -> list[Row]:
        # docstring inherited
        return write_data(self.files, path, items, create_only=False)

    def _publish(self, prefix: str, spec: ShardSpec, token: str, piece_table: bytes) -> None:
        # docstring inherited
        self.files.put(index_name(self._piece(prefix, spec)), piece_table)

    def _commit(self, prefix: str, shards: Sequence[ShardResult], single: bytes | None, *, overwrite: bool) -> None:
        # docstring inherited
        index = index_name(prefix)
        directory = self.files.dirname(prefix)
        n = len(shards)
        # A one-shard save's fsynced piece index has exactly the bytes of the final index.
        table = None if n == 1 else merge_index(prefix, shards)
        if self.files.exists(index):
            if not overwrite:
                raise CheckpointExistsError(
                    f"bundle: a checkpoint is already committed at {prefix!r}; pass overwrite=True to replace it"
                )
            # Remove the commit point before any data is replaced, so no reader
            # ever pairs the old index with new data files.
            self.files.delete([index])
            self.files.sync_dir(directory)
        # Data files of the old checkpoint (or of a save that crashed mid-commit)
        # may use another shard count; none of them is referenced any more.
        self.files.delete(self.listed(prefix, DATA_RE))
        for r in shards:
            src = data_filename(self._piece(prefix, r.spec), 0, 1)
            size = self.files.size(src)
            if size != r.nbytes:
                raise DataLossError(
                    f"bundle: data of shard {r.spec.shard_id} for {prefix!r} is missing or has {size} bytes "
                    f"instead of {r.nbytes} ({src!r})"
                )
            self.files.rename(src, data_filename(prefix, r.spec.shard_id, n))
        if table is None:
            tmp = index_name(self._piece(prefix, shards[0].spec))
        else:
            tmp = self.files.join(temp_dir(prefix), f"merged-{shards[0].spec.save_id}.index")
            self.files.put(tmp, table)
        if self.files.exists(index) and not overwrite:
            # Another save committed while this one was renaming; it may have
            # replaced our data, so report instead of publishing a mixture.
            raise CheckpointExistsError(
                f"bundle: another save committed {prefix!r} concurrently; this save was not committed"
            )
        self.files.rename(tmp, index)
        self.files.sync_dir(directory)
        self.remove_temp(prefix, shards[0].spec.save_id, min_age=MIN_AGE)

    def _abort(self, prefix: str, save_id: str) -> None:
        # docstring inherited
        self.remove_temp(prefix, save_id)

    def remove_temp(self, prefix: str, save_id: str, *, min_age: float | None = None) -> None:
        """Remove the ``_temp`` pieces of ``save_id``, and with ``min_age`` also other saves' old ones.

        Pieces of other saves younger than ``min_age`` seconds (or of unknown
        age) are kept: they may belong to a save of this prefix that is still
        running. The directory itself goes only once it is empty.
        """
        temp = temp_dir(prefix)
        now = time.time()
        doomed = []
        for name in self.files.listdir(temp):
            path = self.files.join(temp, name)
            own = name.startswith((f"part-{save_id}-", f"merged-{save_id}."))
            if own or (min_age is not None and self.old_enough([path], now, min_age)):
                doomed.append(path)
        self.files.delete(doomed)
        self.files.remove_dir(temp)

    def staging_base(self, name: str) -> str | None:
        # docstring inherited
        return name[: -len("_temp")] if name.endswith("_temp") else None


class CreateCommit(CommitStrategy):
    """Data objects written create-only under their final names; one create-only index write commits."""

    name: ClassVar[str] = "create-only"

    def __init__(self, files: FileLayer) -> None:
        super().__init__(files)
        # Objects created by each save, so abort removes only those.
        self._created: dict[str, list[str]] = {}

    @classmethod
    def suits(cls, capabilities: Capabilities) -> bool:
        # docstring inherited
        return capabilities.conditional_create

    def begin(self, prefix: str, save_id: str, *, overwrite: bool) -> None:
        """Refuse or prepare; with ``overwrite`` delete everything at ``prefix`` first.

        New data objects take their final names create-only, so whatever is
        at this prefix (a committed checkpoint, leftovers of a crashed save)
        must go first; :meth:`delete` removes the index before the data. A
        save of the same prefix still running elsewhere loses its ownership
        markers before its data, so it fails with ConcurrentModificationError
        instead of committing.
        """
        super().begin(prefix, save_id, overwrite=overwrite)
        if overwrite:
            self.delete(prefix)

    def _remember(self, save_id: str, path: str) -> None:
        with self._lock:
            self._created.setdefault(save_id, []).append(path)

    def _stage(self, prefix: str, spec: ShardSpec) -> tuple[str, str]:
        """Create this shard's (empty) piece index before its data; return the data path and the marker's version.

        The piece index is the save's ownership marker: an overwriting save
        deletes it before it deletes or rewrites any data object, so as long as
        the marker exists the data objects of this shard are still this save's.
        """
        self.files.makedirs(self.files.dirname(prefix))
        part = part_index(prefix, spec)
        try:
            version = self.files.write_versioned(part, b"", if_version=None)
        except (CheckpointExistsError, ConcurrentModificationError) as exc:
            raise ConcurrentModificationError(
                f"bundle: piece index {part!r} of {prefix!r} exists already, so save_id {spec.save_id!r} is in "
                "use by another save; give every save a fresh save_id"
            ) from exc
        self._remember(spec.save_id, part)
        return data_filename(prefix, spec.shard_id, spec.num_shards), version

    def _write(self, prefix: str, spec: ShardSpec, path: str, items: Sequence[WriteItem]) -> list[Row]:
        # docstring inherited
        try:
            rows = write_data(self.files, path, items, create_only=True)
        except CheckpointExistsError as exc:
            raise self._data_conflict(prefix, path) from exc
        self._remember(spec.save_id, path)
        return rows

    def _data_conflict(self, prefix: str, path: str) -> StorageError | CheckpointExistsError:
        if self.files.exists(index_name(prefix)):
            return CheckpointExistsError(
                f"bundle: another writer committed a checkpoint at {prefix!r} while this save was writing "
                f"{path!r}; pass overwrite=True to replace it"
            )
        return ConcurrentModificationError(
            f"bundle: objects of an uncommitted save exist at {prefix!r} (a concurrent save or a crashed one; "
            f"{path!r} is already there); if that save crashed, call cleanup(directory) (with min_age=0 right after "
            "the crash) or save with overwrite=True"
        )

    def _publish(self, prefix: str, spec: ShardSpec, token: str, piece_table: bytes) -> None:
        """Replace the marker by the piece index, only if the marker is still the one this save wrote."""
        part = part_index(prefix, spec)
        try:
            # Conditional, not blind: a blind write would resurrect a marker that an
            # overwriting save deleted, and commit would then accept its data objects.
            self.files.write_versioned(part, piece_table, if_version=token)
        except (ConcurrentModificationError, CheckpointNotFoundError) as exc:
            raise ConcurrentModificationError(
                f"bundle: another save replaced the objects of {prefix!r} while this save was writing shard "
                f"{spec.shard_id} ({part!r} was removed); this save was not committed, retry it"
            ) from exc

    def _commit(self, prefix: str, shards: Sequence[ShardResult], single: bytes | None, *, overwrite: bool) -> None:
        # docstring inherited
        table = single if single is not None and len(shards) == 1 else merge_index(prefix, shards)
        index = index_name(prefix)
        n = len(shards)
        if not overwrite and self.files.exists(index):
            # The clearer error first; the create-only write below still decides races.
            raise CheckpointExistsError(
                f"bundle: a checkpoint is already committed at {prefix!r}; pass overwrite=True to replace it"
            )
        parts = [part_index(prefix, r.spec) for r in shards]
        # Markers first: if one is gone, the data objects may be another save's
        # by now, and their sizes would not tell (same model, same sizes).
        self._check_owned(prefix, parts, "before")
        for r in shards:
            path = data_filename(prefix, r.spec.shard_id, n)
            size = self.files.size(path)
            if size != r.nbytes:
                raise DataLossError(
                    f"bundle: data object {path!r} of {prefix!r} is missing or has {size} bytes instead of "
                    f"{r.nbytes}; the save cannot be committed"
                )
        if overwrite and self.files.exists(index):
            self.files.delete([index])
        try:
            # A versioned create-only write: the version lets a retraction
            # below remove this save's index and never another save's.
            version = self.files.write_versioned(index, table, if_version=None)
        except (CheckpointExistsError, ConcurrentModificationError) as exc:
            raise CheckpointExistsError(
                f"bundle: another writer committed {prefix!r} first; this save was not committed"
                + ("" if overwrite else " (pass overwrite=True to replace it)")
            ) from exc
        try:
            self._check_owned(prefix, parts, "after")
        except ConcurrentModificationError:
            # Another save took the prefix over between the check above and the
            # index write: its delete may have run before our index existed, so
            # retract it. Until then readers may see it; CRCs make that DataLossError.
            current = self.files.read_versioned(index)
            if current is not None and current.version == version:
                self.files.delete([index])
            raise
        self.files.sync_dir(self.files.dirname(prefix))
        with self._lock:
            created = self._created.pop(shards[0].spec.save_id, [])
        # Piece indexes of every shard, also those written by other processes.
        pieces = set(parts)
        pieces.update(p for p in created if PART_RE.match(basename(p)))
        self.files.delete(sorted(pieces))

    def _check_owned(self, prefix: str, parts: Sequence[str], when: str) -> None:
        """Raise ConcurrentModificationError if a piece index (ownership marker) of this save is gone."""
        for part in parts:
            if not self.files.exists(part):
                raise ConcurrentModificationError(
                    f"bundle: another save replaced the objects of {prefix!r} while this save was committing "
                    f"({part!r} was removed {when} the index was written); this save was not committed"
                )

    def _abort(self, prefix: str, save_id: str) -> None:
        # docstring inherited
        with self._lock:
            created = self._created.pop(save_id, [])
        pieces = self.part_files(prefix, save_id)
        markers = [p for p in created if PART_RE.match(basename(p))]
        if any(not self.files.exists(p) for p in markers):
            # Another save took this prefix over (its overwrite removed our
            # markers first); the data objects there may be its own by now.
            self.files.delete(sorted(set(markers) | set(pieces)))
            return
        committed = self.files.exists(index_name(prefix))
        # A listed piece index with content names a data object its save
        # created (possibly in another process): the content is written only
        # after the create-only data write succeeded. An empty one is a bare
        # marker whose data write may have failed against another save's object.
        # Such data objects are never referenced by a committed index, because
        # create-only writes kept them unique.
        derived = (
            []
            if committed
            else [
                re.sub(r"\.part-(\d+-of-\d+)\.[^.]+\.(?:piece|index)$", r".data-\1", p)
                for p in pieces
                if self.files.size(p)
            ]
        )
        self.files.delete(sorted(set(created) | set(pieces) | set(derived)))


#: Tried in this order; the first whose ``suits`` accepts the store's capabilities is used.
STRATEGIES: Final[tuple[type[CommitStrategy], ...]] = (RenameCommit, CreateCommit)


def choose_strategy(files: FileLayer) -> CommitStrategy:
    """The commit strategy for ``files``, chosen from its declared capabilities.

    Raises
    ------
    BackendError
        No strategy suits the store: it offers neither atomic rename nor
        conditional create, so no save could be committed atomically.
    """
    for cls in STRATEGIES:
        if cls.suits(files.capabilities):
            return cls(files)
    raise BackendError(
        f"bundle: store {files.store_name!r} has neither atomic rename nor conditional create, "
        "so checkpoints cannot be committed atomically; use a store that supports one of them"
    )
