"""How a bundle save becomes a committed checkpoint: commit strategies as objects.

A :class:`CommitStrategy` carries out the save protocol (``begin`` ->
``write_shard`` -> ``commit``, or ``abort``) on one kind of store. The
strategy is chosen from the store's declared capabilities by
:func:`choose_strategy`, never from the store's type:

* :class:`RenameCommit` (``atomic_rename``; local disks). Each shard's data
  file is written (and fsynced) as ``<prefix>_temp/part-<save_id>-iiiii-of-NNNNN``;
  a one-shard save also writes its piece index beside it, which is then
  already the final index. ``commit`` merges the pieces the way TensorFlow's
  ``MergeV2Checkpoints`` does, from the shard manifests and without
  re-reading data, renames the data files to their final names, and renames
  the merged index (or the one-shard piece index) over ``<prefix>.index`` last.
* :class:`CreateCommit` (``conditional_create`` without atomic rename; object
  stores). Data objects are written once, create-only, under their final
  names; a per-shard piece index ``<prefix>.part-iiiii-of-MMMMM.<save_id>.piece``
  is the only other temporary object. It is created (empty) before the shard's
  data and is the save's ownership marker: an overwriting save removes every
  marker before any data object. ``commit`` is one conditional write of
  ``<prefix>.index`` (create-only, or replacing exactly the index it read)
  between two checks that the save's markers still exist.

Neither strategy touches a committed checkpoint before the new index is in
place: TensorFlow derives data file names from the prefix, the shard number
and the shard count (``<prefix>.data-iiiii-of-NNNNN``), so a save whose shard
count equals the committed checkpoint's names its files for one more shard
(the extra data file is empty) and the two sets of names never meet. After
the index is replaced, the old checkpoint's data files are deleted.
"""

from __future__ import annotations

import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar, Final, NamedTuple

from trackpoint.backends.bundle._index import header_count
from trackpoint.backends.bundle._listing import count_of, data_files, listed, old_enough, part_files, prefix_files
from trackpoint.backends.bundle._names import (
    DATA_RE,
    MIN_AGE,
    PART_RE,
    basename,
    data_filename,
    index_name,
    part_index,
    temp_dir,
)
from trackpoint.backends.bundle._writer import Row, describe_shard, file_count, merge_index, write_data
from trackpoint.backends.stores import FileLayer
from trackpoint.errors import (
    BackendError,
    CheckpointExistsError,
    CheckpointNotFoundError,
    ConcurrentModificationError,
    DataLossError,
    InvalidCheckpointError,
    StorageError,
)
from trackpoint.storage import MUST_NOT_EXIST, Capabilities, ShardResult, ShardSpec, VersionedBytes, WriteItem

__all__ = ["CommitStrategy", "CreateCommit", "RenameCommit", "choose_strategy"]


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
        staged = self._stage(prefix, spec)
        rows = self._write(prefix, spec, staged, items)
        shard = describe_shard(spec, rows, staged.file_count, piece=self._keeps_piece(spec))
        if shard.piece_table is not None:
            self._publish(prefix, spec, staged, shard.piece_table)
            if spec.num_shards == 1 and staged.file_count == 1:
                with self._lock:
                    self._single[(prefix, spec.save_id)] = shard.piece_table
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
        with self._lock:
            single = self._single.pop((prefix, shards[0].spec.save_id), None)
        self._commit(prefix, shards, single, overwrite=overwrite)

    @abstractmethod
    def _commit(self, prefix: str, shards: Sequence[ShardResult], single: bytes | None, *, overwrite: bool) -> None:
        """Publish a validated shard list; ``single`` is the piece table of a one-shard save, if known."""

    def _index_table(self, prefix: str, shards: Sequence[ShardResult], single: bytes | None, count: int) -> bytes:
        """The final index: a one-shard save's piece table if it fits, else merged from the manifests."""
        if single is not None and len(shards) == 1 and count == 1:
            return single
        return merge_index(prefix, shards, count)

    # ------------------------------------------------------------------ abort
    def abort(self, prefix: str, save_id: str) -> None:
        """Remove what the save ``save_id`` wrote; never a committed checkpoint.

        Best effort within the store's clean-up budget (``FileLayer.cleaning_up``): after a save failed
        because the store stopped answering, each listing and deletion must not wait out the retry limits
        again. What is left, ``cleanup`` removes.
        """
        with self._lock:
            self._single.pop((prefix, save_id), None)
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


