"""The guide's recipe for random generators and the data order resumes a PyTorch run bit for bit.

The recipe's own block (docs/guide.md, "Counters, random generators and the data order") is run here as
the page has it, then resumed at other points: at an epoch's end, and twice in one run. Without its
generators' state, the resumed run differs, so the comparison does tell.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from docblocks import blocks

pytest.importorskip("torch")


def _recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The namespace of the guide's block defining ``RandomState``, run in ``tmp_path`` (its asserts included)."""
    (block,) = [b for b in blocks("guide.md") if b.runs and "class RandomState" in b.code]
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "guide"}
    exec(block.compiled(), namespace)  # noqa: S102 -- the documentation's own code, as a reader runs it
    return namespace


def test_a_resumed_run_continues_bit_for_bit_wherever_it_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe = _recipe(tmp_path, monkeypatch)
    train, once = recipe["train_resumable"], recipe["losses_once"]
    assert len(once) == 15 and recipe["losses_before"] + recipe["losses_after"] == once
    # At the end of the first epoch (the next starts from its own seed), and stopped twice.
    assert train("end-of-epoch", stop_after=5) + train("end-of-epoch") == once
    parts = [train("twice", stop_after=3), train("twice", stop_after=6), train("twice")]
    assert [len(p) for p in parts] == [3, 6, 6] and [loss for part in parts for loss in part] == once

    # Without the generators' state the resumed run differs: dropout, the noise and the scaling draw anew.
    monkeypatch.setattr(recipe["RandomState"], "load_state_dict", lambda self, state: None)
    assert train("forgetful", stop_after=7) + train("forgetful") != once
