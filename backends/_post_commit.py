"""What a format does after its commit point: housekeeping that must not turn a committed save into a failed one.

Once a commit has published its checkpoint (the bundle's index written, the Zarr root in place), the save
has succeeded: readers see the checkpoint and ``latest_checkpoint`` names it. What the commit does next only
tidies up: deleting the save's staging objects (piece indexes, shard markers, owner records, ``_temp``
files) and the data of the checkpoint it replaced. If that raised, the caller would be told the save failed
while the checkpoint is there, and a ``CheckpointManager`` would not record it (nor ever retire it). So a
failed step is logged as a WARNING that names what was left and what removes it, and the commit returns.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Final

from trackpoint.backends.stores import FileLayer
from trackpoint.errors import CheckpointError, StorageError, TransientStorageError

__all__ = ["AfterCommit", "durable_or_undone", "undo_commit"]

# The public logger every user-facing trackpoint warning goes to (docs/observability.md, "Logging"): this
# module is private, and its name is no place for a filter.
_log = logging.getLogger("trackpoint")

#: How the warnings end when ``cleanup`` removes what a step left.
_BY_CLEANUP: Final = "cleanup({directory!r}) (or `trackpoint cleanup {directory}`) removes {them}"


class AfterCommit:
    """The housekeeping steps of one committed save, each run on its own; a failure is logged, never raised.

    Use it as a context manager around the steps. They run with the store's usual retries and timeouts, so
    that a store that is slow but answers removes everything; once a step fails because the store stopped
    answering (:class:`~trackpoint.errors.TransientStorageError`: a request used up its retries), the steps
    after it share the store's short clean-up budget (:meth:`FileLayer.cleaning_up`, counted from that
    request), so such a store delays the save's return by its retry limits once, not once per step.

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
        #: Holds the clean-up budget once a step found the store not answering; closed by ``__exit__``.
        self._budget = contextlib.ExitStack()
        self._budgeted = False

    def __enter__(self) -> AfterCommit:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._budget.close()

    def __call__(
        self, what: str, step: Callable[[], object], left: Sequence[str] | str, *, removed_by: str | None = None
    ) -> None:
        """Run ``step``; if it fails, log what it left instead of raising.

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
            if isinstance(exc, TransientStorageError) and not self._budgeted:
                # The store stopped answering: the remaining steps would each wait out its retry limits again.
                self._budget.enter_context(self._files.cleaning_up())
                self._budgeted = True


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


def durable_or_undone(
    sync: Callable[[], object], undo: Callable[[], object], fmt: str, directory: str, commit_point: str, prefix: str
) -> None:
    """Make a rename that committed ``prefix`` durable with ``sync``; if that fails, ``undo`` the rename and raise.

    For stores that commit by renaming into place (local disks): the rename
    is the commit point only once the directory holding it is synced. A
    failed ``fsync`` of it leaves the rename visible but not durable: Linux
    may drop it at a power failure and reports the error once, so a second
    ``fsync`` that succeeds proves nothing. Returning would let the caller
    build on a checkpoint that can vanish; raising with it visible would break
    "a failed save is never visible". So the rename is taken back, ``sync``
    run again to make that durable, and the save fails, to be retried.

    Raises
    ------
    StorageError
        When ``sync`` failed (the rename undone; if that failed too, a note says so).
    """
    try:
        sync()
    except CheckpointError as exc:
        failure = StorageError(
            f"{fmt}: syncing the directory {directory!r} failed after {commit_point!r} was renamed into place "
            f"({type(exc).__name__}: {exc}), so the checkpoint {prefix!r} might not survive a power failure; the "
            "rename was undone and this save was not committed: save it again (and check the disk)"
        )
        failure.__cause__ = exc

        def undone() -> None:
            undo()
            sync()

        undo_commit(failure, undone, fmt, commit_point, prefix)
        raise failure from exc