class RenameCommit(CommitStrategy):
    """Shards staged as one-shard bundles in ``<prefix>_temp/``, renamed into place by ``commit``."""

    name: ClassVar[str] = "rename"

    @classmethod
    def suits(cls, capabilities: Capabilities) -> bool:
        # docstring inherited
        return capabilities.atomic_rename

    def _piece(self, prefix: str, spec: ShardSpec) -> str:
        return self.files.join(temp_dir(prefix), f"part-{spec.save_id}-{spec.shard_id:05d}-of-{spec.num_shards:05d}")

    def _stage(self, prefix: str, spec: ShardSpec) -> Staged:
        # docstring inherited
        self.files.makedirs(temp_dir(prefix))
        # The final names are chosen by commit, which sees the committed checkpoint of that moment.
        return Staged(data_filename(self._piece(prefix, spec), 0, 1), spec.num_shards, "")

    def _write(self, prefix: str, spec: ShardSpec, staged: Staged, items: Sequence[WriteItem]) -> list[Row]:
        # docstring inherited
        return write_data(self.files, staged.data_path, items, create_only=False)

    def _keeps_piece(self, spec: ShardSpec) -> bool:
        # A one-shard save's piece index becomes its final index (_commit). With more shards the commit
        # merges their manifests, and a piece index would be built, written, fsynced and deleted unread.
        return spec.num_shards == 1

    def _publish(self, prefix: str, spec: ShardSpec, staged: Staged, piece_table: bytes) -> None:
        # docstring inherited
        self.files.put(index_name(self._piece(prefix, spec)), piece_table)

    def _free_count(self, prefix: str, n: int) -> int:
        """The smallest data file count from ``n`` up that no data file of ``prefix`` uses.

        Data files at final names only come from commits, so the counts in use
        are the committed checkpoint's and, after a crash, those of a commit
        that never renamed its index into place.
        """
        used = {c for path in listed(self.files, prefix, DATA_RE) if (c := count_of(path)) is not None}
        count = n
        while count in used:
            count += 1
        return count

    def _commit(self, prefix: str, shards: Sequence[ShardResult], single: bytes | None, *, overwrite: bool) -> None:
        # docstring inherited
        index = index_name(prefix)
        directory = self.files.dirname(prefix)
        n = len(shards)
        if not overwrite and self.files.exists(index):
            raise CheckpointExistsError(
                f"bundle: a checkpoint is already committed at {prefix!r}; pass overwrite=True to replace it"
            )
        count = self._free_count(prefix, n)
        table = None if n == 1 and count == 1 else merge_index(prefix, shards, count)
        sources = [data_filename(self._piece(prefix, r.spec), 0, 1) for r in shards]
        # Every shard is checked before any is renamed, so a missing one leaves no data at final names.
        for r, src, size in zip(shards, sources, self.files.sizes(sources), strict=True):
            if size != r.nbytes:
                raise DataLossError(
                    f"bundle: data of shard {r.spec.shard_id} for {prefix!r} is missing or has {size} bytes "
                    f"instead of {r.nbytes} ({src!r})"
                )
        for r, src in zip(shards, sources, strict=True):
            self.files.rename(src, data_filename(prefix, r.spec.shard_id, count))
        for extra in range(n, count):
            self.files.put(data_filename(prefix, extra, count), b"")
        if table is None:
            # One shard: its fsynced piece index has exactly the bytes of the final index.
            tmp = index_name(self._piece(prefix, shards[0].spec))
        else:
            tmp = self.files.join(temp_dir(prefix), f"merged-{shards[0].spec.save_id}.index")
            self.files.put(tmp, table)
        # The data names are durable before the index that refers to them.
        self.files.sync_dir(directory)
        # The commit: one atomic rename over the previous index, untouched until here (its data files have other
        # names); without overwrite, one that refuses an index another writer committed since the check above.
        try:
            (self.files.rename if overwrite else self.files.rename_new)(tmp, index)
        except CheckpointExistsError:
            # The data files renamed into place have a count of their own (_free_count): only ours.
            self.files.delete([data_filename(prefix, i, count) for i in range(count)])
            raise CheckpointExistsError(
                f"bundle: another save committed {prefix!r} concurrently; this save was not committed"
            ) from None
        self.files.sync_dir(directory)
        self.files.delete(data_files(self.files, prefix, unless_count=count))
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
            if own or (min_age is not None and old_enough(self.files, [path], now, min_age)):
                doomed.append(path)
        self.files.delete(doomed)
        self.files.remove_dir(temp)

    def staging_base(self, name: str) -> str | None:
        # docstring inherited
        return name[: -len("_temp")] if name.endswith("_temp") else None


