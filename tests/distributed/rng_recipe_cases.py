"""Cases of test_rng_recipe.py: ranks save their generators with the recipe, others restore them."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from cases import Context
from rng_recipe import RankGenerators

import trackpoint as tp


def _draws(rng: np.random.Generator) -> dict[str, list[Any]]:
    """What the generators give next: torch's floats, numpy's 32-bit integers (buffered halves) and floats."""
    return {
        "torch": torch.rand(3).tolist(),
        "uint32": rng.integers(0, 2**32, 3, dtype=np.uint32).tolist(),
        "numpy": rng.random(3).tolist(),
    }


OPTIONS = tp.CheckpointOptions(coordinator=tp.distributed.TorchCoordinator(timeout=30))


def _manager(directory: str, model: tp.AutoTrackable) -> tuple[tp.Checkpoint, tp.CheckpointManager]:
    ckpt = tp.Checkpoint(model=model)
    return ckpt, tp.CheckpointManager(ckpt, directory, max_to_keep=None, options=OPTIONS)


def save_generators(ctx: Context, directory: str, seed: int) -> dict[str, Any]:
    """Every rank draws from its own generators, saves them with the recipe, then says what they give next."""
    torch.manual_seed(seed * 1000 + ctx.rank)
    rng = np.random.default_rng([seed, ctx.rank])
    torch.rand(ctx.rank + 1)
    rng.integers(0, 10, ctx.rank + 1, dtype=np.uint32)  # an odd count leaves half a 64-bit draw buffered
    model = tp.AutoTrackable()
    model.step = tp.Variable(np.int64(1))
    ckpt, manager = _manager(directory, model)
    generators = RankGenerators(ckpt, rng, ctx.rank, ctx.world_size)
    generators.before_save()
    path = manager.save()
    return {"path": path, "next": _draws(rng)}


def restore_generators(ctx: Context, directory: str, path: str, seed: int, save: bool) -> dict[str, Any]:
    """Restore ``path`` with the recipe (on however many ranks this group has); optionally save again after."""
    torch.manual_seed(12345)  # anything: the restore replaces it
    rng = np.random.default_rng(12345)
    model = tp.AutoTrackable()
    model.step = tp.Variable(np.int64(0))
    ckpt, manager = _manager(directory, model)
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(f"{record.levelname}: {record.getMessage()}")  # type: ignore[method-assign]
    logging.getLogger("train").addHandler(handler)
    try:
        ckpt.restore(path, options=OPTIONS).assert_existing_objects_matched().expect_partial()
        generators = RankGenerators(ckpt, rng, ctx.rank, ctx.world_size)
        restored = generators.after_restore(path, seed, int(model.step.numpy()), OPTIONS)
    finally:
        logging.getLogger("train").removeHandler(handler)
    out: dict[str, Any] = {"restored": restored, "logged": records}
    if save:
        model.step.assign_add(1)
        generators.before_save()
        out["saved"] = manager.save()
    out["next"] = _draws(rng)
    return out
