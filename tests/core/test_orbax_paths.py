"""``Checkpoint.restore``/``read`` of an Orbax run or checkpoint says so, and what to do, wherever it is stored.

The layout Orbax's ``CheckpointManager`` writes is made by hand (see test_manager_orbax.py), so the test needs
no Orbax.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_manager_orbax import orbax_run

import trackpoint as tp
from trackpoint._resolve import open_backend

WHAT_TO_DO = "To go on from it, restore it with Orbax once, assign the values to this checkpoint's attributes"


def refusal(path: str, read: bool = False, **options: Any) -> str:
    ckpt = tp.Checkpoint(v=tp.Variable(1.0))
    call = ckpt.read if read else ckpt.restore
    with pytest.raises(tp.CheckpointNotFoundError) as caught:
        call(path, options=tp.CheckpointOptions(**options) if options else None)
    return str(caught.value)


def test_a_local_orbax_run_or_step_is_named_as_such_with_what_to_do(tmp_path: Path) -> None:
    orbax_run(tmp_path / "run", 3, 10)
    for path, what in [
        (tmp_path / "run", "it is an Orbax run (step directories 3, 10)"),
        (tmp_path / "run/10", "it is an Orbax checkpoint (a step directory"),
        (tmp_path / "run/10/default", "it is an Orbax checkpoint (a step directory of an Orbax run, or an item"),
    ]:
        for read in (False, True):
            message = refusal(str(path), read=read)
            assert f"restoring from checkpoint {str(path)!r}: {what}" in message and WHAT_TO_DO in message
            assert "-N suffix" not in message and "double-check" not in message  # not the generic advice
    assert "double-check that the path is correct" in refusal(str(tmp_path / "elsewhere"))


@pytest.mark.parametrize("store", ["memory", "s3"])
def test_an_orbax_step_in_a_store_is_named_by_the_files_orbax_writes(
    store: str, request: pytest.FixtureRequest
) -> None:
    options: dict[str, Any] = {}
    if store == "s3":
        run = f"{request.getfixturevalue('s3_bucket')}/run"
        options["storage_options"] = request.getfixturevalue("s3_storage_options")
    else:
        run = "memory://orbax-paths/run"
    backend = open_backend(run, tp.CheckpointOptions(**options))
    backend.write_file(f"{run}/7/_CHECKPOINT_METADATA", b'{"init_timestamp_nsecs": 1}')
    message = refusal(f"{run}/7", **options)
    assert f"{run + '/7'!r}: it is an Orbax checkpoint (it holds '_CHECKPOINT_METADATA')" in message
    assert WHAT_TO_DO in message and "double-check" not in message
