"""TensorFlow's checkpoint-management functions under their TensorFlow names and call shapes.

``tf.train`` and ``tf.compat.v1.train`` code calls these as
``tf.train.get_checkpoint_state(dir)``, ``update_checkpoint_state(save_dir,
path, ...)``, ``checkpoint_exists(prefix)`` and so on; the same calls work on
``trackpoint`` with local paths, ``pathlib.Path`` objects and URLs of any
backend (``s3://``, ``gs://``, ``memory://``, ...). They are thin layers over
:mod:`trackpoint.state`, :mod:`trackpoint.reader` and :mod:`trackpoint.graph`.
"""

from __future__ import annotations

import glob
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from trackpoint import _paths, _resolve, observe, state
from trackpoint.errors import InvalidCheckpointError
from trackpoint.graph import ObjectGraphView
from trackpoint.graph import list_objects as _list_view_objects
from trackpoint.proto.checkpoint_state_pb2 import CheckpointState
from trackpoint.reader import TensorReader, full_name_keys, load_checkpoint, object_metadata, tensor_name
from trackpoint.storage import _options_argument

if TYPE_CHECKING:
    from trackpoint.storage import CheckpointOptions, StorageBackend
    from trackpoint.trackable import Trackable

__all__ = [
    "NewCheckpointReader",
    "checkpoint_exists",
    "checkpoints_iterator",
    "generate_checkpoint_state_proto",
    "get_checkpoint_mtimes",
    "get_checkpoint_state",
    "list_objects",
    "load_variable",
    "meta_graph_filename",
    "object_graph_key_mapping",
    "remove_checkpoint",
    "update_checkpoint_state",
    "wait_for_new_checkpoint",
]


def get_checkpoint_state(
    checkpoint_dir: str | os.PathLike[str],
    latest_filename: str | None = None,
    *,
    options: CheckpointOptions | None = None,
) -> CheckpointState | None:
    """The ``CheckpointState`` of ``checkpoint_dir``, as ``tf.train.get_checkpoint_state``.

    Relative paths in the file are joined onto ``checkpoint_dir`` as passed
    in. ``None`` when there is no state file, or it does not parse (logged as
    a warning, as TensorFlow does).

    Parameters
    ----------
    checkpoint_dir
        Local path, ``pathlib.Path`` or URL of the directory.
    latest_filename
        Name of the state file (default ``checkpoint``).
    options
        Chooses and configures the backend.

    Raises
    ------
    InvalidCheckpointError
        (a ``ValueError``) The file parses but has no ``model_checkpoint_path``,
        as TensorFlow's "Invalid checkpoint state loaded from ...".
    """
    directory = os.fspath(checkpoint_dir)
    name = latest_filename or state.DEFAULT_LATEST_FILENAME
    with _resolve.open_backend(directory, _options_argument(options, "get_checkpoint_state")) as backend:
        got = backend.read_file(_paths.join(directory, name))
        if got is not None and _has_no_model_path(got.data):
            raise InvalidCheckpointError(
                f"Invalid checkpoint state loaded from {directory}: the state file {name!r} has no "
                "model_checkpoint_path; delete it or rewrite it with update_checkpoint_state"
            )
        return state.read_checkpoint_state(directory, latest_filename=name, backend=backend)


def _has_no_model_path(data: bytes) -> bool:
    """Whether ``data`` parses as a CheckpointState without ``model_checkpoint_path``."""
    from google.protobuf import text_format

    parsed = CheckpointState()
    try:
        text_format.Merge(data.decode("utf-8"), parsed)
    except (text_format.ParseError, UnicodeDecodeError):
        return False  # unparsable: a warning and None, as in TensorFlow
    return not parsed.model_checkpoint_path