class CreateCommit(CommitStrategy):
    """Data objects written create-only under their final names; one conditional index write commits."""

    name: ClassVar[str] = "create-only"

    def __init__(self, files: FileLayer) -> None:
        super().__init__(files)
        # Objects created by each save, so abort removes only those.
        self._created: dict[str, list[str]] = {}

    @classmethod
    def suits(cls, capabilities: Capabilities) -> bool:
        # docstring inherited
        return capabilities.conditional_create

    def _committed(self, prefix: str) -> tuple[VersionedBytes | None, int | None]:
        """The committed index (``None`` if absent) and its data file count (``None`` if unreadable)."""
        index = index_name(prefix)
        current = self.files.read_versioned(index)
        if current is None:
            return None, None
        return current, header_count(current.data, index)

    def begin(self, prefix: str, save_id: str, *, overwrite: bool) -> None:
        """Refuse or prepare; with ``overwrite`` clear what is not the committed checkpoint.

        Every piece index of the prefix goes first: they are the ownership
        markers of other saves (running or crashed), which then cannot commit.
        Then the data objects that the committed index does not name: leftovers
        of crashed saves, which could otherwise block this save's create-only
        writes. The committed checkpoint stays readable until this save's
        commit replaces its index. An index that cannot be parsed keeps every
        data object (they may be its own). One listing of the directory finds
        all three kinds; the index is read only if listed, and the directory
        listed again only if markers were removed: on a fresh prefix, begin is
        one request.
        """
        super().begin(prefix, save_id, overwrite=overwrite)
        if not overwrite:
            return
        try:
            found = prefix_files(self.files, prefix)
            if found.parts:
                self.files.delete(found.parts)
                # Listed again: the saves whose markers went may have created data objects since.
                current, count = self._committed(prefix)
                data = data_files(self.files, prefix)
            else:
                # No save's marker listed, so every listed data object is the committed checkpoint's or a
                # crashed save's: a save creates its marker before its data. One created since the listing
                # is a save's whose marker came later, and not for this begin to remove. Without an index
                # listed, none is committed, and reading it would be a round trip for nothing.
                current, count = self._committed(prefix) if found.has_index else (None, None)
                data = found.data
            if current is None:
                self.files.delete(data)
            elif count is not None:
                self.files.delete([p for p in data if count_of(p) != count])
        except CheckpointNotFoundError:
            # The location itself is missing (an object store's bucket): there is
            # nothing to clear, and the first write reports the real cause.
            pass

    def _remember(self, save_id: str, path: str) -> None:
        with self._lock:
            self._created.setdefault(save_id, []).append(path)

    def _stage(self, prefix: str, spec: ShardSpec) -> Staged:
        """Choose the shard's data name and create its (empty) piece index before the data.

        The data file count is the shard count, or one more if the committed
        checkpoint uses the shard count: its data objects keep their names
        until this save's commit has replaced the index. The piece index is
        the save's ownership marker: an overwriting save deletes it before it
        deletes or rewrites any data object, so as long as the marker exists
        the data objects of this shard are still this save's.
        """
        self.files.makedirs(self.files.dirname(prefix))
        _, committed = self._committed(prefix)
        count = spec.num_shards + 1 if committed == spec.num_shards else spec.num_shards
        part = part_index(prefix, spec, count)
        try:
            version = self.files.write_versioned(part, b"", if_version=MUST_NOT_EXIST)
        except (CheckpointExistsError, ConcurrentModificationError) as exc:
            raise ConcurrentModificationError(
                f"bundle: piece index {part!r} of {prefix!r} exists already, so save_id {spec.save_id!r} is in "
                "use by another save; give every save a fresh save_id"
            ) from exc
        self._remember(spec.save_id, part)
        return Staged(data_filename(prefix, spec.shard_id, count), count, version)

    def _write(self, prefix: str, spec: ShardSpec, staged: Staged, items: Sequence[WriteItem]) -> list[Row]:
        # docstring inherited
        try:
            rows = write_data(self.files, staged.data_path, items, create_only=True)
        except CheckpointExistsError as exc:
            raise self._data_conflict(prefix, staged.data_path, staged.file_count) from exc
        self._remember(spec.save_id, staged.data_path)
        return rows

    def _data_conflict(self, prefix: str, path: str, count: int) -> StorageError | CheckpointExistsError:
        if self._committed(prefix)[1] == count:
            return CheckpointExistsError(
                f"bundle: another writer committed a checkpoint at {prefix!r} while this save was writing "
                f"{path!r}; this save was not committed, retry it"
            )
        return ConcurrentModificationError(
            f"bundle: objects of an uncommitted save exist at {prefix!r} (a concurrent save or a crashed one; "
            f"{path!r} is already there); if that save crashed, call cleanup(directory) (with min_age=0 right after "
            "the crash) or save with overwrite=True"
        )

    def _publish(self, prefix: str, spec: ShardSpec, staged: Staged, piece_table: bytes) -> None:
        """Replace the marker by the piece index, only if the marker is still the one this save wrote."""
        part = part_index(prefix, spec, staged.file_count)
        try:
            # Conditional, not blind: a blind write would resurrect a marker that an
            # overwriting save deleted, and commit would then accept its data objects.
            self.files.write_versioned(part, piece_table, if_version=staged.token)
        except (ConcurrentModificationError, CheckpointNotFoundError) as exc:
            raise ConcurrentModificationError(
                f"bundle: another save replaced the objects of {prefix!r} while this save was writing shard "
                f"{spec.shard_id} ({part!r} was removed); this save was not committed, retry it"
            ) from exc

    def _commit(self, prefix: str, shards: Sequence[ShardResult], single: bytes | None, *, overwrite: bool) -> None:
        # docstring inherited
        index = index_name(prefix)
        n = len(shards)
        save_id = shards[0].spec.save_id
        if not overwrite and self.files.exists(index):
            # The clearer error first; the create-only write below still decides races.
            raise CheckpointExistsError(
                f"bundle: a checkpoint is already committed at {prefix!r}; pass overwrite=True to replace it"
            )
        count = file_count(prefix, shards)
        table = self._index_table(prefix, shards, single, count)
        parts = [part_index(prefix, r.spec, count) for r in shards]
        # The markers and the data objects in one round of stats: asked one by one, they cost three round
        # trips per shard with the check after the index write, seconds for a save of many processes on a
        # cloud store. A missing marker is reported first: the data objects may then be another save's, and
        # their sizes would not tell (same model, same sizes). The check after the index write is what
        # keeps another save's data from being committed.
        datas = [data_filename(prefix, r.spec.shard_id, count) for r in shards]
        stats = self.files.sizes([*parts, *datas])
        self._check_owned(prefix, parts, "before", stats[: len(parts)])
        for r, path, size in zip(shards, datas, stats[len(parts) :], strict=True):
            if size != r.nbytes:
                raise DataLossError(
                    f"bundle: data object {path!r} of {prefix!r} is missing or has {size} bytes instead of "
                    f"{r.nbytes}; the save cannot be committed"
                )
        for extra in range(n, count):
            path = data_filename(prefix, extra, count)
            try:
                self.files.put(path, b"", create_only=True)
            except CheckpointExistsError as exc:
                raise self._data_conflict(prefix, path, count) from exc
            self._remember(save_id, path)
        previous, previous_count = self._committed(prefix)
        if previous is not None and not overwrite:
            raise CheckpointExistsError(
                f"bundle: another writer committed {prefix!r} first; this save was not committed "
                "(pass overwrite=True to replace it)"
            )
        if previous_count == count:
            # Its data objects would be this save's: another save committed in between.
            raise ConcurrentModificationError(
                f"bundle: another save committed {prefix!r} with this save's data names while it was writing; "
                "this save was not committed, retry it"
            )
        try:
            # The commit: create-only, or replacing exactly the index read above.
            # The version lets a retraction below undo this write and no other.
            version = self.files.write_versioned(
                index, table, if_version=MUST_NOT_EXIST if previous is None else previous.version
            )
        except (CheckpointExistsError, ConcurrentModificationError, CheckpointNotFoundError) as exc:
            raise CheckpointExistsError(
                f"bundle: another writer committed {prefix!r} first; this save was not committed"
                + ("" if overwrite else " (pass overwrite=True to replace it)")
            ) from exc
        try:
            self._check_owned(prefix, parts, "after")
        except ConcurrentModificationError:
            self._retract(prefix, version, previous, previous_count)
            raise
        self.files.sync_dir(self.files.dirname(prefix))
        with self._lock:
            created = self._created.pop(save_id, [])
        # Piece indexes of every shard, also those written by other processes.
        pieces = set(parts)
        pieces.update(p for p in created if PART_RE.match(basename(p)))
        self.files.delete(sorted(pieces))
        if previous_count is not None:
            # The replaced checkpoint's data: no committed index names it any more.
            self.files.delete([p for p in listed(self.files, prefix, DATA_RE) if count_of(p) == previous_count])

    def _retract(self, prefix: str, version: str, previous: VersionedBytes | None, previous_count: int | None) -> None:
        """Undo this save's index write after another save took the prefix over.

        The taker's ``begin`` may have deleted this save's data objects before
        the index existed. The index goes back to the replaced one if that
        checkpoint's data objects are all still there, else it is removed; an
        index another save wrote meanwhile is left alone.
        """
        index = index_name(prefix)
        current = self.files.read_versioned(index)
        if current is None or current.version != version:
            return
        if previous is not None and previous_count is not None:
            names = {basename(p) for p in listed(self.files, prefix, DATA_RE)}
            if all(basename(data_filename(prefix, i, previous_count)) in names for i in range(previous_count)):
                try:
                    self.files.write_versioned(index, previous.data, if_version=version)
                except (ConcurrentModificationError, CheckpointNotFoundError):
                    pass  # another save's index replaced ours meanwhile: it is not ours to undo
                return
        self.files.delete([index])

    def _check_owned(
        self, prefix: str, parts: Sequence[str], when: str, sizes: Sequence[int | None] | None = None
    ) -> None:
        """Raise ConcurrentModificationError if a piece index (ownership marker) of this save is gone.

        ``sizes`` are the markers' sizes if already asked; else they are asked together.
        """
        for part, size in zip(parts, self.files.sizes(parts) if sizes is None else sizes, strict=True):
            if size is None:
                raise ConcurrentModificationError(
                    f"bundle: another save replaced the objects of {prefix!r} while this save was committing "
                    f"({part!r} was removed {when} the index was written); this save was not committed"
                )

    def _abort(self, prefix: str, save_id: str) -> None:
        # docstring inherited
        with self._lock:
            created = self._created.pop(save_id, [])
        pieces = part_files(self.files, prefix, save_id)
        markers = [p for p in created if PART_RE.match(basename(p))]
        if None in self.files.sizes(markers):
            # Another save took this prefix over (its overwrite removed our
            # markers first); the data objects there may be its own by now.
            self.files.delete(sorted(set(markers) | set(pieces)))
            return
        current, committed = self._committed(prefix)
        # A listed piece index with content names a data object its save
        # created (possibly in another process): the content is written only
        # after the create-only data write succeeded. An empty one is a bare
        # marker whose data write may have failed against another save's object.
        # Create-only writes kept such data objects unique, so the committed
        # index names them only if it is this save's own (a commit that failed
        # after its index write): data of the committed count stays.
        derived: list[str] = []
        if current is None or committed is not None:
            candidates = [(p, re.sub(r"\.part-(\d+-of-\d+)\.[^.]+\.(?:piece|index)$", r".data-\1", p)) for p in pieces]
            candidates = [(p, data) for p, data in candidates if count_of(data) != committed]
            sizes = self.files.sizes([p for p, _ in candidates])
            derived = [data for (_, data), size in zip(candidates, sizes, strict=True) if size]
        doomed = set(created) | set(pieces) | set(derived)
        if committed is not None:
            doomed = {p for p in doomed if PART_RE.match(basename(p)) or count_of(p) != committed}
        self.files.delete(sorted(doomed))


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
