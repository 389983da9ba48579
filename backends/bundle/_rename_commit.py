"""The commit strategy of stores with atomic rename (local disks): stage in ``<prefix>_temp/``, rename into place."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import ClassVar

from trackpoint.backends._leftovers import paths_old_enough
from trackpoint.backends._post_commit import AfterCommit, durable_or_undone
from trackpoint.backends.bundle import _writer
from trackpoint.backends.bundle._listing import count_of, data_files, listed
from trackpoint.backends.bundle._names import DATA_RE, MIN_AGE, data_filename, index_name, temp_dir
from trackpoint.backends.bundle._strategy import CommitStrategy, Staged
from trackpoint.backends.bundle._writer import Row, merge_index
from trackpoint.errors import CheckpointExistsError, CheckpointNotFoundError, DataLossError
from trackpoint.storage import Capabilities, ShardResult, ShardSpec, WriteItem

__all__ = ["RenameCommit"]


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
        return _writer.write_data(self.files, staged.data_path, items, create_only=False)

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

    def _commit(self, prefix: str, shards: Sequence[ShardResult], *, overwrite: bool) -> None:
        # docstring inherited
        index = index_name(prefix)
        directory = self.files.dirname(prefix)
        n = len(shards)
        if not overwrite:
            self._refuse_committed(prefix)
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
        if table is None:
            # One shard: its fsynced piece index has exactly the bytes of the final index.
            tmp = index_name(self._piece(prefix, shards[0].spec))
        else:
            tmp = self.files.join(temp_dir(prefix), f"merged-{shards[0].spec.save_id}.index")
        # ``tmp`` exists before any data file gets its final name, so while this save's data files sit at final
        # names without an index, the file that becomes the index waits in _temp. cleanup removes _temp's contents
        # before such data files and then looks for an index again (BundleBackend.cleanup): the rename below then
        # either fails, or comes first and the cleanup keeps the data.
        placed: list[str] = []
        try:
            if table is not None:
                self.files.put(tmp, table)
            for r, src in zip(shards, sources, strict=True):
                target = data_filename(prefix, r.spec.shard_id, count)
                self.files.rename(src, target)
                placed.append(target)
            for extra in range(n, count):
                target = data_filename(prefix, extra, count)
                self.files.put(target, b"")
                placed.append(target)
        except CheckpointNotFoundError as exc:
            # Nothing refers to the data files placed so far; they have a count of their own (_free_count).
            self.files.delete(placed)
            raise _staging_removed(prefix) from exc
        # The data names are durable before the index that refers to them.
        self.files.sync_dir(directory)
        # What the rename replaces, to put back should the rename not become durable (durable_or_undone).
        previous = self._index_bytes(index) if overwrite else None
        # The commit: one atomic rename over the previous index, untouched until here (its data files have other
        # names); without overwrite, one that refuses an index another writer committed since the check above.
        try:
            (self.files.rename if overwrite else self.files.rename_new)(tmp, index)
        except CheckpointExistsError:
            self.files.delete(placed)
            raise CheckpointExistsError(
                f"bundle: another save committed {prefix!r} concurrently; this save was not committed"
            ) from None
        except CheckpointNotFoundError as exc:
            raise _staging_removed(prefix) from exc

        def undo() -> None:
            # The previous checkpoint's data files are untouched (other names), so its index bytes restore it.
            if previous is None:
                self.files.delete([index])
            else:
                self.files.put(index, previous)
            self.files.delete(placed)

        durable_or_undone(lambda: self.files.sync_dir(directory), undo, "bundle", directory, index, prefix)
        # The commit point is passed: the save succeeded, whatever its housekeeping meets (AfterCommit).
        with AfterCommit(self.files, "bundle", prefix, directory) as tidy:
            tidy(
                "deleting the data files of the checkpoint it replaced",
                lambda: self.files.delete(data_files(self.files, prefix, unless_count=count)),
                f"the data files of {prefix!r} that are not {prefix}.data-*-of-{count:05d}",
            )
            tidy(
                "removing its staging directory",
                lambda: self.remove_temp(prefix, shards[0].spec.save_id, min_age=MIN_AGE),
                temp_dir(prefix),
            )

    def _index_bytes(self, index: str) -> bytes | None:
        """The bytes of the committed index ``index``; ``None`` if there is none."""
        try:
            return self.files.read(index)
        except CheckpointNotFoundError:
            return None

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
            if own or (min_age is not None and paths_old_enough(self.files, [path], now, min_age)):
                doomed.append(path)
        self.files.delete(doomed)
        self.files.remove_dir(temp)

    def staging_base(self, name: str) -> str | None:
        # docstring inherited
        return name[: -len("_temp")] if name.endswith("_temp") else None


def _staging_removed(prefix: str) -> DataLossError:
    """The error of a commit whose staged files went missing while it ran."""
    return DataLossError(
        f"bundle: staged files of {prefix!r} were removed while this save was committing (by a cleanup given a "
        "min_age shorter than the save took, or by another process); this save was not committed, retry it"
    )
