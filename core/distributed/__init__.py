"""Many processes, one checkpoint: saves and restores coordinated across the ranks of a job.

Pass a coordinator in the options and call the same ``Checkpoint.save`` /
``write`` / ``read`` / ``restore`` or ``CheckpointManager.save`` /
``restore_or_initialize`` on every rank, with the same path::

    coordinator = trackpoint.distributed.TorchCoordinator()   # or JaxCoordinator()
    options = trackpoint.CheckpointOptions(coordinator=coordinator)
    path = ckpt.save("s3://bucket/run/ckpt", options=options)  # the same path on every rank

Rank 0 begins the save, every rank writes its share of the tensors, rank 0
commits once every rank's data is written, and every rank returns the same
path or raises (a :class:`~trackpoint.errors.CoordinationError` on the ranks
that did not fail themselves). See ``docs/distributed.md``.

``TorchCoordinator`` and ``JaxCoordinator`` are imported on first use, so
importing this module loads neither PyTorch nor JAX.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trackpoint.distributed._coordinator import DEFAULT_TIMEOUT, Coordinator, KeyValueCoordinator

if TYPE_CHECKING:  # at run time served lazily by __getattr__ below
    from trackpoint.distributed._jax import JaxCoordinator
    from trackpoint.distributed._torch import TorchCoordinator

__all__ = ["DEFAULT_TIMEOUT", "Coordinator", "JaxCoordinator", "KeyValueCoordinator", "TorchCoordinator"]


def __getattr__(name: str) -> object:
    # Lazy, so that trackpoint.distributed (imported by the core) never imports torch or jax.
    if name == "TorchCoordinator":
        from trackpoint.distributed._torch import TorchCoordinator

        return TorchCoordinator
    if name == "JaxCoordinator":
        from trackpoint.distributed._jax import JaxCoordinator

        return JaxCoordinator
    raise AttributeError(f"module 'trackpoint.distributed' has no attribute {name!r}")
