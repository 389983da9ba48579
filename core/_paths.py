"""URL-aware path helpers shared by the core and the backends.

A checkpoint path is either a local path (``/tmp/run/ckpt-1``, ``run/ckpt``,
``file:///tmp/x``) or a URL with a scheme (``s3://bucket/run/ckpt-1``,
``zarr+gs://b/x``). Local paths follow the OS rules; URLs always use ``/``.
"""

from __future__ import annotations

import os
import posixpath
import re

__all__ = ["dirname", "is_url", "join", "relpath", "scheme", "split_scheme", "strip_file_scheme"]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")


def split_scheme(path: str) -> tuple[str, str]:
    """``("s3", "bucket/key")`` for ``s3://bucket/key``; ``("", path)`` for local paths."""
    m = _SCHEME.match(path)
    if m is None:
        return "", path
    return m.group(1).lower(), path[m.end():]


def scheme(path: str) -> str:
    """The lower-cased URL scheme of ``path``, or ``""`` for a local path."""
    return split_scheme(path)[0]


def is_url(path: str) -> bool:
    """Whether ``path`` carries a scheme other than ``file``."""
    s = scheme(path)
    return s not in ("", "file")


def strip_file_scheme(path: str) -> str:
    """``/x/y`` for ``file:///x/y``; other paths unchanged."""
    s, rest = split_scheme(path)
    return rest if s == "file" else path


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
    return f"{s}://{posixpath.join(rest, name)}" if rest else f"{s}://{name}"


def relpath(path: str, start: str) -> str:
    """``path`` relative to ``start`` when both are on the same store, else ``path``."""
    ps, prest = split_scheme(path)
    ss, srest = split_scheme(start)
    if ps != ss:
        return path
    if not ps:
        return os.path.relpath(path, start or os.curdir)
    return posixpath.relpath(prest, srest or ".")
