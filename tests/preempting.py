"""A preemption in the test's own process, shared by the preemption tests."""

from __future__ import annotations

import os
import signal

import trackpoint as tp
from trackpoint.preemption import save_on_sigterm


def preempt(manager: tp.CheckpointManager, **values: object) -> object:
    """SIGTERM this process, with a handler saving at the step boundary; what the preemption save returned.

    ``values`` go to ``check()``, which gives them to the manager's checkpoint before it saves.
    """
    with save_on_sigterm(manager, at_step=True, exit_after=False) as handler:
        os.kill(os.getpid(), signal.SIGTERM)
        handler.check(**values)
    assert handler.saved
    return handler.saved_path
