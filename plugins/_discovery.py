"""Entry points of one group, read from the installed distributions' metadata.

What ``importlib.metadata.entry_points(group=...)`` answers, for the common
layout (``*.dist-info`` and ``*.egg-info`` directories in the directories on
``sys.path``), without importing ``importlib.metadata``: that module and the
``email`` package it parses metadata with cost 30-40 ms on a process's first
checkpoint, several times the read of a small checkpoint. Only the
distributions that publish an entry point of the group have their ``METADATA``
(or ``PKG-INFO``) read, for their name and version.

Anything else on the path (a zip file, an ``.egg`` file or directory, or an
import hook that publishes distributions of its own) makes :func:`entry_points` ask
``importlib.metadata`` instead, so that no plugin is missed where the layout is
unusual.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from importlib.machinery import PathFinder
from typing import NamedTuple

__all__ = ["FoundEntryPoint", "entry_points"]

_INFO_SUFFIXES = (".dist-info", ".egg-info")
# The entry-point value grammar of the packaging specification: ``module[:attr[.attr...]] [extras]``.
_VALUE = re.compile(r"(?P<module>[\w.]+)\s*(:\s*(?P<attr>[\w.]+)\s*)?((?P<extras>\[.*\])\s*)?$")


class FoundEntryPoint(NamedTuple):
    """One entry point and the distribution that publishes it.

    A named tuple, not a dataclass: defining a frozen dataclass costs about 1 ms
    on the process's first use of the plugin system.
    """

    name: str
    #: ``module:attribute`` as written in ``entry_points.txt``.
    value: str
    #: The distribution's ``Name`` and ``Version``; ``None`` when its metadata has none.
    distribution: str | None
    version: str | None

    def load(self) -> object:
        """Import the module and return the attribute the value names.

        Raises
        ------
        ValueError
            If the value does not follow the entry-point grammar.
        ImportError, AttributeError
            If the module or the attribute does not exist.
        """
        match = _VALUE.match(self.value)
        if match is None:
            raise ValueError(f"entry point {self.name!r} has a malformed value {self.value!r}")
        target: object = importlib.import_module(match.group("module"))
        for attribute in (match.group("attr") or "").split("."):
            if attribute:
                target = getattr(target, attribute)
        return target


def entry_points(group: str) -> list[FoundEntryPoint]:
    """The entry points of ``group`` in the distributions importable now.

    A distribution found in more than one ``sys.path`` directory counts once,
    from the first, as the import system would import it from there.
    """
    found = _scan(group)
    return _from_importlib_metadata(group) if found is None else found


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _scan(group: str) -> list[FoundEntryPoint] | None:
    """The entry points of ``group``; ``None`` when the path holds something this scan does not read."""
    if any(finder is not PathFinder and hasattr(finder, "find_distributions") for finder in sys.meta_path):
        return None
    seen: set[str] = set()
    result: list[FoundEntryPoint] = []
    for entry in sys.path:
        directory = entry or "."
        if directory.lower().endswith(".egg"):
            return None  # an egg keeps its metadata in EGG-INFO, which importlib.metadata reads
        try:
            names = os.listdir(directory)
        except (FileNotFoundError, PermissionError):
            continue  # as the import system skips it
        except OSError:
            return None  # a zip or egg file: its distributions are read by importlib.metadata
        for name in names:
            stem, suffix = os.path.splitext(name)
            if suffix.lower() not in _INFO_SUFFIXES:
                continue
            key = _normalized(stem.partition("-")[0])
            if key in seen:
                continue
            seen.add(key)
            info = os.path.join(directory, name)
            entries = _group_entries(os.path.join(info, "entry_points.txt"), group)
            if entries:
                dist, version = _name_and_version(info, suffix.lower())
                result.extend(FoundEntryPoint(n, v, dist, version) for n, v in entries)
    return result


def _group_entries(path: str, group: str) -> list[tuple[str, str]]:
    """``(name, value)`` of each entry of ``[group]`` in an ``entry_points.txt``; none if it is missing."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return []
    header = f"[{group}]"
    if header not in text:
        return []  # most distributions publish other groups (console scripts), or none
    entries: list[tuple[str, str]] = []
    inside = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            inside = line == header
        elif inside:
            name, sep, value = line.partition("=")
            if sep:
                entries.append((name.strip(), value.strip()))
    return entries


def _name_and_version(info: str, suffix: str) -> tuple[str | None, str | None]:
    """``Name`` and ``Version`` from the header of a distribution's metadata file."""
    path = os.path.join(info, "METADATA" if suffix == ".dist-info" else "PKG-INFO")
    fields: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    break  # the header ends at the first blank line; the description follows
                key, sep, value = line.partition(":")
                if sep and key in ("Name", "Version") and key not in fields:
                    fields[key] = value.strip()
    except OSError:
        pass
    return fields.get("Name"), fields.get("Version")


def _from_importlib_metadata(group: str) -> list[FoundEntryPoint]:
    import importlib.metadata

    result: list[FoundEntryPoint] = []
    # Distribution.name and .version each parse the metadata file again: once per distribution.
    metadata: dict[int, tuple[str | None, str | None]] = {}
    for ep in importlib.metadata.entry_points(group=group):
        dist = ep.dist
        if dist is None:
            result.append(FoundEntryPoint(ep.name, ep.value, None, None))
            continue
        if id(dist) not in metadata:
            fields = dist.metadata
            metadata[id(dist)] = (fields["Name"], fields["Version"])
        result.append(FoundEntryPoint(ep.name, ep.value, *metadata[id(dist)]))
    return result
