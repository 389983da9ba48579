"""One path given where a list of paths is taken is a list of one, for every public caller (core/_paths.path_list)."""

from __future__ import annotations

from pathlib import Path

import pytest

import trackpoint as tp
from trackpoint import state
from trackpoint.errors import ArgumentTypeError
from trackpoint.plugins import open_backend


@pytest.mark.parametrize("one", ["str", "path"])
def test_state_update_checkpoint_state_takes_one_path_as_a_list_of_one(tmp_path: Path, one: str) -> None:
    directory = str(tmp_path)
    first = str(tmp_path / "ckpt-1")
    with open_backend(directory, tp.CheckpointOptions()) as backend:
        state.update_checkpoint_state(
            backend,
            directory,
            str(tmp_path / "ckpt-2"),
            all_model_checkpoint_paths=first if one == "str" else Path(first),
        )
    found = tp.get_checkpoint_state(directory)
    assert found is not None
    assert list(found.all_model_checkpoint_paths) == [first, str(tmp_path / "ckpt-2")]


def test_state_update_checkpoint_state_refuses_what_is_no_path(tmp_path: Path) -> None:
    with open_backend(str(tmp_path), tp.CheckpointOptions()) as backend, pytest.raises(ArgumentTypeError) as caught:
        state.update_checkpoint_state(backend, str(tmp_path), "ckpt-2", all_model_checkpoint_paths=[3])  # type: ignore[list-item]
    assert "trackpoint.state.update_checkpoint_state: all_model_checkpoint_paths" in str(caught.value)
    assert not (tmp_path / "checkpoint").exists()
