"""How a save becomes visible: commit strategies, chosen from the store's declared capabilities.

* :class:`RenameCommit` (stores with an atomic rename: local disk). A save
  writes the group ``P.zarr.tmp-<save_id>`` beside the target, born with an
  owner record (host, pid); commit writes its root ``zarr.json`` and renames
  the directory to ``P.zarr``. Cleanup recognises the leftovers of dead
  writers by their owner.
* :class:`CreateCommit` (stores with a conditional create: S3, GCS). A save
  writes its arrays under ``P.zarr/v-<save_id>/``; the root ``P.zarr/zarr.json``,
  written last, is the commit point: created only if absent, or replaced when
  overwriting, after which the replaced save's data is deleted. A save killed
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
from trackpoint.backends.stores import FileLayer, UnfinishedUpload
from trackpoint.backends.zarr import _layout, _tree
from trackpoint.errors import (
    BackendError,
    CheckpointError,
    CheckpointExistsError,
    CheckpointNotFoundError,
    InvalidCheckpointError,
)

__all__ = ["CommitStrategy", "CreateCommit", "Leftover", "RenameCommit", "active", "host_tag", "strategy_for"]

_TMP: Final = ".tmp-"
_OWNER: Final = ".trackpoint-owner"
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
        The save's directory, removed with everything in it.
    uploads
        Unfinished uploads of objects in it (a killed save's S3 multipart
        uploads): no listing of objects shows them, and the store keeps and
        bills their parts until they are aborted.
    """

    path: str
    uploads: tuple[UnfinishedUpload, ...] = ()


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

    def prepare(self, group: str, save_id: str) -> None:  # noqa: B027 - only some strategies claim
        """Called by every ``write_shard`` before it writes (in any process)."""

    @abstractmethod
    def commit(self, prefix: str, group: str, save_id: str, doc: bytes, overwrite: bool) -> None:
        """Publish the save whose root document is ``doc``."""

    @abstractmethod
    def abort(self, group: str, save_id: str) -> None:
        """Remove what the save wrote; never a committed checkpoint."""

    @abstractmethod
    def delete(self, group: str) -> None:
        """Uncommit and remove the checkpoint ``group``."""

    @abstractmethod
    def leftovers(self, base: str, now: float, min_age: float) -> list[Leftover]:
        """Abandoned saves in the directory ``base`` that cleanup may remove."""


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

    def prepare(self, group: str, save_id: str) -> None:
        """Create the save's temporary group with its owner record in one step.

        The directory appears by rename, owner file inside, so cleanup never
        sees a temporary group without an owner unless it is garbage. The
        claimer's host and pid are in the claim's name as well: a writer
        killed before its record is whole still leaves a name that says who
        made it.
        """
        root, _ = self.staging(group, save_id)
        files = self.files
        if files.exists(root):
            return
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

    def commit(self, prefix: str, group: str, save_id: str, doc: bytes, overwrite: bool) -> None:
        files = self.files
        staging, _ = self.staging(group, save_id)
        if not files.exists(staging):
            raise CheckpointNotFoundError(
                f"zarr/{files.store_name}: the shards of save {save_id} for {prefix!r} are gone ({staging!r}); "
                "save again"
            )
        files.put(_paths.join(staging, _layout.ZARR_JSON), doc)
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
        if exists and self._exchange is not None and self._exchange(staging, group):
            # Atomic swap: readers see the old checkpoint or the new one, never
            # neither. The old one now sits at the temporary name, ownerless.
            files.sync_dir(parent)
            files.delete([_paths.join(group, _OWNER)])
            files.rmtree(staging)
            return
        aside: str | None = None
        if exists:
            # No atomic exchange: a crash between these two renames leaves
            # nothing visible at the prefix (documented).
            aside = f"{group}{_TMP}{save_id}-replaced"
            files.rename(group, aside)
        try:
            files.rename(staging, group)
        except CheckpointError as exc:
            if aside is not None:
                with contextlib.suppress(CheckpointError):
                    files.rename(aside, group)
            if files.exists(_paths.join(group, _layout.ZARR_JSON)):
                # Another writer committed first (a non-empty directory cannot be replaced).
                raise CheckpointExistsError(
                    f"zarr/{files.store_name}: a checkpoint is already committed at {prefix!r}; "
                    "pass overwrite=True or choose another prefix"
                ) from exc
            raise
        files.sync_dir(parent)
        # The owner record stays until the rename so that a concurrent cleanup
        # never takes a committing save for an abandoned one.
        files.delete([_paths.join(group, _OWNER)])
        if aside is not None:
            self.files.rmtree(aside)

    def abort(self, group: str, save_id: str) -> None:
        self.files.rmtree(self.staging(group, save_id)[0])

    def delete(self, group: str) -> None:
        # Renaming away is the atomic "uncommit"; cleanup() finishes an interrupted delete.
        aside = f"{group}{_TMP}del-{uuid.uuid4().hex}"
        if not self.files.exists(group):
            return
        try:
            self.files.rename(group, aside)
        except CheckpointNotFoundError:
            return
        self.files.rmtree(aside)

    def leftovers(self, base: str, now: float, min_age: float) -> list[Leftover]:
        # A local sink's unfinished file is a temporary file inside the save's directory: removed with it.
        found = []
        for name in self.files.listdir(base):
            if _TMP in name and name.split(_TMP, 1)[0].endswith(_layout.SUFFIX):
                path = _paths.join(base, name)
                if self._abandoned(path, name, now, min_age):
                    found.append(Leftover(path))
        return found

    def _abandoned(self, path: str, name: str, now: float, min_age: float) -> bool:
        files = self.files
        save_id = name.split(_TMP, 1)[1]
        mtime = _tree.newest_mtime(files, path) or now
        initializing = "-init-" in save_id
        if _is_active(save_id.split("-init-", 1)[0]):
            return False
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

    def commit(self, prefix: str, group: str, save_id: str, doc: bytes, overwrite: bool) -> None:
        files = self.files
        _, data = self.staging(group, save_id)
        files.makedirs(_paths.join(group, data))  # a save of no tensors wrote no array there
        files.put(_paths.join(group, f"{data}/{_layout.ZARR_JSON}"), json.dumps(_layout.group_metadata({})).encode())
        root_json = _paths.join(group, _layout.ZARR_JSON)
        if not overwrite:
            # The commit point: create-only, so a concurrent committer cannot be clobbered.
            try:
                files.put(root_json, doc, create_only=True)
            except CheckpointExistsError as exc:
                raise CheckpointExistsError(
                    f"zarr/{files.store_name}: a checkpoint is already committed at {prefix!r}; "
                    "pass overwrite=True or choose another prefix"
                ) from exc
            return
        try:
            found = self.read_root(group)
        except InvalidCheckpointError:
            found = None
        files.put(root_json, doc)
        old = None if found is None else found[0].get("data")
        if old and old != data:
            files.rmtree(_paths.join(group, str(old)))

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
        # Per group, per data directory: the unfinished uploads in it (none for most).
        saves: dict[str, dict[str, list[UnfinishedUpload]]] = {}
        for path in self.files.find(base):
            save = _save_of(path, base)
            if save is not None:
                saves.setdefault(save[0], {}).setdefault(save[1], [])
        for upload in self.files.unfinished_uploads(base, recursive=True):
            save = _save_of(upload.path, base)
            if save is not None:
                saves.setdefault(save[0], {}).setdefault(save[1], []).append(upload)
        found = []
        for name, children in sorted(saves.items()):
            group = _paths.join(base, name)
            with contextlib.suppress(InvalidCheckpointError):
                root = self.read_root(group)
                current = None if root is None else root[0].get("data")
                for child, uploads in sorted(children.items()):
                    if child == current or _is_active(child[2:]):
                        continue
                    if not all(_old_enough(now if u.modified is None else u.modified, now, min_age) for u in uploads):
                        continue  # an upload received a part lately: the save may be running
                    sub = _paths.join(group, child)
                    if _old_enough(_tree.newest_mtime(self.files, sub), now, min_age):
                        found.append(Leftover(sub, tuple(uploads)))
        return found


def _save_of(path: str, base: str) -> tuple[str, str] | None:
    """``("P.zarr", "v-<save_id>")`` for a path inside a data directory of a group in ``base``, else ``None``."""
    parts = _tree.strip(path)[len(_tree.strip(base)) :].lstrip("/").split("/")
    if len(parts) >= 3 and parts[0].endswith(_layout.SUFFIX) and parts[1].startswith("v-"):
        return parts[0], parts[1]
    return None


def _old_enough(mtime: float | None, now: float, min_age: float) -> bool:
    """Whether something last modified at ``mtime`` (``None``: holds nothing) may be removed under ``min_age``.

    ``min_age`` 0 removes everything, whatever the times say: the store's
    clock, which dates objects and upload parts, may run ahead of this host's.
    """
    return min_age <= 0 or mtime is None or now - mtime >= min_age


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
