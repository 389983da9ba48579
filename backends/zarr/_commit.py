"""How a save becomes visible: commit strategies, chosen from the store's declared capabilities.

* :class:`RenameCommit` (stores with an atomic rename: local disk). A save
  writes the group ``P.zarr.tmp-<save_id>`` beside the target, born with an
  owner record (host, pid); commit writes its root ``zarr.json`` and renames
  the directory to ``P.zarr``. Cleanup recognises the leftovers of dead
  writers by their owner, and takes a leftover by renaming it away before it
  removes anything in it: one rename of the temporary group wins, the
  commit's or the cleanup's.
* :class:`CreateCommit` (stores with a conditional create: S3, GCS). Each
  shard creates its marker ``P.zarr/v-<save_id>/.trackpoint-shard-<i>`` and
  then writes its arrays beside it; the root ``P.zarr/zarr.json``, written
  last, is the commit point: created only if absent, or replaced when
  overwriting. The commit checks the markers after the root is written (and
  puts back what the root was if one is gone); cleanup lists unfinished
  uploads before objects, removes the markers it listed before it reads the
  root once more, and then removes the objects it listed. Then the replaced
  save's data and the markers are deleted. A save killed
  while it streamed a chunk leaves an unfinished upload (S3 multipart) that
  no listing of objects shows; :meth:`CreateCommit.leftovers` lists those
  below the directory and reports them with their save, so that cleanup
  aborts them.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from trackpoint import _paths
from trackpoint.backends._leftovers import old_enough, paths_old_enough
from trackpoint.backends._post_commit import AfterCommit, durable_or_undone, undo_commit
from trackpoint.backends.stores import FileLayer, UnfinishedUpload
from trackpoint.backends.zarr import _layout, _tree
from trackpoint.errors import (
    BackendError,
    CheckpointError,
    CheckpointExistsError,
    CheckpointNotFoundError,
    ConcurrentModificationError,
    DataLossError,
    InvalidCheckpointError,
)
from trackpoint.storage import MUST_NOT_EXIST, ShardSpec, VersionedBytes

__all__ = ["CommitStrategy", "CreateCommit", "Leftover", "RenameCommit", "active", "host_tag", "strategy_for"]

_TMP: Final = ".tmp-"
_OWNER: Final = ".trackpoint-owner"
# A shard's marker in its save's data directory (create strategy), followed by the shard number.
_MARKER: Final = ".trackpoint-shard-"
# Shard markers checked one stat each up to this many, above by listing them: object stores bill a listing
# (S3 LIST, GCS and Azure list: class A / write operations) like about a dozen stats (HEAD: class B / read).
_STATS_PER_LISTING: Final = 12
# What an overwrite without an atomic exchange renames the replaced group to (rename strategy).
_REPLACED: Final = "-replaced"
# How a save's staging comes to be removed under it, for the errors that say so.
_MIN_AGE_HINT: Final = (
    " (a cleanup removes a running save's arrays only when given a min_age shorter than the save took)"
)
# A half-created temporary group (see RenameCommit.prepare) is this young at most.
_OWNERLESS_GRACE: Final = 60.0

# Saves with a write_shard or commit call running in this process; cleanup()
# never removes those, whatever their age.
_ACTIVE_LOCK = threading.Lock()
_ACTIVE: dict[str, int] = {}


@contextlib.contextmanager
def active(save_id: str) -> Iterator[None]:
    """Mark ``save_id`` as being written by this process for the duration."""
    with _ACTIVE_LOCK:
        _ACTIVE[save_id] = _ACTIVE.get(save_id, 0) + 1
    try:
        yield
    finally:
        with _ACTIVE_LOCK:
            _ACTIVE[save_id] -= 1
            if not _ACTIVE[save_id]:
                del _ACTIVE[save_id]


def _is_active(save_id: str) -> bool:
    with _ACTIVE_LOCK:
        return save_id in _ACTIVE


def _hostname() -> str:
    # The name socket.gethostname() returns on POSIX, without importing socket: about 4 ms of a
    # process's first Zarr save or restore.
    return os.uname().nodename


@functools.lru_cache(maxsize=1)
def host_tag() -> str:
    """Eight hex digits naming this host inside a claim directory's name."""
    return hashlib.sha256(_hostname().encode()).hexdigest()[:8]


