"""The commit strategy of object stores: data written create-only under final names, one conditional index write."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import ClassVar, Final

from trackpoint.backends._post_commit import AfterCommit, undo_commit
from trackpoint.backends.bundle import _writer
from trackpoint.backends.bundle._index import header_count
from trackpoint.backends.bundle._listing import count_of, data_files, listed, part_files, prefix_files
from trackpoint.backends.bundle._names import DATA_RE, PART_RE, basename, data_filename, index_name, part_index
from trackpoint.backends.bundle._strategy import CommitStrategy, Staged
from trackpoint.backends.bundle._writer import Row, file_count, merge_index
from trackpoint.backends.stores import FileLayer
from trackpoint.errors import (
    CheckpointError,
    CheckpointExistsError,
    CheckpointNotFoundError,
    ConcurrentModificationError,
    DataLossError,
    StorageError,
)
from trackpoint.storage import MUST_NOT_EXIST, Capabilities, ShardResult, ShardSpec, VersionedBytes, WriteItem

__all__ = ["CreateCommit"]

#: Ends the messages of a save whose pieces went while it ran.
_MIN_AGE_HINT: Final = " (a cleanup removes a save's pieces only when given a min_age shorter than the save took)"


class CreateCommit(CommitStrategy):
    """Data objects written create-only under their final names; one conditional index write commits."""

    name: ClassVar[str] = "create-only"

    def __init__(self, files: FileLayer) -> None:
        super().__init__(files)
        # Objects created by each save, so abort removes only those.
        self._created: dict[str, list[str]] = {}
        # Piece indexes of one-shard saves written by this process, by (prefix, save_id): a one-shard save's
        # piece index already is its final index, and keeping it spares commit the merge (_index_table).
        # Only this strategy needs it: RenameCommit renames the piece index file itself into place.
        self._single: dict[tuple[str, str], bytes] = {}

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
        """Refuse a committed checkpoint unless ``overwrite``; then clear what is not the committed checkpoint.

        Every piece index of the prefix goes first: they are the ownership
        markers of other saves (running or crashed), which then cannot commit.
        Then the data objects that the committed index does not name: leftovers
        of crashed saves, which could otherwise block this save's create-only
        writes. The committed checkpoint stays readable until this save's
        commit replaces its index. An index that cannot be parsed keeps every
        data object (they may be its own). One listing of the directory finds
        all three kinds; the index is read only if listed, and the directory
        listed again only if markers were removed: on a fresh prefix, begin is
        one request. Without ``overwrite`` the same clearing runs once no committed checkpoint was found:
        leftovers of saves that never committed block no save (a restarted job saves again the number its
        killed save was writing), and the commit refuses an index another writer committed since.
        """
        super().begin(prefix, save_id, overwrite=overwrite)
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
            rows = _writer.write_data(self.files, staged.data_path, items, create_only=True)
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
                f"{spec.shard_id}, or a cleanup removed them ({part!r} was removed); this save was not committed, "
                f"retry it{_MIN_AGE_HINT}"
            ) from exc
        if spec.num_shards == 1 and staged.file_count == 1:
            with self._lock:
                self._single[(prefix, spec.save_id)] = piece_table

    def _commit(self, prefix: str, shards: Sequence[ShardResult], *, overwrite: bool) -> None:
        # docstring inherited
        index = index_name(prefix)
        n = len(shards)
        save_id = shards[0].spec.save_id
        # Taken before any check: a commit attempt ends the save's use of it, whatever its outcome.
        with self._lock:
            single = self._single.pop((prefix, save_id), None)
        if not overwrite:
            # The clearer error first; the create-only write below still decides races.
            self._refuse_committed(prefix)
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
            self.files.sync_dir(self.files.dirname(prefix))
        except CheckpointError as exc:
            # A marker gone, or the check (or making the index durable) failed: the save is not known to be
            # whole, so it fails, and a failed save's index must not stay visible.
            undo_commit(exc, lambda: self._retract(prefix, version, previous, previous_count), "bundle", index, prefix)
            raise
        # The commit point is passed: the save succeeded, whatever its housekeeping meets (AfterCommit).
        with self._lock:
            created = self._created.pop(save_id, [])
        # Piece indexes of every shard, also those written by other processes.
        pieces = sorted({*parts, *(p for p in created if PART_RE.match(basename(p)))})
        with AfterCommit(self.files, "bundle", prefix, self.files.dirname(prefix)) as tidy:
            tidy("deleting the save's piece indexes", lambda: self.files.delete(pieces), pieces)
            if previous_count is not None:
                # The replaced checkpoint's data: no committed index names it any more.
                tidy(
                    "deleting the data objects of the checkpoint it replaced",
                    lambda: self.files.delete(
                        [p for p in listed(self.files, prefix, DATA_RE) if count_of(p) == previous_count]
                    ),
                    f"{prefix}.data-*-of-{previous_count:05d}",
                )

    def _index_table(self, prefix: str, shards: Sequence[ShardResult], single: bytes | None, count: int) -> bytes:
        """The final index: a one-shard save's piece table if it fits, else merged from the manifests."""
        if single is not None and len(shards) == 1 and count == 1:
            return single
        return merge_index(prefix, shards, count)

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
                    f"bundle: another save replaced the objects of {prefix!r} while this save was committing, or a "
                    f"cleanup removed them ({part!r} was removed {when} the index was written); this save was not "
                    f"committed, retry it{_MIN_AGE_HINT}"
                )

    def _abort(self, prefix: str, save_id: str) -> None:
        # docstring inherited
        with self._lock:
            self._single.pop((prefix, save_id), None)
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
