"""File names of a bundle: committed files, temporary pieces, leftovers, and checks on them."""

from __future__ import annotations

import re
from typing import Final

from trackpoint.errors import InvalidCheckpointError, TrackableError
from trackpoint.storage import ShardSpec

INDEX_SUFFIX: Final = ".index"
SAVE_ID_RE: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
DATA_RE: Final = re.compile(r"^(?P<base>.+)\.data-(?P<shard>\d{5,})-of-(?P<count>\d{5,})$")
#: A piece index of the create strategy: ``.piece`` since 0.2; 0.1 wrote ``.index``, and
#: leftovers of that name are still recognised so delete and cleanup remove them.
PART_RE: Final = re.compile(r"^(?P<base>.+)\.part-\d{5,}-of-\d{5,}\.(?P<save_id>[A-Za-z0-9_-]+)\.(?:piece|index)$")
PIECE_SUFFIX: Final = ".piece"
#: Temporary file of a LocalFiles sink killed before it was published.
SINK_TEMP_RE: Final = re.compile(r"^\.(?P<name>.+)\.tmp-[0-9a-f]{32}$")
#: Leftovers younger than this may belong to a save that is still running.
MIN_AGE: Final = 600.0


def data_filename(prefix: str, shard_id: int, num_shards: int) -> str:
    """TensorFlow's data file name: ``<prefix>.data-%05d-of-%05d``."""
    return f"{prefix}.data-{shard_id:05d}-of-{num_shards:05d}"


def index_name(prefix: str) -> str:
    """The commit point of ``prefix``: ``<prefix>.index``."""
    return prefix + INDEX_SUFFIX


def temp_dir(prefix: str) -> str:
    """The staging directory of the rename strategy: ``<prefix>_temp``."""
    return prefix + "_temp"


def part_index(prefix: str, spec: ShardSpec, file_count: int) -> str:
    """The piece index (ownership marker) of one shard of the create strategy.

    It carries the shard's data file name (``iiiii-of-<file_count>``), so the
    data object of a listed piece index can be named without the save's manifest.
    """
    # Not ".index": only a committed checkpoint may end in .index, since tools
    # (TensorFlow's readers among them) take every *.index for a bundle.
    return f"{prefix}.part-{spec.shard_id:05d}-of-{file_count:05d}.{spec.save_id}{PIECE_SUFFIX}"


def data_count(name: str) -> tuple[str, int] | None:
    """``(base, file count)`` of a data file name, ``None`` for other names."""
    m = DATA_RE.match(name)
    return None if m is None else (m.group("base"), int(m.group("count")))


def piece_save_id(name: str) -> str | None:
    """The save id in the name of a piece index (either naming), ``None`` for other names."""
    m = PART_RE.match(name)
    return None if m is None else m.group("save_id")


def basename(path: str) -> str:
    """The last component of ``path`` (a local path or a URL)."""
    return path.rstrip("/").rsplit("/", 1)[-1]


def check_prefix(prefix: str) -> None:
    """Raise InvalidCheckpointError if ``prefix`` names a directory rather than a checkpoint."""
    if not prefix or prefix.endswith("/") or not basename(prefix):
        raise InvalidCheckpointError(f"bundle: {prefix!r} is not a checkpoint prefix (it names a directory)")


def check_save_id(save_id: str) -> None:
    """Raise TrackableError unless ``save_id`` can be part of a file name."""
    if not SAVE_ID_RE.match(save_id):
        raise TrackableError(f"bundle: save_id {save_id!r} must be 1-64 letters, digits, '-' or '_'")
