"""The per-rank generator recipe of docs/distributed.md: saved by N ranks, restored by M, on real process groups.

A rank the saving job had continues its own streams exactly; another is re-seeded from (seed, rank,
step), the same on every run, and logs it. The next save writes one row per rank of the new job.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
import rng_recipe
from ranks import Ranks, needs_torch

import trackpoint as tp
from docblocks import DOCS, blocks

pytestmark = [pytest.mark.xdist_group("ranks"), needs_torch]

SEED = 7
MARKER = "# --- the recipe, as on the page ---\n"


def _restore(group: Ranks, directory: Path, path: str, save: bool) -> list[dict[str, Any]]:
    return group.values(
        "rng_recipe_cases:restore_generators", directory=str(directory), path=path, seed=SEED, save=save
    )


def test_generators_saved_by_2_ranks_restore_on_4_and_back_on_2(torch2: Ranks, torch4: Ranks, tmp_path: Path) -> None:
    saved = torch2.values("rng_recipe_cases:save_generators", directory=str(tmp_path), seed=SEED)
    path = saved[0]["path"]
    assert saved[0]["next"] != saved[1]["next"]  # per-rank state: the two ranks' streams differ
    width = int(tp.load_checkpoint(path).get_variable_to_shape_map()["generators/2/.ATTRIBUTES/VARIABLE_VALUE"][1])

    four = _restore(torch4, tmp_path, path, save=True)
    for rank in (0, 1):  # the saving job had these ranks: each continues its own streams exactly
        assert four[rank]["restored"] and four[rank]["logged"] == [], four[rank]
        assert four[rank]["next"] == saved[rank]["next"]
    for rank in (2, 3):  # it had not: re-seeded from (seed, rank, step), and said so
        assert not four[rank]["restored"]
        assert four[rank]["logged"] == [
            f"WARNING: rank {rank}: {path} holds 2 ranks' states; re-seeded from (seed {SEED}, rank {rank}, step 1)"
        ]
    streams = [str(out["next"]) for out in four]
    assert len(set(streams)) == 4, "two ranks of the new job draw the same numbers"
    # Re-seeding is deterministic: a second restore of the same checkpoint draws the same numbers.
    again = _restore(torch4, tmp_path, path, save=False)
    assert [out["next"] for out in again] == [out["next"] for out in four]

    # The 4 ranks' next save holds one row per rank of the new job, under a name of its own.
    second = four[0]["saved"]
    shapes = tp.load_checkpoint(second).get_variable_to_shape_map()
    assert shapes["generators/4/.ATTRIBUTES/VARIABLE_VALUE"] == [4, width]
    assert not any(k.startswith("generators/2/") for k in shapes)
    # ... and restores on 2 ranks: ranks 0 and 1 continue the 4-rank job's streams of ranks 0 and 1.
    two = _restore(torch2, tmp_path, second, save=False)
    for rank in (0, 1):
        assert two[rank]["restored"] and two[rank]["next"] == four[rank]["next"], two[rank]


def test_the_page_shows_the_tested_recipe() -> None:
    page = DOCS / "distributed.md"
    found = [b.code for b in blocks(page) if b.lang == "python" and "class RankGenerators" in b.code]
    if not found:
        pytest.skip("docs/distributed.md does not show the per-rank generator recipe (tests/distributed/rng_recipe.py)")
    source = inspect.getsource(rng_recipe)
    assert found == [source[source.index(MARKER) + len(MARKER) :]], "the page's recipe differs from the tested one"
