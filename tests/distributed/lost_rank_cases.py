"""Cases of test_lost_rank.py: a rank is killed right after it sent its part of a coordinated save.

Run on every rank of a :class:`ranks.Ranks` group as ``"lost_rank_cases:<name>"``.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import time
from typing import Any

import numpy as np
from cases import Context

import trackpoint as tp
from trackpoint.distributed import TorchCoordinator

#: The collective of a save in which each rank sends its part: 0 its plan (tensor list), 1 its written shards.
COLLECTIVES = {"planning": 0, "writing": 1}


class _Records(logging.Handler):
    """The messages trackpoint logs while a case runs."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.levelname}: {record.getMessage()}")


def _model(step: int) -> tp.AutoTrackable:
    model = tp.AutoTrackable()
    model.w = tp.Variable(np.full(64, step, np.float32))
    model.step = tp.Variable(np.int64(step))
    return model


def manager_save_then_die(ctx: Context, directory: str, dying: int, after: str, timeout: float) -> dict[str, Any]:
    """Every rank saves ckpt-1; then rank ``dying`` is killed right after its part of ckpt-2's ``after`` step.

    ``after`` is ``"planning"`` (its plan is stored, its shards never reported: the save cannot be
    committed) or ``"writing"`` (its written shards are reported: its last message). Returns, on the
    survivors, how the second save ended, how long it took, and what trackpoint logged meanwhile.
    """
    options = tp.CheckpointOptions(coordinator=TorchCoordinator(timeout=timeout))
    model = _model(1)
    manager = tp.CheckpointManager(tp.Checkpoint(model=model), directory, max_to_keep=3, options=options)
    first = manager.save()
    model.w.assign(np.full(64, 2, np.float32))
    model.step.assign(np.int64(2))
    if ctx.rank == dying:
        store_set = TorchCoordinator._set
        pattern = re.compile(rf"/save\.\d+/{COLLECTIVES[after]}/{ctx.rank}$")

        def set_then_die(self: TorchCoordinator, key: str, value: bytes) -> None:
            store_set(self, key, value)
            if pattern.search(key):
                os.kill(os.getpid(), signal.SIGKILL)  # its part is in the store; nothing else of it is

        TorchCoordinator._set = set_then_die  # type: ignore[method-assign]
    records = _Records()
    logger = logging.getLogger("trackpoint")
    logger.addHandler(records)
    start = time.monotonic()
    try:
        outcome: list[str] = ["saved", manager.save()]
    except tp.CheckpointError as exc:
        outcome = [type(exc).__name__, str(exc)]
    finally:
        elapsed = time.monotonic() - start
        logger.removeHandler(records)
    return {
        "first": first,
        "outcome": outcome,
        "elapsed": elapsed,
        "logged": records.messages,
        "checkpoints": manager.checkpoints,
    }
