"""Checkpoints to and from the flat tensor files other frameworks load: safetensors and ``.npz``.

:func:`trackpoint.convert` uses this package whenever a side of the copy is such a file (chosen by its
suffix, ``.safetensors`` or ``.npz``); the names here are for code that wants the naming rule itself.

Exports name tensors by their object-graph path (``model/layer/kernel``, see :func:`path_names`) rather
than by TensorFlow's keys (``model/layer/kernel/.ATTRIBUTES/VARIABLE_VALUE``), unless the raw keys are
asked for. trackpoint's own exports also record the keys and the object graph in the file's metadata,
so importing them back gives the very checkpoint that was exported; safetensors exports add a CRC-32C of
every tensor and of that metadata, which every read of the file checks (``.npz`` members carry zip's
CRC-32 already). Any other file becomes a
checkpoint whose object graph follows its ``/``-separated names (:func:`graph_from_names`), so
``Checkpoint(model=...).restore`` matches its tensors by path.

Nothing here imports the ``safetensors`` package until a safetensors file is written.
"""

from __future__ import annotations

import os
from typing import Final

from trackpoint import _paths
from trackpoint.errors import InvalidPathError
from trackpoint.interchange._names import graph_from_names, path_names

__all__ = ["FILE_FORMATS", "file_format", "graph_from_names", "path_names"]

#: Flat file formats by file-name suffix.
FILE_FORMATS: Final = {".safetensors": "safetensors", ".npz": "npz"}


def file_format(path: str | os.PathLike[str]) -> str | None:
    """``"safetensors"`` or ``"npz"`` when ``path`` names such a file (by suffix), else ``None``.

    Raises
    ------
    InvalidPathError
        ``path`` is a URL other than ``file://`` ending in one of the suffixes: flat files are read
        and written on the local file system only.
    """
    text = os.fspath(path)
    fmt = next((f for suffix, f in FILE_FORMATS.items() if text.lower().endswith(suffix)), None)
    if fmt is not None and _paths.is_url(text):
        raise InvalidPathError(
            f"{text!r}: {fmt} files are read and written on the local file system only; copy the file there "
            "first (or convert to a checkpoint, which can be on any store)"
        )
    return fmt