def generate_checkpoint_state_proto(
    save_dir: str | os.PathLike[str],
    model_checkpoint_path: str | os.PathLike[str],
    all_model_checkpoint_paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    all_model_checkpoint_timestamps: Sequence[float] | None = None,
    last_preserved_timestamp: float | None = None,
) -> CheckpointState:
    """The ``CheckpointState`` proto that :func:`update_checkpoint_state` would write (TensorFlow's rules).

    ``model_checkpoint_path`` is appended to ``all_model_checkpoint_paths``
    (a sequence of paths, or one path alone) unless it is already their last
    element. With a relative ``save_dir``, relative paths are rewritten
    relative to it (``train/model-0`` becomes ``model-0`` for
    ``save_dir="train"``); absolute paths stay as given.

    Raises
    ------
    InvalidCheckpointError
        (a ``ValueError``) The timestamps do not match the paths one to one.
    ArgumentTypeError
        An element of ``all_model_checkpoint_paths`` is no path.
    """
    directory = os.fspath(save_dir)
    model = os.fspath(model_checkpoint_path)
    paths = _paths.path_list(
        all_model_checkpoint_paths or [], "generate_checkpoint_state_proto", "all_model_checkpoint_paths"
    )
    if not paths or paths[-1] != model:
        paths.append(model)
    stamps = list(all_model_checkpoint_timestamps or [])
    if stamps and len(stamps) != len(paths):
        raise InvalidCheckpointError(
            f"Checkpoint timestamps, if provided, must match checkpoint paths (got paths {paths} and timestamps "
            f"{stamps})"
        )
    proto = CheckpointState()
    proto.model_checkpoint_path = state._to_stored(model, directory, False)
    proto.all_model_checkpoint_paths.extend(state._to_stored(p, directory, False) for p in paths)
    proto.all_model_checkpoint_timestamps.extend(stamps)
    if last_preserved_timestamp is not None:
        proto.last_preserved_timestamp = last_preserved_timestamp
    return proto


def update_checkpoint_state(
    save_dir: str | os.PathLike[str],
    model_checkpoint_path: str | os.PathLike[str],
    all_model_checkpoint_paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    latest_filename: str | None = None,
    all_model_checkpoint_timestamps: Sequence[float] | None = None,
    last_preserved_timestamp: float | None = None,
    *,
    save_relative_paths: bool = False,
    options: CheckpointOptions | None = None,
) -> CheckpointState:
    """Write the state file of ``save_dir``, as ``tf.compat.v1.train.update_checkpoint_state``.

    Paths are stored as :func:`generate_checkpoint_state_proto` computes them
    (absolute ones stay absolute, TensorFlow's default here), or relative to
    ``save_dir`` with ``save_relative_paths=True``. The write is atomic and
    conditional, merging with a concurrent writer (see
    :func:`trackpoint.state.update_checkpoint_state`, which takes an opened
    backend instead of ``options``).

    Returns
    -------
    CheckpointState
        The state as stored.

    Raises
    ------
    InvalidCheckpointError
        (a ``ValueError``) The timestamps do not match the paths, or
        ``model_checkpoint_path`` is the state file's own path.
    ArgumentTypeError
        An element of ``all_model_checkpoint_paths`` (a sequence of paths, or
        one path alone) is no path.
    """
    directory = os.fspath(save_dir)
    with _resolve.open_backend(directory, _options_argument(options, "update_checkpoint_state")) as backend:
        return state.update_checkpoint_state(
            backend,
            directory,
            os.fspath(model_checkpoint_path),
            all_model_checkpoint_paths=None
            if all_model_checkpoint_paths is None
            else _paths.path_list(all_model_checkpoint_paths, "update_checkpoint_state", "all_model_checkpoint_paths"),
            all_model_checkpoint_timestamps=all_model_checkpoint_timestamps,
            last_preserved_timestamp=last_preserved_timestamp,
            save_relative_paths=save_relative_paths,
            latest_filename=latest_filename or state.DEFAULT_LATEST_FILENAME,
        )


def checkpoint_exists(checkpoint_prefix: str | os.PathLike[str], *, options: CheckpointOptions | None = None) -> bool:
    """Whether a checkpoint exists at ``checkpoint_prefix``, as ``tf.compat.v1.train.checkpoint_exists``.

    True for a committed checkpoint there, of any format. For a local path
    (or ``file://`` URL) also when, as in TensorFlow, ``<prefix>.index`` or
    ``checkpoint_prefix`` itself matches a file or directory, read as a glob
    pattern: ``ckpt-4.index``, a directory and ``run/ckpt-*`` are all True,
    committed or not. On other stores only a committed checkpoint counts:
    their contract lists checkpoints, not files.

    Parameters
    ----------
    checkpoint_prefix
        A checkpoint prefix (local path, ``pathlib.Path`` or URL), or for a
        local path a glob pattern.
    options
        Chooses and configures the backend.

    Returns
    -------
    bool
        Whether a checkpoint (or, locally, a matching file) exists there.
    """
    prefix = os.fspath(checkpoint_prefix)
    options = _options_argument(options, "checkpoint_exists")
    with _resolve.open_store(_paths.dirname(prefix) or os.curdir, options) as backend:
        if _resolve.holder(backend, prefix) is not None:
            return True
    if _paths.is_url(prefix):
        return False
    local = _paths.strip_file_scheme(prefix)
    # TensorFlow matches with fnmatch, where ``*`` also matches names starting with a dot.
    return any(glob.glob(pattern, include_hidden=True) for pattern in (f"{local}.index", local))


