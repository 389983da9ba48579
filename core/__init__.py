"""trackpoint: object-based checkpoints with pluggable storage."""

from __future__ import annotations

from trackpoint.errors import *  # noqa: F403
from trackpoint.storage import CheckpointOptions

__version__ = "0.1.0"
