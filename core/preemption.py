"""Save once when the process is told to stop (SIGTERM), then exit.

Schedulers (Kubernetes, Slurm, spot and preemptible VMs) announce the end of
a job with SIGTERM and kill it for good a grace period later. A job that
saves a checkpoint in between resumes where it stopped instead of at its last
periodic save. :func:`save_on_sigterm` installs a handler that does exactly
that, once:

* **at the signal** (the default): the handler saves as soon as the signal
  arrives, between two Python bytecodes of the main thread, then exits. If
  the main thread is inside a trackpoint call just then (a save, a restore,
  ``sync()``, an assignment an async save diverts), the save waits until that
  call returns: run in the middle of it, the save could wait forever for a
  lock the interrupted call holds;
* **at a step boundary** (``at_step=True``, and always with a coordinator):
  the handler only records the signal; the training loop calls
  :meth:`PreemptionHandler.check` once per step, which saves and exits at the
  first step boundary after the signal. The checkpoint then never holds a
  half-applied update;
* **with a coordinator** (:class:`trackpoint.distributed.Coordinator`,
  several processes saving one checkpoint): every rank learns at the same
  ``check`` that some rank was signalled, and all of them save at that same
  step, through the coordinated save of the target.

After saving, the handler exits the process with :class:`SystemExit`
(status ``128 + signal number``, 143 for SIGTERM, the status a shell reports
for a process killed by it), so ``finally`` blocks, context managers and
``atexit`` functions run (among them those that wait for asynchronous saves).
A previous Python-level handler of the signal is called after the save.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

from trackpoint import _array_values, _signal_safe
from trackpoint.errors import CheckpointError, TrackableError

if TYPE_CHECKING:
    from trackpoint.distributed import Coordinator

__all__ = ["PreemptionHandler", "save_on_sigterm"]

_log = logging.getLogger("trackpoint")

_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


class PreemptionHandler:
    """Saves once when one of ``signals`` arrives; made by :func:`save_on_sigterm`.

    Installed when created; :meth:`uninstall` (or leaving a ``with`` block)
    restores the previous handlers. See :func:`save_on_sigterm` for the
    parameters.
    """

    def __init__(
        self,
        save: Callable[[], object],
        *,
        signals: Sequence[int],
        at_step: bool,
        coordinator: Coordinator | None,
        exit_after: bool,
        checkpoint: Any = None,
    ) -> None:
        self._save = save
        # The Checkpoint the save writes (a manager's), which check(**values) gives its attributes; None for
        # a function that saves.
        self._checkpoint = checkpoint
        self._signals = tuple(signals)
        self._at_step = at_step or coordinator is not None
        self._coordinator = coordinator
        self._exit = exit_after
        self._lock = threading.Lock()
        self._signalled: int | None = None
        self._saved = False
        self._saved_path: object = None
        self._previous: dict[int, _Handler] = {}
        # The names of the last check(**values) that passed _check_values: a loop gives the same ones each step.
        self._checked_names: frozenset[str] = frozenset()
        self._install()

    # ------------------------------------------------------------------ state
    @property
    def signalled(self) -> bool:
        """Whether a signal arrived in this process (on this rank)."""
        return self._signalled is not None

    @property
    def saved(self) -> bool:
        """Whether the preemption save ran and wrote the checkpoint (:attr:`saved_path`)."""
        return self._saved

    @property
    def saved_path(self) -> object:
        """What the save returned (the checkpoint path), once :attr:`saved`.

        A manager's preemption save always writes a checkpoint, also at a
        step the loop saved already (with ``checkpoint_interval`` too).
        """
        return self._saved_path

    # ------------------------------------------------------------------ installing
    def _install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            raise TrackableError(
                "save_on_sigterm must be called from the main thread: Python delivers signals to the main thread only"
            )
        for signum in self._signals:
            self._previous[signum] = signal.signal(signum, self._on_signal)

    def uninstall(self) -> None:
        """Restore the handlers that were installed before; the handler does nothing afterwards."""
        previous, self._previous = self._previous, {}
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)

    def __enter__(self) -> PreemptionHandler:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.uninstall()

    # ------------------------------------------------------------------ the signal
    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        first = self._signalled is None
        if first:
            self._signalled = signum
        name = signal.Signals(signum).name
        if not first or self._saved:
            _log.warning("%s received again while saving the preemption checkpoint; still saving", name)
            return
        if self._at_step:
            _log.info("%s received: saving at the next step boundary (PreemptionHandler.check)", name)
            return
        if _signal_safe.inside():
            # The main thread is inside trackpoint (a save, a restore, an assignment an async save
            # diverts) and may hold the async saves' lock: saving here could wait for it forever.
            _log.info("%s received during a trackpoint call: saving a checkpoint once it returns", name)
            _signal_safe.call_outside(lambda: self._save_and_leave(signum, None))
            return
        _log.info("%s received: saving a checkpoint before exiting", name)
        self._save_and_leave(signum, frame)

    def check(self, **values: Any) -> None:
        """Call once per training step, where the state is consistent: saves and exits if preempted.

        Parameters
        ----------
        **values
            Objects to give the checkpoint before the preemption save, each as its attribute of that name
            (``check(state=state)`` does ``ckpt.state = state``), only when that save happens. For a
            functional loop that rebinds its state (``state = train_step(state)``) and assigns it to the
            checkpoint only before its own saves: the checkpoint then saves the current state, not the one
            of its last save (whose arrays a donating step has deleted since).

        Raises
        ------
        TrackableError
            ``values`` are given to a handler whose target is a function that saves (it has no checkpoint
            to give them to), or to a handler made without ``at_step=True`` (it saves in the signal
            handler, with what the checkpoint holds then, and would drop them).
            Or a value is one the checkpoint does not save (a ``str``, an object that is neither a
            trackable, an array, a number nor a container of them): refused at the first call that gives
            its name, before any preemption, as the preemption save would refuse it.
        NameConflictError
            A name of ``values`` is one of the checkpoint's own attributes (``save``, ``save_counter``,
            ...), which the checkpoint refuses to hold as a dependency; refused at the first call that
            gives it, before any preemption.

        Notes
        -----
        Without a coordinator this costs one attribute check. With one, it
        is a collective: every rank calls it at every step, and they
        exchange one byte each (``Coordinator.all_gather``), so all ranks
        save at the first step after any of them was signalled. Its cost is
        a few requests to the coordinator's store per step (the all-gather
        and, over a ``KeyValueCoordinator``, the record that ends it); call
        it every few steps if that matters.
        """
        if values and values.keys() != self._checked_names:
            self._check_values(values)
            self._checked_names = frozenset(values)
        preempted = self._signalled is not None
        if self._coordinator is not None:
            from trackpoint.distributed._driver import collective, operation

            coordinator = self._coordinator
            flag = b"1" if preempted else b"0"
            # An operation of its own kind: the check runs in the training loop's thread while an async
            # save's writer thread may be in a save operation of the same coordinator.
            with operation(coordinator, "preemption-check"):
                flags = collective(
                    lambda: coordinator.all_gather(flag), "the preemption check", "flag exchange", coordinator.rank
                )
            preempted = b"1" in flags
        if preempted and not self._saved:
            signum = self._signalled if self._signalled is not None else signal.SIGTERM
            self._save_and_leave(signum, None, values)

    def _check_values(self, values: dict[str, Any]) -> None:
        """Refuse the values of ``check(**values)`` that the preemption save could not give the checkpoint.

        Checked at the first call that gives these names, not only at the preemption save: a name refused
        there would leave the job without its preemption checkpoint.
        """
        given = f"PreemptionHandler.check({', '.join(f'{k}=...' for k in values)})"
        if self._checkpoint is None:
            raise TrackableError(
                f"{given} gives the values to the checkpoint the preemption save writes, and this handler saves "
                "through a function: pass the CheckpointManager or the Checkpoint to save_on_sigterm, or assign "
                "them in that function"
            )
        if not self._at_step:
            raise TrackableError(
                f"{given}: this handler saves in the signal handler (save_on_sigterm(..., at_step=False), the "
                "default), at once, with what the checkpoint holds then, so values given to check() would never "
                "be saved: pass at_step=True to save_on_sigterm (the save then happens in check(), with these "
                "values), or assign the values to the checkpoint yourself"
            )
        from trackpoint.checkpoint import _OWN_NAMES, _hides_own_attribute

        for name in sorted(values):
            if name in _OWN_NAMES:
                raise _hides_own_attribute(name, f"{given}, which sets Checkpoint.{name} = ...")
        # What the checkpoint would refuse to hold (a str, an object it does not save, a container holding one),
        # refused now by a throwaway checkpoint given the values, which changes none of them. (Deleted JAX
        # arrays are left to the preemption save, whose message says what to pass instead.)
        from trackpoint.checkpoint import Checkpoint

        if _holds_deleted_arrays(values):
            return
        try:
            Checkpoint(**values)
        except TrackableError as exc:
            raise TrackableError(f"{given}: the preemption save could not save these values: {exc}") from exc

    def _save_and_leave(self, signum: int, frame: FrameType | None, values: dict[str, Any] | None = None) -> None:
        with self._lock:
            if self._saved:
                return
            try:
                # A JAX array deleted since the checkpoint was given it (donated to a later step) is refused
                # by the save: say why that happens here, and what the loop is to do.
                hint = _DELETED_GIVEN_HINT if values and _holds_deleted_arrays(values) else _DELETED_HINT
                with _array_values.deleted_arrays_hint(hint):
                    for name, value in (values or {}).items():
                        setattr(self._checkpoint, name, value)
                    result = self._save()
            except CheckpointError as exc:
                # The process is going away anyway: say why there is no checkpoint, then go.
                _log.error("could not save the preemption checkpoint: %s: %s", type(exc).__name__, exc)
                raise
            self._saved_path = result
            self._saved = True
        _log.info("saved the preemption checkpoint %s", self._saved_path)
        previous = self._previous.get(signum)
        if callable(previous):
            previous(signum, frame)
        if self._exit:
            # sys.exit, not raise SystemExit: trackpoint's exit handler learns the status from it
            # and keeps it should an async save fail at exit.
            sys.exit(128 + signum)


#: What a refusal of a deleted JAX array says during the preemption save (see _save_and_leave).
_DELETED_HINT = (
    ", so the preemption save cannot write it: the checkpoint still holds the arrays it was last given, which a "
    "later step deleted (a jitted step with donate_argnums deletes its input). A loop that rebinds its state "
    "(`state = train_step(state)`) must give the checkpoint the current state before each check() too, not "
    "only before its own saves: with save_on_sigterm(..., at_step=True), `preemption.check(state=state)` "
    "assigns it (`ckpt.state = state`) when the preemption save happens. No preemption checkpoint was written"
)

#: The same, when the deleted arrays are among those given to check(): the loop gave it a state a step donated.
_DELETED_GIVEN_HINT = (
    ", so the preemption save cannot write it: the arrays given to PreemptionHandler.check() were deleted, "
    "donated to a step after they were taken (a jitted step with donate_argnums deletes its input). Pass "
    "check() the current state, the one the last step returned (`state = train_step(state)`, then "
    "`preemption.check(state=state)`), not one from before that step. No preemption checkpoint was written"
)


def _holds_deleted_arrays(values: dict[str, Any]) -> bool:
    """Whether a JAX array among ``values`` (at any depth of their pytrees) was deleted."""
    jax = sys.modules.get("jax")
    if jax is None:
        return False
    return any(
        isinstance(leaf, jax.Array) and leaf.is_deleted() for leaf in jax.tree_util.tree_leaves(list(values.values()))
    )


def save_on_sigterm(
    target: Any,
    file_prefix: str | None = None,
    *,
    signals: Sequence[int] = (signal.SIGTERM,),
    at_step: bool = False,
    coordinator: Coordinator | None = None,
    exit_after: bool = True,
    options: Any = None,
) -> PreemptionHandler:
    """Save a checkpoint once when the process receives SIGTERM, then exit.

    Parameters
    ----------
    target
        What to save: a :class:`~trackpoint.CheckpointManager`
        (``manager.save``, retention as for any save), a
        :class:`~trackpoint.Checkpoint` with ``file_prefix``
        (``checkpoint.save(file_prefix)``), or any function of no arguments
        that saves. A manager's checkpoint is numbered as the loop numbers
        its saves, told by what the manager's last committed save was given
        (after a restart, by the checkpoint it resumed from): the value of
        its ``step_counter`` when saves are given ``checkpoint_number=step``,
        else ``save_counter + 1``; either raised to one more than the highest
        number of its checkpoints when not above it, so it always sorts
        newest. It is saved even when the latest checkpoint holds the
        current step: the variables may have changed since.
    file_prefix
        The prefix for a :class:`~trackpoint.Checkpoint` target.
    signals
        The signals that trigger the save (``(signal.SIGTERM, signal.SIGINT)``
        to save on Ctrl-C too).
    at_step
        Save at the next :meth:`PreemptionHandler.check` instead of in the
        signal handler, so the checkpoint never holds a half-done step.
        Implied by ``coordinator``.
    coordinator
        For several processes saving one checkpoint: the
        :class:`trackpoint.distributed.Coordinator` of the job (usually the
        one in the save's options). Every rank calls ``check()`` at every
        step; all ranks save together at the first step after any rank was
        signalled, so a scheduler that signals the ranks at slightly
        different times still gets one consistent checkpoint.
    exit_after
        Exit after saving (``SystemExit(128 + signum)``); ``False`` returns
        to the program, which then decides (check :attr:`PreemptionHandler.saved`).
    options
        ``CheckpointOptions`` for the save.

    Returns
    -------
    PreemptionHandler
        Installed; a context manager that uninstalls it at the end of the block.

    Raises
    ------
    TrackableError
        ``target`` is none of the above, a ``Checkpoint`` comes without
        ``file_prefix``, or the call is not made from the main thread.

    Examples
    --------
    >>> manager = trackpoint.CheckpointManager(ckpt, "/runs/a", max_to_keep=3)  # doctest: +SKIP
    >>> with trackpoint.preemption.save_on_sigterm(manager, at_step=True) as preemption:  # doctest: +SKIP
    ...     for step in range(steps):
    ...         train_step()
    ...         preemption.check()
    """
    if coordinator is not None and options is None and not _is_manager(target):
        # The preemption save of a Checkpoint is then collective like the decision to make it.
        from trackpoint.storage import CheckpointOptions

        options = CheckpointOptions(coordinator=coordinator)
    save = _save_function(target, file_prefix, options)
    checkpoint = _target_checkpoint(target)
    return PreemptionHandler(
        save, signals=signals, at_step=at_step, coordinator=coordinator, exit_after=exit_after, checkpoint=checkpoint
    )


def _is_manager(target: Any) -> bool:
    from trackpoint.manager import CheckpointManager

    return isinstance(target, CheckpointManager)


def _target_checkpoint(target: Any) -> Any:
    """The Checkpoint a save of ``target`` writes: a manager's, the Checkpoint itself; ``None`` for a function."""
    from trackpoint.checkpoint import Checkpoint

    if _is_manager(target):
        return target.checkpoint
    return target if isinstance(target, Checkpoint) else None


def _save_function(target: Any, file_prefix: str | None, options: Any) -> Callable[[], object]:
    from trackpoint.checkpoint import Checkpoint
    from trackpoint.manager import CheckpointManager

    # An asynchronous save (async options) is synced: written before the handler says it saved
    # and exits, its failure raised in the handler, which logs it.
    if isinstance(target, CheckpointManager):
        manager = target

        def save_with_manager() -> object:
            # The save in flight first: its number counts when numbering this one.
            manager.sync()
            # Numbered as the loop numbers its own saves (the step, or save_counter + 1) and above every number, so
            # ordering by number and the state file agree on the newest checkpoint, now and after the run resumes.
            path = manager._save_for_preemption(options)
            manager.sync()
            return path

        return save_with_manager
    if isinstance(target, Checkpoint):
        if file_prefix is None:
            raise TrackableError(
                "save_on_sigterm(checkpoint) needs file_prefix, where checkpoint.save writes (e.g. '/runs/a/ckpt'); "
                "or pass a CheckpointManager"
            )
        checkpoint, prefix = target, file_prefix

        def save_checkpoint() -> object:
            path = checkpoint.save(prefix, options=options)
            checkpoint.sync()
            return path

        return save_checkpoint
    if callable(target):
        function: Callable[[], object] = target
        return function
    raise TrackableError(
        f"save_on_sigterm needs a CheckpointManager, a Checkpoint with file_prefix, or a function that saves; "
        f"got {type(target).__name__}"
    )
