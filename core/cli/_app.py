"""Argument parsing and the commands of ``trackpoint`` (see :mod:`trackpoint.cli`)."""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import dataclasses
import inspect
import json
import logging
import math
import os
import re
import shlex
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final, Protocol, TextIO, runtime_checkable

import numpy as np

import trackpoint
from trackpoint import _paths, _resolve, errors
from trackpoint.cli import _render
from trackpoint.convert import CopiedCheckpoint, convert_run
from trackpoint.errors import (
    BackendError,
    BackendOptionError,
    CheckpointError,
    CheckpointExistsError,
    CheckpointNotFoundError,
    InvalidArgumentError,
    InvalidPathError,
    StorageError,
    UnknownBackendError,
)
from trackpoint.manager import NOT_TENSORS, read_metrics
from trackpoint.state import _stem, checkpoint_number, number_order
from trackpoint.storage import OBJECT_GRAPH_KEY, CheckpointOptions, CheckpointReader, StorageBackend, TensorInfo

__all__ = ["EXIT_DIFFERENT", "EXIT_ERROR", "EXIT_NOT_FOUND", "EXIT_OK", "EXIT_UNVERIFIED", "EXIT_USAGE", "main"]

#: Success; the checkpoints are equal; every checkpoint is intact.
EXIT_OK: Final = 0
#: ``diff``: the checkpoints differ; ``verify``: a checkpoint is damaged or missing.
EXIT_DIFFERENT: Final = 1
#: The command line is wrong.
EXIT_USAGE: Final = 2
#: A checkpoint or file was not found.
EXIT_NOT_FOUND: Final = 3
#: Any other failure.
EXIT_ERROR: Final = 4
#: ``verify``: nothing found damaged, but some tensor was read without a checksum to check it against.
EXIT_UNVERIFIED: Final = 5

_INTERRUPTED: Final = 130
#: The status of a process killed by SIGPIPE (128 + 13), as ``yes | head`` leaves ``yes``.
_BROKEN_PIPE: Final = 141


#: What ``trackpoint --help`` says of each exit status; docs/cli.md's table says the same at length.
_EXIT_STATUSES: Final = (
    "0 ok, 1 different/damaged, 2 usage, 3 not found, 4 other error (storage, permissions, ...), "
    "5 verify: read, but no checksum to verify (a safetensors file trackpoint did not write), "
    "130 interrupted, 143/129 stopped by SIGTERM/SIGHUP, 141 output closed (the reader of a pipe went away)"
)


class _UsageError(Exception):
    """A bad option value found after parsing (exit status 2)."""


class _Terminated(BaseException):
    """SIGTERM or SIGHUP arrived while a command ran: unwinds the command as Ctrl-C does.

    A ``BaseException``, as ``KeyboardInterrupt`` is, so that no ``except Exception`` takes it for a
    failure to report: what runs on the way out is the clean-up of the library (a convert aborts its
    save and removes the directories it made), then the exit status ``128 + signum``, as a shell
    reports a command that signal ended (143 for SIGTERM).
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _unwind_on_termination() -> Iterator[None]:
    """While the command runs, SIGTERM and SIGHUP raise :class:`_Terminated` in the main thread.

    Their default action ends the process on the spot: a convert stopped by ``timeout``, ``kill``, a
    closed terminal or a container's stop left its unfinished save and the directories it made behind
    (a leftover for ``cleanup``, and an empty directory no cleanup removes). Only a signal whose
    handler is the default one is taken over (``nohup``'s ignored SIGHUP stays ignored, a program that
    calls :func:`main` keeps its own handlers), and the handlers are put back afterwards. A second
    signal during the clean-up ends the process at once, as the default action would.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can be set from the main thread only
        return
    taken = [
        s
        for s in (signal.SIGTERM, getattr(signal, "SIGHUP", None))
        if s is not None and signal.getsignal(s) is signal.SIG_DFL
    ]

    def handler(signum: int, frame: object) -> None:
        for s in taken:
            signal.signal(s, signal.SIG_DFL)
        raise _Terminated(signum)

    for s in taken:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s in taken:
            signal.signal(s, signal.SIG_DFL)


#: What went wrong with a checkpoint that could not be read, from the error that said so.
_MISSING: Final = "missing"
_DAMAGED: Final = "damaged"
#: Permissions, credentials, the network, a backend that is not installed: the bytes were never
#: seen, so the checkpoint may well be intact.
_UNREADABLE: Final = "unreadable"
#: Read whole without error, but some tensor has no checksum (a safetensors file trackpoint did not write):
#: its values cannot be told from changed ones.
_UNVERIFIED: Final = "unverified"


def _failure_kind(error: BaseException | str) -> str:
    """:data:`_MISSING`, :data:`_UNREADABLE` or :data:`_DAMAGED` for an exception or its class name.

    A problem :func:`trackpoint.verify` reports carries the class name only; names that are not
    trackpoint's (a plugin's own) count as damage, as verify reported them.
    """
    if isinstance(error, str):
        found = getattr(errors, error, None)
        cls: type[BaseException] | None = found if isinstance(found, type) else None
    else:
        cls = type(error)
    if cls is None:
        return _DAMAGED
    if issubclass(cls, FileNotFoundError):  # CheckpointNotFoundError among them
        return _MISSING
    if issubclass(cls, (StorageError, BackendError)) or (
        issubclass(cls, OSError) and not issubclass(cls, CheckpointError)
    ):
        return _UNREADABLE
    return _DAMAGED


def _command(*words: str) -> str:
    """A command line to paste into a POSIX shell: each word quoted where it needs it (spaces, ``$``, non-ASCII).

    Hints name commands to run (``trackpoint verify run/ckpt-1``); a path with a space, printed bare, would
    be two arguments when pasted.
    """
    return " ".join(shlex.quote(word) for word in words)


#: The suffix the Zarr backend adds to a checkpoint's prefix for the directory (or object prefix) it stores
#: the checkpoint in: ``run/ckpt-1`` is stored in ``run/ckpt-1.zarr``. A literal, not imported: the Zarr
#: backend is an optional extra, and this names its layout only to point a user at the prefix.
_ZARR_SUFFIX: Final = ".zarr"


def _stored_in(path: str, store: StorageBackend) -> tuple[str, str] | None:
    """``(prefix, backend)`` when ``path`` is the directory a checkpoint is stored in (``run/ckpt-1.zarr``).

    Such a directory is neither a checkpoint nor a directory of checkpoints, so every command finds
    nothing there; this names the prefix to pass instead. ``None`` when ``path`` is no such directory
    or the store cannot tell.
    """
    trimmed = path.rstrip("/")
    if not trimmed.endswith(_ZARR_SUFFIX) or len(trimmed) == len(_ZARR_SUFFIX):
        return None
    prefix = trimmed[: -len(_ZARR_SUFFIX)]
    try:
        found = _resolve.holder(store, prefix)
    except (CheckpointError, OSError, ValueError):
        return None  # only a hint is at stake: the command's own error stands
    return None if found is None else (prefix, found.name)


def _stored_in_path(path: str, opts: CheckpointOptions) -> tuple[str, str] | None:
    """:func:`_stored_in` through a store opened for ``path`` (and closed again)."""
    if not path.rstrip("/").endswith(_ZARR_SUFFIX):
        return None  # the common case opens no store
    try:
        store = _resolve.open_store(path, opts)
    except (CheckpointError, OSError, ValueError):
        return None
    try:
        return _stored_in(path, store)
    finally:
        store.close()


def _checkpoint_of_file(path: str) -> tuple[str, str] | None:
    """``(prefix, what)`` when ``path`` is named as a file of the checkpoint ``prefix`` (``run/ckpt-2.index``).

    ``what`` says which: ``a file`` (a bundle's index or data file) or ``the Zarr directory`` (
    ``run/ckpt-2.zarr``). From the name alone: only a hint is at stake. Only a prefix ``rm`` takes, one of a
    series NAME-N (:func:`_in_series`): advice naming another (``Checkpoint.write('run/model')``) would fail again.
    """
    match = _resolve._CHECKPOINT_FILE.match(path)
    if match is not None and _in_series(match.group(1)):
        return match.group(1), "a file"
    if path.endswith(_ZARR_SUFFIX) and _in_series(path[: -len(_ZARR_SUFFIX)]):
        return path[: -len(_ZARR_SUFFIX)], "the Zarr directory"
    return None


def _in_series(prefix: str) -> bool:
    """Whether ``prefix`` names a checkpoint of a series NAME-N (``run/ckpt-4``), the only ones ``rm`` deletes."""
    number = checkpoint_number(prefix)
    return number is not None and bool(_stem(prefix)) and os.path.basename(prefix) == f"{_stem(prefix)}-{number}"


def _not_a_checkpoint(path: str, prefix: str, backend: str) -> str:
    """Why ``path``, the directory the checkpoint ``prefix`` is stored in, is no checkpoint, and what to pass."""
    return (
        f"no checkpoint at {path!r}: it is the directory the {backend} backend stores the checkpoint {prefix!r} in; "
        f"pass that prefix, without the {_ZARR_SUFFIX!r} suffix (`{_command('trackpoint', 'inspect', prefix)}` "
        "lists its tensors)"
    )


@contextlib.contextmanager
def _prefix_hint(paths: Sequence[str], opts: CheckpointOptions) -> Iterator[None]:
    """Re-raise a :class:`CheckpointNotFoundError` for a checkpoint's own directory with the prefix to pass."""
    try:
        yield
    except CheckpointNotFoundError as exc:
        for path in paths:
            if exc.url is not None and exc.url != path:
                continue  # the error is about another of the paths
            found = _stored_in_path(path, opts)
            if found is not None:
                raise CheckpointNotFoundError(_not_a_checkpoint(path, *found), url=path) from exc
        raise


