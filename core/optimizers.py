"""Optimizers: ``trackpoint.optimizers.SGD``."""

from __future__ import annotations

from trackpoint.optimizer import SGD, Optimizer

__all__ = ["SGD", "Optimizer"]
