"""The bundle backend: TensorFlow's TensorBundle layout over any :class:`FileLayer`.

:class:`BundleBackend` implements the storage contract by delegating: the
save protocol to a commit strategy chosen from the store's capabilities
(:mod:`._commit`), data files to :mod:`._writer`, reading to :mod:`._reader`.
What stays here is what both strategies share: argument checks, listing,
deletion, cleanup of leftovers and the small files.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from trackpoint.backends._leftovers import old_enough, paths_old_enough
from trackpoint.backends.bundle._index import header_count
from trackpoint.backends.bundle._listing import delete_prefix
from trackpoint.backends.bundle._names import (
    DATA_RE,
    MIN_AGE,
    PART_RE,
    SAVE_ID_RE,
    SINK_TEMP_RE,
    basename,
    check_prefix,
    check_save_id,
    data_count,
    data_filename,
    index_name,
)
from trackpoint.backends.bundle._reader import BundleReader
from trackpoint.backends.stores import FileLayer, UnfinishedUpload
from trackpoint.errors import BackendError, CheckpointNotFoundError
from trackpoint.storage import (
    ANY_VERSION,
    CheckpointOptions,
    CheckpointReader,
    ShardResult,
    ShardSpec,
    StorageBackend,
    VersionCondition,
    VersionedBytes,
    WriteItem,
)

if TYPE_CHECKING:
    from trackpoint.backends.bundle._commit import CommitStrategy

__all__ = ["BundleBackend", "data_filename"]


def _upload_base(name: str) -> str | None:
    """The prefix base name an unfinished upload of the object ``name`` belongs to; ``None``: not the bundle's.

    A data object, a piece index or an index of any prefix: an upload that never
    completed is no part of a committed checkpoint, whatever its name.
    """
    m = DATA_RE.match(name) or PART_RE.match(name)
    if m is not None:
        return m.group("base")
    if name.endswith(".index") and len(name) > len(".index") and not name.startswith("."):
        return name[: -len(".index")]
    return None


def _refuse_unknown_options(files: FileLayer, given: Mapping[str, object]) -> None:
    """Refuse ``backend_options`` an object store would not read: a misspelt one would seem set.

    Here rather than in each backend's factory, so that a plugin's store gets the check too. A store that
    names none (the local disk) is left to its factory, which says that such options go unread.
    """
    valid = files.backend_option_names()
    if valid is None:
        return
    unknown = set(given) - valid
    if unknown:
        from trackpoint._suggest import with_hints
        from trackpoint.errors import BackendOptionError

        raise BackendOptionError(
            f"{files.store_name}: unknown backend option(s) {with_hints(unknown, valid)}; valid options: "
            f"{', '.join(sorted(valid))}",
            backend=files.store_name,
        )


@dataclass
class _Group:
    """One prefix's leftovers in a directory, as one listing shows them (see :meth:`BundleBackend.cleanup`)."""

    #: Piece indexes, ``_temp`` contents and hidden sink files: what a running save's commit re-checks.
    staging: list[str] = field(default_factory=list)
    #: Data files at final names: of a prefix without an index, or of a count its index does not name.
    data: list[str] = field(default_factory=list)
    #: The prefix's ``_temp`` directory, removed once emptied.
    temp: str | None = None
    #: The version of the index that ``data`` were chosen by; ``None``: the prefix had no index.
    index_version: str | None = None
    #: Whether piece indexes (the create strategy's ownership markers) were listed.
    markers: bool = False

    def paths(self) -> list[str]:
        """Everything in the group, the ``_temp`` directory included."""
        return [*self.staging, *self.data, *([self.temp] if self.temp else [])]


