"""When a leftover is old enough for cleanup to remove: the age check both formats make.

``cleanup(directory, min_age)`` cannot tell a running save from a crashed one, so it removes what a save
left only once it has not changed for ``min_age`` seconds. A time the store cannot tell (or of something gone
since it was listed) counts as new: removing a running save's files is worse than keeping a crashed one's.
``min_age`` 0 removes everything, whatever the times say: the store's clock, which dates objects and upload
parts, may run ahead of this host's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from trackpoint.backends.stores import FileLayer

__all__ = ["old_enough", "paths_old_enough"]


def old_enough(times: Iterable[float | None], now: float, min_age: float) -> bool:
    """Whether every one of ``times`` (modification times; ``None``: unknown) is at least ``min_age`` seconds old.

    An unknown time counts as new unless ``min_age`` is 0; no times at all are old enough.
    """
    return min_age <= 0 or all(t is not None and now - t >= min_age for t in times)


def paths_old_enough(files: FileLayer, paths: Sequence[str], now: float, min_age: float) -> bool:
    """Whether the newest of ``paths`` was modified at least ``min_age`` seconds ago (see :func:`old_enough`)."""
    return min_age <= 0 or old_enough([files.modified(p) for p in paths], now, min_age)