def get_checkpoint_mtimes(
    checkpoint_prefixes: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    options: CheckpointOptions | None = None,
    clock: Callable[[], float] = time.time,
) -> list[float]:
    """When each committed checkpoint of ``checkpoint_prefixes`` was written, as ``tf.train.get_checkpoint_mtimes``.

    A prefix with nothing committed is skipped, as in TensorFlow, so the list
    may be shorter than ``checkpoint_prefixes``. The time is the modification
    time of the checkpoint's commit point as its store reports it
    (:meth:`~trackpoint.storage.StorageBackend.modified`: the ``.index`` file
    of a TensorBundle, the ``zarr.json`` of a Zarr checkpoint, the last
    modification of an S3 or GCS object). A backend that cannot tell gives
    ``clock()``, the current time.

    Parameters
    ----------
    checkpoint_prefixes
        Prefixes (local paths, ``pathlib.Path`` objects or URLs), of any
        directories and stores; one prefix alone is a list of one.
    options
        Chooses and configures the backend.
    clock
        The time given for a checkpoint whose store cannot tell (injectable).

    Returns
    -------
    list of float
        POSIX timestamps, in the order of ``checkpoint_prefixes``.
    """
    prefixes = _paths.path_list(checkpoint_prefixes, "get_checkpoint_mtimes", "checkpoint_prefixes")
    options = _options_argument(options, "get_checkpoint_mtimes")
    by_directory: dict[str, list[int]] = {}
    for i, prefix in enumerate(prefixes):
        by_directory.setdefault(_paths.dirname(prefix) or os.curdir, []).append(i)
    found: dict[int, float] = {}
    for directory, indices in by_directory.items():
        with _resolve.open_store(directory, options) as backend:
            for i in indices:
                stamp = checkpoint_mtime(backend, prefixes[i], clock)
                if stamp is not None:
                    found[i] = stamp
    return [found[i] for i in sorted(found)]


def checkpoint_mtime(backend: StorageBackend, prefix: str, clock: Callable[[], float] = time.time) -> float | None:
    """The commit time of ``prefix`` through ``backend``; ``clock()`` if it cannot tell; ``None`` if absent."""
    owner = _resolve.holder(backend, prefix)
    if owner is None:
        return None
    stamp = owner.modified(prefix)
    return clock() if stamp is None else stamp


def remove_checkpoint(
    checkpoint_prefix: str | os.PathLike[str],
    checkpoint_format_version: int = 2,
    meta_graph_suffix: str = "meta",
    *,
    options: CheckpointOptions | None = None,
) -> None:
    """Delete the checkpoint at ``checkpoint_prefix`` and its ``<prefix>.<meta_graph_suffix>`` file, if any.

    ``checkpoint_format_version`` is accepted for TensorFlow's call shape:
    the format is found from what is stored. Nothing there is not an error.
    """
    del checkpoint_format_version  # the stored format is detected
    prefix = os.fspath(checkpoint_prefix)
    options = _options_argument(options, "remove_checkpoint")
    with _resolve.open_store(_paths.dirname(prefix) or os.curdir, options) as backend:
        found = _resolve.holder(backend, prefix)
        if found is not None:
            observe.delete_checkpoint(found, prefix, reason="delete")
        meta = meta_graph_filename(prefix, meta_graph_suffix)
        if backend.read_file(meta) is not None:
            backend.delete_file(meta)


def meta_graph_filename(checkpoint_filename: str | os.PathLike[str], meta_graph_suffix: str = "meta") -> str:
    """``<prefix>.meta``: where TensorFlow 1 puts a checkpoint's MetaGraphDef.

    A sharded name's ``-?????-of-N`` suffix is dropped first, as in TensorFlow.
    """
    name = os.fspath(checkpoint_filename)
    base = re.sub(r"-[\d\?]+-of-\d+$", "", name)
    return f"{base}.{meta_graph_suffix}"


def load_variable(
    ckpt_dir_or_file: str | os.PathLike[str], name: str | bytes, *, options: CheckpointOptions | None = None
) -> Any:
    """The tensor ``name`` of a checkpoint (a prefix, or a directory's latest), as ``tf.train.load_variable``.

    ``name`` is a checkpoint key (``model/kernel/.ATTRIBUTES/VARIABLE_VALUE``
    for a variable saved by an object-based checkpoint), a ``str`` or UTF-8
    ``bytes``. A trailing ``:0`` (a TensorFlow 1 tensor name) is dropped.

    Raises
    ------
    ArgumentTypeError
        (a ``TypeError``) ``name`` is neither ``str`` nor ``bytes``.
    CheckpointKeyError
        (a ``KeyError``) The checkpoint holds no such tensor; when ``name`` is
        an object's path (``"model/kernel"``), the message names the full keys
        under it.
    """
    # Checked before the checkpoint is opened: a wrong argument is refused by name, whatever is stored.
    name = tensor_name(name, "load_variable")
    if name.endswith(":0"):
        name = name[:-2]
    with load_checkpoint(ckpt_dir_or_file, options) as reader:
        return reader.get_tensor(name)


