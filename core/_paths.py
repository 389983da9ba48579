"""URL-aware path helpers shared by the core and the backends.

A checkpoint path is either a local path (``/tmp/run/ckpt-1``, ``run/ckpt``,
``file:///tmp/x``) or a URL with a scheme (``s3://bucket/run/ckpt-1``,
``zarr+gs://b/x``). Local paths follow the OS rules; URLs always use ``/``.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterable

from trackpoint.errors import ArgumentTypeError, InvalidPathError

__all__ = [
    "argument",
    "check",
    "dirname",
    "is_url",
    "join",
    "missing_directories",
    "normalize_local",
    "path_list",
    "relpath",
    "remove_empty",
    "scheme",
    "split_scheme",
    "strip_file_scheme",
]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
#: A URL scheme followed by a single slash (``s3:/bucket``). Two characters at least: ``C:/`` is a drive.
_ONE_SLASH = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]+):/(?!/)")


def check(path: str) -> str:
    """Return ``path`` if a store can use it; raise :class:`InvalidPathError` otherwise.

    A NUL byte ends a string for the operating system and is refused by every
    object store, so a path holding one could only fail later, deep inside a
    storage library and with its own error type. A ``file://`` URL naming a
    host other than ``localhost`` (``file://server/x``) names a file trackpoint
    cannot reach; read as a local path it would be ``server/x`` in the working
    directory. The core calls this where a path first reaches it (backend
    selection), and the local file layer calls it again for code that drives a
    backend directly.
    """
    if "\0" in path:
        raise InvalidPathError(
            f"path {path!r} contains a NUL character (\\x00) at index {path.index(chr(0))}; no file system or "
            "object store accepts it: remove it from the path"
        )
    # file://server/x names another machine's file; ``file://run/ckpt`` is no relative path either (RFC 8089).
    strip_file_scheme(path)
    slashed = _ONE_SLASH.match(path)
    if slashed is not None:
        # Without "//" this is a relative local path: s3:/bucket/run would be saved in a directory named "s3:"
        # of the working directory, and vanish with the machine the user meant to save away from.
        name = slashed.group(1)
        url = f"{name}://{'/' if name.lower() == 'file' else ''}{path[slashed.end() :]}"
        raise InvalidPathError(
            f"path {path!r} starts with {name + ':/'!r}, a URL scheme with one slash: as written it is a local "
            f"path (a directory named {name + ':'!r} in the working directory). Write {name}:// for the URL "
            f"({url}), or ./{path} for a local directory of that name"
        )
    return path


def argument(path: object, call: str, name: str) -> str:
    """The checkpoint path ``path``, given to ``call`` as its argument ``name``, as a ``str``.

    TensorFlow takes ``str`` and ``bytes`` paths (``tf.compat.as_str`` decodes
    the latter as UTF-8); ``os.PathLike`` objects (``pathlib.Path``) are
    accepted too, whether their ``__fspath__`` gives ``str`` or ``bytes``.

    Raises
    ------
    ArgumentTypeError
        ``path`` is none of these (the message names the call and the argument).
    InvalidPathError
        ``path`` is ``bytes`` that are not UTF-8.
    """
    if type(path) is str:
        return path  # the common case, first
    text: object = path
    if isinstance(path, os.PathLike):
        try:
            text = os.fspath(path)
        except TypeError:
            text = None  # its __fspath__ returned neither str nor bytes: refused below
    if isinstance(text, str):
        return text
    if isinstance(text, bytes):
        try:
            return text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidPathError(
                f"{call}: {name} {path!r} is not UTF-8 ({exc.reason} at byte {exc.start}); pass the path as a str"
            ) from None
    raise ArgumentTypeError(
        f"{call}: {name} must be a path or URL: a str, bytes or os.PathLike (pathlib.Path), got "
        f"{type(path).__name__} ({path!r:.80})"
    )


def path_list(given: object, call: str, name: str) -> list[str]:
    """The paths of ``given``, a sequence of paths or one path (a list of one), each as :func:`argument` takes it.

    Iterated as it is, one path given as a string would be its characters: a state file listing ``/``, ``t``,
    ``m``, ..., or no checkpoint found at all. Every function taking several paths goes through here.

    Raises
    ------
    ArgumentTypeError
        ``given`` is neither a path nor an iterable of paths, or one of its elements is no path.
    InvalidPathError
        A path is ``bytes`` that are not UTF-8.
    """
    if isinstance(given, (str, bytes, os.PathLike)):
        return [argument(given, call, name)]
    if not isinstance(given, Iterable):
        raise ArgumentTypeError(f"{call}: {name} must be a path or a sequence of paths, got {given!r:.80}")
    return [argument(p, call, name) for p in given]


def normalize_local(path: str) -> str:
    """``path`` with its ``..`` components resolved, as the operating system would resolve them.

    ``run/sub/../../up/ckpt`` names ``up/ckpt``. Creating its directories
    component by component (``os.makedirs``) would create ``run/sub/`` first,
    outside the directory the path resolves to. The directory part is
    resolved with :func:`os.path.realpath`, so a symbolic link before a ``..``
    is followed exactly as the OS follows it, and missing components are
    dropped lexically instead of being created; the result is absolute. The
    last component is kept as written (it may be a link the caller means to
    replace). Paths without ``..`` are returned unchanged.
    """
    if ".." not in path.split(os.sep):
        return path
    head, tail = os.path.split(path)
    if tail == "..":
        return os.path.realpath(path)
    resolved = os.path.realpath(head or os.curdir)
    return os.path.join(resolved, tail)


def split_scheme(path: str) -> tuple[str, str]:
    """``("s3", "bucket/key")`` for ``s3://bucket/key``; ``("", path)`` for local paths.

    ``file://localhost/x`` gives ``("file", "/x")``, as ``file:///x`` does: ``localhost`` is this machine
    (RFC 8089), so every caller reads the path, not the host, from what follows the scheme. The same holds
    for ``zarr+file://``, the Zarr backend's name for the local disk.
    """
    m = _SCHEME.match(path)
    if m is None:
        return "", path
    s, rest = m.group(1).lower(), path[m.end() :]
    if s in ("file", "zarr+file") and rest[:9].lower() == "localhost" and rest[9:10] in ("", "/"):
        rest = rest[9:] or "/"
    return s, rest


def scheme(path: str) -> str:
    """The lower-cased URL scheme of ``path``, or ``""`` for a local path."""
    return split_scheme(path)[0]


def is_url(path: str) -> bool:
    """Whether ``path`` carries a scheme other than ``file``."""
    s = scheme(path)
    return s not in ("", "file")


def strip_file_scheme(path: str) -> str:
    """The local path a ``file://`` URL names (RFC 8089); other paths unchanged.

    ``file:///x/y`` and ``file://localhost/x/y`` both name ``/x/y``: the part between ``file://`` and the
    next ``/`` is a host, empty or ``localhost`` for this machine.

    Raises
    ------
    InvalidPathError
        The URL names another host (``file://server/x``, or ``file://run/ckpt`` meant as a relative path),
        whose files trackpoint cannot reach.
    """
    s, rest = split_scheme(path)  # file://localhost/x gives /x already
    if s != "file":
        return path
    host, slash, local = rest.partition("/")
    if not host:
        return rest
    raise _other_host(path, host, slash + local)


def _other_host(path: str, host: str, local: str) -> InvalidPathError:
    """The refusal of the ``file://`` URL ``path``, which names ``host``, not this machine."""
    return InvalidPathError(
        f"path {path!r} names the host {host!r} (a file:// URL is file://HOST/PATH): trackpoint reads and writes "
        f"files of this machine only. Write file://{local or '/'} (or file://localhost{local or '/'}) for the "
        f"local path {local or '/'!r}, or {host}{local} without file:// for a path relative to the working directory"
    )


def dirname(path: str) -> str:
    """Directory part of a local path or URL (``s3://b/run`` for ``s3://b/run/ckpt-1``)."""
    s, rest = split_scheme(path)
    if not s:
        return os.path.dirname(path)
    d = posixpath.dirname(rest.rstrip("/")) if "/" in rest.rstrip("/") else rest.rstrip("/")
    return f"{s}://{d}"


def join(directory: str, name: str) -> str:
    """``name`` inside ``directory``; an absolute ``name`` or URL is returned unchanged."""
    if scheme(name) or os.path.isabs(name):
        return name
    s, rest = split_scheme(directory)
    if not s:
        return os.path.join(directory, name)
    # "s3://b/run//" names the directory listings call "s3://b/run": its entries are "s3://b/run/<name>".
    stripped = rest.rstrip("/")
    if stripped:
        return f"{s}://{stripped}/{name}"
    return f"{s}:///{name}" if rest else f"{s}://{name}"  # the root, file:///, keeps its slash


def relpath(path: str, start: str) -> str:
    """``path`` relative to ``start`` when both are on the same store, else ``path``."""
    ps, prest = split_scheme(path)
    ss, srest = split_scheme(start)
    if ps != ss:
        return path
    if not ps:
        return os.path.relpath(path, start or os.curdir)
    return posixpath.relpath(prest, srest or ".")


def missing_directories(directory: str) -> list[str]:
    """``directory`` and those above it that do not exist yet, deepest first (local paths).

    Taken before a write makes them, so that a failed write can remove what it made
    (:func:`remove_empty`) and leave no empty directories behind.
    """
    missing: list[str] = []
    directory = os.path.abspath(directory)
    while not os.path.lexists(directory) and os.path.dirname(directory) != directory:
        missing.append(directory)
        directory = os.path.dirname(directory)
    return missing


def remove_empty(directories: list[str]) -> None:
    """Remove what is still empty of ``directories`` (deepest first), stopping at the first that is not.

    A directory another writer put something in, or that is not ours to remove, is kept, and so
    are its parents; one already gone (never made, or removed by a backend's own clean-up) is skipped.
    """
    for directory in directories:
        try:
            os.rmdir(directory)
        except FileNotFoundError:
            continue
        except OSError:
            return
