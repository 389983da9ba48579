"""Cases of tests/distributed/test_ranks_manager_metrics.py: a coordinated ``CheckpointManager`` keeping by metrics."""

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
    message = ""
    try:
        manager.save(metrics={"loss": float(ctx.rank)})  # the ranks disagree
    except tp.CheckpointError as exc:
        outcome = type(exc).__name__
        message = str(exc)
    report = {
        "checkpoints": manager.checkpoints,
        "best": manager.best_checkpoint,
        "metrics": [manager.metrics(p) for p in manager.checkpoints],
        "refused": outcome,
        # The advice for metrics: one value per checkpoint, not the parts of a partitioned value.
        "advice": [words in message for words in ("average", "rank 0 only", "SaveSliceInfo")],
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


def metrics_without_best_fn(ctx: Context, directory: str) -> dict[str, Any]:
    """No best_fn: metrics given on rank 1 alone, then on rank 0 alone; what metrics() reports on each rank."""
    manager = tp.CheckpointManager(
        tp.Checkpoint(model=_model(7, [4])), directory, max_to_keep=3, options=_options(ctx, timeout=20.0)
    )
    first = manager.save(metrics={"loss": 0.25} if ctx.rank == 1 else None)
    second = manager.save(metrics={"loss": 0.5} if ctx.rank == 0 else None)
    third = manager.save()
    assert first is not None and second is not None and third is not None
    report = {
        "metrics": [manager.metrics(p) for p in (first, second, third)],
        "best": manager.best_checkpoint == third,  # by recency without best_fn
    }
    manager.close()
    return report