def NewCheckpointReader(filepattern: str | os.PathLike[str]) -> TensorReader:
    """TensorFlow 1's name for :func:`trackpoint.load_checkpoint` (a prefix, or a directory's latest)."""
    return load_checkpoint(filepattern)


def list_objects(root_trackable: Trackable) -> list[Trackable]:
    """Every object a checkpoint of ``root_trackable`` would save, in saved-graph order (``tf.train.list_objects``).

    Raises
    ------
    TrackableError
        (a ``ValueError``) The graph cannot be saved as it is, for example a
        list whose saved elements were renumbered.
    """
    return _list_view_objects(ObjectGraphView(root_trackable))


def object_graph_key_mapping(checkpoint_path: str | os.PathLike[str]) -> dict[str, str]:
    """``{attribute full name: checkpoint key}`` of an object-based checkpoint (TensorFlow's function).

    The names a name-based :class:`~trackpoint.Saver` finds in such a checkpoint. Unlike TensorFlow's, it
    leaves out the empty ``full_name`` of attributes of objects that are no variables (TensorFlow maps ``""``
    to one of them), which names nothing.

    Raises
    ------
    InvalidCheckpointError
        The checkpoint has no object graph (a name-based checkpoint).
    """
    return full_name_keys(object_metadata(checkpoint_path))


def wait_for_new_checkpoint(
    checkpoint_dir: str | os.PathLike[str],
    last_checkpoint: str | None = None,
    seconds_to_sleep: float = 1.0,
    timeout: float | None = None,
    *,
    options: CheckpointOptions | None = None,
) -> str | None:
    """Wait until ``checkpoint_dir``'s latest checkpoint is one other than ``last_checkpoint``.

    TensorFlow's ``tf.train.wait_for_new_checkpoint``: polls
    :func:`~trackpoint.latest_checkpoint` every ``seconds_to_sleep`` seconds.
    Only committed checkpoints are seen, so a save still being written is
    never returned.

    Parameters
    ----------
    checkpoint_dir
        A local directory or URL.
    last_checkpoint
        The prefix already seen (``None``: any checkpoint is new).
    seconds_to_sleep
        Seconds between polls.
    timeout
        Seconds to wait at most; ``None`` waits for ever.
    options
        Backend and storage options for ``checkpoint_dir``.

    Returns
    -------
    str or None
        The new latest checkpoint, or ``None`` when ``timeout`` ran out.
    """
    stop = None if timeout is None else time.monotonic() + timeout
    while True:
        path = state.latest_checkpoint(checkpoint_dir, options)
        if path is not None and path != last_checkpoint:
            return path
        if stop is not None and time.monotonic() + seconds_to_sleep > stop:
            return None
        time.sleep(seconds_to_sleep)


def checkpoints_iterator(
    checkpoint_dir: str | os.PathLike[str],
    min_interval_secs: float = 0,
    timeout: float | None = None,
    timeout_fn: Callable[[], bool] | None = None,
    *,
    options: CheckpointOptions | None = None,
) -> Iterator[str]:
    """Yield each new latest checkpoint of ``checkpoint_dir`` as it is committed (an evaluator's loop).

    TensorFlow's ``tf.train.checkpoints_iterator``: waits for a checkpoint
    newer than the last one yielded (:func:`wait_for_new_checkpoint`, polling
    once a second), yields its prefix, and yields the next no sooner than
    ``min_interval_secs`` after the previous one was yielded. Checkpoints
    committed while the caller was busy are skipped in favour of the latest,
    as in TensorFlow.

    Parameters
    ----------
    checkpoint_dir
        A local directory or URL.
    min_interval_secs
        Least time between two yields.
    timeout
        Seconds to wait for a new checkpoint; ``None`` waits for ever.
    timeout_fn
        Called when ``timeout`` ran out: ``True`` ends the iteration,
        ``False`` waits again. Without it, a timeout ends the iteration.
    options
        Backend and storage options for ``checkpoint_dir``.

    Yields
    ------
    str
        The prefix of each new latest checkpoint.
    """
    last: str | None = None
    while True:
        path = wait_for_new_checkpoint(checkpoint_dir, last, timeout=timeout, options=options)
        if path is None:
            if timeout_fn is None or timeout_fn():
                return
            continue
        started = time.monotonic()
        last = path
        yield path
        remaining = started + min_interval_secs - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)