class BundleBackend(StorageBackend):
    """TensorFlow TensorBundle checkpoints on a :class:`~trackpoint.backends.stores.FileLayer`.

    Parameters
    ----------
    files
        The store. Its ``capabilities`` choose the commit strategy: atomic
        rename (local disks) or create-only writes (object stores). A store
        that offers neither can still be read; a save to it (or a cleanup of
        its leftovers) raises :class:`~trackpoint.errors.BackendError`, since
        no save could be committed atomically there.
    options
        Defaults for :meth:`save` when it is called without options
        (``max_shard_bytes``, ``num_writers``). On an object store its
        ``backend_options`` must be the store's (``TransferOptions``); the
        format takes none of its own.

    Raises
    ------
    BackendOptionError
        ``options.backend_options`` names a key an object store does not take.
    """

    name = "bundle"
    # Slices are stored as TensorFlow stores partitioned variables (slice entries).
    supports_slices = True
    # Tensors above max_shard_bytes become slices in data files of bounded size (TensorFlow's MaxShardSizePolicy).
    splits_large_tensors = True

    def __init__(self, files: FileLayer, *, options: CheckpointOptions | None = None) -> None:
        if options is not None and options.backend_options:
            _refuse_unknown_options(files, options.backend_options)
        self.files = files
        self.save_defaults = options or CheckpointOptions()
        self.capabilities = files.capabilities
        self.min_bytes_per_writer = files.min_bytes_per_writer
        self._chosen: CommitStrategy | None = None
        self._choosing = threading.Lock()

    @property
    def _strategy(self) -> CommitStrategy:
        """The commit strategy suiting the store, chosen when first needed.

        Imported here: the commit machinery and the data-file writer it drives
        cost a process's first read about 3 ms, and reading never uses them.
        Chosen once under a lock: a strategy keeps state across the steps of a
        save (what it created, for abort), and writer threads may be the first
        to ask.

        Raises
        ------
        BackendError
            The store offers neither atomic rename nor conditional create.
        """
        chosen = self._chosen
        if chosen is None:
            with self._choosing:
                if self._chosen is None:
                    from trackpoint.backends.bundle._commit import choose_strategy

                    self._chosen = choose_strategy(self.files)
                chosen = self._chosen
        return chosen

    @property
    def options(self) -> CheckpointOptions:
        """The defaults for :meth:`save` given to the constructor (:attr:`save_defaults`)."""
        return self.save_defaults

    # ------------------------------------------------------------------ writing
    def begin(self, prefix: str, save_id: str, *, overwrite: bool = True) -> None:
        """Start a save (see :meth:`StorageBackend.begin`).

        With ``overwrite=False`` an existing checkpoint is reported before
        anything is written. The prefix's directory is created here, so an
        unwritable location fails before any data is written. With
        ``overwrite=True`` on the create strategy the ownership markers of
        other saves of ``prefix`` and the data objects the committed index
        does not name (leftovers of crashed saves) are deleted; a save of the
        same prefix still running elsewhere then fails with
        ConcurrentModificationError instead of committing. A committed
        checkpoint at ``prefix`` is never touched here: it stays readable
        until this save's commit replaces it, and stays as it is if the save
        fails.
        """
        check_prefix(prefix)
        check_save_id(save_id)
        self._strategy.begin(prefix, save_id, overwrite=overwrite)

    def write_shard(self, prefix: str, spec: ShardSpec, items: Sequence[WriteItem]) -> ShardResult:
        # docstring inherited
        check_prefix(prefix)
        check_save_id(spec.save_id)
        return self._strategy.write_shard(prefix, spec, items)

    def commit(self, prefix: str, shards: Sequence[ShardResult], *, overwrite: bool = True) -> None:
        # docstring inherited
        check_prefix(prefix)
        self._strategy.commit(prefix, shards, overwrite=overwrite)

    def abort(self, prefix: str, save_id: str) -> None:
        # docstring inherited
        if SAVE_ID_RE.match(save_id):  # a save with any other id wrote nothing
            self._strategy.abort(prefix, save_id)

    # ------------------------------------------------------------------ reading
    def open_reader(self, prefix: str) -> CheckpointReader:
        # docstring inherited
        check_prefix(prefix)
        index = index_name(prefix)
        try:
            data = self.files.read(index)
        except CheckpointNotFoundError as exc:
            raise CheckpointNotFoundError(
                f"bundle: no checkpoint is committed at {prefix!r} ({index!r} does not exist)"
            ) from exc
        return BundleReader(self.files, prefix, data)

    # ---------------------------------------------------------------- namespace
    def exists(self, prefix: str) -> bool:
        # docstring inherited
        return self.files.exists(index_name(prefix))

    def modified(self, prefix: str) -> float | None:
        # docstring inherited: the index file is written last and is the commit point.
        return self.files.modified(index_name(prefix))

    def delete(self, prefix: str) -> None:
        # docstring inherited
        check_prefix(prefix)
        delete_prefix(self.files, prefix)

    def list_checkpoints(self, directory: str) -> list[str]:
        # docstring inherited
        out = []
        for name in self.files.listdir(directory):
            if name.endswith(".index") and len(name) > 6 and not PART_RE.match(name) and not name.startswith("."):
                out.append(self.files.join(directory, name[: -len(".index")]))
        return sorted(out)

    def cleanup(self, directory: str, *, min_age: float = MIN_AGE) -> list[str]:
        """Remove old leftovers of saves that never committed in ``directory``; return them.

        Leftovers are data objects and piece indexes whose prefix has no index,
        piece indexes of committed prefixes, data files of a committed prefix
        that its index does not name, ``<prefix>_temp`` directories, and the
        hidden temporary files (``.<name>.tmp-<hex>``) that a killed
        :class:`~trackpoint.backends.stores.LocalFiles` sink leaves for data and
        index files. They are grouped by checkpoint prefix, and a group is
        removed only when its newest piece was modified at least ``min_age``
        seconds ago: a running save keeps writing, so a young group may belong
        to a save in another process. A group whose age the store cannot tell
        is kept unless ``min_age`` is 0, which removes every leftover (for a
        single writer that knows the previous one crashed).

        A group goes in two steps, so that removing a running save's pieces
        (possible with a small ``min_age``) makes that save's commit fail
        instead of publishing a checkpoint without its data: first the staging
        pieces (piece indexes, ``_temp`` contents, hidden sink files), which a
        commit re-checks after it has published its index; then the index is
        read again, and the data files go only if it is still the one they were
        chosen by (none, or the same version). If a committed prefix still has
        piece indexes, its data files stay for a later cleanup: the save that
        wrote them may be committing, and it puts the replaced index back if its
        commit fails.

        Unfinished uploads of the prefixes' objects (S3 multipart uploads of a
        killed save: invisible, but stored and billed) belong to the groups
        too, judged by their newest part, and are aborted with them; they are
        reported as :meth:`UnfinishedUpload.describe
        <trackpoint.backends.stores.UnfinishedUpload.describe>` says.
        """
        groups = self._leftover_groups(directory)
        uploads = self._upload_groups(directory)
        now = time.time()
        removed: list[str] = []
        for base in sorted(groups.keys() | uploads.keys()):
            group = groups.get(base, _Group())
            pending = uploads.get(base, [])
            # The directory's own time counts too: creating or removing a
            # piece inside it updates it, even when the piece is gone by now.
            if not paths_old_enough(self.files, group.paths(), now, min_age):
                continue
            if not old_enough((u.modified for u in pending), now, min_age):
                continue
            self.files.abort_uploads(pending)
            removed.extend(u.describe() for u in pending)
            removed.extend(self._remove_group(directory, base, group))
        return removed

    def _remove_group(self, directory: str, base: str, group: _Group) -> list[str]:
        """Remove one prefix's leftovers, staging pieces before data files (see :meth:`cleanup`); return them.

        With the commit this is a Dekker pair on a store whose reads see every
        completed write: the commit publishes its index, then checks its
        staging pieces (the rename strategy does both in one rename of its
        staged index); this removes them, then checks the index. At least one
        side sees the other's write, so either the commit fails (and retracts
        its index) or these data files are kept.
        """
        self.files.delete(group.staging)
        removed = list(group.staging)
        if group.temp is not None:
            self.files.remove_dir(group.temp)
            removed.append(group.temp)
        if not group.data or (group.markers and group.index_version is not None):
            return removed
        current = self.files.read_versioned(self.files.join(directory, index_name(base)))
        if (None if current is None else current.version) != group.index_version:
            return removed  # a save committed (or the prefix changed) since the listing: its data stay
        self.files.delete(group.data)
        return removed + group.data

    def _stray_data(
        self, directory: str, names: list[str], committed: set[str]
    ) -> tuple[dict[str, str], dict[str, str]]:
        """Data files of committed prefixes that their index does not name, mapped to their prefix base.

        They are left by a save that crashed after its index replaced the old
        one (the old data) or before it (its own data), or belong to a save
        still running. Only prefixes with data files of more than one file
        count have any; their index is read to tell which count it uses.
        Also returned: per prefix base, the version of the index read.
        """
        counts: dict[str, dict[int, list[str]]] = {}
        for name in names:
            parsed = data_count(name)
            if parsed is not None and parsed[0] in committed:
                counts.setdefault(parsed[0], {}).setdefault(parsed[1], []).append(name)
        out: dict[str, str] = {}
        versions: dict[str, str] = {}
        for base, by_count in counts.items():
            if len(by_count) < 2:
                continue
            index = self.files.join(directory, index_name(base))
            current = self.files.read_versioned(index)
            keep = None if current is None else header_count(current.data, index)
            if current is None or keep is None:
                continue  # an unreadable index may name any of them
            versions[base] = current.version
            for count, found in by_count.items():
                if count != keep:
                    out.update(dict.fromkeys(found, base))
        return out, versions

    def leftovers(self, directory: str) -> list[str]:
        # docstring inherited; unfinished uploads as UnfinishedUpload.describe() words them (see cleanup).
        found = {p for group in self._leftover_groups(directory).values() for p in group.paths()}
        found.update(u.describe() for pending in self._upload_groups(directory).values() for u in pending)
        return sorted(found)

    def committed_leftovers(self, directory: str) -> list[str]:
        """The leftovers in ``directory`` that only a committed checkpoint leaves: data files whose index is gone.

        The rename strategy (local disks) gives data files their final names in the commit, after the file that
        becomes the index waits in the prefix's ``_temp`` directory: final data files without an index and without
        a ``_temp`` are a checkpoint whose index was deleted. The create-only strategy (object stores) writes the
        data under final names before the index, so there such files may be an interrupted save's as well, and
        none are listed: this backend cannot tell them apart.
        """
        if self._strategy.name != "rename":
            return []
        groups = self._leftover_groups(directory)
        return sorted(p for g in groups.values() if g.temp is None and g.index_version is None for p in g.data)

    def _upload_groups(self, directory: str) -> dict[str, list[UnfinishedUpload]]:
        """Per prefix base: the unfinished uploads of its objects in ``directory`` (none on most stores)."""
        groups: dict[str, list[UnfinishedUpload]] = {}
        for upload in self.files.unfinished_uploads(directory):
            base = _upload_base(basename(upload.path))
            if base is not None:
                groups.setdefault(base, []).append(upload)
        return groups

    def _leftover_groups(self, directory: str) -> dict[str, _Group]:
        """Per prefix base: its leftovers in ``directory``, from one listing (and one of each staging directory)."""
        names = self.files.listdir(directory)
        committed = {n[: -len(".index")] for n in names if n.endswith(".index") and not PART_RE.match(n)}
        stray, versions = self._stray_data(directory, names, committed)
        groups: dict[str, _Group] = {}
        for name in names:
            path = self.files.join(directory, name)
            base = self._leftover_base(name, committed) or stray.get(name)
            if base is not None:
                group = groups.setdefault(base, _Group(index_version=versions.get(base)))
                (group.data if DATA_RE.match(name) else group.staging).append(path)
                group.markers = group.markers or PART_RE.match(name) is not None
            elif (base := self._strategy.staging_base(name)) is not None:
                group = groups.setdefault(base, _Group(index_version=versions.get(base)))
                group.temp = path
                group.staging.extend(self.files.join(path, n) for n in self.files.listdir(path))
        return groups

    @staticmethod
    def _leftover_base(name: str, committed: set[str]) -> str | None:
        """The prefix (base name) a top-level leftover belongs to, ``None`` if ``name`` is none."""
        t = SINK_TEMP_RE.match(name)
        if t is not None:
            inner = t.group("name")
            m = DATA_RE.match(inner) or PART_RE.match(inner)
            if m is not None:
                return m.group("base")
            return inner[: -len(".index")] if inner.endswith(".index") else None
        m = PART_RE.match(name)
        if m is not None:
            return m.group("base")
        m = DATA_RE.match(name)
        if m is not None and m.group("base") not in committed:
            return m.group("base")
        return None

    # ------------------------------------------------------------- small files
    def read_file(self, path: str) -> VersionedBytes | None:
        # docstring inherited
        return self.files.read_versioned(path)

    def write_file(self, path: str, data: bytes, *, if_version: VersionCondition | None = ANY_VERSION) -> str:
        # docstring inherited
        self.files.makedirs(self.files.dirname(path))
        return self.files.write_versioned(path, data, if_version=if_version)

    def delete_file(self, path: str) -> None:
        # docstring inherited
        self.files.delete([path])

    def dirname(self, path: str) -> str:
        # docstring inherited
        return self.files.dirname(path)

    def join(self, directory: str, name: str) -> str:
        # docstring inherited
        return self.files.join(directory, name)

    def close(self) -> None:
        # docstring inherited
        self.files.close()

    def __repr__(self) -> str:
        try:
            commit = f"{self._strategy.name} commit"
        except BackendError:
            commit = "read only: no atomic commit"
        return f"<BundleBackend on {self.files.store_name} ({commit})>"
