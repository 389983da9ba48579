"""Cases of tests/distributed/test_manager_metrics.py: a coordinated ``CheckpointManager`` retaining by metrics."""

from __future__ import annotations

from typing import Any

import numpy as np
from cases import Context, _model, _options

import trackpoint as tp


def best_by_metrics(ctx: Context, directory: str) -> dict[str, Any]:
    """Saves whose metrics are given on every rank, on rank 0 alone, on rank 1 alone, or differ; what each rank saw."""
    model = _model(7, [4])
    manager = tp.CheckpointManager(
        tp.Checkpoint(model=model),
        directory,
        max_to_keep=2,
        options=_options(ctx, timeout=20.0),
        best_fn=lambda m: m["loss"],
        best_mode="min",
    )
    given = [
        {"loss": 0.5},  # every rank
        {"loss": 0.1} if ctx.rank == 0 else None,  # rank 0 alone
        {"loss": 0.2} if ctx.rank == 1 else None,  # rank 1 alone: rank 0 reads them from the checkpoint
        {"loss": 0.9},
    ]
    for metrics in given:
        model.step.assign_add(1)
        manager.save(metrics=metrics)
    outcome = "saved"
    try:
        manager.save(metrics={"loss": float(ctx.rank)})  # the ranks disagree
    except tp.CheckpointError as exc:
        outcome = type(exc).__name__
    report = {
        "checkpoints": manager.checkpoints,
        "best": manager.best_checkpoint,
        "metrics": [manager.metrics(p) for p in manager.checkpoints],
        "refused": outcome,
    }
    manager.close()
    reopened = tp.CheckpointManager(
        tp.Checkpoint(model=_model(7, [4])),
        directory,
        max_to_keep=2,
        options=_options(ctx, timeout=20.0),
        best_fn=lambda m: m["loss"],
        best_mode="min",
    )
    report["reopened_best"] = reopened.best_checkpoint
    reopened.close()
    report["steps"] = [
        int(np.asarray(tp.load_variable(p, "model/step/.ATTRIBUTES/VARIABLE_VALUE"))) for p in report["checkpoints"]
    ]
    return report
