"""What a format does after its commit point: housekeeping that must not turn a committed save into a failed one.

Once a commit has published its checkpoint (the bundle's index written, the Zarr root in place), the save
has succeeded: readers see the checkpoint and ``latest_checkpoint`` names it. What the commit does next only
tidies up: deleting the save's staging objects (piece indexes, shard markers, owner records, ``_temp``
files) and the data of the checkpoint it replaced. If that raised, the caller would be told the save failed
while the checkpoint is there, and a ``CheckpointManager`` would not record it (nor ever retire it). So a
failed step is logged as a WARNING that names what was left and what removes it, and the commit returns.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Final

from trackpoint.backends.stores import FileLayer
from trackpoint.errors import CheckpointError

__all__ = ["AfterCommit", "undo_commit"]

_log = logging.getLogger(__name__)

#: How the warnings end when ``cleanup`` removes what a step left.
_BY_CLEANUP: Final = "cleanup({directory!r}) (or `trackpoint cleanup {directory}`) removes {them}"


class AfterCommit:
    """The housekeeping steps of one committed save, each run on its own; a failure is logged, never raised.

    Use it as a context manager around the steps: on an object store they then share the store's short
    clean-up budget (:meth:`FileLayer.cleaning_up`), so a store that stopped answering after the commit
    delays the save's return by seconds, not by its retry limits once per step.

    Parameters
    ----------
    files
        The store the checkpoint was committed to.
    fmt
        The format, opening the warnings (``"bundle"``, ``"zarr"``).
    prefix
        The committed checkpoint, as the caller named it.
    directory
        The directory holding it, as the caller would pass it to ``cleanup``.
    """

    def __init__(self, files: FileLayer, fmt: str, prefix: str, directory: str) -> None:
        self._files = files
        self._fmt = fmt
        self._prefix = prefix
        self._directory = directory
        self._budget = files.cleaning_up()

    def __enter__(self) -> AfterCommit:
        self._budget.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._budget.__exit__(exc_type, exc, tb)

    def __call__(
        self, what: str, step: Callable[[], object], left: Sequence[str] | str, *, removed_by: str | None = None
    ) -> bool:
        """Run ``step``; if it fails, log what it left instead of raising. Return whether it succeeded.

        Parameters
        ----------
        what
            The step, for the warning (``"deleting the save's piece indexes"``).
        step
            The step itself.
        left
            What stays when the step fails: its paths, or a description of them.
        removed_by
            What removes them then; ``None``: ``cleanup(directory)``.

        Raises
        ------
        BaseException
            What ``step`` raised if it is no :class:`~trackpoint.errors.CheckpointError`: a failure of the store
            is translated into one, anything else is a bug and is not hidden behind a warning.
        """
        try:
            step()
        except CheckpointError as exc:
            paths = [left] if isinstance(left, str) else list(left)
            them = "it" if len(paths) == 1 else "them"
            remedy = removed_by or _BY_CLEANUP.format(directory=self._directory, them=them)
            _log.warning(
                "%s: the checkpoint %r is committed and its save succeeded, but %s failed afterwards (%s: %s); "
                "left behind: %s; %s",
                self._fmt,
                self._prefix,
                what,
                type(exc).__name__,
                exc,
                ", ".join(repr(p) for p in paths) or "nothing listed",
                remedy,
            )
            return False
        return True


def undo_commit(failure: CheckpointError, undo: Callable[[], object], fmt: str, commit_point: str, prefix: str) -> None:
    """Run ``undo``, which takes back the commit point a failing save wrote; if it fails too, ``failure`` says so.

    For a commit that fails after it wrote its commit point but before that
    made the checkpoint the save's (a check after the write failed or could not
    be made): the save raises ``failure``, and a failed save must not stay
    visible. Should the undo fail as well, ``failure`` gets a note saying that
    ``commit_point`` may still name the failed save, and what to do.
    """
    try:
        undo()
    except CheckpointError as exc:
        failure.add_note(
            f"{fmt}: undoing this save's write of {commit_point!r} failed too ({type(exc).__name__}: {exc}), so "
            f"{prefix!r} may still show this failed save: delete it (or save it again) once the store answers"
        )