# ------------------------------------------------------------------ options
def _key_value(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    # JSON where it parses (true, 3, {"a": 1}), so options keep their types; a plain string otherwise.
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return key, value


def _options(args: argparse.Namespace, *, dst: bool = False) -> CheckpointOptions:
    """The ``CheckpointOptions`` of the command line; ``dst``: of convert's destination (its ``--dst-*`` options,
    else those of the source)."""
    backend, storage, tuning = args.backend, args.storage_options, args.backend_options
    if dst:
        backend = args.dst_backend or backend
        storage = args.dst_storage_options or storage
        tuning = args.dst_backend_options or tuning
    return CheckpointOptions(backend=backend, storage_options=dict(storage or ()), backend_options=dict(tuning or ()))


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", help="backend to use (bundle, zarr, s3, gcs, or a plugin's name)")
    parser.add_argument(
        "--storage-option",
        "-o",
        dest="storage_options",
        action="append",
        type=_key_value,
        metavar="KEY=VALUE",
        help="passed to the store, as CheckpointOptions.storage_options (repeatable; VALUE is JSON or a string)",
    )
    parser.add_argument(
        "--backend-option",
        dest="backend_options",
        action="append",
        type=_key_value,
        metavar="KEY=VALUE",
        help="tunes the backend, as CheckpointOptions.backend_options (retries, request_timeout, ...; repeatable)",
    )
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.add_argument("--verbose", "-v", action="store_true", help="print a traceback on errors")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trackpoint",
        description="Inspect, verify, compare and convert checkpoints (TensorFlow's and trackpoint's) on any store.",
        epilog=f"Exit status: {_EXIT_STATUSES}.",
    )
    parser.add_argument("--version", action="version", version=f"trackpoint {trackpoint.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("ls", help="list the checkpoints of a directory or bucket prefix, newest last")
    p.add_argument("directory", metavar="DIR_OR_URL")
    p.add_argument("--all", action="store_true", help="also show leftovers of crashed saves (see cleanup)")
    _common(p)

    p = sub.add_parser("cleanup", help="remove leftovers of crashed saves older than the age guard")
    p.add_argument("directory", metavar="DIR_OR_URL")
    p.add_argument(
        "--min-age",
        type=float,
        metavar="SECONDS",
        help="remove only leftovers untouched this long (default: the backend's guard, 10 minutes for "
        "bundle); 0 removes everything, safe only when no save is running",
    )
    _common(p)

    p = sub.add_parser(
        "rm",
        help="delete checkpoints and their entries in the state file, as CheckpointManager.delete does",
        description="Delete committed checkpoints (NAME-N prefixes, as a CheckpointManager names them) and their "
        "entries in the directory's state file, through a CheckpointManager of their series, which (as every "
        "manager opened on a directory) first removes leftovers of crashed saves older than the age guard. No "
        "other checkpoint is touched. No prompt, as cleanup has none. Every PREFIX is checked first: if one is "
        "not a committed checkpoint, nothing is deleted.",
    )
    p.add_argument("paths", metavar="PREFIX", nargs="+", help="a checkpoint prefix (run/ckpt-4), not a directory")
    _common(p)

    p = sub.add_parser("inspect", help="the tensors of a checkpoint, or its object graph")
    p.add_argument("path", metavar="PREFIX", help="a checkpoint prefix, or a directory (its latest checkpoint)")
    p.add_argument("--tree", action="store_true", help="the object graph as a tree of named edges")
    p.add_argument("--key", "-k", help="only this tensor (a checkpoint key or an object-graph path)")
    p.add_argument(
        "--values",
        action="store_true",
        help=f"with --key: print the tensor's values, as numpy does: more than {_THRESHOLD} summarised to the "
        "first and last --edgeitems along each axis, reading only those",
    )
    p.add_argument(
        "--edgeitems",
        type=int,
        default=_EDGEITEMS,
        metavar="N",
        help=f"with --values: entries shown at each end of a summarised axis (default {_EDGEITEMS})",
    )
    p.add_argument("--full", action="store_true", help="with --values: every value (reads the whole tensor)")
    _common(p)

    p = sub.add_parser("verify", help="read every byte and check every checksum")
    p.add_argument("paths", metavar="PREFIX", nargs="+")
    p.add_argument("--quick", action="store_true", help="check the structure only (index, shapes, object graph)")
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--all",
        action="store_true",
        help="each PREFIX is a directory: verify every checkpoint in it, newest first",
    )
    which.add_argument(
        "--latest-good",
        action="store_true",
        help="PREFIX is one directory: print the path of its newest intact checkpoint (exit status 1 if none is), "
        "checking newest first and stopping there",
    )
    _common(p)

    p = sub.add_parser("diff", help="added, removed and changed tensors; exit status 1 when they differ")
    p.add_argument("a", metavar="A")
    p.add_argument("b", metavar="B")
    p.add_argument("--atol", type=float, default=0.0, help="absolute tolerance (default 0: exact)")
    p.add_argument("--rtol", type=float, default=0.0, help="relative tolerance (default 0: exact)")
    _common(p)

    p = sub.add_parser(
        "convert",
        help="copy between backends and stores, or to and from .safetensors / .npz files",
        description="Copy a checkpoint to another backend or store, export it to a .safetensors or .npz file, "
        "or import such a file as a checkpoint. The file format follows the suffix. With --all, copy a whole "
        "run: every checkpoint of the directory SRC into the directory DST, then its state file.",
    )
    p.add_argument("src", metavar="SRC")
    p.add_argument("dst", metavar="DST")
    p.add_argument(
        "--all",
        action="store_true",
        help="SRC and DST are directories: copy every checkpoint of SRC under its own name, one line each, then "
        "SRC's state file; a run again skips checkpoints already copied",
    )
    p.add_argument("--keep-keys", action="store_true", help="export tensors under their checkpoint keys, not paths")
    p.add_argument("--include", action="append", default=[], metavar="PATTERN", help="copy only matching tensors")
    p.add_argument("--exclude", action="append", default=[], metavar="PATTERN", help="leave out matching tensors")
    p.add_argument("--separator", default="/", help="separator of local names in a file's tensor names (default /)")
    p.add_argument(
        "--strip-prefix",
        action="append",
        default=[],
        metavar="PREFIX",
        help="export: remove PREFIX from the start of the tensor names (repeatable; 'model/.ATTRIBUTES/' gives a "
        "torch module's own keys, '0.weight')",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing destination")
    p.add_argument("--dst-backend", help="backend of the destination (default: --backend, else by URL)")
    p.add_argument(
        "--dst-storage-option",
        dest="dst_storage_options",
        action="append",
        type=_key_value,
        metavar="KEY=VALUE",
        help="storage options of the destination (default: those of --storage-option)",
    )
    p.add_argument(
        "--dst-backend-option",
        dest="dst_backend_options",
        action="append",
        type=_key_value,
        metavar="KEY=VALUE",
        help="backend options of the destination, e.g. Zarr's compression (default: those of --backend-option)",
    )
    _common(p)
    for command_parser in sub.choices.values():
        # Usage errors found after parsing print the usage of the command they concern (main).
        command_parser.set_defaults(command_parser=command_parser)
    return parser


# ----------------------------------------------------------------- commands
def _strict(data: Any) -> Any:
    """``data`` with every non-finite float written as the string ``"NaN"``, ``"Infinity"`` or ``"-Infinity"``.

    RFC 8259 has no number for them, and strict parsers (jq, Go's, Rust's serde_json) refuse the bare
    ``NaN`` Python's json module writes by default; the strings are the ones protobuf's JSON mapping uses.
    """
    if isinstance(data, float):
        if math.isfinite(data):
            return data
        return "NaN" if math.isnan(data) else "Infinity" if data > 0 else "-Infinity"
    if isinstance(data, dict):
        return {k: _strict(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_strict(v) for v in data]
    return data


def _dump(data: Any, out: TextIO) -> None:
    # allow_nan=False: should a non-finite float slip past _strict, the command fails rather than print
    # something that is not JSON.
    print(json.dumps(_strict(data), indent=2, sort_keys=False, allow_nan=False), file=out)


def _check_directory(command: str, directory: str, store: StorageBackend) -> None:
    """Refuse a local ``directory`` that does not exist or is a file, naming what is there instead.

    Listing a missing directory finds nothing, as listing an empty one does: without this, a typo in
    a cron job would print "no checkpoints" and succeed. Object stores have no directories (a prefix
    with nothing under it is just empty; a missing bucket fails in the store), so only a store over
    a file system (one that renames atomically, as POSIX file systems do) is checked for that. The
    directory a checkpoint is stored in (Zarr's ``run/ckpt-1.zarr``) is refused on every store: it
    holds no checkpoints, and listing it would say so.
    """
    stored = _stored_in(directory, store)
    if stored is not None:
        prefix, backend = stored
        parent = _paths.dirname(prefix) or os.curdir
        raise CheckpointNotFoundError(
            f"{directory!r} is the directory the {backend} backend stores the checkpoint {prefix!r} in, not a "
            f"directory of checkpoints: `{_command('trackpoint', command, parent)}` works on the directory that "
            f"holds it (`{_command('trackpoint', 'inspect', prefix)}` lists its tensors)"
        )
    if _paths.is_url(directory) or not _resolve.writer(store).capabilities.atomic_rename:
        return
    local = _paths.strip_file_scheme(directory)
    if os.path.isdir(local):
        return
    head, name = os.path.split(local.rstrip("/" + os.sep))
    parent = head or os.curdir
    if not os.path.exists(local):
        try:
            committed = _resolve.holder(store, local) is not None
        except (CheckpointError, OSError):
            committed = False
        if committed:
            raise CheckpointNotFoundError(
                f"{directory!r} is a checkpoint prefix, not a directory: `{_command('trackpoint', command, parent)}` "
                f"works on the directory that holds it (`{_command('trackpoint', 'inspect', directory)}` lists its "
                "tensors)"
            )
        raise CheckpointNotFoundError(f"no directory {directory!r}: nothing exists at that path; check it for a typo")
    # A bundle's index or data file, as open_checkpoint recognizes one passed for its prefix.
    match = _resolve._CHECKPOINT_FILE.match(name)
    if match is not None:
        prefix = os.path.join(head, match.group(1))
        raise CheckpointNotFoundError(
            f"{directory!r} is a file of the checkpoint {prefix!r}, not a directory: "
            f"`{_command('trackpoint', command, parent)}` works on the directory that holds it "
            f"(`{_command('trackpoint', 'inspect', prefix)}` lists its tensors)"
        )
    if name == "checkpoint":
        raise CheckpointNotFoundError(
            f"{directory!r} is the state file of the directory {parent!r}, not a directory: "
            f"run `{_command('trackpoint', command, parent)}`"
        )
    raise CheckpointNotFoundError(
        f"{directory!r} is a file, not a directory: pass the directory that holds the checkpoints"
    )


def _ls(args: argparse.Namespace, out: TextIO) -> int:
    opts = _options(args)
    directory = args.directory
    store = _resolve.open_store(directory, opts)
    try:
        _check_directory("ls", directory, store)
        prefixes = store.list_checkpoints(directory)
        empty = None if prefixes else _nothing_in(directory, opts, store)
        state = trackpoint.read_checkpoint_state(directory, opts)
        times: dict[str, float] = {}
        if state is not None:
            stamps = list(state.all_model_checkpoint_timestamps)
            paths = list(state.all_model_checkpoint_paths)
            if len(stamps) == len(paths):
                times = {os.path.basename(p.rstrip("/")): t for p, t in zip(paths, stamps, strict=True)}
        # Nothing listed, nothing to mark: and the library would warn of other formats, which `empty` says.
        latest = trackpoint.latest_checkpoint(directory, opts) if prefixes else None
        rows: list[dict[str, Any]] = []
        listed = _listed_names(state)

        vanished: list[str] = []
        for prefix in sorted(prefixes, key=number_order):
            name = os.path.basename(prefix.rstrip("/"))
            row: dict[str, Any] = {
                "prefix": prefix,
                "number": checkpoint_number(prefix),
                "time": times.get(name),
                # Where the time comes from: the state file a CheckpointManager keeps, else the store's commit time.
                "time_source": "state" if name in times else None,
                "tensors": None,
                "bytes": None,
                "format": None,
                "latest": prefix == latest,
                # Of a series the state file lists, yet not listed there: preserved, or left by another job.
                "unlisted": name not in listed and _stem(name) in {_stem(n) for n in listed},
                "metrics": None,
                "metrics_error": None,
                "status": "ok",
                "error": None,
            }
            # One checkpoint that cannot be read (a damaged index, a file without read permission) is
            # marked in its row: the others are still listed, and the exit status says so.
            try:
                holder = _resolve.holder(store, prefix) or store
                row["format"] = holder.name
                if row["time"] is None:
                    row["time"] = _commit_time(holder, prefix)
                    row["time_source"] = None if row["time"] is None else "store"
                with holder.open_reader(prefix) as reader:
                    # The metrics a CheckpointManager stores with a checkpoint are no tensor of it.
                    infos = [reader.info(k) for k in reader.keys() if k not in NOT_TENSORS]
                    row["metrics"], row["metrics_error"] = _metrics_of(reader)
                row["tensors"] = len(infos)
                row["bytes"] = sum(i.nbytes for i in infos)
            except (CheckpointError, OSError, ValueError) as exc:
                kind = _failure_kind(exc)
                if kind != _UNREADABLE:
                    # A CheckpointManager keeping max_to_keep deletes old checkpoints while this lists them:
                    # one no longer committed was deleted after it was listed, and is left out, as a listing
                    # a moment later would leave it out. One still committed is damaged, whatever file of
                    # it is missing.
                    committed = _committed(store, prefix)
                    if committed is False:
                        vanished.append(prefix)
                        continue
                    if committed and kind == _MISSING:
                        kind = _DAMAGED
                row["status"] = kind
                row["error"] = {"error": type(exc).__name__, "message": _one_line(exc)}
            rows.append(row)
        leftovers, unlisted = _leftovers(store, directory) if args.all else ([], [])
    finally:
        store.close()
    if vanished and args.verbose:
        print(
            f"trackpoint ls: left out {_render.plural(len(vanished), 'checkpoint')} deleted while being listed "
            f"(by another process, such as a CheckpointManager removing old ones): {', '.join(vanished)}",
            file=sys.stderr,
        )
    if args.json:
        data: dict[str, Any] = {
            "directory": directory,
            "ok": all(r["error"] is None for r in rows),
            "checkpoints": rows,
        }
        if args.all:
            data["leftovers"] = leftovers
            data["leftovers_not_listed_by"] = unlisted
        _dump(data, out)
        if empty is not None and empty != f"no checkpoints in {directory}":
            # Checkpoints of formats the chosen backend does not read: said beside the JSON, not dropped.
            print(f"trackpoint ls: {empty}", file=sys.stderr)
        return _unread(directory, rows, out)
    if not rows:
        print(empty or f"no checkpoints in {directory}", file=out)
    else:
        import datetime

        def when(t: float | None) -> str:
            if t is None:
                return "-"
            return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")

        def note(r: dict[str, Any]) -> str:
            notes = ["latest"] if r["latest"] else []
            if r["unlisted"]:
                notes.append("unlisted")
            if r["metrics_error"] is not None:
                error = r["metrics_error"]
                notes.append(f"metrics unreadable: {error['error']}: {_render.shorten(error['message'])}")
            if r["error"] is not None:
                notes.append(f"{r['status']}: {r['error']['error']}: {_render.shorten(r['error']['message'])}")
            return ", ".join(notes)

        # The metrics column only where a CheckpointManager stored some: other listings keep their width.
        with_metrics = any(r["metrics"] is not None for r in rows)
        _render.table(
            [
                [
                    os.path.basename(r["prefix"].rstrip("/")),
                    "-" if r["number"] is None else str(r["number"]),
                    when(r["time"]),
                    "-" if r["tensors"] is None else str(r["tensors"]),
                    "-" if r["bytes"] is None else _render.human_bytes(r["bytes"]),
                    r["format"] or "-",
                    *([_render.metrics_text(r["metrics"], 60) if r["metrics"] is not None else "-"] * with_metrics),
                    note(r),
                ]
                for r in rows
            ],
            ["checkpoint", "number", "time (UTC)", "tensors", "size", "format", *(["metrics"] * with_metrics), ""],
            out,
            right=(1, 3, 4),
        )
    if args.all:
        blind = " and ".join(f"the {name} backend" for name in unlisted)
        if leftovers is None:
            print(f"leftovers of crashed saves: not known ({blind} cannot list them)", file=out)
        else:
            if leftovers:
                saves = _by_save(leftovers)
                print(f"leftovers of crashed saves ({len(saves)}; `trackpoint cleanup` removes old ones):", file=out)
                _print_leftovers(saves, out)
            else:
                print("no leftovers of crashed saves" + (" listed" if unlisted else ""), file=out)
            if unlisted:
                print(f"({blind} cannot list leftovers: any it has are not shown)", file=out)
    return _unread(directory, rows, out)


def _listed_names(state: Any) -> set[str]:
    """The names of the checkpoints a state file lists (its latest one included); none without a state file."""
    if state is None:
        return set()
    paths = [*state.all_model_checkpoint_paths, state.model_checkpoint_path]
    return {os.path.basename(p.rstrip("/")) for p in paths if p}


def _metrics_of(reader: CheckpointReader) -> tuple[Any, dict[str, str] | None]:
    """The metrics a CheckpointManager stored in the checkpoint (``None`` without), and why they cannot be read.

    Read as the manager reads them back (:func:`trackpoint.manager.read_metrics`). Metrics that cannot be read
    leave the checkpoint listed (its tensors are not at stake), with the error in place of the metrics.
    """
    try:
        return read_metrics(reader), None
    except (CheckpointError, OSError, ValueError, TypeError) as exc:
        return None, {"error": type(exc).__name__, "message": _one_line(exc)}


def _nothing_in(directory: str, opts: CheckpointOptions, store: StorageBackend) -> str:
    """``no checkpoints in DIR``; with a backend chosen, which checkpoints of other formats it did not see there.

    ``store`` is what ``open_store`` returned for the directory: when nothing was chosen it read every
    format, and nothing more is asked (:func:`trackpoint.state.other_formats`).
    """
    from trackpoint.plugins.manager import ENV_BACKEND
    from trackpoint.state import other_formats

    message = f"no checkpoints in {directory}"
    others = other_formats(directory, opts, store)
    if others is None:
        return message
    source = _in_flag_terms(others.source).replace("CheckpointOptions(backend=...)", "--backend")
    remedy = f"Unset {ENV_BACKEND}" if ENV_BACKEND in others.source else "Drop --backend"
    return (
        f"{message} for the {others.chosen} backend (chosen by {source}), which reads its own format alone; the "
        f"directory holds checkpoints of other formats: {others.describe(list(others.found))}. {remedy} to list "
        "every format"
    )


def _commit_time(holder: StorageBackend, prefix: str) -> float | None:
    """When the store says ``prefix`` was committed (its commit point's modification time); ``None`` if it cannot.

    For a checkpoint the state file records no time for (written with ``Checkpoint.write`` or ``save``
    without a manager, copied by ``convert``). A failure to tell leaves the time out, not the checkpoint.
    """
    try:
        return holder.modified(prefix)
    except (CheckpointError, OSError, ValueError):
        return None


def _committed(store: StorageBackend, prefix: str) -> bool | None:
    """Whether a checkpoint is committed at ``prefix`` now; ``None`` when the store cannot tell."""
    try:
        return _resolve.holder(store, prefix) is not None
    except (CheckpointError, OSError, ValueError):
        return None


def _leftovers(store: StorageBackend, directory: str) -> tuple[list[str] | None, list[str]]:
    """The leftovers of crashed saves in ``directory``, and the names of the backends that cannot list theirs.

    A backend that keeps :meth:`StorageBackend.leftovers` as it is cannot tell (the default lists nothing):
    its empty list must not be shown as "no leftovers", which reads as a guarantee. The leftovers are
    ``None`` when no backend of ``store`` can list them.
    """
    backends = list(store.backends()) if isinstance(store, _resolve.StoreView) else [store]
    unlisted = [b.name or type(b).__name__ for b in backends if type(b).leftovers is StorageBackend.leftovers]
    if len(unlisted) == len(backends):
        return None, unlisted
    return store.leftovers(directory), unlisted


def _by_save(paths: Sequence[str]) -> dict[str, int]:
    """The leftovers ``paths``, one per save where the listing shows what belongs together, with how many of the
    paths each stands for besides itself.

    A crashed bundle save leaves its staging directory and the files in it, and a backend lists them all
    (``cleanup`` removes each): each path not under another stands for those under it. On an object store it
    leaves its files side by side instead (``ckpt-2.data-00000-of-00004``, ...): files of one checkpoint prefix
    in one directory stand as ``ckpt-2.*``. Counted as they are, one interrupted save would read as several.
    """
    saves = _tops(paths)
    by_prefix: dict[str, list[str]] = {}
    for path in saves:
        head, _, name = path.rpartition("/")
        match = _SAVE_FILE.match(name)
        if match is not None:
            by_prefix.setdefault(f"{head}/{match.group(1)}.*" if head else f"{match.group(1)}.*", []).append(path)
    for label, files in by_prefix.items():
        if len(files) > 1:
            count = sum(saves.pop(f) + 1 for f in files)
            saves[label] = count - 1
    return dict(sorted(saves.items()))


def _tops(paths: Sequence[str]) -> dict[str, int]:
    """Each of ``paths`` not under another, with how many of the paths are under it."""
    saves: dict[str, int] = {}
    for path in sorted({p.rstrip("/") for p in paths}):
        # Sorted, a directory comes before what is under it; its own leftovers are said once, with their number.
        owner = next((top for top in saves if path.startswith(top + "/")), None)
        if owner is None:
            saves[path] = 0
        else:
            saves[owner] += 1
    return saves


#: A file a bundle save leaves beside its checkpoint's: its index or data file, a piece of it, or one still being
#: written (``.ckpt-2.index.tmp-<hex>``); group 1 is the checkpoint's name.
_SAVE_FILE: Final = re.compile(
    r"^\.?(.+?)\.(?:index|data-\d{5,}-of-\d{5,}|part-\d{5,}-of-\d{5,}\.[A-Za-z0-9_-]+\.(?:piece|index))"
    r"(?:\.tmp-[0-9a-f]{32})?$"
)


def _print_leftovers(saves: dict[str, int], out: TextIO) -> None:
    for path, inside in saves.items():
        if path.endswith(".*"):
            # The files of one checkpoint prefix (_by_save): the label stands for them all.
            print(f"  {path}  ({_render.plural(inside + 1, 'file')})", file=out)
        else:
            print(f"  {path}" + (f"  ({_render.plural(inside, 'file')} in it)" if inside else ""), file=out)


def _unread(directory: str, rows: list[dict[str, Any]], out: TextIO) -> int:
    """The exit status of ``ls``; on stderr, which checkpoints could not be read and what to do.

    Damage (or a checkpoint gone since it was listed) is a verdict on a checkpoint: status 1, as for
    verify. A checkpoint that could not be read at all (permissions, credentials, the network) may
    be intact, and the command failed: status 4, which wins when both occur, since then not every
    checkpoint could be looked at.
    """
    failed = [r for r in rows if r["error"] is not None]
    if not failed:
        return EXIT_OK
    kinds = collections.Counter(r["status"] for r in failed)
    counts = ", ".join(f"{n} {kind}" for kind, n in kinds.items())
    hints = []
    unreadable = [r["prefix"] for r in failed if r["status"] == _UNREADABLE]
    damaged = [r["prefix"] for r in failed if r["status"] != _UNREADABLE]
    if damaged:
        hints.append(f"`{_command('trackpoint', 'verify', *damaged)}` names what is damaged")
    if unreadable:
        hints.append(f"fix access to {', '.join(unreadable)} (permissions, credentials, the network) and run again")
    out.flush()  # the listing first, where both go to one terminal or file
    print(
        f"trackpoint ls: {len(failed)} of {_render.plural(len(rows), 'checkpoint')} in {directory} could not be "
        f"read ({counts}): {'; '.join(hints)}",
        file=sys.stderr,
    )
    return EXIT_ERROR if unreadable else EXIT_DIFFERENT


def _cleanup(args: argparse.Namespace, out: TextIO) -> int:
    # NaN too: no leftover is older than NaN seconds. An infinite guard removes nothing, ever: a mistake too.
    if args.min_age is not None and not (math.isfinite(args.min_age) and args.min_age >= 0):
        raise _UsageError(f"--min-age must be a number of seconds >= 0, got {args.min_age}")
    store = _resolve.open_store(args.directory, _options(args))
    try:
        _check_directory("cleanup", args.directory, store)
        if args.min_age is None:
            removed = store.cleanup(args.directory)
        else:
            removed = store.cleanup(args.directory, min_age=args.min_age)
        # What the age guard kept: the leftovers still there (a save that started meanwhile among them,
        # rightly: it is young). None when no backend here can list its leftovers, or the listing failed:
        # it only words a message, and the cleanup's own result must be printed.
        try:
            kept, guard = _kept(store, args.directory, args.min_age)
        except (CheckpointError, OSError, ValueError):
            kept, guard = None, None
    finally:
        store.close()
    if args.json:
        _dump({"directory": args.directory, "removed": removed, "kept": kept}, out)
        return EXIT_OK
    if removed:
        saves = _by_save(removed)
        print(f"removed {_render.plural(len(saves), 'leftover')}:", file=out)
        _print_leftovers(saves, out)
    if kept:
        n = len(_by_save(kept))
        print(
            f"{'nothing removed in ' + args.directory + ': ' if not removed else ''}"
            f"{_render.plural(n, 'leftover')} {'is' if n == 1 else 'are'} younger than the age guard"
            f"{f' ({guard})' if guard else ''}; --min-age 0 removes {'it' if n == 1 else 'them'} if no save is "
            "running",
            file=out,
        )
    elif not removed:
        print(f"nothing to remove in {args.directory}", file=out)
    return EXIT_OK


def _kept(store: StorageBackend, directory: str, min_age: float | None) -> tuple[list[str] | None, str | None]:
    """The leftovers in ``directory`` after a cleanup, and the age guard that kept them, for a message.

    The leftovers are ``None`` when no backend of ``store`` can list them. The guard is ``--min-age``
    when given, else the default of the backends holding the leftovers; ``None`` when they differ or
    one does not say (its ``cleanup`` takes the guard from its options).
    """
    backends = list(store.backends()) if isinstance(store, _resolve.StoreView) else [store]
    listing = [b for b in backends if type(b).leftovers is not StorageBackend.leftovers]
    if not listing:
        return None, None
    kept: set[str] = set()
    guards: set[float | None] = set()
    for backend in listing:
        found = backend.leftovers(directory)
        if found:
            kept.update(found)
            parameter = inspect.signature(backend.cleanup).parameters.get("min_age")
            default = None if parameter is None else parameter.default
            if isinstance(default, (int, float)) and not isinstance(default, bool):
                guards.add(float(default))
            else:
                guards.add(None)
    shown = sorted(kept)
    if min_age is not None:
        return shown, _duration(min_age)
    default = guards.pop() if len(guards) == 1 else None
    return shown, None if default is None else _duration(default)


def _duration(seconds: float) -> str:
    """``10 min``, ``2 h``, ``90 s``: a number of seconds as a person reads it."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def _rm(args: argparse.Namespace, out: TextIO) -> int:
    """Delete checkpoints through :meth:`CheckpointManager.delete`, after checking that every one is committed.

    A manager of the checkpoint's series is opened on its directory for the delete, so the state file
    is updated as the manager updates it (the entry goes; a deleted latest is replaced by the newest
    entry left) and nothing of another series is touched. Opening it runs the backends' cleanup with the
    default age guard, as opening any manager does: leftovers of crashed saves, never a checkpoint. No
    prompt, as ``cleanup`` has none: scripts run these commands, and a prompt would hang one.
    """
    opts = _options(args)
    # By directory and series, in the order given: one manager for each.
    targets: dict[tuple[str, str], list[tuple[str, int]]] = {}
    for path in args.paths:
        prefix = path.rstrip("/")
        number = checkpoint_number(prefix)
        named_file = _resolve._CHECKPOINT_FILE.match(prefix) is not None  # its directory is the one to list
        hint = prefix if number is None and not named_file else _paths.dirname(prefix) or os.curdir
        if number is None or not _in_series(prefix):
            of = _checkpoint_of_file(prefix)
            if of is not None:
                # ls of the file would fail too: name the checkpoint, as inspect and verify do.
                raise _UsageError(
                    f"{path!r} is {of[1]} of the checkpoint {of[0]!r}, not a checkpoint prefix: pass that prefix "
                    f"(`{_command('trackpoint', 'rm', of[0])}`)"
                )
            raise _UsageError(
                f"{path!r} is no checkpoint prefix of a series NAME-N (as a CheckpointManager names them, "
                f"run/ckpt-4): rm deletes those only; `{_command('trackpoint', 'ls', hint)}` lists the checkpoints "
                "of a directory"
            )
        directory = _paths.dirname(prefix) or os.curdir
        store = _resolve.open_store(directory, opts)
        try:
            # Every path is checked before anything is deleted: a typo among them deletes nothing.
            _check_directory("rm", directory, store)
            with _prefix_hint([path], opts):
                if _resolve.holder(store, prefix) is None:
                    raise CheckpointNotFoundError(
                        f"no checkpoint is committed at {path!r}: nothing was deleted; "
                        f"`{_command('trackpoint', 'ls', directory)}` lists the checkpoints there",
                        url=path,
                    )
        finally:
            store.close()
        same = targets.setdefault((directory, _stem(prefix)), [])
        if all(number != n for _, n in same):  # named twice: deleted once, not refused the second time
            same.append((path, number))
    deleted: list[str] = []
    latest: dict[str, str | None] = {}
    for (directory, series), checkpoints in targets.items():
        with trackpoint.CheckpointManager(
            trackpoint.Checkpoint(), directory, max_to_keep=None, checkpoint_name=series, options=opts
        ) as manager:
            for path, number in checkpoints:
                manager.delete(number)
                deleted.append(path)
        # What a restore of the directory now takes, of any series (the manager's own is one series').
        latest[directory] = trackpoint.latest_checkpoint(directory, options=opts)
    if args.json:
        _dump({"deleted": deleted, "latest": latest}, out)
        return EXIT_OK
    for path in deleted:
        print(f"deleted {path}", file=out)
    for directory, prefix in latest.items():
        print(f"latest checkpoint of {directory}: {prefix or 'none'}", file=out)
    return EXIT_OK


def _inspect(args: argparse.Namespace, out: TextIO) -> int:
    from trackpoint.interchange._convert import open_source, read_graph
    from trackpoint.interchange._names import key_at_path, tensor_paths

    if args.values and not args.key:
        raise _UsageError("--values needs --key KEY: name the tensor to print")
    if (args.full or args.edgeitems != _EDGEITEMS) and not args.values:
        raise _UsageError("--full and --edgeitems shape what --values prints: add --values (and --key KEY)")
    if args.edgeitems < 1:
        raise _UsageError(f"--edgeitems must be at least 1, got {args.edgeitems}")
    opts = _options(args)
    with _prefix_hint([args.path], opts):
        prefix, _, reader = open_source(args.path, opts)
    with reader:
        keys = [k for k in reader.keys() if k != OBJECT_GRAPH_KEY]
        infos = {k: reader.info(k) for k in keys}
        graph = read_graph(reader)
        # Per tensor: a local name holding "/" (a dict key "dense/kernel") leaves that tensor without a path
        # (null in --json), not every other tensor.
        paths = tensor_paths(graph, keys)
        if args.key:
            by_path = {p: k for k, p in paths.items() if p is not None}
            key = args.key if args.key in infos else by_path.get(args.key)
            if key is None:
                # A key as listed without its attribute part: ``state/a..b`` for ``state/a..b/.ATTRIBUTES/...``.
                under = [k for k in infos if k.startswith(f"{args.key}/.ATTRIBUTES/")]
                key = under[0] if len(under) == 1 else None
            if key is None and graph is not None:
                # Another path to a shared object (``model/alias`` where --tree shows ``alias -> model/shared``).
                key = key_at_path(graph, args.key)
            if key is None:
                raise trackpoint.CheckpointKeyError(
                    f"{prefix!r} has no tensor {args.key!r}; `{_command('trackpoint', 'inspect', args.path)}` lists "
                    "its keys"
                )
            info = infos[key]
            shape = tuple(info.shape)
            summarized = args.values and not args.full and _summarized(shape, args.edgeitems)
            if not args.values:
                value = None
            elif summarized:
                value = _edges(reader, key, info, args.edgeitems)
            else:
                value = reader.read(key)
            if args.json:
                data: dict[str, Any] = {
                    "key": key,
                    "path": paths.get(key),
                    "dtype": _render.dtype_name(info),
                    "shape": list(info.shape),
                    "bytes": info.nbytes,
                }
                if value is not None:
                    data["values"] = _jsonable(value)
                    data["summarized"] = summarized
                    if summarized:
                        data["edgeitems"] = args.edgeitems
                _dump(data, out)
                return EXIT_OK
            print(f"{key}  {_render.dtype_name(info)} {_render.shape_text(info.shape)}", file=out)
            if value is not None:
                if summarized:
                    text = _summary(value, shape, args.edgeitems)
                else:
                    text = np.array2string(value, threshold=sys.maxsize, max_line_width=_VALUES_WIDTH)
                print(text, file=out)
            return EXIT_OK
        if args.tree:
            if graph is None:
                raise trackpoint.InvalidCheckpointError(
                    f"{prefix!r} has no object graph (a name-based checkpoint); inspect without --tree lists its keys"
                )
            if args.json:
                from google.protobuf import json_format

                _dump(json_format.MessageToDict(graph), out)
            else:
                # Reads the state-dict structures and PythonState strings it draws: scalar strings, no tensor data.
                print("\n".join(_render.tree(graph, infos, reader.read)), file=out)
            return EXIT_OK
    rows: list[dict[str, Any]] = [
        {
            "key": k,
            "path": paths.get(k),
            "dtype": _render.dtype_name(infos[k]),
            "shape": list(infos[k].shape),
            "bytes": infos[k].nbytes,
        }
        for k in keys
    ]
    if args.json:
        _dump({"prefix": prefix, "tensors": rows}, out)
        return EXIT_OK
    _render.table(
        [[r["key"], r["dtype"], _render.shape_text(r["shape"]), str(r["bytes"])] for r in rows],
        ["key", "dtype", "shape", "bytes"],
        out,
        right=(3,),
    )
    total = sum(r["bytes"] for r in rows)
    print(f"{_render.plural(len(rows), 'tensor')}, {_render.human_bytes(total)} in {prefix}", file=out)
    return EXIT_OK


#: numpy's print options (``numpy.set_printoptions``): a tensor of more elements than ``_THRESHOLD`` is
#: summarised, each axis longer than ``2 * edgeitems`` shown by its first and last ``edgeitems`` entries.
_THRESHOLD: Final = 1000
_EDGEITEMS: Final = 3
_VALUES_WIDTH: Final = 120
#: The most bytes one read of a summarised tensor's preview takes (see :func:`_edges`).
_PREVIEW_READ_BYTES: Final = 2**20


def _summarized(shape: tuple[int, ...], edgeitems: int) -> bool:
    """Whether numpy summarises a tensor of ``shape``: more than ``_THRESHOLD`` elements, an axis to cut."""
    return math.prod(shape) > _THRESHOLD and any(n > 2 * edgeitems for n in shape)


def _edge_index(n: int, edgeitems: int) -> np.ndarray[Any, Any]:
    """The indexes numpy prints along an axis of length ``n``: all of them, or the first and last ``edgeitems``."""
    if n <= 2 * edgeitems:
        return np.arange(n)
    return np.concatenate([np.arange(edgeitems), np.arange(n - edgeitems, n)])


def _edges(reader: CheckpointReader, key: str, info: TensorInfo, edgeitems: int) -> np.ndarray[Any, Any]:
    """The entries numpy prints of the summarised tensor ``key``, read without reading the rest.

    Along each axis longer than ``2 * edgeitems`` its first and last ``edgeitems`` entries, along the
    others all: an array of that many entries per axis. Read with ``read_slice`` in contiguous parts of at
    most :data:`_PREVIEW_READ_BYTES` (more, only for a part of a single entry's row: ``edgeitems`` values):
    a slab of whole rows where it fits, else row by row, down to the last axis. A reader whose
    ``read_slice`` reads the whole tensor anyway (a flat file) is read once, whole.
    """
    from trackpoint.storage import ranged

    shape = tuple(info.shape)
    if not ranged(reader):
        whole: np.ndarray[Any, Any] = reader.read(key)[np.ix_(*(_edge_index(n, edgeitems) for n in shape))]
        return whole
    out = np.empty(tuple(min(n, 2 * edgeitems) for n in shape), dtype=info.dtype)
    itemsize = max(1, info.dtype.itemsize)

    def fill(fixed: list[int], dest: list[int]) -> None:
        axis = len(fixed)
        rest = shape[axis + 1 :]
        n = shape[axis]
        at = 0
        for start, stop in ((0, n),) if n <= 2 * edgeitems else ((0, edgeitems), (n - edgeitems, n)):
            if not rest or (stop - start) * math.prod(rest) * itemsize <= _PREVIEW_READ_BYTES:
                # One contiguous range: single indexes, then a range of this axis, then whole trailing axes.
                block = reader.read_slice(
                    key, [*fixed, start, *(0 for _ in rest)], [*(1 for _ in fixed), stop - start, *rest]
                )
                block = block.reshape(block.shape[axis:])
                part = block[np.ix_(np.arange(stop - start), *(_edge_index(m, edgeitems) for m in rest))]
                where: tuple[int | slice, ...] = (*dest, slice(at, at + stop - start))
                out[where] = part
            else:
                for i in range(start, stop):
                    fill([*fixed, i], [*dest, at + i - start])
            at += stop - start

    fill([], [])
    return out


def _summary(edges: np.ndarray[Any, Any], shape: tuple[int, ...], edgeitems: int) -> str:
    """What ``numpy.array2string`` prints of the summarised tensor of ``shape`` whose :func:`_edges` are ``edges``.

    numpy is given an array with ``2 * edgeitems + 1`` entries along each axis it cuts, the edges around
    one middle entry that it replaces by ``...``: it formats (widths, precision) from the edges alone, so
    the text is the tensor's own.
    """
    index = [
        np.r_[0:edgeitems, edgeitems - 1, edgeitems : 2 * edgeitems] if n > 2 * edgeitems else np.arange(n)
        for n in shape
    ]
    padded = edges[np.ix_(*index)]
    return np.array2string(padded, threshold=0, edgeitems=edgeitems, max_line_width=_VALUES_WIDTH)


def _json_string(value: bytes | str) -> str | dict[str, str]:
    """One value of a string tensor in JSON: its text when it is UTF-8, else ``{"base64": ...}`` of its bytes.

    Never text with escapes for the bytes that are not UTF-8: ``"\\xff"`` would be read as those four
    characters, which a tensor may just as well hold.
    """
    if isinstance(value, str):
        return value
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(value).decode("ascii")}


def _jsonable(value: np.ndarray[Any, Any]) -> Any:
    """The values of a tensor as JSON data: nested lists of numbers (``_dump`` writes non-finite ones as strings)."""
    if value.dtype.kind == "O":
        return np.vectorize(_json_string, otypes=[object])(value).tolist()
    if value.dtype.kind == "c":
        # [real, imag] pairs in the tensor's own nesting (shape [2, 3] gives 2 lists of 3 pairs).
        return np.stack([value.real, value.imag], axis=-1).astype(np.float64).tolist()
    if value.dtype.kind == "V":  # bfloat16 and other ml_dtypes
        return value.astype(np.float64).tolist()
    return value.tolist()


def _verify_one(args: argparse.Namespace, path: str, opts: CheckpointOptions) -> dict[str, Any]:
    """What :func:`trackpoint.verify` found at ``path``, as the command reports it (``status`` included).

    A checkpoint that cannot be opened is reported, not raised, unless the command line is wrong.
    """
    try:
        with _render.progress(f"verify {path}", enabled=not args.json) as bar:
            report = trackpoint.verify(path, quick=args.quick, options=opts, progress=bar)
        entry = {
            "path": path,
            "prefix": report.prefix,
            "backend": report.backend,
            "tensors": report.tensors,
            "bytes": report.nbytes,
            "problems": [
                {"key": p.key, "error": p.error, "message": _in_flag_terms(p.message)} for p in report.problems
            ],
            "unverified": list(report.unverified),
        }
    except (CheckpointNotFoundError, StorageError, BackendError) as exc:
        # A store that cannot be reached (no endpoint or account configured, a backend not installed) is
        # one checkpoint that could not be read, as a failed request is: the others are still verified.
        if isinstance(exc, (InvalidArgumentError, UnknownBackendError)) or _backend_flag(args, exc) is not None:
            raise  # the command line is wrong (an option, a scheme no backend serves): for every path
        message = _in_flag_terms(str(exc))
        if isinstance(exc, CheckpointNotFoundError):
            stored = _stored_in_path(path, opts)
            message = message if stored is None else _not_a_checkpoint(path, *stored)
        entry = _not_verified(path, type(exc).__name__, message)
    return _judged(entry)


def _not_verified(path: str, error: str, message: str) -> dict[str, Any]:
    """The report of a ``path`` where no checkpoint could be opened: one problem, ``error`` saying why."""
    problems = [{"key": None, "error": error, "message": message}]
    return {"path": path, "prefix": None, "backend": None, "tensors": 0, "bytes": 0, "problems": problems}


def _judged(entry: dict[str, Any]) -> dict[str, Any]:
    """``entry`` with its ``ok`` and ``status``."""
    entry.setdefault("unverified", [])
    entry["ok"] = not entry["problems"] and not entry["unverified"]
    entry["status"] = _verdict(entry)
    return entry


def _in_directories(args: argparse.Namespace, opts: CheckpointOptions, *, stop_at_good: bool) -> list[dict[str, Any]]:
    """``verify --all`` and ``--latest-good``: the reports of the checkpoints of each directory, newest first.

    ``stop_at_good``: stop at the first intact checkpoint, and at one that could not be read (it may be
    intact, so an older one is not the newest intact). A checkpoint deleted while this runs (by a
    CheckpointManager's retention) is left out, as ``ls`` leaves it out; one still committed that cannot be
    found whole is damaged.
    """
    reports: list[dict[str, Any]] = []
    for directory in args.paths:
        store = _resolve.open_store(directory, opts)
        try:
            _check_directory("verify", directory, store)
            prefixes = sorted(store.list_checkpoints(directory), key=number_order, reverse=True)
            if not prefixes:
                reports.append(
                    _judged(_not_verified(directory, "CheckpointNotFoundError", _nothing_in(directory, opts, store)))
                )
            for prefix in prefixes:
                entry = _verify_one(args, prefix, opts)
                if entry["status"] == _MISSING:
                    committed = _committed(store, prefix)
                    if committed is False:
                        if args.verbose:
                            print(
                                f"trackpoint verify: left out {prefix}, deleted while being verified", file=sys.stderr
                            )
                        continue
                    if committed:
                        entry["status"] = _DAMAGED
                reports.append(entry)
                if stop_at_good and entry["status"] in ("intact", _UNREADABLE):
                    break
        finally:
            store.close()
    return reports


def _latest_good(args: argparse.Namespace, opts: CheckpointOptions, out: TextIO) -> int:
    """``verify --latest-good DIR``: the newest intact checkpoint's path alone on stdout, for a restart script.

    The newer checkpoints found damaged are named on stderr. One that could not be read stops the search
    (status 4): it may be intact, and restoring an older one would drop its progress unnoticed. A directory
    without checkpoints or any trace of a run (a state file, leftovers of saves, other formats' checkpoints) is
    status 3 (as a missing one); one whose checkpoints are all damaged or gone is status 1.
    """
    if len(args.paths) != 1:
        raise _UsageError(f"--latest-good takes one directory, got {len(args.paths)}: {' '.join(args.paths)}")
    reports = _in_directories(args, opts, stop_at_good=True)
    good = next((r["prefix"] for r in reports if r["status"] == "intact"), None)
    unreadable = next((r for r in reports if r["status"] == _UNREADABLE), None)
    if args.json:
        _dump({"quick": args.quick, "latest_good": good, "checkpoints": reports}, out)
    elif good is not None:
        print(good, file=out)
    out.flush()
    # Only the report of the directory itself (a checkpoint's path is its prefix): the directory has none.
    directory = args.paths[0]
    start = _first_start(directory, opts) if all(r["path"] == directory for r in reports) else None
    if start is not None:
        leftovers = start.leftovers
        # A run's first start, which a restart script handles unlike a run whose every checkpoint is damaged:
        # it starts fresh instead of stopping to call for help. Leftovers of saves that never committed (a job
        # killed during its first save) restore nothing, so no progress is lost by starting afresh.
        print(f"trackpoint verify: no checkpoints in {directory}: nothing to restore", file=sys.stderr)
        if leftovers:
            n = len(_by_save(leftovers))
            saves = "an interrupted save" if n == 1 else f"{n} interrupted saves"
            print(
                f"trackpoint verify: {directory} holds leftovers of {saves}, which "
                f"{'never committed' if start.certain else 'may never have committed'}: "
                f"`{_command('trackpoint', 'cleanup', directory)}` removes them once older "
                "than the age guard (--min-age 0 at once, if no save is running), as the next CheckpointManager "
                "opened there does",
                file=sys.stderr,
            )
        return EXIT_NOT_FOUND
    for r in reports:
        if r["status"] not in ("intact", _UNREADABLE):
            first = r["problems"][0] if r["problems"] else {"error": "", "message": ""}
            print(
                f"trackpoint verify: skipped {r['status']} {r['prefix'] or r['path']}: {first['error']}: "
                f"{_render.shorten(first['message'], 300)}",
                file=sys.stderr,
            )
    if unreadable is not None:
        errors_seen = ", ".join(dict.fromkeys(p["error"] for p in unreadable["problems"]))
        print(
            f"trackpoint verify: could not read {unreadable['prefix'] or unreadable['path']} ({errors_seen}), which "
            "may be intact, so no older checkpoint is named: fix access to the store (permissions, credentials, the "
            "network) and run verify again",
            file=sys.stderr,
        )
        return EXIT_ERROR
    if good is None:
        print(f"trackpoint verify: no intact checkpoint in {args.paths[0]}", file=sys.stderr)
        return EXIT_DIFFERENT
    return EXIT_OK


@dataclasses.dataclass(frozen=True)
class _FirstStart:
    """A directory holding nothing of a run: the leftovers of saves in it, and whether none of them can have
    committed (``False``: data files at final names without an index, which an object store's interrupted save
    leaves as a checkpoint whose index was deleted does)."""

    leftovers: list[str]
    certain: bool = True


def _first_start(directory: str, opts: CheckpointOptions) -> _FirstStart | None:
    """For ``directory``, holding no checkpoint: the leftovers of saves in it if it is a run's first start, else
    ``None`` (a lost run).

    A run leaves a trace once a save committed: a state file (whose checkpoints are gone), checkpoints of a
    format the chosen backend does not read, or a leftover only a commit leaves. The bundle backend tells which
    of its leftovers those are (:meth:`BundleBackend.committed_leftovers`: on a local disk, data files whose
    index is gone; on an object store, where an interrupted save leaves data files under their final names too,
    none); of another backend, a leftover under a checkpoint's own name counts (a Zarr checkpoint's directory).
    A save's other leftovers alone (``ckpt-1_temp``, ``*.tmp-*``) are no such trace: that save never committed,
    and restores nothing (a job killed during its first save). Data files at final names without an index and
    without a staging directory (an object store's) are a first save's only if they are of one prefix that a
    first save could have written (not ``NAME-N`` with ``N > 1``: a first save is numbered 1, by
    ``Checkpoint.save`` and by a manager's ``save_counter``); of several prefixes, or of a later number, earlier
    saves committed, and it is a lost run. Anything that cannot be looked at counts as a trace: only a directory
    known to hold nothing committed is a first start.
    """
    from trackpoint.state import DEFAULT_LATEST_FILENAME, other_formats

    try:
        store = _resolve.open_store(directory, opts)
    except CheckpointNotFoundError:
        return _FirstStart([])  # no directory at all
    except CheckpointError:
        return None
    try:
        if store.read_file(_paths.join(directory, DEFAULT_LATEST_FILENAME)) is not None:
            return None
        if other_formats(directory, opts, store) is not None:
            return None
        leftovers: list[str] = []
        unsure: set[str] = set()
        for backend in store.backends() if isinstance(store, _resolve.StoreView) else [store]:
            found = backend.leftovers(directory)
            leftovers += found
            if isinstance(backend, _TellsCommitted):
                # The backend tells which of its leftovers only a commit leaves; of the rest, data files without
                # a staging directory may be a checkpoint whose index was deleted (an object store's).
                if backend.committed_leftovers(directory):
                    return None
                unsure |= _unstaged_data(found)
                continue
            for path in _tops(found):
                name = path.rsplit("/", 1)[-1]
                if _resolve._CHECKPOINT_FILE.match(name) or name.endswith(_ZARR_SUFFIX):
                    return None
    except CheckpointError:
        return None
    finally:
        store.close()
    if len(unsure) > 1 or any((checkpoint_number(p) or 0) > 1 for p in unsure):
        return None  # data of several saves, or of a save after the first: earlier saves committed
    return _FirstStart(sorted(set(leftovers)), certain=not unsure)


def _unstaged_data(paths: Sequence[str]) -> set[str]:
    """The checkpoint prefixes of the data files at final names among ``paths`` whose save has no staging
    directory (``ckpt-1_temp``) there: what a committed checkpoint whose index is gone leaves on an object store."""
    staged = {p.rstrip("/").rsplit("/", 1)[0] for p in paths} | {p.rstrip("/") for p in paths}
    prefixes: set[str] = set()
    for path in _tops(paths):  # not what is in a staging directory
        match = _resolve._CHECKPOINT_FILE.match(path)
        if match is not None and not path.endswith(".index") and f"{match.group(1)}_temp" not in staged:
            prefixes.add(match.group(1))
    return prefixes


@runtime_checkable
class _TellsCommitted(Protocol):
    """A backend that tells which of its leftovers only a committed checkpoint leaves (the bundle backend)."""

    def committed_leftovers(self, directory: str) -> list[str]: ...


def _verify(args: argparse.Namespace, out: TextIO) -> int:
    opts = _options(args)
    if args.latest_good:
        return _latest_good(args, opts, out)
    if args.all:
        reports = _in_directories(args, opts, stop_at_good=False)
    else:
        reports = [_verify_one(args, path, _used_options(args, opts, path)) for path in args.paths]
    bad = [r for r in reports if not r["ok"]]
    unreadable = [r for r in reports if r["status"] == _UNREADABLE]
    unverified = [r for r in reports if r["status"] == _UNVERIFIED]
    if args.json:
        _dump({"quick": args.quick, "ok": not bad, "checkpoints": reports}, out)
    else:
        for r in reports:
            what = "structure" if args.quick else _render.human_bytes(r["bytes"])
            summary = f"{r['prefix']}  ({_render.plural(r['tensors'], 'tensor')}, {what}, {r['backend']})"
            if r["ok"]:
                print(f"OK       {summary}", file=out)
                continue
            print(
                f"{r['status'].upper():<8} {summary if r['status'] == _UNVERIFIED else r['prefix'] or r['path']}",
                file=out,
            )
            for p in r["problems"]:
                print(f"  {p['key'] or '(checkpoint)'}: {p['error']}: {p['message']}", file=out)
            if r["unverified"]:
                print(f"  {_unverified_note(r)}", file=out)
        mode = "structure checked" if args.quick else "every byte read"
        also = f", {len(unverified)} unverifiable" if unverified else ""
        print(f"{len(reports) - len(bad)} of {len(reports)} intact{also} ({mode})", file=out)
    if unreadable:
        # Not a verdict: nothing says these are damaged. Status 4 (storage, permissions) wins over 1,
        # since not every checkpoint could be checked.
        names = ", ".join(r["prefix"] or r["path"] for r in unreadable)
        errors_seen = ", ".join(dict.fromkeys(p["error"] for r in unreadable for p in r["problems"]))
        out.flush()  # the report first, where both go to one terminal or file
        print(
            f"trackpoint verify: could not read {len(unreadable)} of {_render.plural(len(reports), 'checkpoint')} "
            f"({errors_seen}), which may be intact: {names}; fix access to the store (permissions, credentials, "
            "the network) and run verify again",
            file=sys.stderr,
        )
        return EXIT_ERROR
    if any(r["status"] != _UNVERIFIED for r in bad):
        return EXIT_DIFFERENT  # damage found is the stronger verdict
    # Not 0: nothing was found wrong, but nothing shows these values are the ones written either.
    return EXIT_UNVERIFIED if unverified else EXIT_OK


def _unverified_note(entry: dict[str, Any]) -> str:
    """What verify says of a file whose tensors it read whole but could not check, and what to do."""
    n = len(entry["unverified"])
    return (
        f"{n} of {_render.plural(entry['tensors'], 'tensor')} read whole but unverifiable: the file stores no "
        f"checksum of {'it' if n == 1 else 'them'}, so a changed value would go unnoticed (safetensors files "
        "have none; exports of trackpoint convert record a CRC-32C of each tensor); compare the file with its "
        f"source: {_command('trackpoint', 'diff', 'SOURCE', entry['path'])}"
    )


def _verdict(entry: dict[str, Any]) -> str:
    """``intact``, ``missing``, ``damaged``, ``unreadable`` when every problem is one of reading, not of the data,
    or ``unverified`` when there is no problem but some tensor has no checksum.

    A permission error, a failed request or a backend that is not installed says nothing about the
    bytes, so a checkpoint with only such problems is not called damaged.
    """
    problems = entry["problems"]
    if not problems:
        return _UNVERIFIED if entry["unverified"] else "intact"
    if entry["prefix"] is None and _failure_kind(problems[0]["error"]) == _MISSING:
        # Nothing to open there, a foreign file among it (ForeignCheckpointError, a torch.save file): no
        # checkpoint at the path, as inspect says, not a damaged one.
        return _MISSING
    if all(_failure_kind(p["error"]) == _UNREADABLE for p in problems):
        return _UNREADABLE
    return _DAMAGED


def _diff(args: argparse.Namespace, out: TextIO) -> int:
    if not (args.atol >= 0 and args.rtol >= 0):  # NaN too: no difference is within a NaN tolerance
        raise _UsageError(f"--atol and --rtol must be numbers >= 0, got {args.atol} and {args.rtol}")
    opts = _options(args)
    with _prefix_hint([args.a, args.b], opts):
        report = trackpoint.diff(
            args.a,
            args.b,
            atol=args.atol,
            rtol=args.rtol,
            a_options=_used_options(args, opts, args.a),
            b_options=_used_options(args, opts, args.b),
        )
    if args.json:
        _dump(
            {
                "a": report.a,
                "b": report.b,
                "equal": report.equal,
                "added": list(report.added),
                "removed": list(report.removed),
                "changed": [
                    {
                        "key": c.key,
                        "kind": c.kind,
                        "dtype": list(c.dtype),
                        "shape": [list(s) for s in c.shape],
                        "max_abs": c.max_abs,
                        "max_rel": c.max_rel,
                        "details": list(c.details),
                    }
                    for c in report.changed
                ],
                "same": report.same,
                "atol": report.atol,
                "rtol": report.rtol,
                # The metrics a CheckpointManager stored with each, when they differ; not part of "equal".
                "metrics": None if report.metrics is None else {"a": report.metrics[0], "b": report.metrics[1]},
            },
            out,
        )
        return EXIT_OK if report.equal else EXIT_DIFFERENT
    rows = [["added", k, ""] for k in report.added] + [["removed", k, ""] for k in report.removed]
    for c in report.changed:
        if c.kind == "dtype":
            rows.append(["dtype", c.key, f"{c.dtype[0]} -> {c.dtype[1]}"])
        elif c.kind == "shape":
            shapes = [_render.shape_text(s) for s in c.shape]
            rows.append(["shape", c.key, f"{shapes[0]} -> {shapes[1]}"])
        elif c.details:
            shown = list(c.details[:5]) + ([f"... and {len(c.details) - 5} more"] if len(c.details) > 5 else [])
            rows.append(["changed", c.key, shown[0]])
            rows.extend(["", "", line] for line in shown[1:])
        elif c.max_abs is None:
            rows.append(["changed", c.key, "values differ"])
        else:
            rel = "-" if c.max_rel is None else f"{c.max_rel:.6g}"
            rows.append(["changed", c.key, f"max abs {c.max_abs:.6g}, max rel {rel}"])
    if rows:
        _render.table(rows, ["", "key", "difference"], out)
    if report.metrics is not None:
        # Not a tensor: shown apart, and the verdict and exit status go by the tensors alone.
        a, b = (_render.metrics_text(m) for m in report.metrics)
        print(f"metrics differ (not compared as tensors): {a} -> {b}", file=out)
    tolerance = "exactly" if report.atol == 0 and report.rtol == 0 else f"within atol={args.atol}, rtol={args.rtol}"
    verdict = "equal" if report.equal else "different"
    print(
        f"{verdict}: {_render.plural(report.same, 'tensor')} equal {tolerance}, {len(report.changed)} changed, "
        f"{len(report.added)} added, {len(report.removed)} removed",
        file=out,
    )
    return EXIT_OK if report.equal else EXIT_DIFFERENT


#: How the Python API tells a caller to replace what exists, in the messages of convert, the
#: backends and the file writers: "overwrite=True", or "overwrite=True (--overwrite)".
_OVERWRITE_HINT: Final = re.compile(r"\boverwrite=True(?: \(--overwrite\))?")


def _with_flag(exc: CheckpointExistsError) -> CheckpointExistsError:
    """``exc`` telling a user of the command line to pass ``--overwrite`` rather than ``overwrite=True``.

    The hint is worded where the error is raised (convert's own check, a backend's begin or commit
    that lost a race, the file writers), all for Python callers; the command line rewords it here
    rather than each of them knowing about the flag.
    """
    message = str(exc.args[0]) if exc.args else str(exc)
    return CheckpointExistsError(
        _OVERWRITE_HINT.sub("--overwrite", message), backend=exc.backend, url=exc.url, key=exc.key
    )


#: How convert's messages tell a Python caller to choose the destination's backend.
_DST_BACKEND_HINT: Final = re.compile(r"dst_options=CheckpointOptions\(backend=([^)]*)\)")


def _dst_backend_flag(match: re.Match[str]) -> str:
    """``--dst-backend zarr`` for ``dst_options=CheckpointOptions(backend='zarr')``."""
    return f"--dst-backend {match.group(1).strip(chr(39))}"


def _convert(args: argparse.Namespace, out: TextIO) -> int:
    if not args.separator:
        raise _UsageError("--separator must not be empty: it splits tensor names into local names ('/', '.')")
    src_opts = _used_options(args, _options(args), args.src)
    dst_opts = _used_options(args, _options(args, dst=True), args.dst, dst=True)
    # The conversion's own events draw the bar (trackpoint.observe): on a terminal only, whatever the
    # size (a command the user waits for), never with --json.
    dst_opts = dataclasses.replace(dst_opts, progress=not args.json)
    if args.all:
        return _convert_run(args, src_opts, dst_opts, out)
    # No clean-up here: a failed trackpoint.convert removes the empty directories it made for the destination.
    try:
        with _prefix_hint([args.src], src_opts):
            trackpoint.convert(
                args.src,
                args.dst,
                src_options=src_opts,
                dst_options=dst_opts,
                overwrite=args.overwrite,
                names="keys" if args.keep_keys else "paths",
                include=args.include,
                exclude=args.exclude,
                separator=args.separator,
                strip_prefix=args.strip_prefix,
            )
    except CheckpointExistsError as exc:
        if not _OVERWRITE_HINT.search(str(exc)) and _is_source(args.src, args.dst, src_opts):
            # Not a destination in the way, which --overwrite would replace: the source itself, which a copy
            # onto itself would destroy (convert refuses it with or without --overwrite). A wrong command line.
            raise _UsageError(_one_line(exc)) from exc
        raise _with_flag(exc) from exc
    except InvalidArgumentError as exc:
        # A destination convert does not write (``out.pt``): a wrong command line, worded for it.
        raise _UsageError(_DST_BACKEND_HINT.sub(_dst_backend_flag, _one_line(exc))) from exc
    if args.json:
        _dump({"src": args.src, "dst": args.dst}, out)
    else:
        print(f"converted {args.src} -> {args.dst}", file=out)
    return EXIT_OK


#: The options of convert that shape the tensors of one copy or export, which a run copy keeps as they are.
_ONE_CHECKPOINT_OPTIONS: Final = (
    ("include", "--include"),
    ("exclude", "--exclude"),
    ("strip_prefix", "--strip-prefix"),
    ("keep_keys", "--keep-keys"),
)


def _convert_run(
    args: argparse.Namespace, src_opts: CheckpointOptions, dst_opts: CheckpointOptions, out: TextIO
) -> int:
    """``convert --all``: every checkpoint of a directory, one line each as it is done, then the state file."""
    given = [flag for name, flag in _ONE_CHECKPOINT_OPTIONS if getattr(args, name)]
    if args.separator != "/":
        given.append("--separator")
    if given:
        raise _UsageError(
            f"{' and '.join(given)} shape the tensors of one copy or export, and --all copies every checkpoint of a "
            "run whole, metrics and object graph included; drop them, or convert one checkpoint at a time"
        )

    def report(entry: CopiedCheckpoint) -> None:
        if args.json:
            return
        if entry.action == "skipped":
            line = f"skipped  {entry.src}: {entry.dst} is an equal copy"
        elif entry.action == "vanished":
            line = f"vanished {entry.src}: deleted from the source while the run was copied"
        else:
            line = f"{entry.action:<8} {entry.src} -> {entry.dst}  ({_render.human_bytes(entry.bytes)})"
        # Flushed: each line is the progress of a copy that may take hours.
        print(line, file=out, flush=True)

    try:
        done = convert_run(
            args.src,
            args.dst,
            src_options=src_opts,
            dst_options=dst_opts,
            overwrite=args.overwrite,
            on_checkpoint=report,
        )
    except InvalidArgumentError as exc:
        # Before CheckpointExistsError: the source directory as destination is both, and a wrong command line.
        raise _UsageError(_one_line(exc)) from exc
    except CheckpointExistsError as exc:
        raise _with_flag(exc) from exc
    if args.json:
        _dump(
            {
                "src": done.src,
                "dst": done.dst,
                "checkpoints": [dataclasses.asdict(entry) for entry in done.checkpoints],
                "state_file": done.state_file,
            },
            out,
        )
        return EXIT_OK
    counts = collections.Counter(entry.action for entry in done.checkpoints)
    summary = ", ".join(f"{n} {action}" for action, n in counts.items())
    written = "state file written" if done.state_file else "no state file in the source"
    print(f"converted {done.src} -> {done.dst}: {summary}; {written}", file=out)
    return EXIT_OK


def _is_source(src: str, dst: str, opts: CheckpointOptions) -> bool:
    """Whether the destination ``dst`` is the checkpoint or file ``src`` names (a directory: its latest one).

    Asked after convert refused to copy, to tell a destination in the way from the source itself.
    """
    from trackpoint.interchange import file_format
    from trackpoint.interchange._convert import open_source

    def same(a: str, b: str) -> bool:
        if _paths.is_url(a) or _paths.is_url(b):
            return a.rstrip("/") == b.rstrip("/")
        return os.path.abspath(_paths.strip_file_scheme(a)) == os.path.abspath(_paths.strip_file_scheme(b))

    try:
        if same(src, dst) or file_format(src) is not None:
            return same(src, dst)
        prefix, _, reader = open_source(src, opts)
        reader.close()
    except (CheckpointError, OSError, ValueError):
        return False  # the refusal stands as convert worded it
    return same(prefix, dst)


_COMMANDS: Final[dict[str, Callable[[argparse.Namespace, TextIO], int]]] = {
    "ls": _ls,
    "cleanup": _cleanup,
    "rm": _rm,
    "inspect": _inspect,
    "verify": _verify,
    "diff": _diff,
    "convert": _convert,
}


#: How the messages of stores and backends name an option for Python callers, and how the command line
#: names it: ``storage_options['endpoint_url']`` is ``-o endpoint_url``, ``backend_options['retries']`` is
#: ``--backend-option retries``. The advice is worded where the error is raised, for every caller; the command
#: line rewords it, as it does for ``overwrite=True``.
_OPTION_TERMS: Final = (
    (re.compile(r"storage_options=\{'anon': True\}"), "-o anon=true"),
    (re.compile(r"storage_options=\{'key': \.\.\., 'secret': \.\.\.\}"), "-o key=... -o secret=..."),
    (re.compile(r"storage_options\['(\w+)'\]"), r"-o \1"),
    (re.compile(r"backend_options\['(\w+)'\]"), r"--backend-option \1"),
    # The library's advice on choosing a backend, and on a state file it cannot parse, names Python calls.
    (re.compile(r"CheckpointOptions\(backend=<its backend>\)"), "--backend <its backend>"),
    (re.compile(r"drop backend= from the options"), "drop --backend"),
    (re.compile(r"CheckpointOptions\(backend=\.\.\.\)"), "--backend"),
    (re.compile(r"\blatest_checkpoint\(('[^']*')\) is "), r"the latest checkpoint of \1 is "),
    (
        re.compile(r"rewrite it with update_checkpoint_state"),
        "let the next save of a CheckpointManager there write a new one",
    ),
)


def _in_flag_terms(message: str) -> str:
    """``message`` naming options as the command line takes them (see :data:`_OPTION_TERMS`)."""
    for pattern, flag in _OPTION_TERMS:
        message = pattern.sub(flag, message)
    return message


def _one_line(exc: BaseException, backend_flag: str = "--backend") -> str:
    """The message of ``exc`` on one line, in the command line's terms; ``backend_flag`` is the flag that
    chooses the backend the message is about (``--dst-backend`` for convert's destination)."""
    text = " ".join(str(exc).split()).replace("CheckpointOptions(backend=...)", backend_flag)
    return _in_flag_terms(text) or type(exc).__name__


def _discard_stdout() -> None:
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a file (a test's capture): nothing will flush to a closed pipe
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def _usage(args: argparse.Namespace, message: str, error: str = "UsageError", *, named: bool = False) -> int:
    """Report a bad option value found after parsing as argparse reports one: the command's usage, then why.

    ``named``: stderr names the error's type before the message (``InvalidPathError: ...``); the JSON
    document has it in its own field, and its message does not repeat it.
    """
    args.command_parser.print_usage(sys.stderr)
    print(f"trackpoint {args.command}: error: {f'{error}: ' if named else ''}{message}", file=sys.stderr)
    return _json_failure(args, error, message, EXIT_USAGE)


def _json_failure(args: argparse.Namespace, error: str, message: str, status: int) -> int:
    """With ``--json``, the failure as JSON on stdout too (``{"error": {...}}``): a script reads one stream."""
    if getattr(args, "json", False):
        try:
            _dump({"error": {"type": error, "message": message, "status": status}}, sys.stdout)
        except BrokenPipeError:
            _discard_stdout()
    return status


def _urls(args: argparse.Namespace, flag: str) -> list[str]:
    """The paths of the command line that ``flag`` (``--backend`` or ``--dst-backend``) chooses the backend of."""
    if args.command == "convert":
        from trackpoint.interchange import file_format

        # A flat-file destination (out.safetensors) is written by no backend: never the flag's to serve.
        dst = [] if file_format(args.dst) is not None else [args.dst]
        if flag == "--dst-backend":
            return dst
        return [args.src] if args.dst_backend else [args.src, *dst]
    return [p for p in (getattr(args, name, None) for name in ("directory", "path", "a", "b")) if p] + list(
        getattr(args, "paths", None) or []
    )


def _serves(backend: str, url: str) -> bool:
    """Whether ``backend`` serves the URL: by its registered schemes, or as one readers ask there (plugins).

    The schemes first: ``detect_backends`` follows ``TRACKPOINT_BACKEND``, which would make a backend the
    environment did not choose look as if it served nothing.
    """
    from trackpoint.plugins import detect_backends, list_backends

    scheme = _paths.scheme(url) if _paths.is_url(url) else ""
    if any(row.name == backend and scheme in row.schemes for row in list_backends()):
        return True
    try:
        return backend in detect_backends(url, CheckpointOptions())
    except CheckpointError:
        return False  # no backend serves the URL's scheme


def _backend_flag(args: argparse.Namespace, exc: BaseException) -> str | None:
    """``--backend`` or ``--dst-backend`` when ``exc`` refuses the backend that option names, else ``None``.

    That is an unknown or blocked name, or a backend that refused a URL it does not serve (``--backend
    memory`` for ``s3://b/run``: a plain :class:`BackendError`, the URL being one another backend serves).
    An unknown or blocked backend the environment chose (``TRACKPOINT_BACKEND``) is :func:`_env_backend`'s.
    Refusals of a plugin that failed to load or of a missing extra are not about the command line, and stay
    failures (status 4), and so does a backend's failure on a URL it serves (an S3 URL without credentials).
    """
    if isinstance(exc, UnknownBackendError) and exc.backend is not None:
        if exc.backend == args.backend:
            return "--backend"
        if exc.backend == getattr(args, "dst_backend", None):
            return "--dst-backend"
        return None
    if type(exc) not in (BackendError, UnknownBackendError):
        return None
    url = exc.url if isinstance(exc, CheckpointError) else None
    for flag, name in (("--dst-backend", getattr(args, "dst_backend", None)), ("--backend", args.backend)):
        if not name or (url is not None and _serves(name, url)):
            # The backend failed on the URL it names, one it serves (the azure plugin without an account
            # configured): the store's failure, even when the flag would not serve another path of the command.
            continue
        if any(not _serves(name, path) for path in _urls(args, flag)):
            return flag
    return None


def _env_backend(args: argparse.Namespace, exc: BaseException) -> str | None:
    """The message for an unknown or blocked backend that ``TRACKPOINT_BACKEND`` names, else ``None``.

    A misspelt value there (``s33``) is the same mistake as ``--backend s33``, made in the command's
    environment: a usage error (status 2), as the flag's is, not a failure of the store.
    """
    from trackpoint.plugins.manager import ENV_BACKEND

    env = os.environ.get(ENV_BACKEND, "").strip()
    if not env or not isinstance(exc, UnknownBackendError) or exc.backend != env:
        return None
    if exc.backend in (args.backend, getattr(args, "dst_backend", None)):
        return None  # the flag's, which the flag's handling words
    return f"{_one_line(exc)}; set {ENV_BACKEND} to a registered backend, unset it, or choose one with --backend"


def _unknown_scheme(exc: BaseException) -> bool:
    """Whether ``exc`` says that no backend serves the scheme of a URL given (``foo://b/run``).

    A path no store can use, as a ``file://`` URL naming another host is: the command line is wrong. An
    unknown backend *name* is the flag's or the environment's (:func:`_backend_flag`, :func:`_env_backend`).
    """
    return type(exc) is UnknownBackendError and exc.backend is None and exc.url is not None


class _LibraryWarnings(logging.Handler):
    """Prints the library's warnings on stderr while a command runs: each once, in the command line's terms.

    A command opens a location several times (each format's backend, the state file read for the listing
    and again for the latest checkpoint), and each may warn of the same thing; Python's default handler
    prints every record, worded for Python callers (``update_checkpoint_state``). It only prints: the options
    a path does not take are refused before the command opens anything (:func:`_refuse_unused_options`), not
    from the library's log, which logging configuration may silence.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(logging.WARNING)
        self.args = args
        self.said: set[str] = set()
        self.said_lock = threading.Lock()  # a command's threads (parallel reads) may warn at once

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if _of_unused_options(record):
                # Decided before the command ran (refused, said once for the path, or Zarr's own options that the
                # bundle backend, tried on a local path too, says it does not take): not said again.
                return
            message = _in_flag_terms(" ".join(record.getMessage().split()))
            with self.said_lock:
                if message in self.said:
                    return
                self.said.add(message)
            print(f"trackpoint {self.args.command}: {message}", file=sys.stderr)
        except Exception:  # noqa: BLE001 - a handler must not raise into the library's logger call
            self.handleError(record)


def _of_unused_options(record: logging.LogRecord) -> bool:
    """Whether ``record`` is a built-in backend's warning of options its store takes none of."""
    from trackpoint.backends._builtin import OPTIONS_LOGGER

    return record.name == OPTIONS_LOGGER


@contextlib.contextmanager
def _library_warnings(args: argparse.Namespace) -> Iterator[None]:
    """Route the library's warnings through :class:`_LibraryWarnings` while a command runs."""
    logger = logging.getLogger("trackpoint")
    handler = _LibraryWarnings(args)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


# ------------------------------------------------------------------ options a local path does not take
#: Stores (the scheme after a format's ``zarr+``) that take no storage options, and on which no built-in
#: backend takes backend options but the Zarr format's own: the local disk and the in-process memory store.
_PLAIN_STORES: Final = ("", "file", "zarr", "memory")

#: The built-in backends of those stores, whose options the command line knows; a plugin's backend serving a
#: local path takes or refuses options itself.
_PLAIN_BACKENDS: Final = ("bundle", "zarr", "memory")

#: What each kind of option is for, said when a path takes none.
_OPTIONS_FOR: Final = {
    "storage_options": ("storage", "they configure the S3 and GCS stores"),
    "backend_options": ("backend", "they tune the object stores' transfers"),
}


@dataclasses.dataclass(frozen=True)
class _OptionFlag:
    """Options given with one flag, and the paths of the command they apply to (``True``: a destination)."""

    flag: str
    field: str
    given: dict[str, Any]
    paths: list[tuple[str, bool]]


def _option_flags(args: argparse.Namespace) -> list[_OptionFlag]:
    """The storage and backend options of the command line, each flag with the paths it applies to.

    Convert's ``--dst-*`` options apply to its destination; its source's options apply to the destination too
    unless the ``--dst-*`` flag of that kind is given (:func:`_options`).
    """
    storage, tuning = dict(args.storage_options or ()), dict(args.backend_options or ())
    if args.command == "convert":
        src, dst = [(args.src, False)], [(args.dst, True)]
        return [
            _OptionFlag("-o", "storage_options", storage, src + ([] if args.dst_storage_options else dst)),
            _OptionFlag("--dst-storage-option", "storage_options", dict(args.dst_storage_options or ()), dst),
            _OptionFlag("--backend-option", "backend_options", tuning, src + ([] if args.dst_backend_options else dst)),
            _OptionFlag("--dst-backend-option", "backend_options", dict(args.dst_backend_options or ()), dst),
        ]
    paths = [(path, False) for path in _urls(args, "--backend")]
    return [
        _OptionFlag("-o", "storage_options", storage, paths),
        _OptionFlag("--backend-option", "backend_options", tuning, paths),
    ]


def _store_scheme(path: str) -> str:
    """The scheme of the store ``path`` names: its URL scheme after the last ``+`` (``zarr+s3`` is ``s3``)."""
    return _paths.scheme(path).rsplit("+", 1)[-1]


def _flat_file(path: str) -> str | None:
    """The format of the local file ``path`` (``npz``) that convert, inspect and diff read without a backend."""
    from trackpoint.interchange import file_format

    try:
        return file_format(path)
    except CheckpointError:
        return None  # a flat file on a store, refused where it is read


def _chosen_backend(args: argparse.Namespace, path: str, dst: bool) -> str | None:
    """The backend that serves ``path``: chosen (``--dst-backend``, ``--backend``, ``TRACKPOINT_BACKEND``) or
    implied by its scheme (``zarr+file://``, ``memory://``); ``None`` when found from what is there."""
    from trackpoint.plugins.manager import ENV_BACKEND

    chosen = (args.dst_backend if dst else None) or args.backend or os.environ.get(ENV_BACKEND, "").strip()
    if chosen:
        return str(chosen)
    scheme = _paths.scheme(path)
    if scheme.startswith("zarr"):
        return "zarr"
    return "memory" if scheme == "memory" else None


def _not_taken(args: argparse.Namespace, option: _OptionFlag, path: str, dst: bool) -> str | None:
    """Why ``path`` takes none of the options of ``option`` (the message after the flags), or ``None``.

    Storage options configure an object store: a local path and ``memory://`` take none. Of backend options,
    the bundle and memory backends take none there, and the Zarr format its own alone, checked as it checks
    them (a value it refuses is refused with its message). A local path whose backend is not chosen holds
    either format when read; a checkpoint written there is a bundle. A plugin's backend decides for itself.

    Raises
    ------
    BackendOptionError
        The Zarr format refuses an option or its value, or is not installed.
    """
    kind, what = _OPTIONS_FOR[option.field]
    fmt = _flat_file(path)
    if fmt is not None:
        return f"a .{fmt} file, read and written on the local disk without a backend: it takes no {kind} options"
    scheme = _store_scheme(path)
    if scheme not in _PLAIN_STORES:
        return None
    backend = _chosen_backend(args, path, dst)
    if backend is not None and backend not in _PLAIN_BACKENDS:
        return None
    store = "the in-process memory store" if scheme == "memory" else "the local disk"
    named = f"the {backend} backend takes" if backend else "the bundle and zarr backends take"
    if option.field == "storage_options" or backend in ("bundle", "memory"):
        return f"{named} no {kind} options on {store} ({what})"
    # The Zarr format's own options (compressor, chunk_bytes, ...), checked as the zarr backend checks them.
    from trackpoint.backends.stores import TransferOptions
    from trackpoint.backends.zarr._options import ZarrOptions, refuse_unknown

    flags = ", ".join(f"{option.flag} {key}" for key in sorted(option.given))
    if set(option.given) - ZarrOptions.names() <= TransferOptions.names():
        transfers = set(option.given) - ZarrOptions.names()
        if transfers:
            # The object stores' options, which the zarr backend takes on those stores: not misspelt, misplaced.
            own = ", ".join(f.name for f in dataclasses.fields(ZarrOptions))
            return f"{named} no {kind} options on {store} ({what}) but the Zarr format's own ({own})"
    try:
        refuse_unknown(option.given, ())
        ZarrOptions.from_mapping(option.given)
    except BackendOptionError as exc:
        raise BackendOptionError(f"{flags}: {exc}", url=path) from exc
    import importlib.util

    if importlib.util.find_spec("zarr") is None:
        raise BackendOptionError(
            f"{flags}: an option of the zarr backend, which is not installed (pip install 'trackpoint[zarr]'); "
            f"the bundle backend takes no {kind} options on {store}",
            url=path,
        )
    if backend is None and dst:
        return (
            f"the bundle backend, which writes a checkpoint at a local path unless another is chosen, takes no "
            f"{kind} options; they are the zarr backend's: add --dst-backend zarr to write a Zarr checkpoint"
        )
    if not dst and not (args.command == "cleanup" and set(option.given) <= {"cleanup_min_age"}):
        # The Zarr format's options tune how a checkpoint is written (only convert's destination is), and cleanup's
        # age guard.
        if args.command == "convert":
            return f"{_CONVERT_SOURCE} is only read, which the zarr backend's {kind} options do not tune"
        return f"trackpoint {args.command} writes no checkpoint, and the zarr backend's {kind} options tune only writes"
    return None


#: How the reason a convert source takes no options begins: said only when no other path takes them.
_CONVERT_SOURCE: Final = "a convert source"


def _refuse_unused_options(args: argparse.Namespace) -> None:
    """Refuse options that no path they apply to takes, before the command opens anything; say once which path
    does not take the options another path takes (``diff run/ckpt-1 s3://b/run/ckpt-1 -o key=...``).

    On the command line such options are a mistake (a bucket URL mistyped as a local path, the flag of the
    source given for convert's destination), not options shared with another URL as in a program.

    Raises
    ------
    BackendOptionError
        (exit status 2) Every path the options of a flag apply to takes none of them; the message names that flag.
    """
    for option in _option_flags(args):
        if not option.given:
            continue
        flags = ", ".join(f"{option.flag} {key}" for key in sorted(option.given))
        reasons = [(path, _not_taken(args, option, path, dst)) for path, dst in option.paths]
        unused = [(path, why) for path, why in reasons if why is not None]
        if len(unused) < len(reasons):
            for path, why in unused:
                if not why.startswith(_CONVERT_SOURCE):
                    print(f"trackpoint {args.command}: {flags} not used for {path!r}: {why}", file=sys.stderr)
            continue
        if unused:
            path, why = unused[-1]  # convert's destination, where a source says why it does not count
            if _flat_file(path) is not None:
                raise BackendOptionError(f"{flags}: {path!r} is {why}; drop {flags}", url=path)
            if why.endswith("do not tune") or why.endswith("tune only writes"):
                # Options the path's format takes, given where nothing is written: no mistyped URL to suspect.
                raise BackendOptionError(f"{flags} ({path!r}): {why}; drop {flags}", url=path)
            raise BackendOptionError(
                f"{flags}: {why}, and {path!r} is there; check that the path is the one meant (an s3:// or gs:// "
                f"URL), or drop {flags}",
                url=path,
            )


def _used_options(
    args: argparse.Namespace, opts: CheckpointOptions, path: str, *, dst: bool = False
) -> CheckpointOptions:
    """``opts`` for ``path`` of a command of several paths: without the options ``path`` takes none of (said by
    :func:`_refuse_unused_options`), which the library would otherwise warn of again."""
    drop: dict[str, Any] = {}
    for option in _option_flags(args):
        if option.given and (path, dst) in option.paths:
            with contextlib.suppress(CheckpointError):
                if _not_taken(args, option, path, dst) is not None:
                    drop[option.field] = {}
    return dataclasses.replace(opts, **drop) if drop else opts


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``trackpoint`` command line; return its exit status (see :mod:`trackpoint.cli`).

    Parameters
    ----------
    argv
        The arguments after the program name; ``sys.argv[1:]`` when ``None``.
    """
    parser = _parser()
    args = parser.parse_args(argv)  # exits with status 2 on a bad command line
    out = sys.stdout
    try:
        with _unwind_on_termination(), _library_warnings(args):
            _refuse_unused_options(args)  # before the command opens anything
            return _COMMANDS[args.command](args, out)
    except _UsageError as exc:
        return _usage(args, str(exc))
    except KeyboardInterrupt:
        print("trackpoint: interrupted", file=sys.stderr)
        return _INTERRUPTED
    except _Terminated as exc:
        print(f"trackpoint: terminated ({signal.Signals(exc.signum).name})", file=sys.stderr)
        return 128 + exc.signum
    except BrokenPipeError:
        # The reader of the output went away (``trackpoint inspect ... | head``): nothing is wrong, and
        # nothing more can be said there. The interpreter's final flush would fail again and print a
        # traceback, so the output goes to /dev/null from here.
        _discard_stdout()
        return _BROKEN_PIPE
    except (CheckpointError, OSError, ValueError) as exc:
        flag = _backend_flag(args, exc)
        if flag is not None:
            # --backend nosuch is a wrong command line, not a failure of the store.
            message = _one_line(exc, flag)
            # An object store chosen for a local path (--backend s3 run): the store's advice, in the flag's terms.
            return _usage(args, message.replace("CheckpointOptions.backend (and TRACKPOINT_BACKEND)", f"{flag}"))
        from_env = _env_backend(args, exc)
        if from_env is not None:
            return _usage(args, from_env, type(exc).__name__)
        if isinstance(exc, (InvalidArgumentError, InvalidPathError)) or _unknown_scheme(exc):
            # A value of the command line no function takes (a misspelt -o option, a path no store can
            # use, a URL scheme no backend serves): every argument and option comes from the command line,
            # so the command line is wrong.
            return _usage(args, _one_line(exc), type(exc).__name__, named=True)
        if args.verbose:
            traceback.print_exc(file=sys.stderr)
        print(f"trackpoint {args.command}: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        # A tensor that is not there (CheckpointKeyError, a KeyError) is "not found", as a missing checkpoint is.
        status = EXIT_NOT_FOUND if isinstance(exc, (FileNotFoundError, KeyError)) else EXIT_ERROR
        return _json_failure(args, type(exc).__name__, _one_line(exc), status)
