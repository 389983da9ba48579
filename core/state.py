"""The ``checkpoint`` state file: which checkpoints a directory holds, newest last.

TensorFlow keeps a small text-format ``CheckpointState`` proto named
``checkpoint`` next to the checkpoints of a directory. This module reads and
writes it with TensorFlow's semantics, so directories are interchangeable
between the two libraries, and adds what object stores and several writers
need:

* **Atomic, conditional writes.** The file is replaced through
  :meth:`~trackpoint.storage.StorageBackend.write_file` with ``if_version`` set
  to the version read just before, so a writer that lost a race finds out
  instead of silently overwriting the other writer's update.
* **A documented merge.** After a lost race the update is recomputed on top of
  what the other writer stored (see :func:`update_checkpoint_state`), a
  bounded number of times.
* **Recovery by listing.** :func:`latest_checkpoint` never returns a path that
  is not committed: when the state file is missing, unreadable, stale, points
  at a deleted checkpoint or names a path it cannot use (another store's URL,
  a NUL byte), the committed checkpoints are listed and the one with the
  highest ``-N`` suffix wins.
* **Every format.** Without an explicitly chosen backend, a directory's
  checkpoints are those of every backend that can store them there (a Zarr
  checkpoint written with ``CheckpointOptions(backend="zarr")`` beside bundle
  ones), see :func:`trackpoint._resolve.open_store`.
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final, NamedTuple

from google.protobuf import text_format

from trackpoint import _paths
from trackpoint.errors import CheckpointError, ConcurrentModificationError, InvalidCheckpointError, StorageError
from trackpoint.proto.checkpoint_state_pb2 import CheckpointState
from trackpoint.storage import _legacy_create_only

if TYPE_CHECKING:
    from trackpoint.storage import CheckpointOptions, StorageBackend

__all__ = [
    "DEFAULT_LATEST_FILENAME",
    "CheckpointState",
    "checkpoint_number",
    "latest_checkpoint",
    "modify_checkpoint_state",
    "newest_committed",
    "read_checkpoint_state",
    "update_checkpoint_state",
]

_log = logging.getLogger(__name__)

#: Default name of the state file, as in TensorFlow.
DEFAULT_LATEST_FILENAME: Final = "checkpoint"

#: How many times a lost conditional write is recomputed and retried. Each
#: retry means another writer *did* make progress, so a small bound suffices.
_MAX_ATTEMPTS: Final = 16

_NUMBER = re.compile(r"-(\d+)$")


# ----------------------------------------------------------------- helpers
def _isabs(path: str) -> bool:
    # A URL (or file:// path) is absolute: it does not depend on the caller's cwd.
    return bool(_paths.scheme(path)) or os.path.isabs(path)


def _basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1] if _paths.scheme(path) else os.path.basename(path)


def checkpoint_number(prefix: str) -> int | None:
    """The ``N`` of a checkpoint prefix ending in ``-N`` (``ckpt-12`` -> 12), else ``None``."""
    m = _NUMBER.search(_basename(prefix))
    return int(m.group(1)) if m else None


def number_order(prefix: str) -> tuple[int, str]:
    """Sort key of checkpoint prefixes, oldest first: by their ``-N`` number, then by name.

    Parameters
    ----------
    prefix
        A checkpoint prefix or name (``.../ckpt-12``).

    Returns
    -------
    tuple of (int, str)
        ``(N, prefix)``; ``N`` is ``-1`` for an unnumbered prefix, which sorts before ``ckpt-0``.
    """
    # Not ``checkpoint_number(p) or -1``: that would sort ckpt-0 among the unnumbered.
    n = checkpoint_number(prefix)
    return (-1 if n is None else n, prefix)


def _stem(prefix: str) -> str:
    """``ckpt`` for ``.../ckpt-12``; the whole basename for an unnumbered prefix."""
    base = _basename(prefix)
    return _NUMBER.sub("", base)


def _state_path(directory: str, latest_filename: str) -> str:
    return _paths.join(directory, latest_filename)


def _to_stored(path: str, directory: str, relative: bool) -> str:
    """How ``path`` is written into the state file of ``directory``.

    With ``relative`` every path on the directory's store is made relative to
    it, so a copied or moved directory still resolves (TF2's behaviour).
    Without it, absolute paths stay absolute (TF1's ``Saver`` default); a
    relative path is, as in TensorFlow, taken relative to the current directory
    and rewritten relative to a relative ``directory``.
    """
    if relative and _isabs(path):
        return _paths.relpath(path, directory)
    if not _isabs(path) and not _isabs(directory):
        return os.path.relpath(path, directory or os.curdir)
    return path


def _resolve(path: str, directory: str) -> str:
    return path if _isabs(path) else _paths.join(directory, path)


def _store(path: str) -> str:
    """The scheme naming the store ``path`` is on (``""`` for local paths and ``file://``)."""
    s = _paths.scheme(path)
    return "" if s == "file" else s


def _holder(backend: StorageBackend, path: str, directory: str) -> StorageBackend | None:
    """The backend holding the checkpoint the state file of ``directory`` names; ``None`` if none can.

    A path that cannot be a checkpoint of this directory (a NUL byte, a URL of
    another store) or that the backend rejects as malformed counts as not
    committed, with a warning, so that :func:`latest_checkpoint` falls back
    to listing instead of failing. Store failures are raised.
    """
    from trackpoint._resolve import holder

    if "\x00" in path:
        problem = "contains a NUL byte"
    elif _store(path) != _store(directory):
        problem = "is on another store than the directory (a URL another backend serves)"
    else:
        try:
            return holder(backend, path)
        except StorageError:
            raise
        except (CheckpointError, ValueError) as exc:
            problem = f"is not a usable checkpoint path ({type(exc).__name__}: {exc})"
    _log.warning(
        "the checkpoint state file of %r names %r, which %s; looking for the latest checkpoint by listing "
        "the directory instead",
        directory,
        path,
        problem,
    )
    return None


def _parse(data: bytes, where: str) -> CheckpointState:
    state = CheckpointState()
    try:
        # Merge (not Parse), as TensorFlow does: tolerant of repeated singular fields.
        text_format.Merge(data.decode("utf-8"), state)
    except (text_format.ParseError, UnicodeDecodeError) as exc:
        raise InvalidCheckpointError(
            f"the checkpoint state file {where!r} is not a text-format CheckpointState ({exc}); "
            "delete it or rewrite it with update_checkpoint_state"
        ) from exc
    if not state.model_checkpoint_path:
        raise InvalidCheckpointError(
            f"the checkpoint state file {where!r} has no model_checkpoint_path; "
            "delete it or rewrite it with update_checkpoint_state"
        )
    return state


def _serialize(state: CheckpointState) -> bytes:
    return text_format.MessageToString(state).encode("utf-8")


def _read_raw(backend: StorageBackend, path: str) -> tuple[CheckpointState | None, str | None]:
    """The stored state (paths as stored) and its version; ``(None, None)`` if absent.

    An unparsable file yields ``(None, version)`` with a warning, so a writer can
    still replace it conditionally.
    """
    got = backend.read_file(path)
    if got is None:
        return None, None
    try:
        return _parse(got.data, path), got.version
    except InvalidCheckpointError as exc:
        _log.warning("%s; ignoring it", exc)
        return None, got.version


def _transact(
    backend: StorageBackend,
    path: str,
    update: Callable[[CheckpointState | None, bool], CheckpointState],
) -> CheckpointState:
    """Read-modify-write ``path`` with conditional writes, retrying lost races.

    ``update(current, retry)`` gets the stored state (or ``None``) and whether an
    earlier attempt lost a race; it returns the state to store. It is called
    again on the fresh contents after every lost race.
    """
    retry = False
    for attempt in range(_MAX_ATTEMPTS):
        current, version = _read_raw(backend, path)
        new = update(current, retry)
        try:
            if version is None:
                # Create-only, spelled None for one more release: backends written for 0.1
                # understand only that; current ones map it to MUST_NOT_EXIST (quietly here).
                with _legacy_create_only():
                    backend.write_file(path, _serialize(new), if_version=None)
            else:
                backend.write_file(path, _serialize(new), if_version=version)
        except ConcurrentModificationError:
            retry = True
            # Desynchronise competing writers so they do not collide again in lockstep.
            time.sleep(random.uniform(0.0, 0.005 * (attempt + 1)))
            continue
        return new
    raise ConcurrentModificationError(
        f"gave up updating the checkpoint state file {path!r} on backend {backend.name!r} after "
        f"{_MAX_ATTEMPTS} attempts: other writers kept changing it; retry the save or give each "
        "writer its own directory"
    )


def timed_entries(state: CheckpointState | None) -> list[tuple[str, float | None]]:
    """The entries of a state file as ``(path, timestamp)``, in its order.

    Parameters
    ----------
    state
        A state file as read; ``None`` (no state file) has no entries.

    Returns
    -------
    list of tuple of (str, float or None)
        Each path as stored, with its timestamp; ``None`` for all when the timestamps do not pair up
        with the paths (a file written by a writer that kept none, or a damaged one).
    """
    if state is None:
        return []
    paths = list(state.all_model_checkpoint_paths)
    stamps: list[float | None] = list(state.all_model_checkpoint_timestamps)
    if len(stamps) != len(paths):
        stamps = [None] * len(paths)
    return list(zip(paths, stamps, strict=True))


def merge_other_series(
    base: CheckpointState,
    own: Sequence[tuple[str, float | None]],
    others: Sequence[tuple[str, float | None]],
    others_preserved: float | None = None,
) -> CheckpointState:
    """A state file listing a writer's own entries and the entries of other series it carries over.

    Shared by the manager, which rewrites its own entries on every save, and by a run copy, which writes the
    source's over a destination's: both keep listed the checkpoints of other series (other checkpoint
    names, another job's manager), so that whoever saves them goes on retiring them.

    Parameters
    ----------
    base
        The new state file but for its entries: its other fields (the latest checkpoint, the
        ``last_preserved_timestamp``) are copied as they are.
    own
        The writer's entries, ``(path, timestamp or None)``, oldest first.
    others
        The entries of other series to carry over (:func:`timed_entries` of the current state file,
        filtered), in their order.
    others_preserved
        The ``last_preserved_timestamp`` of the state file ``others`` come from, when it is to be kept:
        the larger of it and ``base``'s is written. ``None`` keeps ``base``'s.

    Returns
    -------
    CheckpointState
        A copy of ``base`` with ``others`` then ``own``; ordered by time when there are others and
        every entry has a time (stable: on equal times the other series' entry comes first), as
        TensorFlow lists a directory's checkpoints. Timestamps are written only when every entry has one,
        as a file with fewer timestamps than paths is read as having none.
    """
    entries = [*others, *own]
    timed = all(t is not None for _, t in entries)
    if others and timed:
        entries.sort(key=lambda e: e[1] or 0.0)
    out = CheckpointState()
    out.CopyFrom(base)
    del out.all_model_checkpoint_paths[:]
    del out.all_model_checkpoint_timestamps[:]
    out.all_model_checkpoint_paths.extend(p for p, _ in entries)
    if timed:
        out.all_model_checkpoint_timestamps.extend(t for _, t in entries if t is not None)
    if others_preserved is not None:
        out.last_preserved_timestamp = max(base.last_preserved_timestamp, others_preserved)
    return out


def _entries(state: CheckpointState | None, directory: str) -> list[tuple[str, float | None]]:
    """``(resolved path, timestamp or None)`` for each kept checkpoint, oldest first."""
    return [(_resolve(p, directory), t) for p, t in timed_entries(state)]


def _merge(
    base: CheckpointState | None, ours: CheckpointState, theirs: CheckpointState | None, directory: str
) -> CheckpointState:
    """Three-way merge of the state files of two writers; see :func:`update_checkpoint_state`."""
    base_paths = {p for p, _ in _entries(base, directory)}
    their_entries = _entries(theirs, directory)
    their_paths = {p for p, _ in their_entries}
    our_model = _resolve(ours.model_checkpoint_path, directory)
    # Keep ours, minus what the other writer removed meanwhile (never our new checkpoint).
    kept = [(p, t) for p, t in _entries(ours, directory) if p == our_model or p in their_paths or p not in base_paths]
    kept_paths = {p for p, _ in kept}
    added = [(p, t) for p, t in their_entries if p not in base_paths and p not in kept_paths]
    if added and all(t is not None for _, t in kept + added):
        # Python's sort is stable: equal timestamps keep "ours, then theirs".
        merged = sorted(kept + added, key=lambda e: e[1] or 0.0)
    else:
        # Without timestamps order is unknown: their additions go before our newest.
        merged = kept[:-1] + added + kept[-1:]
    out = CheckpointState()
    out.CopyFrom(ours)
    del out.all_model_checkpoint_paths[:]
    del out.all_model_checkpoint_timestamps[:]
    stored = {_resolve(p, directory): p for p in ours.all_model_checkpoint_paths}
    if theirs is not None:
        stored.update({_resolve(p, directory): p for p in theirs.all_model_checkpoint_paths})
    out.all_model_checkpoint_paths.extend(stored.get(p, p) for p, _ in merged)
    if all(t is not None for _, t in merged):
        out.all_model_checkpoint_timestamps.extend(t for _, t in merged if t is not None)
    newest = merged[-1][0]
    out.model_checkpoint_path = stored.get(newest, newest)
    if theirs is not None:
        out.last_preserved_timestamp = max(out.last_preserved_timestamp, theirs.last_preserved_timestamp)
    return out


# --------------------------------------------------------------- public API
def modify_checkpoint_state(
    backend: StorageBackend,
    directory: str,
    update: Callable[[CheckpointState | None], CheckpointState],
    *,
    latest_filename: str = DEFAULT_LATEST_FILENAME,
) -> CheckpointState:
    """Atomically replace the state file of ``directory`` with ``update(current)``.

    A read-modify-write with a conditional write: when another writer changed
    the file in between, ``update`` is called again on the new contents (a
    bounded number of times), so it must compute the new state from its
    argument alone. ``current`` holds paths exactly as stored (usually relative
    to ``directory``) and is ``None`` when the file is missing or unreadable.

    Returns
    -------
    CheckpointState
        The state as stored.

    Raises
    ------
    ConcurrentModificationError
        Other writers changed the file on every attempt.
    """
    return _transact(backend, _state_path(directory, latest_filename), lambda cur, _retry: update(cur))


def update_checkpoint_state(
    backend: StorageBackend,
    directory: str,
    model_checkpoint_path: str,
    *,
    all_model_checkpoint_paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    all_model_checkpoint_timestamps: Sequence[float] | None = None,
    last_preserved_timestamp: float | None = None,
    save_relative_paths: bool = True,
    latest_filename: str = DEFAULT_LATEST_FILENAME,
) -> CheckpointState:
    """Record ``model_checkpoint_path`` as the newest checkpoint of ``directory``.

    Parameters
    ----------
    backend
        The backend serving ``directory``.
    directory
        Directory of the checkpoints; the state file is ``directory/latest_filename``.
    model_checkpoint_path
        Prefix of the newest checkpoint. Appended to ``all_model_checkpoint_paths``
        when it is not already their last element (as TensorFlow does).
    all_model_checkpoint_paths
        Checkpoints to keep listing, oldest first; one path alone is a list of one. ``None`` lists only the
        newest.
    all_model_checkpoint_timestamps
        Unix times, one per path (after the append above), or ``None``.
    last_preserved_timestamp
        Time of the last checkpoint kept by ``keep_checkpoint_every_n_hours``.
    save_relative_paths
        Store paths relative to ``directory`` (default, TF2's choice) so a copied
        directory keeps working; ``False`` stores absolute paths as given (TF1).
    latest_filename
        Name of the state file; only TF1's ``Saver`` changes it.

    Returns
    -------
    CheckpointState
        The state as stored (paths as written to the file).

    Raises
    ------
    InvalidCheckpointError
        The checkpoint would be written at the state file's own path, or the
        timestamps do not match the paths one to one.
    ConcurrentModificationError
        Other writers changed the state file on every one of the bounded retries.

    Notes
    -----
    The file is replaced with a conditional write against the version read
    just before. If another writer changed it in between, the update is merged
    onto the new contents and retried. Merge rule (three-way, against the state
    this call first read): our list wins, except that checkpoints the other
    writer *added* are kept and checkpoints it *removed* stay removed (unless it
    is our new checkpoint). With timestamps on every entry the result is ordered
    by time and the newest becomes ``model_checkpoint_path``; otherwise the
    other writer's additions are placed just before our newest checkpoint.
    ``last_preserved_timestamp`` becomes the larger of the two.
    """
    paths = _paths.path_list(
        all_model_checkpoint_paths or [], "trackpoint.state.update_checkpoint_state", "all_model_checkpoint_paths"
    )
    if not paths or paths[-1] != model_checkpoint_path:
        paths.append(model_checkpoint_path)
    stamps = list(all_model_checkpoint_timestamps or [])
    if stamps and len(stamps) != len(paths):
        raise InvalidCheckpointError(
            f"all_model_checkpoint_timestamps has {len(stamps)} entries but there are {len(paths)} "
            f"checkpoint paths (including {model_checkpoint_path!r}); pass one timestamp per path"
        )
    state_path = _state_path(directory, latest_filename)
    if _resolve(model_checkpoint_path, directory) == state_path or (
        _paths.strip_file_scheme(model_checkpoint_path) == _paths.strip_file_scheme(state_path)
    ):
        raise InvalidCheckpointError(
            f"save path {model_checkpoint_path!r} conflicts with the checkpoint state file {state_path!r}; "
            "use a different save path or latest_filename"
        )
    ours = CheckpointState()
    ours.model_checkpoint_path = _to_stored(model_checkpoint_path, directory, save_relative_paths)
    ours.all_model_checkpoint_paths.extend(_to_stored(p, directory, save_relative_paths) for p in paths)
    ours.all_model_checkpoint_timestamps.extend(stamps)
    if last_preserved_timestamp is not None:
        ours.last_preserved_timestamp = last_preserved_timestamp

    first: list[CheckpointState | None] = []

    def update(current: CheckpointState | None, retry: bool) -> CheckpointState:
        if not retry:
            first.append(current)
            return ours
        return _merge(first[0], ours, current, directory)

    return _transact(backend, state_path, update)


def read_checkpoint_state(
    directory: str | os.PathLike[str],
    options: CheckpointOptions | None = None,
    latest_filename: str = DEFAULT_LATEST_FILENAME,
    *,
    backend: StorageBackend | None = None,
) -> CheckpointState | None:
    """The ``CheckpointState`` of ``directory``, or ``None`` if there is no usable one.

    As ``tf.train.get_checkpoint_state``: relative paths in the file are joined
    onto ``directory`` exactly as passed in; a file that does not parse (or has no
    ``model_checkpoint_path``) is logged as a warning and treated as absent.
    Nothing is checked against storage; :func:`latest_checkpoint` does that.

    Parameters
    ----------
    directory
        Local path or URL of the directory.
    options
        Chooses and configures the backend (ignored when ``backend`` is given).
    latest_filename
        Name of the state file.
    backend
        An already opened backend for ``directory``.
    """
    directory = os.fspath(directory)
    if backend is None:
        from trackpoint._resolve import open_backend

        with open_backend(directory, options) as opened:
            return read_checkpoint_state(directory, latest_filename=latest_filename, backend=opened)
    state, _ = _read_raw(backend, _state_path(directory, latest_filename))
    if state is None:
        return None
    state.model_checkpoint_path = _resolve(state.model_checkpoint_path, directory)
    for i, p in enumerate(state.all_model_checkpoint_paths):
        state.all_model_checkpoint_paths[i] = _resolve(p, directory)
    return state


def newest_committed(
    backend: StorageBackend,
    directory: str,
    stem: str | None = None,
    *,
    exclude: frozenset[str] = frozenset(),
) -> str | None:
    """The committed checkpoint of ``directory`` with the highest ``-N`` suffix.

    Only prefixes named ``<stem>-N`` count when ``stem`` is given, and none
    whose base name is in ``exclude``; ties (the same ``N`` under different
    names) go to the name sorting last.
    """
    best: tuple[int, str] | None = None
    for prefix in backend.list_checkpoints(directory):
        n = checkpoint_number(prefix)
        if n is None or (stem is not None and _stem(prefix) != stem) or _basename(prefix) in exclude:
            continue
        if best is None or (n, prefix) > best:
            best = (n, prefix)
    return None if best is None else best[1]


def latest_checkpoint(
    checkpoint_dir: str | os.PathLike[str] | None = None,
    latest_filename: str | CheckpointOptions | None = None,
    *,
    options: CheckpointOptions | None = None,
    directory: str | os.PathLike[str] | None = None,
) -> str | None:
    """Prefix of the newest committed checkpoint in ``checkpoint_dir``, or ``None``.

    Called as ``tf.train.latest_checkpoint(checkpoint_dir, latest_filename=None)``.
    The state file's ``model_checkpoint_path`` is returned when that checkpoint
    is committed, unless the file is stale: a committed checkpoint of the same
    name and format, with a higher ``-N`` and not listed in the file, exists (a
    save crashed after committing but before updating the file); that one is
    returned then. When the file is missing or unreadable, its checkpoint is
    not committed, or it names a path that cannot be one of this directory
    (another store's URL, a NUL byte; logged as a warning), the committed
    checkpoints are listed and the one with the highest ``-N`` suffix is
    returned (of the file's series if it names one; without a file, of the
    series whose highest-numbered checkpoint was committed last). A path
    that is not committed is never returned.

    Unless ``options`` choose a backend, checkpoints of every backend that
    can store them in ``checkpoint_dir`` count (for a local directory: TensorBundle
    and Zarr ones alike; see ``trackpoint.plugins.detect_backends``), and
    they are numbered together by their ``-N`` suffix. With a backend chosen
    (``options`` or ``TRACKPOINT_BACKEND``) only that backend's format counts;
    newer checkpoints of other formats are then named in a warning, once per
    directory (asking costs one listing per other format, only then).

    Parameters
    ----------
    checkpoint_dir
        Local path, ``pathlib.Path`` or URL (``s3://bucket/run``, ``memory://run``, ...).
    latest_filename
        Name of the state file (``None``: ``checkpoint``). A ``CheckpointOptions`` given
        here is taken as ``options``, the place earlier versions had them.
    options
        Chooses and configures the backend.
    directory
        The former name of ``checkpoint_dir``, still accepted as a keyword.

    Raises
    ------
    ArgumentTypeError
        ``checkpoint_dir`` and ``directory`` both given, or neither; options given twice;
        ``latest_filename`` neither a ``str`` nor ``None``.
    """
    from trackpoint._renamed import renamed
    from trackpoint._resolve import open_store
    from trackpoint.errors import ArgumentTypeError
    from trackpoint.storage import CheckpointOptions, _options_argument

    if isinstance(latest_filename, CheckpointOptions):
        if options is not None:
            raise ArgumentTypeError(
                "latest_checkpoint() got options twice, positionally and as options=; pass them as options= only"
            )
        latest_filename, options = None, latest_filename
    if latest_filename is not None and not isinstance(latest_filename, str):
        raise ArgumentTypeError(
            f"latest_checkpoint(): latest_filename must be the state file's name (a str) or None, got "
            f"{type(latest_filename).__name__}; pass options as options="
        )
    options = _options_argument(options, "latest_checkpoint")
    where = os.fspath(renamed("latest_checkpoint", "checkpoint_dir", checkpoint_dir, "directory", directory))
    with open_store(where, options) as backend:
        found = _latest_in(backend, where, latest_filename or DEFAULT_LATEST_FILENAME)
        # A backend chosen explicitly reads its own format alone: say when that missed newer checkpoints.
        _warn_other_formats(where, found, options, backend)
    if found is None:
        _warn_orbax_run(where)
    return found


#: Files Orbax writes into each committed step directory of a run (``run/3/``), or into the items inside it.
_ORBAX_FILES: Final = ("_CHECKPOINT_METADATA", "commit_success.txt", "_METADATA", "manifest.ocdbt")
#: An Orbax step directory's name: the step, after a ``step_prefix`` and ``_`` if the run has one.
_ORBAX_STEP: Final = re.compile(r"^(?:.+_)?(\d+)$")
#: Directories :func:`latest_checkpoint` has warned about (polling loops call it again and again).
_WARNED_ORBAX: set[str] = set()


def orbax_steps(directory: str) -> list[str]:
    """The step directories of an Orbax run directly inside the local ``directory``, by step; ``[]`` if none.

    A step directory is named by its step (``3``, or ``<step_prefix>_3``) and holds Orbax's metadata or
    commit marker, or an item directory that does. Only local directories are looked at: the storage
    contract lists checkpoints, not directories, so an Orbax run in a bucket is not seen. Never raises.
    """
    if _paths.is_url(directory):
        return []
    try:
        local = _paths.strip_file_scheme(directory) or os.curdir
        entries = list(os.scandir(local))
    except (CheckpointError, OSError, ValueError):
        return []
    found: list[tuple[int, str]] = []
    for entry in entries:
        match = _ORBAX_STEP.match(entry.name)
        if match is None:
            continue
        try:
            if not entry.is_dir() or not _holds_orbax(entry.path):
                continue
        except OSError:
            continue
        found.append((int(match.group(1)), entry.name))
    return [name for _, name in sorted(found)]


def _holds_orbax(step: str) -> bool:
    """Whether the directory ``step`` holds Orbax's files, itself or in one of its item directories."""
    if any(os.path.exists(os.path.join(step, name)) for name in _ORBAX_FILES):
        return True
    with os.scandir(step) as items:
        return any(
            item.is_dir() and any(os.path.exists(os.path.join(item.path, name)) for name in _ORBAX_FILES)
            for item in items
        )


def orbax_checkpoint(path: str, store: StorageBackend) -> str | None:
    """What Orbax wrote at ``path``, named for a message (``"an Orbax run (step directories 3, 10)"``), or ``None``.

    A run (its step directories) is seen in a local directory only (see :func:`orbax_steps`); a step or item
    directory of one is seen anywhere, by the files Orbax writes into it, read through ``store`` (what
    ``open_store`` returned for ``path``). For messages of failed restores only: it reads up to one file per
    name Orbax writes. Never raises.
    """
    steps = orbax_steps(path)
    if steps:
        return f"an Orbax run (step directories {', '.join(steps[-5:])})"
    if not _paths.is_url(path):
        try:
            found = _holds_orbax(_paths.strip_file_scheme(path) or os.curdir)
        except (CheckpointError, OSError, ValueError):
            found = False
        return "an Orbax checkpoint (a step directory of an Orbax run, or an item of one)" if found else None
    for name in _ORBAX_FILES:
        try:
            if store.read_file(_paths.join(path, name)) is not None:
                return f"an Orbax checkpoint (it holds {name!r})"
        except CheckpointError:
            continue
    return None


def _warn_orbax_run(directory: str) -> None:
    """Say, once per directory, that ``directory`` holds an Orbax run where no checkpoint of trackpoint's is."""
    if directory in _WARNED_ORBAX:
        return
    steps = orbax_steps(directory)
    if not steps:
        return
    _WARNED_ORBAX.add(directory)
    _log.warning(
        "latest_checkpoint(%r) is None: the directory holds no checkpoint trackpoint reads, but it holds an Orbax "
        "run (step directories %s), a format trackpoint does not read; restoring None starts from scratch. To go "
        "on from that run, restore its latest step with Orbax once and save the values with trackpoint "
        "(manager.save(checkpoint_number=step)); to start a new run, use another directory",
        directory,
        ", ".join(steps[-5:]),
    )


def _latest_in(backend: StorageBackend, directory: str, latest_filename: str = DEFAULT_LATEST_FILENAME) -> str | None:
    """:func:`latest_checkpoint` through ``backend``, what ``open_store`` returned for ``directory``."""
    state = read_checkpoint_state(directory, latest_filename=latest_filename, backend=backend)
    if state is not None:
        path: str = state.model_checkpoint_path
        n = checkpoint_number(path)
        found = _holder(backend, path, directory)
        if found is not None:
            if n is None:
                return path
            # Stale: a checkpoint of the same series, numbered higher and unknown to the
            # state file, was committed by a save that crashed before updating the file.
            # (One the file lists was superseded on purpose, e.g. by an explicit number.)
            # A series is written in one format: only that format is listed, so the
            # common case opens no other backend.
            known = frozenset(_basename(p) for p in state.all_model_checkpoint_paths)
            newer = newest_committed(found, directory, _stem(path), exclude=known)
            if newer is not None and (checkpoint_number(newer) or 0) > n and not _older(found, newer, path):
                return newer
            return path
        if n is not None:
            # Prefer the same series ("ckpt-N") the state file was tracking; one listing serves both choices.
            heads = _series_heads(backend.list_checkpoints(directory))
            same = heads.get(_stem(path))
            return same[1] if same is not None else _newest_head(backend, heads)
    return _newest_head(backend, _series_heads(backend.list_checkpoints(directory)))


def _older(backend: StorageBackend, prefix: str, than: str) -> bool:
    """Whether ``prefix`` was committed before ``than``, by the store's clock; ``False`` if it cannot tell.

    A checkpoint numbered above the state file's but committed before it was not left by a crashed save: it
    was preserved by ``keep_checkpoint_every_n_hours`` before a rollback numbered saves below it again.
    """
    then, mine = backend.modified(than), backend.modified(prefix)
    return then is not None and mine is not None and mine < then


def _series_heads(prefixes: list[str]) -> dict[str, tuple[int, str]]:
    """Each series' (stem's) highest-numbered checkpoint of ``prefixes``, as ``(N, prefix)``."""
    heads: dict[str, tuple[int, str]] = {}
    for prefix in prefixes:
        n = checkpoint_number(prefix)
        if n is None:
            continue
        stem = _stem(prefix)
        if stem not in heads or (n, prefix) > heads[stem]:
            heads[stem] = (n, prefix)
    return heads


def _newest_head(backend: StorageBackend, heads: dict[str, tuple[int, str]]) -> str | None:
    """With no state file to name the series: the head (see :func:`_series_heads`) of the series committed to last.

    Numbers of different series (``ckpt-100``, ``eval-3``, ``other-500``) say nothing about which is newer;
    the commit times of each series' highest-numbered checkpoint do. One series: no commit time is asked.
    """
    if len(heads) <= 1:
        return next((prefix for _, prefix in heads.values()), None)

    def newest(head: tuple[int, str]) -> tuple[float, int, str]:
        modified = backend.modified(head[1])
        return (float("-inf") if modified is None else modified, *head)

    return max(heads.values(), key=newest)[1]


class OtherFormats(NamedTuple):
    """Committed checkpoints of a directory in the formats a backend chosen explicitly does not read.

    See :func:`other_formats`.
    """

    #: The chosen backend's name.
    chosen: str
    #: How it was chosen, for messages (``"the TRACKPOINT_BACKEND environment variable"``).
    source: str
    #: Each checkpoint's prefix, and the backend that holds it.
    found: dict[str, str]

    def describe(self, prefixes: Sequence[str]) -> str:
        """``prefixes`` (of :attr:`found`) for a message: their names, by the backend holding them, newest last."""
        by: dict[str, list[str]] = {}
        for prefix in sorted(prefixes, key=number_order):
            by.setdefault(self.found[prefix], []).append(_basename(prefix))
        return "; ".join(
            f"{', '.join(names[-5:])}{' (and older ones)' if len(names) > 5 else ''} (backend {name!r})"
            for name, names in by.items()
        )


def other_formats(directory: str, options: CheckpointOptions | None, store: StorageBackend) -> OtherFormats | None:
    """The checkpoints in ``directory`` of the formats that a backend chosen explicitly hides from ``store``.

    Readers given ``CheckpointOptions(backend=...)`` or ``TRACKPOINT_BACKEND`` read that backend's format
    alone. This lists the other backends a reader choosing none would ask there (one listing each, what
    that reader's listing costs; see :func:`trackpoint._resolve.hidden`), so that such a reader can tell
    "no run here" from "a run it cannot read". A backend that cannot be opened or listed is logged as a
    warning and skipped: the caller's own backend works, and refusing for a format it did not choose
    would fail it for nothing.

    Parameters
    ----------
    directory
        The directory.
    options
        The caller's options.
    store
        What ``open_store`` returned for ``directory`` and ``options``; when it reads every format
        (nothing was chosen), nothing is asked.

    Returns
    -------
    OtherFormats or None
        ``None`` when no backend was chosen, or no other format holds a checkpoint there. A prefix the
        chosen backend holds too may be among them (a backend writing the format of another, such as
        ``bundle`` on an ``s3://`` URL, and a prefix committed in two formats): callers compare.
    """
    from trackpoint._resolve import hidden

    try:
        chosen = hidden(directory, options, store)
    except CheckpointError as exc:
        _log.warning(
            "%s: could not find which other formats than backend %r's may hold checkpoints there; checkpoints "
            "they hold are not seen: %s",
            directory,
            store.name,
            exc,
        )
        return None
    if chosen is None:
        return None
    source, view = chosen
    found: dict[str, str] = {}
    with view:
        try:
            for backend in view.backends():
                for prefix in backend.list_checkpoints(directory):
                    found.setdefault(prefix, backend.name)
        except CheckpointError as exc:
            _log.warning(
                "%s: could not list the checkpoints of the other formats there (backends %s), which backend %r, "
                "chosen by %s, does not read; checkpoints they hold are not seen: %s",
                directory,
                ", ".join(map(repr, view.names)),
                store.name,
                source,
                exc,
            )
    return OtherFormats(store.name, source, found) if found else None


#: Directories :func:`latest_checkpoint` has warned about for checkpoints of formats it was told not to read.
_WARNED_OTHER_FORMATS: set[str] = set()


def _warn_other_formats(
    directory: str, latest: str | None, options: CheckpointOptions | None, store: StorageBackend
) -> None:
    """Say, once per directory, that the backend chosen explicitly made ``latest`` miss newer checkpoints elsewhere.

    Only then is anything asked: with nothing chosen (``store`` reads every format) this costs nothing, and once
    a directory was warned about, nothing more.
    """
    if directory in _WARNED_OTHER_FORMATS:
        return
    others = other_formats(directory, options, store)
    if others is None:
        return
    number = None if latest is None else checkpoint_number(latest)
    newer = [
        prefix
        for prefix in others.found
        if latest is None
        or (number is not None and _stem(prefix) == _stem(latest) and (checkpoint_number(prefix) or -1) > number)
    ]
    if not newer:
        return
    _WARNED_OTHER_FORMATS.add(directory)
    _log.warning(
        "latest_checkpoint(%r) is %s: it reads only the format of backend %r, chosen by %s, but the directory holds "
        "newer checkpoints of other formats: %s. Choose no backend (unset TRACKPOINT_BACKEND and drop backend= from "
        "the options) to find the latest checkpoint whatever format it is in; read one of those with "
        "CheckpointOptions(backend=<its backend>)",
        directory,
        latest,
        others.chosen,
        others.source,
        others.describe(newer),
    )
