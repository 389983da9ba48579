"""Copy a checkpoint between any two backends (bundle -> Zarr, S3 -> local, ...).

:func:`convert` uses nothing but the storage contract: it opens a
:class:`~trackpoint.storage.CheckpointReader` on the source, and writes the
destination through the save protocol
(:meth:`~trackpoint.storage.StorageBackend.begin`,
:meth:`~trackpoint.storage.StorageBackend.write_shard`,
:meth:`~trackpoint.storage.StorageBackend.commit`, or
:meth:`~trackpoint.storage.StorageBackend.abort`), so it works for every
registered backend, third-party plugins included, and ``overwrite`` means
what it means for a save. Tensors are read one shard
at a time and each shard is dropped once written, so memory stays bounded by
one shard (or by the largest single tensor) whatever the checkpoint's size.

Either side may also be a flat tensor file, chosen by its suffix: safetensors
(``.safetensors``) or numpy's ``.npz`` (see :mod:`trackpoint.interchange`).
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import stat
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np

from trackpoint import _async, _paths, _resolve, observe, state
from trackpoint.errors import (
    ArgumentTypeError,
    CheckpointError,
    CheckpointExistsError,
    CheckpointKeyError,
    CheckpointNotFoundError,
    DataLossError,
    InvalidArgumentError,
    InvalidCheckpointError,
    NameConflictError,
    UnsupportedOptionError,
)
from trackpoint.interchange import FILE_FORMATS, file_format
from trackpoint.storage import (
    CheckpointOptions,
    CheckpointReader,
    ShardResult,
    ShardSpec,
    StorageBackend,
    TensorInfo,
    WriteItem,
    _options_argument,
)

if TYPE_CHECKING:
    from trackpoint.interchange._convert import Progress

__all__ = ["DEFAULT_SHARD_BYTES", "CopiedCheckpoint", "RunCopy", "convert", "convert_run"]

_log = logging.getLogger(__name__)

#: Bytes read into memory before they are written, when the destination
#: options set no ``max_shard_bytes``.
DEFAULT_SHARD_BYTES: Final = 256 * 2**20

#: Suffixes of files in formats :func:`convert` does not write, with what they are. Without a backend chosen
#: in ``dst_options``, a destination ending in one is refused: it would otherwise name a checkpoint prefix
#: (``out.pt`` written as ``out.pt.index`` and ``out.pt.data-00000-of-00001``). Checkpoint prefixes of
#: TensorFlow's own style (``model.ckpt``, ``model.ckpt-1000``, ``run/ckpt-1``) end in no such suffix.
_FOREIGN_SUFFIXES: Final = {
    ".pt": "PyTorch (torch.save)",
    ".pth": "PyTorch (torch.save)",
    ".bin": "PyTorch (pytorch_model.bin)",
    ".h5": "HDF5 (Keras)",
    ".hdf5": "HDF5",
    ".keras": "Keras",
    ".onnx": "ONNX",
    ".pb": "TensorFlow GraphDef or SavedModel",
    ".tflite": "TensorFlow Lite",
    ".pkl": "pickle",
    ".pickle": "pickle",
    ".joblib": "joblib",
    ".npy": "single numpy array",
    ".msgpack": "msgpack (Flax)",
    ".gguf": "GGUF",
    ".ggml": "GGML",
    ".json": "JSON",
    ".zip": "zip archive",
    ".tar": "tar archive",
    ".tgz": "tar archive",
    ".gz": "gzip",
    ".safetensor": "safetensors (whose suffix is .safetensors)",
    ".index": "TensorBundle index",
    ".zarr": "Zarr group",
}
#: The data files of a TensorBundle (``ckpt-1.data-00000-of-00001``).
_BUNDLE_DATA: Final = re.compile(r"\.data-\d+-of-\d+", re.IGNORECASE)

# Stand-in size of a string tensor for planning (its real size is unknown
# until read); keeps a shard of many string tensors from growing unbounded.
_STRING_ESTIMATE: Final = 4096


def convert(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    src_options: CheckpointOptions | None = None,
    dst_options: CheckpointOptions | None = None,
    overwrite: bool = False,
    names: Literal["paths", "keys"] = "paths",
    include: str | Sequence[str] = (),
    exclude: str | Sequence[str] = (),
    separator: str = "/",
    strip_prefix: str | Sequence[str] = (),
    progress: Progress | None = None,
) -> None:
    """Copy every tensor of the checkpoint ``src``, the object graph included, to ``dst``.

    Parameters
    ----------
    src
        Prefix of a committed checkpoint, on any backend, or a directory
        holding checkpoints, meaning its latest one. Found from the path
        alone, as :meth:`~trackpoint.Checkpoint.restore` finds it: a checkpoint
        saved with ``CheckpointOptions(backend="zarr")`` at a plain path needs
        no ``src_options``. Or a local ``.safetensors`` / ``.npz`` file to import.
    dst
        Prefix to write; the backend is chosen as for a save (URL scheme,
        ``dst_options.backend``, ``TRACKPOINT_BACKEND``). Or a local
        ``.safetensors`` / ``.npz`` file to export to. A prefix ending in the
        suffix of another file format (``.pt``, ``.pth``, ``.bin``, ``.h5``,
        ``.keras``, ``.onnx``, ``.pb``, ``.pkl``, ``.npy``, ``.json``, a
        bundle's ``.index``, ...) is refused unless
        ``dst_options.backend`` is set: that format is not written, and the
        checkpoint would be named like such a file.
    src_options, dst_options
        Options selecting and configuring each side's backend. The
        destination's ``backend_options`` apply to the written checkpoint
        (e.g. Zarr compression) and its ``max_shard_bytes`` bounds how many
        bytes are held in memory at once (default :data:`DEFAULT_SHARD_BYTES`).
    overwrite
        Replace a checkpoint already committed at ``dst`` (or the file ``dst``).
    names
        Tensor names of an exported file: ``"paths"``, the object-graph paths
        (``model/layer/kernel``), or ``"keys"``, the checkpoint keys
        (``model/layer/kernel/.ATTRIBUTES/VARIABLE_VALUE``). Keys name every
        tensor; a path cannot name a tensor with a local name on its path
        that is empty or holds ``separator`` (a dict key ``"dense/kernel"``).
        Ignored for a copy to a checkpoint.
    include, exclude
        ``fnmatch`` patterns (``*`` also matches ``/``) on a tensor's path or
        key, a single pattern given as a string (``include="model/*"``) or a
        sequence of them: only tensors matching an include pattern (all, when none is
        given) and no exclude pattern are copied; the object graph keeps
        the attributes of the copied tensors only. The path is matched as
        its local names read joined by ``separator``, whatever they hold.
    separator
        What separates local names in a file's tensor names (``"."`` for
        ``layers.0.weight``), on import and export.
    strip_prefix
        Prefixes to remove from the names of an exported file's tensors, as
        ``names`` and ``separator`` write them: a torch module given to the
        checkpoint as ``model`` has its entries named
        ``model/.ATTRIBUTES/0.weight``, which ``"model/.ATTRIBUTES/"`` makes
        the module's own ``0.weight``. A name starting with several loses the
        longest; a name starting with none is kept. The file's metadata still
        records each tensor's key, so importing it gives back the checkpoint.
        Only for an export (a copy to a checkpoint keeps its keys).
    progress
        Called as ``progress(done_bytes, total_bytes)`` while tensors are copied.
        Independently, the copy fires the save events of
        :mod:`trackpoint.observe` (``operation="convert"``), which drive a
        progress bar on a terminal (``dst_options.progress``) and the log,
        and the write callbacks of ``dst_options`` run once it is committed.

    Raises
    ------
    CheckpointNotFoundError
        Nothing is committed at ``src``, and it is no directory holding checkpoints.
    CheckpointExistsError
        ``dst`` is committed and ``overwrite`` is false, or ``dst`` is ``src``.
    UnsupportedDTypeError
        An exported tensor has a dtype the file format cannot hold (strings
        in safetensors); leave it out with ``exclude``.
    NameConflictError
        ``names="paths"`` and an exported tensor's path cannot name it (a
        local name holds ``separator``), or two would get one name: export
        with ``names="keys"``, another ``separator``, or ``exclude`` it. Or
        ``strip_prefix`` leaves two tensors one name, or one none at all.
    CheckpointKeyError
        A prefix of ``strip_prefix`` begins no exported tensor's name (a typo
        would otherwise export the names unchanged), or ``include`` and
        ``exclude`` select no tensor.
    DataLossError
        The source is damaged: its bytes fail a checksum, such as the
        CRC-32C of every tensor a safetensors export of trackpoint records.
    BackendUnavailableError
        Writing safetensors needs the ``safetensors`` extra.
    InvalidPathError
        ``dst`` holds a character no store accepts (a NUL byte).
    InvalidArgumentError
        ``dst`` ends in the suffix of a file format :func:`convert` does not
        write (the message lists those it writes), and no backend is chosen in
        ``dst_options``; or ``strip_prefix`` is given for a copy to a
        checkpoint, or holds an empty prefix.
    ArgumentTypeError
        ``src_options`` or ``dst_options`` is not a ``CheckpointOptions``; or
        ``include``, ``exclude`` or ``strip_prefix`` is neither a string nor a
        sequence of strings.
    UnsupportedOptionError
        ``dst_options`` ask for an asynchronous save (``enable_async``):
        :func:`convert` returns once the copy is committed, so there would be
        nothing to wait on for the background write.

    Notes
    -----
    The copy is committed in one step like any save: until :func:`convert`
    returns, ``dst`` is not visible, and on failure whatever was written is
    removed, and so are the directories the copy made for a local ``dst``
    (those still empty: a directory that existed before is kept). Values,
    dtypes and shapes are copied exactly; the destination decides the
    physical layout (sharding, chunking, compression).

    A file written by an export records the checkpoint keys and object graph
    in its metadata, so importing it gives back the exported checkpoint. A
    safetensors export also records a CRC-32C of every tensor and of that
    metadata, the format having no checksums of its own; reading the file
    (an import, :func:`~trackpoint.verify`, :func:`~trackpoint.diff`)
    checks them. Any
    other file becomes a checkpoint whose object graph follows its names
    (:func:`trackpoint.interchange.graph_from_names`), which
    ``Checkpoint(...).restore`` matches by path.

    Examples
    --------
    >>> trackpoint.convert("/runs/ckpt-7", "zarr+s3://bucket/runs/ckpt-7")  # doctest: +SKIP
    >>> trackpoint.convert("/runs/ckpt-7", "/tmp/model.safetensors", exclude=["*OPTIMIZER_SLOT*"])  # doctest: +SKIP
    """
    started = time.perf_counter()
    src_path, dst_path = os.fspath(src), os.fspath(dst)
    s_opts = _options_argument(src_options, "convert(src_options=...)") or CheckpointOptions()
    d_opts = _options_argument(dst_options, "convert(dst_options=...)") or CheckpointOptions()
    if d_opts.backend is None:
        _refuse_foreign_file(dst_path)
    if _async.enabled(d_opts):
        # Refused rather than ignored: a caller asking for a background copy would otherwise
        # wait for the whole copy without knowing why.
        raise UnsupportedOptionError(
            f"convert of {src_path!r} to {dst_path!r}: dst_options ask for an asynchronous save "
            "(enable_async=True), but convert copies synchronously and returns once the copy is committed, "
            "leaving nothing to wait on; drop enable_async from dst_options (run convert in a thread of "
            "your own to overlap it with other work)"
        )
    # The source is only read: its async fields (shared options of a training run) mean nothing here.
    s_opts = _async.storage_options_of(s_opts) or CheckpointOptions()
    src_fmt, dst_fmt = file_format(src_path), file_format(dst_path)
    prefixes = _prefixes(strip_prefix, dst_path, dst_fmt)
    include, exclude = _patterns("include", include), _patterns("exclude", exclude)
    _refuse_unwritable(_paths.check(dst_path), dst_fmt, _source_name(src_path))
    # Taken before anything is written: a save makes its prefix's directory in begin() (an export its file's),
    # before most of the source is read, so a copy that fails (a damaged source, a full disk, Ctrl-C) would
    # leave them behind, empty. Only those still empty are removed; one that existed before is never in the list.
    # The path is checked first: a NUL byte in it would fail os.rmdir with a ValueError of its own.
    created = _missing_directories(_paths.check(dst_path))
    try:
        if src_fmt is not None or dst_fmt is not None or include or exclude:
            _convert_selected(
                started,
                src_path,
                dst_path,
                src_fmt,
                dst_fmt,
                s_opts,
                d_opts,
                overwrite,
                names,
                include,
                exclude,
                separator,
                prefixes,
                progress,
            )
        else:
            _convert_checkpoint(started, src_path, dst_path, s_opts, d_opts, overwrite, progress)
    except BaseException:
        _paths.remove_empty(created)
        raise
    observe.run_write_callbacks(d_opts, dst_path)


@dataclass(frozen=True, slots=True)
class CopiedCheckpoint:
    """What :func:`convert_run` did with one checkpoint of the source directory.

    Parameters
    ----------
    src
        The checkpoint's prefix in the source directory.
    dst
        The prefix of its copy, the same name in the destination directory.
    action
        ``"copied"``: committed at ``dst``. ``"replaced"``: committed over another checkpoint committed at
        ``dst`` (``overwrite``). ``"skipped"``: ``dst`` already held an equal checkpoint (an earlier run
        copy's), nothing was written. ``"vanished"``: deleted from the source after it was listed (a
        ``CheckpointManager`` retiring it), so not copied.
    bytes
        Bytes copied (``0`` when nothing was written).
    """

    src: str
    dst: str
    action: Literal["copied", "replaced", "skipped", "vanished"]
    bytes: int = 0


@dataclass(frozen=True, slots=True)
class RunCopy:
    """What :func:`convert_run` did.

    Parameters
    ----------
    src, dst
        The source and destination directories.
    checkpoints
        One entry per checkpoint of the source, oldest (lowest ``-N``) first.
    state_file
        The state file written at the destination, ``None`` when the source has none.
    """

    src: str
    dst: str
    checkpoints: tuple[CopiedCheckpoint, ...]
    state_file: str | None


def convert_run(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    src_options: CheckpointOptions | None = None,
    dst_options: CheckpointOptions | None = None,
    overwrite: bool = False,
    on_checkpoint: Callable[[CopiedCheckpoint], None] | None = None,
) -> RunCopy:
    """Copy a whole run: every checkpoint of the directory ``src``, then its state file, into the directory ``dst``.

    Each checkpoint is copied by :func:`convert` under its own name (``ckpt-3`` stays ``ckpt-3``), oldest
    first, with every tensor it stores: the metrics a :class:`~trackpoint.CheckpointManager` saved with it
    come along, so a manager with ``best_fn`` opened on ``dst`` ranks the checkpoints as on ``src``. The
    state file is written last, listing what the source's lists (paths relative to ``dst``, their
    timestamps and ``last_preserved_timestamp`` as they are), so such a manager restores the same latest
    checkpoint, keeps the same ones, and leaves a preserved (unlisted) one alone.

    Parameters
    ----------
    src
        A directory holding checkpoints, on any backend. Checkpoints of every format stored there are
        copied, or only those of the backend ``src_options`` chooses.
    dst
        The directory to copy into; the backend is chosen as for a save (URL scheme,
        ``dst_options.backend``, ``TRACKPOINT_BACKEND``). It must not be ``src``.
    src_options, dst_options
        As for :func:`convert` (``dst_options.backend_options`` apply to every copy).
    overwrite
        Replace checkpoints committed in ``dst`` under the source's names that differ from the source's,
        and a state file there that lists something else. Checkpoints of ``dst`` the source does not hold
        are never deleted (a warning names those of the same series: a manager opened on ``dst`` would
        not list them).
    on_checkpoint
        Called with each :class:`CopiedCheckpoint` once that checkpoint is done (committed, skipped or
        found gone), before the next one is read.

    Returns
    -------
    RunCopy
        What was done with each checkpoint, and the state file written.

    Raises
    ------
    CheckpointNotFoundError
        No checkpoint is committed in ``src``.
    CheckpointExistsError
        Without ``overwrite``: ``dst`` holds checkpoints of the source's series (``ckpt-N``) other than equal
        copies of the source's, or a state file listing something else. Raised before anything is written,
        naming them.
    InvalidArgumentError
        ``src`` or ``dst`` is a ``.safetensors`` / ``.npz`` file (:func:`convert` exports one checkpoint); or
        ``dst`` is ``src``, with or without ``overwrite``.

    Notes
    -----
    Each copy is committed as :func:`convert` commits it, so a run copy that fails or is interrupted
    leaves in ``dst`` the checkpoints copied whole, nothing of the one being copied, and no new state
    file: a manager opened there does not take the partial run for the source's. Running it again
    resumes: a checkpoint already in ``dst`` is compared with its source, tensor by tensor and exactly (as
    :func:`~trackpoint.diff` compares, metrics included), and skipped when equal. That reads both
    copies, which costs reading, not writing; pass ``overwrite=True`` to have the differing ones replaced.
    Memory stays bounded as for :func:`convert`: one shard (or tensor) at a time.

    Examples
    --------
    >>> convert_run("/runs/a", "s3://bucket/runs/a")  # doctest: +SKIP
    """
    src_dir, dst_dir = _paths.check(os.fspath(src)), _paths.check(os.fspath(dst))
    s_opts = _options_argument(src_options, "convert_run(src_options=...)") or CheckpointOptions()
    d_opts = _options_argument(dst_options, "convert_run(dst_options=...)") or CheckpointOptions()
    for side, path in (("source", src_dir), ("destination", dst_dir)):
        if file_format(path) is not None:
            raise InvalidArgumentError(
                f"convert_run: the {side} {path!r} is a {file_format(path)} file, and a run copy copies the "
                "checkpoints of a directory into a directory; export or import one checkpoint with convert",
                url=path,
            )
    if _same_directory(src_dir, dst_dir):
        raise InvalidArgumentError(
            f"convert_run: source and destination are the same directory {src_dir!r}; copy the run into another "
            "directory"
        )
    source = _resolve.open_store(src_dir, _async.storage_options_of(s_opts))
    target = _resolve.open_store(dst_dir, _async.storage_options_of(d_opts))
    try:
        names = _run_checkpoints(source, src_dir)
        src_state = state.read_checkpoint_state(src_dir, backend=source)
        wanted = None if src_state is None else _state_for(src_state, dst_dir, relative=False)
        skip, replace = _plan_run(names, source, target, src_dir, dst_dir, s_opts, d_opts, wanted, overwrite)
        done: list[CopiedCheckpoint] = []
        for name, src_prefix in names.items():
            dst_prefix = _paths.join(dst_dir, name)
            entry: CopiedCheckpoint
            if name in skip:
                entry = CopiedCheckpoint(src_prefix, dst_prefix, "skipped")
            else:
                entry = _copy_one(source, src_prefix, dst_prefix, s_opts, d_opts, name in replace)
            done.append(entry)
            if on_checkpoint is not None:
                on_checkpoint(entry)
        written = None
        if src_state is not None:
            # Last: until it is written, a manager opened on dst finds no state file of the run (an interrupted
            # copy is no run yet), and once it is, every checkpoint it lists is committed.
            listed = _state_for(src_state, dst_dir, relative=True)
            state.modify_checkpoint_state(
                _resolve.writer(target), dst_dir, lambda current: _with_other_series(listed, current, names)
            )
            written = _paths.join(dst_dir, state.DEFAULT_LATEST_FILENAME)
    finally:
        target.close()
        source.close()
    return RunCopy(src_dir, dst_dir, tuple(done), written)


def _same_directory(a: str, b: str) -> bool:
    """Whether the directories ``a`` and ``b`` are one (a trailing ``/`` and, locally, ``..`` aside)."""
    if _paths.is_url(a) or _paths.is_url(b):
        return a.rstrip("/") == b.rstrip("/")
    return _same_file(a, b)


def _run_checkpoints(source: StorageBackend, src_dir: str) -> dict[str, str]:
    """The committed checkpoints of ``src_dir`` as ``{name: prefix}``, oldest (lowest ``-N``) first.

    Raises
    ------
    CheckpointNotFoundError
        There is none; the message says so of a checkpoint prefix passed for its directory.
    """
    prefixes = source.list_checkpoints(src_dir)
    if not prefixes:
        hint = ""
        if _resolve.holder(source, src_dir) is not None:
            hint = (
                f": it is a checkpoint prefix, not a directory; pass its directory {_paths.dirname(src_dir)!r} to "
                "copy the run, or copy this one checkpoint with convert"
            )
        raise CheckpointNotFoundError(
            f"convert_run: no checkpoint is committed in the directory {src_dir!r}{hint}", url=src_dir
        )
    return {state._basename(p): p for p in sorted(prefixes, key=state.number_order)}


def _state_for(src_state: state.CheckpointState, dst_dir: str, *, relative: bool) -> state.CheckpointState:
    """The source's state file (paths resolved, as read) for ``dst_dir``: each path the same name in it.

    ``relative``: as written (names relative to ``dst_dir``, as a manager writes them); else resolved, as
    :func:`trackpoint.state.read_checkpoint_state` returns the destination's, to compare with it.
    """
    out = state.CheckpointState()
    out.CopyFrom(src_state)

    def moved(path: str) -> str:
        name = state._basename(path)
        return name if relative else _paths.join(dst_dir, name)

    out.model_checkpoint_path = moved(src_state.model_checkpoint_path)
    del out.all_model_checkpoint_paths[:]
    out.all_model_checkpoint_paths.extend(moved(p) for p in src_state.all_model_checkpoint_paths)
    return out


def _with_other_series(
    run: state.CheckpointState, current: state.CheckpointState | None, names: Collection[str]
) -> state.CheckpointState:
    """The state file a run copy writes: ``run``'s, and the entries of ``current`` of series the run has none of.

    ``run`` is the source's state file for the destination; ``current`` the destination's, paths in the same
    form (both as stored or both resolved). Another job's manager saving there under another checkpoint name
    keeps its checkpoints listed, so that it goes on retiring them. As a manager merges the entries of other
    series: ordered by time when every entry has one (on equal times the other series' first), else before
    the run's, and the newest ``last_preserved_timestamp`` of the two.
    """
    if current is None:
        return run
    stems = {state._stem(name) for name in names}
    others = [(p, t) for p, t in state.timed_entries(current) if state._stem(p) not in stems]
    if not others:
        # The source's file as it is: compared with the destination's to tell an earlier copy of the run.
        return run
    return state.merge_other_series(run, state.timed_entries(run), others, current.last_preserved_timestamp)


def _plan_run(
    names: dict[str, str],
    source: StorageBackend,
    target: StorageBackend,
    src_dir: str,
    dst_dir: str,
    s_opts: CheckpointOptions,
    d_opts: CheckpointOptions,
    wanted: state.CheckpointState | None,
    overwrite: bool,
) -> tuple[set[str], set[str]]:
    """Before a run copy writes anything: the names to skip (equal copies at ``dst_dir``) and to replace.

    Raises
    ------
    CheckpointExistsError
        Without ``overwrite``, when ``dst_dir`` holds anything of the run that a copy would replace or that
        its state file would leave out.
    """
    stems = {state._stem(name) for name in names}
    skip: set[str] = set()
    replace: set[str] = set()
    others: list[str] = []
    for prefix in _every_format(target, dst_dir, d_opts):
        name = state._basename(prefix)
        if name in names:
            if _equal_copy(names[name], prefix, s_opts, d_opts):
                skip.add(name)
            else:
                replace.add(name)
        elif state._stem(name) in stems:
            others.append(name)
    current = state.read_checkpoint_state(dst_dir, backend=target)
    # The other series it lists are kept (see _with_other_series): an earlier copy of the run is no change.
    other_state = (
        None if current is None or wanted is None or current == _with_other_series(wanted, current, names) else current
    )
    if not overwrite and (replace or others or other_state is not None):
        found = [f"checkpoints that differ from the source's: {', '.join(sorted(replace))}"] if replace else []
        if others:
            found.append(f"checkpoints of the same series the source does not hold: {', '.join(sorted(others))}")
        if other_state is not None:
            found.append(f"a state file listing other checkpoints (latest {other_state.model_checkpoint_path!r})")
        raise CheckpointExistsError(
            f"convert_run: the destination {dst_dir!r} already holds {'; and '.join(found)}. Nothing was written. "
            "Copy into another directory, or pass overwrite=True to replace them (checkpoints the source does "
            "not hold are kept, unlisted)",
            url=dst_dir,
        )
    if others:
        _log.warning(
            "%s: checkpoints of the series copied there that %s does not hold are kept but left out of the state "
            "file, so a CheckpointManager opened there neither lists nor retires them: %s; delete them "
            "(trackpoint rm) if they are not needed",
            dst_dir,
            src_dir,
            ", ".join(sorted(others)),
        )
    return skip, replace


def _every_format(target: StorageBackend, dst_dir: str, d_opts: CheckpointOptions) -> list[str]:
    """The checkpoints committed in ``dst_dir``: those of ``target``, and those a backend chosen in ``d_opts`` hides.

    A copy at a prefix where another format is committed is refused by :func:`convert` (or replaces it, with
    ``overwrite``); listed here, that is found before the run copy writes anything.
    """
    found = list(target.list_checkpoints(dst_dir))
    hidden = _resolve.hidden(dst_dir, d_opts, target)
    if hidden is not None:
        with hidden[1] as others:
            found += others.list_checkpoints(dst_dir)
    return found


def _equal_copy(src_prefix: str, dst_prefix: str, s_opts: CheckpointOptions, d_opts: CheckpointOptions) -> bool:
    """Whether the checkpoint ``dst_prefix`` holds every tensor of ``src_prefix`` exactly, metrics included."""
    # Imported on use, as the file formats' modules are: diff brings in the manager, needed by run copies alone.
    from trackpoint.diff import diff

    try:
        report = diff(src_prefix, dst_prefix, a_options=s_opts, b_options=d_opts)
    except CheckpointNotFoundError:
        return False  # committed in a format dst_options do not read: no copy of theirs
    except (DataLossError, InvalidCheckpointError) as exc:
        # A damaged copy is no copy: replaced with overwrite, refused without.
        _log.warning("%s cannot be read whole (%s); it is not taken for a copy of %s", dst_prefix, exc, src_prefix)
        return False
    return report.equal and report.metrics is None


def _copy_one(
    source: StorageBackend,
    src_prefix: str,
    dst_prefix: str,
    s_opts: CheckpointOptions,
    d_opts: CheckpointOptions,
    replace: bool,
) -> CopiedCheckpoint:
    """Copy one checkpoint of a run with :func:`convert` (committed whole or not at all)."""
    copied = 0

    def count(done: int, total: int) -> None:
        nonlocal copied
        copied = done

    try:
        convert(src_prefix, dst_prefix, src_options=s_opts, dst_options=d_opts, overwrite=replace, progress=count)
    except CheckpointNotFoundError:
        if _resolve.holder(source, src_prefix) is not None:
            raise
        return CopiedCheckpoint(src_prefix, dst_prefix, "vanished")
    return CopiedCheckpoint(src_prefix, dst_prefix, "replaced" if replace else "copied", copied)


def _refuse_foreign_file(dst: str) -> None:
    """Refuse ``dst`` when it ends in the suffix of a file format convert does not write (:data:`_FOREIGN_SUFFIXES`).

    Raises
    ------
    InvalidArgumentError
        Naming the format, the formats convert writes, and how to write a checkpoint under that name anyway.
    """
    name = dst.rstrip("/").rsplit("/", 1)[-1].rsplit(os.sep, 1)[-1]
    suffix = posixpath.splitext(name)[1].lower()
    data = _BUNDLE_DATA.search(name)
    if data is not None and data.end() == len(name):
        suffix = ".data"
        prefix = dst[: len(dst) - len(name) + data.start()]
    elif suffix in _FOREIGN_SUFFIXES:
        prefix = dst[: len(dst) - len(suffix)]
    else:
        return
    if suffix in (".index", ".data"):
        message = (
            f"it is a file of the TensorBundle checkpoint {prefix!r}, not a checkpoint; a checkpoint is "
            f"named by its prefix: pass {prefix!r}"
        )
    elif suffix == ".zarr":
        message = (
            f"a Zarr checkpoint at the prefix {prefix!r} is stored as {dst!r}; pass {prefix!r} with "
            "dst_options=CheckpointOptions(backend='zarr')"
        )
    else:
        backend = "NAME" if _paths.is_url(dst) else "'bundle'"
        message = (
            f"{suffix!r} is the suffix of {_FOREIGN_SUFFIXES[suffix]} files, a format convert does not write. It "
            f"writes {' and '.join(FILE_FORMATS)} files (chosen by that suffix) and checkpoints at a prefix without "
            f"a file suffix, such as 'out/ckpt-1' ({_backend_names()}); to write a checkpoint under this very name, "
            f"choose its backend: dst_options=CheckpointOptions(backend={backend})"
        )
    raise InvalidArgumentError(f"convert: cannot write {dst!r}: {message}", url=dst)


#: What a local path that is neither a directory nor a regular file is, by its file type.
_SPECIAL_FILES: Final = {
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFSOCK: "a socket",
}
#: What convert writes where it can: the end of its messages refusing a destination.
_DESTINATIONS: Final = (
    "a checkpoint prefix such as 'out/ckpt-1' (its files are written beside it: 'out/ckpt-1.index', ...), "
    "or a .safetensors or .npz file to export to"
)


def _local(dst: str) -> str | None:
    """The local path ``dst`` names (``file://`` stripped), or ``None`` for a URL of another store."""
    return None if _paths.is_url(dst) else _paths.strip_file_scheme(dst)


def _refuse_unwritable(dst: str, dst_fmt: str | None, src_name: str) -> None:
    """Refuse a destination that no checkpoint or file can be written at, before anything is read or made.

    That is a prefix naming a directory (``out/``, trailing slash), and a local path that exists and is
    a device, named pipe or socket (``/dev/null``): a checkpoint prefix there would be written beside it
    (``/dev/null.index``), and a file export would replace it.

    Raises
    ------
    InvalidArgumentError
        Naming what is at ``dst`` and what to pass instead.
    """
    if dst_fmt is None and dst.endswith("/"):
        name = posixpath.join(dst, src_name)
        raise InvalidArgumentError(
            f"convert: cannot write {dst!r}: it names a directory (it ends in '/'), and a checkpoint is named by "
            f"its prefix; pass a prefix inside the directory, such as {name!r}",
            url=dst,
        )
    local = _local(dst)
    if local is None:
        return
    try:
        mode = os.stat(local).st_mode
    except (OSError, ValueError):
        return  # nothing there (or not reachable): whatever writes there says what fails
    kind = _SPECIAL_FILES.get(stat.S_IFMT(mode))
    if kind is None:
        return
    if dst_fmt is None:
        what = f"not a checkpoint prefix (a checkpoint there would be written beside it, as {dst + '.index'!r})"
    else:
        what = "not a regular file an export can replace (it writes a new file and renames it to that path)"
    raise InvalidArgumentError(f"convert: cannot write {dst!r}: it is {kind}, {what}; choose {_DESTINATIONS}", url=dst)


def _refuse_occupied(dst: str, local: str, target: StorageBackend, name: str) -> None:
    """Refuse a local prefix ``dst`` (the path ``local``) where a directory or a file exists and no checkpoint.

    A checkpoint is written beside its prefix (``dst.index``, ``dst.zarr``), so a directory ``dst`` would
    get a checkpoint next to it rather than in it, and a file ``dst`` one that looks like its companion.
    Where a checkpoint is committed at ``dst`` (a format storing a checkpoint as that very file or
    directory, or one beside a directory of that name) the caller lets the copy go ahead, as a save would.
    ``name`` is the source's own name, for the prefix suggested inside a directory.

    Raises
    ------
    InvalidArgumentError
        Naming what is at ``dst`` and what to pass instead.
    """
    if os.path.isdir(local):
        inside = posixpath.join(dst.rstrip("/"), name)
        raise InvalidArgumentError(
            f"convert: cannot write a checkpoint at {dst!r}: it is an existing directory, and a checkpoint is "
            f"named by its prefix, its files written beside it ({target.name} would write them next to the "
            f"directory, not in it); to write into the directory, pass a prefix inside it, such as {inside!r}",
            url=dst,
        )
    if os.path.isfile(local):
        raise InvalidArgumentError(
            f"convert: cannot write a checkpoint at {dst!r}: it is an existing file that holds no checkpoint "
            f"(a checkpoint at that prefix would be written beside it, as {dst + '.index'!r} or similar, never "
            f"replacing it); choose {_DESTINATIONS}",
            url=dst,
        )


def _source_name(path: str) -> str:
    """The last component of a source checkpoint's prefix or file, without a file suffix: a name for a copy."""
    name = re.split(r"[/\\]", path.rstrip("/" + os.sep))[-1] or "ckpt"
    stem, suffix = posixpath.splitext(name)
    return stem if suffix.lower() in FILE_FORMATS else name


def _backend_names() -> str:
    """The installed backends, for a message: the checkpoint formats and stores convert can write."""
    try:
        from trackpoint.plugins import list_backends

        names = [info.name for info in list_backends() if info.available]
    except Exception:  # noqa: BLE001 - only a message is at stake; the refusal stands without the list
        names = []
    return f"backends: {', '.join(names)}" if names else "any backend"


def _missing_directories(dst: str) -> list[str]:
    """The directories above the local destination ``dst`` that do not exist yet, deepest first.

    ``[]`` for a URL: an object store has no directories to leave behind. ``..`` is resolved as the
    local file layer resolves it, so the list names the directories a save there would make.
    """
    if _paths.is_url(dst):
        return []
    path = _paths.normalize_local(_paths.strip_file_scheme(dst))
    return _paths.missing_directories(os.path.dirname(os.path.abspath(path)))


def _convert_checkpoint(
    started: float,
    src_path: str,
    dst_path: str,
    s_opts: CheckpointOptions,
    d_opts: CheckpointOptions,
    overwrite: bool,
    progress: Progress | None,
) -> None:
    """A copy of a whole checkpoint to a checkpoint: no flat file on either side, no selection."""
    source = _resolve.open_store(src_path, s_opts)
    target: StorageBackend | None = None
    try:
        # Resolved as every reader resolves a path (restore, inspect, verify, diff): a checkpoint
        # prefix, or a directory meaning its latest checkpoint.
        src_prefix, reader = _resolve.open_checkpoint(src_path, source)
        with reader:
            src_backend = _resolve.holder_name(source, src_prefix)
            target = _resolve.open_backend(dst_path, d_opts)
            if src_backend == target.name and _same_place(source, src_prefix, dst_path):
                raise CheckpointExistsError(
                    f"convert: source and destination are the same checkpoint {src_prefix!r} on backend "
                    f"{target.name!r}; choose another destination prefix"
                )
            shadowed = _existing(dst_path, d_opts, target, overwrite, _source_name(src_prefix))
            try:
                _copy(reader, target, dst_path, d_opts, overwrite, progress, started)
            except BaseException:
                if shadowed is not None:
                    shadowed.close()
                raise
            _resolve.retire(dst_path, shadowed, target)
    finally:
        if target is not None:
            target.close()
        source.close()


def _convert_selected(
    started: float,
    src: str,
    dst: str,
    src_fmt: str | None,
    dst_fmt: str | None,
    s_opts: CheckpointOptions,
    d_opts: CheckpointOptions,
    overwrite: bool,
    names: str,
    include: Sequence[str],
    exclude: Sequence[str],
    separator: str,
    prefixes: Sequence[str],
    progress: Progress | None,
) -> None:
    """A copy with a flat file on either side, or with a selection of tensors."""
    # Imported here: `import trackpoint` stays free of the file formats' modules.
    from trackpoint.interchange._convert import FlatReader, Selected, export, open_source, total_bytes

    if _same_file(src, dst):
        raise CheckpointExistsError(
            f"convert: source and destination are the same, {src!r}; choose another destination"
        )
    target = None if dst_fmt is not None else _resolve.open_backend(dst, d_opts)
    shadowed: StorageBackend | None = None
    try:
        if target is not None:
            shadowed = _existing(dst, d_opts, target, overwrite, _source_name(src))
        base: CheckpointReader
        if src_fmt is not None:
            base = FlatReader(src, src_fmt, separator=separator)
        else:
            src_prefix, _, base = open_source(src, s_opts)
            if _same_file(src_prefix, dst):
                # A directory resolved to the very checkpoint the copy would write.
                base.close()
                raise CheckpointExistsError(
                    f"convert: source {src!r} is the checkpoint {src_prefix!r}, the destination; "
                    "choose another destination"
                )
        try:
            # Path names only for a file whose tensors are named by path: keys need none, and a local name
            # holding the separator (a dict key "dense/kernel") then never stands in the way.
            reader = Selected(
                base,
                include=include,
                exclude=exclude,
                separator=separator,
                with_names=dst_fmt is not None and names == "paths",
            )
            if prefixes:
                # safetensors holds no strings: an export puts them into the file's metadata under their keys, so
                # their names are never written and cannot collide.
                unnamed = {k for k in reader.names if dst_fmt == "safetensors" and reader.info(k).dtype.kind == "O"}
                reader.names = _strip_prefixes(reader.names, prefixes, src, unnamed)
        except BaseException:
            base.close()
            raise
        with reader:
            if dst_fmt is not None:
                events = observe.save_events(
                    dst,
                    operation="convert",
                    backend=dst_fmt,
                    total_bytes=total_bytes(reader),
                    num_tensors=len(reader.keys()),
                    options=d_opts,
                    started=started,
                )
                events.run(
                    lambda: export(
                        reader,
                        dst,
                        dst_fmt,
                        # export takes reader.names for "paths" only; with names="keys" they are the keys,
                        # stripped here, so it is told to take them too (a wrong value still reaches it).
                        names="paths" if prefixes and names == "keys" else names,
                        overwrite=overwrite,
                        progress=_both(progress, events),
                    )
                )
            else:
                assert target is not None
                _copy(reader, target, dst, d_opts, overwrite, progress, started)
                _resolve.retire(dst, shadowed, target)
                shadowed = None
    finally:
        if shadowed is not None:
            shadowed.close()
        if target is not None:
            target.close()


def _patterns(name: str, given: object) -> list[str]:
    """The ``include`` or ``exclude`` patterns as a list: a string is one pattern (see :func:`convert`).

    Iterated as it is, ``"model/*"`` would be the patterns ``"m"``, ``"o"``, ..., ``"*"``, of which ``"*"``
    matches every tensor: the export would silently hold everything (an exclude, nothing).
    """
    items = [given] if isinstance(given, str) else list(given) if isinstance(given, Iterable) else None
    if items is None or not all(isinstance(p, str) for p in items):
        raise ArgumentTypeError(f"convert: {name} must be a str or a sequence of str, got {given!r}")
    return items


def _prefixes(strip_prefix: str | Sequence[str], dst: str, dst_fmt: str | None) -> list[str]:
    """The prefixes of ``strip_prefix`` as a list, checked before anything is read (see :func:`convert`)."""
    prefixes = _patterns("strip_prefix", strip_prefix)
    if not prefixes:
        return []
    if dst_fmt is None:
        raise InvalidArgumentError(
            f"convert: strip_prefix {prefixes} renames the tensors of an exported file, and {dst!r} is a checkpoint, "
            "whose tensors keep their keys; export to a .safetensors or .npz file to rename them",
            url=dst,
        )
    if "" in prefixes:
        raise InvalidArgumentError("convert: strip_prefix holds an empty prefix, which strips nothing; leave it out")
    return prefixes


def _strip_prefixes(
    names: dict[str, str], prefixes: Sequence[str], src: str, unnamed: Collection[str] = ()
) -> dict[str, str]:
    """``names`` (``{key: name}`` of an export) with the longest of ``prefixes`` each name starts with removed.

    The names of the keys in ``unnamed`` are not written to the file (safetensors' string tensors): they
    cannot collide.

    Raises
    ------
    CheckpointKeyError
        A prefix starts no name.
    NameConflictError
        A name is nothing but a prefix, or two written names become one.
    """
    unused = [p for p in prefixes if not any(name.startswith(p) for name in names.values())]
    if unused:
        shown = sorted(names.values())[:3]
        raise CheckpointKeyError(
            f"convert: no tensor name of {src!r} starts with the prefix {unused[0]!r} given to strip (strip_prefix, "
            f"--strip-prefix); the exported names are like {', '.join(map(repr, shown))}"
        )
    stripped: dict[str, str] = {}
    for key, name in names.items():
        prefix = max((p for p in prefixes if name.startswith(p)), key=len, default="")
        if prefix == name and key not in unnamed:
            raise NameConflictError(
                f"convert: tensor {key!r} is named {name!r}, all of it the prefix {prefix!r}: stripping it leaves no "
                "name; strip a shorter prefix, or leave the tensor out with an exclude pattern (--exclude)"
            )
        stripped[key] = name[len(prefix) :]
    holders: dict[str, str] = {}
    for key, name in stripped.items():
        if key in unnamed:
            continue
        other = holders.setdefault(name, key)
        if other != key:
            raise NameConflictError(
                f"convert: tensors {other!r} and {key!r} would both be named {name!r} once the prefixes "
                f"{list(prefixes)} are stripped (they were {names[other]!r} and {names[key]!r}); strip a shorter "
                "prefix, or leave one out with an exclude pattern (--exclude)"
            )
    return stripped


def _existing(
    dst: str, options: CheckpointOptions, target: StorageBackend, overwrite: bool, src_name: str
) -> StorageBackend | None:
    """Before a copy to ``dst``: refuse it without ``overwrite`` where a checkpoint is committed, else return the
    backend of another format whose checkpoint there the copy replaces (:func:`trackpoint._resolve.shadow`).

    Checked before any tensor is read; ``begin`` refuses a checkpoint of ``target``'s own format too. A local
    ``dst`` that is an existing directory or file holding no checkpoint is refused (:func:`_refuse_occupied`).
    """
    holder = _resolve.shadow(dst, options, target)
    local = _local(dst)
    committed: bool | None = None  # asked of the store once, and only where needed
    if holder is None and local is not None and os.path.exists(local):
        committed = target.exists(dst)
        if not committed:
            _refuse_occupied(dst, local, target, src_name)
    if overwrite:
        return holder
    if holder is None and (target.exists(dst) if committed is None else committed):
        holder = target
    if holder is None:
        return None
    if holder is not target:
        holder.close()
    raise CheckpointExistsError(
        f"convert: a checkpoint is already committed at {dst!r} (backend {holder.name!r}); pass overwrite=True "
        "to replace it"
    )


def _both(progress: Progress | None, events: observe.SaveEvents) -> Progress:
    """A ``progress(done, total)`` callback feeding both the caller's callback and the save events."""
    last = 0

    def report(done: int, total: int) -> None:
        nonlocal last
        events.progress(done - last)
        last = done
        if progress is not None:
            progress(done, total)

    return report


def _strip(path: str) -> str:
    return path[len("file://") :] if path.startswith("file://") else path


def _same_file(a: str, b: str) -> bool:
    return os.path.abspath(_strip(a)) == os.path.abspath(_strip(b))


def _same_place(backend: StorageBackend, a: str, b: str) -> bool:
    def norm(p: str) -> str:
        return backend.join(backend.dirname(p), os.path.basename(p.rstrip("/")))

    return norm(a) == norm(b) or os.path.abspath(a) == os.path.abspath(b)


def _plan(reader: CheckpointReader, limit: int) -> list[list[tuple[str, TensorInfo]]]:
    # Planned from TensorInfo alone, so no tensor is read before its shard is written.
    shards: list[list[tuple[str, TensorInfo]]] = [[]]
    held = 0
    for key in reader.keys():
        info = reader.info(key)
        size = _STRING_ESTIMATE * max(1, info.size) if info.dtype.kind == "O" else info.nbytes
        if shards[-1] and held + size > limit:
            shards.append([])
            held = 0
        shards[-1].append((key, info))
        held += size
    return shards


def _copy(
    reader: CheckpointReader,
    target: StorageBackend,
    dst: str,
    opts: CheckpointOptions,
    overwrite: bool,
    progress: Progress | None = None,
    started: float | None = None,
) -> None:
    plan = _plan(reader, opts.max_shard_bytes or DEFAULT_SHARD_BYTES)
    # String tensors (the object graph among them) are read first: their size is known only from their
    # values, and the total must count every byte the save's progress counts, as a Checkpoint.save's does.
    # They are small next to the numeric tensors, which are still read one shard at a time.
    strings = {key: reader.read(key) for entries in plan for key, info in entries if info.dtype.kind == "O"}
    total = sum(info.nbytes for entries in plan for _, info in entries) + sum(
        WriteItem(key, array).nbytes for key, array in strings.items()
    )
    events = observe.save_events(
        dst,
        operation="convert",
        backend=target.name,
        total_bytes=total,
        num_tensors=sum(len(entries) for entries in plan),
        options=opts,
        started=started,
    )
    events.run(lambda: _copy_shards(reader, target, dst, plan, strings, total, overwrite, progress, events))


def _copy_shards(
    reader: CheckpointReader,
    target: StorageBackend,
    dst: str,
    plan: list[list[tuple[str, TensorInfo]]],
    strings: dict[str, np.ndarray[Any, Any]],
    total: int,
    overwrite: bool,
    progress: Progress | None,
    events: observe.SaveEvents,
) -> None:
    done = 0
    save_id = uuid.uuid4().hex
    results: list[ShardResult] = []
    # Outside the try, as in StorageBackend.save: a refused begin wrote nothing to abort.
    target.begin(dst, save_id, overwrite=overwrite)
    try:
        for shard_id, entries in enumerate(plan):
            requests: list[tuple[str, np.ndarray[Any, Any] | None]] = [
                (key, np.empty(info.shape, dtype=info.dtype)) for key, info in entries if key not in strings
            ]
            numeric = iter(reader.read_many(requests))
            items = [WriteItem(key, strings.pop(key) if key in strings else next(numeric)) for key, _ in entries]
            results.append(
                observe.write_shard(events, target.write_shard, dst, ShardSpec(shard_id, len(plan), save_id), items)
            )
            if progress is not None:
                done += sum(item.nbytes for item in items)
                progress(done, total)
            # Drop this shard's arrays before reading the next one.
            del requests, numeric, items
        target.commit(dst, results, overwrite=overwrite)
    except BaseException:
        try:
            target.abort(dst, save_id)
        except CheckpointError:
            pass  # the original failure matters more; cleanup() removes the rest
        raise
