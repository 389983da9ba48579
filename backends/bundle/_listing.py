"""The files of a prefix in its directory: finding them by kind, their ages, deleting them all."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

from trackpoint.backends.bundle._names import (
    DATA_RE,
    PART_RE,
    basename,
    data_count,
    index_name,
    piece_save_id,
    temp_dir,
)
from trackpoint.backends.stores import FileLayer


def listed(files: FileLayer, prefix: str, pattern: re.Pattern[str]) -> list[str]:
    """Paths in ``prefix``'s directory whose name matches ``pattern`` for this prefix."""
    directory = files.dirname(prefix)
    return _of_prefix(files, directory, basename(prefix), files.listdir(directory), pattern)


def _of_prefix(
    files: FileLayer, directory: str, base: str, names: Sequence[str], pattern: re.Pattern[str]
) -> list[str]:
    """The paths of ``names`` (in ``directory``) that ``pattern`` matches for the prefix ``base``."""
    out = []
    for name in names:
        m = pattern.match(name)
        if m is not None and m.group("base") == base:
            out.append(files.join(directory, name))
    return out


class PrefixFiles(NamedTuple):
    """What one listing of a prefix's directory holds of the prefix."""

    #: Whether ``<prefix>.index`` was listed.
    has_index: bool
    #: Data files, as paths.
    data: list[str]
    #: Piece indexes (the create strategy's ownership markers), as paths.
    parts: list[str]


def prefix_files(files: FileLayer, prefix: str) -> PrefixFiles:
    """The index, data files and piece indexes of ``prefix``, from one listing of its directory."""
    directory = files.dirname(prefix)
    base = basename(prefix)
    names = files.listdir(directory)
    return PrefixFiles(
        basename(index_name(prefix)) in names,
        _of_prefix(files, directory, base, names, DATA_RE),
        _of_prefix(files, directory, base, names, PART_RE),
    )


def count_of(path: str) -> int | None:
    """The ``-of-`` file count in the name of a data file, ``None`` for other names."""
    parsed = data_count(basename(path))
    return None if parsed is None else parsed[1]


def data_files(files: FileLayer, prefix: str, *, unless_count: int | None = None) -> list[str]:
    """Data files of ``prefix`` (all, or those of any file count but ``unless_count``)."""
    return [p for p in listed(files, prefix, DATA_RE) if count_of(p) != unless_count]


def part_files(files: FileLayer, prefix: str, save_id: str | None = None) -> list[str]:
    """Piece indexes of the create strategy at ``prefix`` (of one save, or of all)."""
    pieces = listed(files, prefix, PART_RE)
    if save_id is None:
        return pieces
    return [p for p in pieces if piece_save_id(basename(p)) == save_id]


def delete_prefix(files: FileLayer, prefix: str) -> None:
    """Delete every file of ``prefix``, committed or left over by any save, index first."""
    index = index_name(prefix)
    directory = files.dirname(prefix)
    files.delete([index])
    files.sync_dir(directory)
    found = prefix_files(files, prefix)
    if found.parts or found.has_index:
        # Piece indexes go before data objects: they are the ownership markers
        # of running saves, whose commits then refuse instead of indexing data
        # that is about to be replaced. The index is removed once more because
        # such a save may have created it after the first removal (before its
        # markers went, or since: then it is listed).
        files.delete(found.parts)
        files.delete([index])
        files.sync_dir(directory)
    # Without markers listed, no save was running at the listing (a save creates its marker before its
    # data), so the listed data objects are all the prefix had; those of a save whose marker came later are
    # that save's to commit. Data of the saves whose markers went may have appeared since: list again.
    files.delete(listed(files, prefix, DATA_RE) if found.parts else found.data)
    if files.capabilities.atomic_rename:
        # Only the rename strategy stages in ``<prefix>_temp``, and only on stores that rename.
        temp = temp_dir(prefix)
        files.delete([files.join(temp, n) for n in files.listdir(temp)])
        files.remove_dir(temp)
