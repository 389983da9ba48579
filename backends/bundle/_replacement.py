"""Telling a checkpoint replaced under an open reader from damaged data.

An overwrite whose shard count equals the committed checkpoint's names its data files for one more
shard, so the data file names of a reader's checkpoint come back after two overwrites (count N, N+1,
then N again), holding the new checkpoint's bytes. They fail the old index's checksums, which is not
damage: a new reader reads them. After one overwrite the reader's data files are gone, which is not
damage either.
"""

from __future__ import annotations

from trackpoint.backends.bundle._crc import crc32c
from trackpoint.backends.stores import FileLayer
from trackpoint.errors import CheckpointError, CheckpointNotFoundError, DataLossError

__all__ = ["OpenedIndex"]


class OpenedIndex:
    """The index a reader opened, by content, to be compared with the one at its path once a read failed.

    The comparison is by size and CRC-32C, which neither reused inode numbers nor coarse modification
    times confuse. Remembering them costs one CRC-32C pass over the index at open (under a millisecond
    for 10^5 entries, well under 1% of parsing them); reads cost nothing, as the index is read again
    only after a read failed.

    Parameters
    ----------
    files
        The store the index was read from.
    where
        The index's path.
    index_bytes
        Its contents as the reader parsed them.
    """

    __slots__ = ("_files", "_identity", "_where")

    def __init__(self, files: FileLayer, where: str, index_bytes: bytes) -> None:
        self._files = files
        self._where = where
        self._identity = (len(index_bytes), crc32c(index_bytes))

    def replaced_error(self, prefix: str, what: str) -> DataLossError | None:
        """The error for a read of ``what`` that failed because the checkpoint at ``prefix`` changed.

        Returns
        -------
        DataLossError or None
            The error saying the checkpoint was replaced (or deleted) since the reader opened it, and to
            open it again; ``None`` when the index at the path is still the one read at open (the data is
            damaged, and the read's own error stands) or the store cannot tell now.
        """
        try:
            current: bytes | None = self._files.read(self._where)
        except CheckpointNotFoundError:
            current = None
        except CheckpointError:
            return None  # the store fails now: the read's own error is the one to report
        if current is not None and (len(current), crc32c(current)) == self._identity:
            return None
        how = "replaced" if current is not None else f"deleted ({self._where!r} is gone)"
        return DataLossError(
            f"bundle: the checkpoint at {prefix!r} was {how} while this reader had it open, so {what} can no "
            "longer be read through this reader: the data files it names now hold another checkpoint's bytes, "
            "or are gone. Re-open the checkpoint (open a new reader) to read the one committed there now"
        )