def _claimer_died(init_tag: str) -> bool:
    """Whether the ``<host>-<pid>-<random>`` tag of a claim names a dead process of this host."""
    parts = init_tag.split("-")
    if len(parts) != 3 or parts[0] != host_tag() or not parts[1].isdigit():
        return False
    return _pid_dead(int(parts[1]))


def _pid_dead(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


@dataclass(frozen=True, slots=True)
class Leftover:
    """An abandoned save that cleanup may remove.

    Parameters
    ----------
    path
        The save's directory, removed with everything in it (rename strategy;
        the create strategy removes the ``objects`` listed in it).
    uploads
        Unfinished uploads of objects in it (a killed save's S3 multipart
        uploads): no listing of objects shows them, and the store keeps and
        bills their parts until they are aborted.
    markers
        Shard markers (create strategy) to delete before anything else: this
        save's, and those of the save the root referenced when listed.
    root
        The data directory the group's root referenced when listed (create
        strategy): the save's data goes only if the root still does.
    hold
        The save the root referenced still had markers: it may be committing,
        and would put the root it replaced back if its commit fails, so only
        the markers go now (create strategy).
    objects
        The save's objects as listed (create strategy): all that removal
        deletes. An object written since the listing stays for a later cleanup.
    restore
        Where the group is renamed back to instead of removed (rename
        strategy): the prefix of a checkpoint an overwrite renamed aside and
        then crashed, leaving nothing committed there.
    """

    path: str
    uploads: tuple[UnfinishedUpload, ...] = ()
    markers: tuple[str, ...] = ()
    root: str | None = None
    hold: bool = False
    objects: tuple[str, ...] = ()
    restore: str | None = None


class CommitStrategy(ABC):
    """Where a save writes before its commit, and how it is published, abandoned and cleaned up.

    Parameters
    ----------
    files
        The store.
    """

    #: Whether each ``write_shard`` syncs its arrays' directories before it returns: where the
    #: commit renames directories into place, their entries must be durable first.
    sync_dirs: ClassVar[bool] = False

    def __init__(self, files: FileLayer) -> None:
        self.files = files

    def read_root(self, group: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The verified root document of ``group``; ``None`` if nothing is committed there."""
        path = _paths.join(group, _layout.ZARR_JSON)
        try:
            raw = self.files.read(path)
        except CheckpointNotFoundError:
            return None
        return _layout.parse_root(raw, group)

    @abstractmethod
    def staging(self, group: str, save_id: str) -> tuple[str, str]:
        """(directory the save writes its arrays in, ``data`` path recorded in the root group)."""

    @abstractmethod
    def prepare(self, group: str, spec: ShardSpec) -> None:
        """Called by every ``write_shard`` before it writes (in any process)."""

    @abstractmethod
    def commit(self, prefix: str, group: str, save_id: str, doc: bytes, overwrite: bool, num_shards: int) -> None:
        """Publish the save of ``num_shards`` shards whose root document is ``doc``."""

    @abstractmethod
    def abort(self, group: str, save_id: str) -> None:
        """Remove what the save wrote; never a committed checkpoint."""

    @abstractmethod
    def delete(self, group: str) -> None:
        """Uncommit and remove the checkpoint ``group``."""

    @abstractmethod
    def leftovers(self, base: str, now: float, min_age: float) -> list[Leftover]:
        """Abandoned saves in the directory ``base`` that cleanup may remove."""

    @abstractmethod
    def remove(self, leftover: Leftover) -> bool:
        """Remove ``leftover`` unless a commit published it since it was listed; return whether it went.

        Run by cleanup (after it aborted the leftover's uploads). With a
        commit of the same save it never leaves a committed checkpoint
        without its data: either that commit fails, or this keeps the data.
        """

    # Shard markers: each shard creates its own in the save's data directory before any of its data, and the
    # commit checks them all. A cleanup removes a save's markers with (or before) its data, so a marker gone at
    # the commit tells of data gone, also of shards written before a cleanup whose save went on writing.
    def _marker(self, group: str, spec: ShardSpec) -> str:
        root, data = self.staging(group, spec.save_id)
        return _paths.join(_paths.join(root, data) if data else root, _marker_name(spec.shard_id))

    def _markers(self, group: str, save_id: str, num_shards: int) -> list[str]:
        return [self._marker(group, ShardSpec(i, num_shards, save_id)) for i in range(num_shards)]

    def _put_marker(self, group: str, spec: ShardSpec) -> None:
        with contextlib.suppress(CheckpointExistsError):
            self.files.put(self._marker(group, spec), b"", create_only=True)  # exists: the shard is written again

    def _check_markers(self, prefix: str, save_id: str, markers: list[str]) -> None:
        """Raise DataLossError if a shard marker of the save is gone.

        One round of stats, or for many shards one listing of the directory
        holding the markers. Either sees a marker deleted before it was asked
        (S3, GCS and Azure list with read-after-write consistency, also after
        a delete; a local disk too), so the check still pairs with cleanup's
        deletion (see :meth:`CreateCommit.remove`). A listing is paged (every
        1,000 entries on S3, also counting the save's array directories).
        """
        if len(markers) > _STATS_PER_LISTING:
            listed = set(self.files.listdir(self.files.dirname(markers[0])))
            gone = [m for m in markers if m.rsplit("/", 1)[-1] not in listed]
        else:
            gone = [m for m, size in zip(markers, self.files.sizes(markers), strict=True) if size is None]
        if gone:
            raise self._staging_removed(prefix, save_id, gone[0])

    def shard_staging_removed(self, prefix: str, group: str, spec: ShardSpec) -> ConcurrentModificationError | None:
        """The error of a shard write that failed for a missing file or directory because a cleanup removed its save.

        ``None`` unless the shard's marker is gone (a cleanup removes a save's
        markers with or before its data) while the directory holding the
        checkpoint is there: on an object store, which has no directories, or
        where the store itself went, the failure is reported as it was. The
        staging directory itself tells nothing: the shard's other writes
        create it again.
        """
        files = self.files
        marker = self._marker(group, spec)
        try:
            if files.exists(marker) or not files.exists(files.dirname(group)):
                return None
        except CheckpointError:
            return None
        return ConcurrentModificationError(
            f"zarr/{files.store_name}: a cleanup removed the staged arrays of save {spec.save_id} for {prefix!r} "
            f"while its shard {spec.shard_id} was writing them ({marker!r} is gone); this save was not committed, "
            f"retry it{_MIN_AGE_HINT}"
        )

    @staticmethod
    def _staging_removed(prefix: str, save_id: str, where: str) -> DataLossError:
        """The error of a commit whose staged arrays went while it ran."""
        return DataLossError(
            f"zarr: the staged arrays of save {save_id} for {prefix!r} were removed while it was committing "
            f"({where!r} is gone: by a cleanup or another process); this save was not committed, retry it"
            f"{_MIN_AGE_HINT}"
        )


class RenameCommit(CommitStrategy):
    """Commit by renaming the save's temporary group into place (stores with an atomic rename).

    Parameters
    ----------
    files
        The store.
    exchange
        Optional atomic swap of two directories (Linux ``renameat2``),
        returning ``False`` where unsupported; with it an overwrite is atomic,
        without it an overwrite is two renames.
    """

    sync_dirs: ClassVar[bool] = True

    def __init__(self, files: FileLayer, exchange: Callable[[str, str], bool] | None = None) -> None:
        super().__init__(files)
        self._exchange = exchange

    def staging(self, group: str, save_id: str) -> tuple[str, str]:
        return f"{group}{_TMP}{save_id}", ""

    def prepare(self, group: str, spec: ShardSpec) -> None:
        """Create the save's temporary group with its owner record in one step.

        The directory appears by rename, owner file inside, so cleanup never
        sees a temporary group without an owner unless it is garbage. The
        claimer's host and pid are in the claim's name as well: a writer
        killed before its record is whole still leaves a name that says who
        made it. Then the shard's marker goes into it: a shard that finds the
        group gone (a cleanup took it) creates it again, but without the
        markers of the shards written before, so the commit fails.
        """
        root, _ = self.staging(group, spec.save_id)
        if not self.files.exists(root):
            self._claim(root)
        self._put_marker(group, spec)

    def _claim(self, root: str) -> None:
        files = self.files
        init = f"{root}-init-{host_tag()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        record = json.dumps({"host": _hostname(), "pid": os.getpid()}).encode()
        files.makedirs(init)
        files.put(_paths.join(init, _OWNER), record)
        try:
            files.rename(init, root)
        except CheckpointError:
            files.rmtree(init)  # another shard of this save created it first
            if not files.exists(root):
                raise

    def commit(self, prefix: str, group: str, save_id: str, doc: bytes, overwrite: bool, num_shards: int) -> None:
        files = self.files
        staging, _ = self.staging(group, save_id)
        markers = self._markers(group, save_id, num_shards)
        self._check_markers(prefix, save_id, markers)
        # A cleanup takes a leftover by renaming it away (remove), so the temporary group is published by the
        # rename below or not at all. Without it the document cannot be written: the local sink creates its
        # temporary file inside the group's directory.
        try:
            files.put(_paths.join(staging, _layout.ZARR_JSON), doc)
        except CheckpointNotFoundError as exc:
            raise self._staging_removed(prefix, save_id, staging) from exc
        # Every file was made durable by its sink, and each shard synced its arrays' directories
        # (write_shard); what is left is the root's entry for the document just written.
        files.sync_dir(staging)
        parent = files.dirname(group)
        exists = files.exists(_paths.join(group, _layout.ZARR_JSON)) or files.exists(group)
        if exists and not overwrite:
            raise CheckpointExistsError(
                f"zarr/{files.store_name}: a checkpoint is already committed at {prefix!r}; "
                "pass overwrite=True or choose another prefix"
            )
        if exists and self._exchange is not None and self._swap(prefix, save_id, staging, group):
            # Atomic swap: readers see the old checkpoint or the new one, never
            # neither. The old one now sits at the temporary name, ownerless.
            # Not durable, it is swapped back (durable_or_undone).
            exchange = self._exchange
            durable_or_undone(
                lambda: files.sync_dir(parent), lambda: exchange(group, staging), "zarr", parent, group, prefix
            )
            self._tidy(prefix, group, num_shards, staging)
            return
        aside: str | None = None
        if exists:
            # No atomic exchange: a crash between these two renames leaves
            # nothing visible at the prefix (documented) until a cleanup renames
            # the aside back (_replaced).
            aside = f"{group}{_TMP}{save_id}{_REPLACED}"
            files.rename(group, aside)
        try:
            files.rename(staging, group)
        except CheckpointError as exc:
            if aside is not None:
                with contextlib.suppress(CheckpointError):
                    files.rename(aside, group)
            if not files.exists(staging):
                raise self._staging_removed(prefix, save_id, staging) from exc
            if files.exists(_paths.join(group, _layout.ZARR_JSON)):
                # Another writer committed first (a non-empty directory cannot be replaced).
                raise CheckpointExistsError(
                    f"zarr/{files.store_name}: a checkpoint is already committed at {prefix!r}; "
                    "pass overwrite=True or choose another prefix"
                ) from exc
            raise

        def undo() -> None:
            files.rename(group, staging)  # abort removes it
            if aside is not None:
                files.rename(aside, group)

        durable_or_undone(lambda: files.sync_dir(parent), undo, "zarr", parent, group, prefix)
        # The owner record stays until the rename so that a concurrent cleanup
        # never takes a committing save for an abandoned one.
        self._tidy(prefix, group, num_shards, aside)

    def _tidy(self, prefix: str, group: str, num_shards: int, replaced: str | None) -> None:
        """The housekeeping of a committed save: its bookkeeping files, and the group it replaced (if any)."""
        files = self.files
        bookkeeping = self._bookkeeping(group, num_shards)
        with AfterCommit(files, "zarr", prefix, _paths.dirname(prefix)) as tidy:
            # Harmless where they are: nothing reads them in a committed group.
            tidy(
                "deleting its owner record and shard markers",
                lambda: files.delete(bookkeeping),
                bookkeeping,
                removed_by="they go with the checkpoint when it is deleted or replaced",
            )
            if replaced is not None:
                tidy("removing the checkpoint it replaced", lambda: files.rmtree(replaced), replaced)

    @staticmethod
    def _bookkeeping(group: str, num_shards: int) -> list[str]:
        """The owner record and shard markers of the save just renamed into place at ``group``."""
        return [_paths.join(group, name) for name in (_OWNER, *(_marker_name(i) for i in range(num_shards)))]

    def _swap(self, prefix: str, save_id: str, staging: str, group: str) -> bool:
        """Exchange the temporary group with the committed one; ``False`` where the store cannot."""
        assert self._exchange is not None
        try:
            return self._exchange(staging, group)
        except CheckpointError as exc:
            if not self.files.exists(staging):
                raise self._staging_removed(prefix, save_id, staging) from exc
            raise

    def abort(self, group: str, save_id: str) -> None:
        self.files.rmtree(self.staging(group, save_id)[0])

    def delete(self, group: str) -> None:
        # Renaming away is the atomic "uncommit"; cleanup() finishes an interrupted delete.
        if self.files.exists(group):
            self._rename_and_remove(group, group)

    def _rename_and_remove(self, path: str, group: str) -> bool:
        """Rename the directory ``path`` to a fresh name beside ``group``, then remove it; ``False`` if it was gone.

        The rename is atomic: whoever else renames ``path`` (a commit publishing
        it, another cleanup) either comes first, and this removes nothing, or
        finds it gone. An interrupted removal leaves an ownerless-looking name
        that a later cleanup finishes.
        """
        aside = f"{group}{_TMP}del-{uuid.uuid4().hex}"
        try:
            self.files.rename(path, aside)
        except CheckpointNotFoundError:
            return False
        self.files.rmtree(aside)
        return True

    def remove(self, leftover: Leftover) -> bool:
        # docstring inherited
        # Taken by a rename, not removed in place: a commit renaming the same directory into place would
        # otherwise publish what is left of it.
        if leftover.restore is not None:
            try:
                self.files.rename_new(leftover.path, leftover.restore)
            except CheckpointError:
                return False  # a save committed at the prefix since the listing: a later cleanup removes this
            return True
        directory, name = leftover.path.rsplit("/", 1)
        return self._rename_and_remove(leftover.path, _paths.join(directory, name.split(_TMP, 1)[0]))

    def leftovers(self, base: str, now: float, min_age: float) -> list[Leftover]:
        # A local sink's unfinished file is a temporary file inside the save's directory: removed with it.
        found = []
        for name in self.files.listdir(base):
            if _TMP in name and name.split(_TMP, 1)[0].endswith(_layout.SUFFIX):
                path = _paths.join(base, name)
                if name.endswith(_REPLACED):
                    found.extend(self._replaced(path, name, now, min_age))
                elif self._abandoned(path, name, now, min_age):
                    found.append(Leftover(path))
        return found

    def _replaced(self, path: str, name: str, now: float, min_age: float) -> list[Leftover]:
        """The checkpoint an overwrite renamed aside (``P.zarr.tmp-<save_id>-replaced``), if it is left over.

        Its commit renames it back if it fails. It is removed once a checkpoint
        is committed at the prefix again (that commit needs it no more). While
        nothing is committed there, it is renamed back to the prefix once that
        commit is no longer running: after a crash between the two renames it
        is the prefix's last checkpoint, which nothing would list otherwise.
        """
        files = self.files
        group_name, save_id = name.split(_TMP, 1)
        save_id = save_id.removesuffix(_REPLACED)
        if _is_active(save_id):
            return []
        directory = files.dirname(path)
        group = _paths.join(directory, group_name)
        if files.exists(_paths.join(group, _layout.ZARR_JSON)):
            return [Leftover(path)]
        # Still running, that commit has its temporary group, young: it is between its two renames.
        staging = f"{group_name}{_TMP}{save_id}"
        if files.exists(_paths.join(directory, staging)) and not self._abandoned(
            _paths.join(directory, staging), staging, now, min_age
        ):
            return []
        return [Leftover(path, restore=group)]

    def _abandoned(self, path: str, name: str, now: float, min_age: float) -> bool:
        files = self.files
        save_id = name.split(_TMP, 1)[1]
        initializing = "-init-" in save_id
        if _is_active(save_id.split("-init-", 1)[0]):
            return False
        mtime = _tree.newest_mtime(files, path) or now
        if initializing and _claimer_died(save_id.split("-init-", 1)[1]):
            return True
        try:
            raw: bytes | None = files.read(_paths.join(path, _OWNER))
        except CheckpointNotFoundError:
            raw = None
        if raw is None:
            # Every save directory is born with its owner record (see
            # prepare); without one it is a replaced or deleted checkpoint,
            # or a claim in its first microseconds.
            return not initializing or now - mtime >= _OWNERLESS_GRACE
        try:
            owner = json.loads(raw)
            host, pid = str(owner["host"]), int(owner["pid"])
        except (ValueError, KeyError, TypeError):
            return now - mtime >= min_age
        if host == _hostname() and _pid_dead(pid):
            return True  # the writer died
        return now - mtime >= min_age


class CreateCommit(CommitStrategy):
    """Commit by writing the root ``zarr.json`` last, create-only (stores with a conditional create)."""

    def staging(self, group: str, save_id: str) -> tuple[str, str]:
        return group, f"v-{save_id}"

    def prepare(self, group: str, spec: ShardSpec) -> None:
        """Create the shard's marker before any of its data (see :meth:`remove`).

        A cleanup deletes the markers of a save before its data, so a shard
        whose marker is gone at its commit may have lost data too.
        """
        self.files.makedirs(self.files.dirname(self._marker(group, spec)))  # object stores have none to make
        self._put_marker(group, spec)

    def commit(self, prefix: str, group: str, save_id: str, doc: bytes, overwrite: bool, num_shards: int) -> None:
        files = self.files
        _, data = self.staging(group, save_id)
        markers = self._markers(group, save_id, num_shards)
        self._check_markers(prefix, save_id, markers)
        files.makedirs(_paths.join(group, data))  # a save of no tensors wrote no array there
        try:
            files.put(
                _paths.join(group, f"{data}/{_layout.ZARR_JSON}"), json.dumps(_layout.group_metadata({})).encode()
            )
        except CheckpointNotFoundError as exc:
            # A local disk declared like an object store: a cleanup removed the directory just made.
            raise self._staging_removed(prefix, save_id, _paths.join(group, data)) from exc
        root_json = _paths.join(group, _layout.ZARR_JSON)
        # The replaced root, to put back if this commit fails after its write, and the data it references.
        previous = files.read_versioned(root_json) if overwrite else None
        old = None if previous is None else self._data_of(previous.data, group)
        try:
            # The commit point: create-only, or replacing exactly the root read above, so a concurrent committer
            # is never clobbered, and a retraction (below) never puts back a root whose data that committer
            # removed. The version lets the retraction undo this write and no other.
            version = files.write_versioned(
                root_json, doc, if_version=MUST_NOT_EXIST if previous is None else previous.version
            )
        except (CheckpointExistsError, ConcurrentModificationError, CheckpointNotFoundError) as exc:
            if not overwrite:
                raise CheckpointExistsError(
                    f"zarr/{files.store_name}: a checkpoint is already committed at {prefix!r}; "
                    "pass overwrite=True or choose another prefix"
                ) from exc
            raise ConcurrentModificationError(
                f"zarr/{files.store_name}: another save committed {prefix!r} while this save was committing; "
                "this save was not committed, retry it"
            ) from exc
        try:
            # Checked again after the root is in place: with a cleanup, which deletes markers before it reads the
            # root again and removes data (remove), one of the two sees the other's write. A check that fails
            # leaves the save not known to be whole: it fails too, and its root must not stay.
            self._check_markers(prefix, save_id, markers)
        except CheckpointError as exc:
            undo_commit(exc, lambda: self._retract(root_json, version, previous), "zarr", root_json, prefix)
            raise
        # The commit point is passed: the save succeeded, whatever its housekeeping meets (AfterCommit).
        with AfterCommit(files, "zarr", prefix, _paths.dirname(prefix)) as tidy:
            tidy(
                "deleting its shard markers",
                lambda: files.delete(markers),
                markers,
                removed_by="they go with the checkpoint when it is deleted or replaced, and with a cleanup of a "
                "save it replaced",
            )
            if old and old != data:
                replaced = _paths.join(group, old)
                tidy("removing the data of the checkpoint it replaced", lambda: files.rmtree(replaced), replaced)

    @staticmethod
    def _data_of(raw: bytes, group: str) -> str | None:
        """The data directory a root document references; ``None`` for one that is not a checkpoint's or is damaged.

        A damaged root (``DataLossError``, an ``InvalidCheckpointError``) is
        overwritten like any other, but nothing tells which data directory is
        its: the commit removes none, and cleanup removes those the new root
        does not reference once they are old enough.
        """
        try:
            return str(_layout.parse_root(raw, group)[0].get("data") or "") or None
        except InvalidCheckpointError:
            return None

    def _retract(self, root_json: str, version: str, previous: VersionedBytes | None) -> None:
        """Put back the root that this commit's root (at ``version``) replaced; a root another save wrote since stays.

        The replaced root's data are whole: a save that removes them replaces that root first, by a write
        conditional on its version, which this commit's write would then have failed or made fail.
        """
        current = self.files.read_versioned(root_json)
        if current is None or current.version != version:
            return
        if previous is None:
            self.files.delete([root_json])
            return
        with contextlib.suppress(ConcurrentModificationError, CheckpointNotFoundError):
            self.files.write_versioned(root_json, previous.data, if_version=version)

    def abort(self, group: str, save_id: str) -> None:
        _, data = self.staging(group, save_id)
        with contextlib.suppress(CheckpointError):
            current = self.read_root(group)
            if current is not None and current[0].get("data") == data:
                return  # committed after all: it is no longer ours to remove
        self.files.rmtree(_paths.join(group, data))

    def delete(self, group: str) -> None:
        self.files.delete([_paths.join(group, _layout.ZARR_JSON)])
        self.files.rmtree(group)

    def leftovers(self, base: str, now: float, min_age: float) -> list[Leftover]:
        """The data directories (``P.zarr/v-<save_id>``) no root references, with their unfinished uploads.

        A directory is a leftover once its newest object and the newest part
        of each of its uploads are ``min_age`` old: an upload still receiving
        parts is a save still running, however old its finished objects are.
        An upload whose time the store cannot tell counts as new, as
        :func:`~._tree.newest_mtime` counts an object.

        Uploads are found by one listing of those at any depth below ``base``
        (:meth:`FileLayer.unfinished_uploads` with ``recursive``), grouped by
        save: also those in an array directory where the save completed
        nothing, and a save killed before it completed any object, which left
        uploads alone, is a leftover too. (A store whose listing of uploads
        predates ``recursive`` is asked per directory holding an object, and
        misses those.)
        """
        # Per group, per data directory: the unfinished uploads in it (none for most), its objects and its shard
        # markers. The uploads are listed first: a shard creates its marker before it begins an upload, so the
        # objects listed after show the marker of every save an upload was listed of, and removal (which
        # deletes the markers before it reads the root again) cannot miss a save that started in between.
        saves: dict[str, dict[str, list[UnfinishedUpload]]] = {}
        for upload in self.files.unfinished_uploads(base, recursive=True):
            save = _save_of(upload.path, base)
            if save is not None:
                saves.setdefault(save[0], {}).setdefault(save[1], []).append(upload)
        objects: dict[tuple[str, str], list[str]] = {}
        markers: dict[tuple[str, str], list[str]] = {}
        for path in self.files.find(base):
            save = _save_of(path, base)
            if save is not None:
                saves.setdefault(save[0], {}).setdefault(save[1], [])
                objects.setdefault(save, []).append(path)
                if path.rsplit("/", 1)[-1].startswith(_MARKER):
                    markers.setdefault(save, []).append(path)
        found = []
        for name, children in sorted(saves.items()):
            group = _paths.join(base, name)
            with contextlib.suppress(InvalidCheckpointError):
                root = self.read_root(group)
                current = None if root is None else root[0].get("data")
                # The referenced save's markers: a commit between its root write and its last check (or one
                # killed there). The group's leftovers then wait for a later cleanup; the markers go with them
                # once the root is as old as min_age asks (a commit's root is new).
                held = tuple(markers.get((name, current), ())) if isinstance(current, str) else ()
                hold = bool(held)
                root_json = _paths.join(group, _layout.ZARR_JSON)
                if hold and (
                    _is_active(str(current)[2:]) or not paths_old_enough(self.files, [root_json, *held], now, min_age)
                ):
                    held = ()
                for child, uploads in sorted(children.items()):
                    if child == current or _is_active(child[2:]):
                        continue
                    if not old_enough((u.modified for u in uploads), now, min_age):
                        continue  # an upload received a part lately: the save may be running
                    sub = _paths.join(group, child)
                    newest = _tree.newest_mtime(self.files, sub)  # None: it holds nothing
                    if old_enough(() if newest is None else (newest,), now, min_age):
                        own = tuple(markers.get((name, child), ()))
                        listed = tuple(objects.get((name, child), ()))
                        found.append(
                            Leftover(
                                sub,
                                uploads=tuple(uploads),
                                markers=own + held,
                                root=current,
                                hold=hold,
                                objects=listed,
                            )
                        )
        return found

    def remove(self, leftover: Leftover) -> bool:
        """Delete the leftover's markers, read the root again, and remove the listed data only if it is unchanged.

        With the commit this is a Dekker pair on a store whose reads see every
        completed write: the commit writes its root, then checks its markers;
        this deletes them, then reads the root. At least one side sees the
        other's write, so either the commit fails (and puts the replaced root
        back) or this keeps the data. While the save the root referenced had
        markers, it may still fail that way and put back the root it replaced,
        whose data may be this leftover: only the markers go now.
        """
        self.files.delete(leftover.markers)
        if leftover.hold:
            return False
        group = self.files.dirname(leftover.path)
        try:
            root = self.read_root(group)
        except InvalidCheckpointError:
            return False
        if (None if root is None else root[0].get("data")) != leftover.root:
            return False  # a save committed (or the prefix changed) since the listing: its data stay
        # What was listed, not whatever is there now: a listing of its own could find objects that a save
        # running since wrote, and this decided nothing about them.
        self.files.delete([p for p in leftover.objects if p not in leftover.markers])
        # A local disk's emptied directories, deepest first; one that is not empty stays (a no-op on object stores).
        directories = {leftover.path}
        for path in leftover.objects:
            while (path := self.files.dirname(path)).startswith(f"{leftover.path}/"):
                directories.add(path)
        for directory in sorted(directories, key=len, reverse=True):
            self.files.remove_dir(directory)
        return True


def _marker_name(shard_id: int) -> str:
    """The name of shard ``shard_id``'s marker (see :meth:`CommitStrategy._marker`)."""
    return f"{_MARKER}{shard_id:05d}"


def _save_of(path: str, base: str) -> tuple[str, str] | None:
    """``("P.zarr", "v-<save_id>")`` for a path inside a data directory of a group in ``base``, else ``None``."""
    parts = _tree.strip(path)[len(_tree.strip(base)) :].lstrip("/").split("/")
    if len(parts) >= 3 and parts[0].endswith(_layout.SUFFIX) and parts[1].startswith("v-"):
        return parts[0], parts[1]
    return None


def strategy_for(files: FileLayer, exchange: Callable[[str, str], bool] | None = None) -> CommitStrategy:
    """The commit strategy for ``files``, from its declared capabilities."""
    caps = files.capabilities
    if caps.atomic_rename:
        return RenameCommit(files, exchange)
    if caps.conditional_create:
        return CreateCommit(files)
    raise BackendError(
        f"zarr: the store {files.store_name!r} declares neither an atomic rename nor a conditional create, "
        "so a Zarr checkpoint cannot be committed atomically there; use a store that offers one"
    )
