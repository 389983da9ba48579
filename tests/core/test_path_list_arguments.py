"""Arguments taking several checkpoint paths take one path alone as a list of one, not as its characters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import trackpoint as tp


@pytest.fixture
def prefix(tmp_path: Path) -> str:
    return tp.Checkpoint(w=tp.Variable(np.zeros(2, np.float32))).write(str(tmp_path / "ckpt-1"))


def test_get_checkpoint_mtimes_of_one_prefix(prefix: str) -> None:
    listed = tp.get_checkpoint_mtimes([prefix])
    assert len(listed) == 1
    # Iterated as characters, the prefix named nothing committed: an empty list, silently.
    assert tp.get_checkpoint_mtimes(prefix) == listed
    assert tp.get_checkpoint_mtimes(Path(prefix)) == listed


def test_a_state_file_of_one_path_lists_that_path(prefix: str, tmp_path: Path) -> None:
    proto = tp.generate_checkpoint_state_proto(str(tmp_path), prefix, all_model_checkpoint_paths=prefix)
    assert list(proto.all_model_checkpoint_paths) == [prefix]
    written = tp.update_checkpoint_state(str(tmp_path), prefix, all_model_checkpoint_paths=prefix)
    assert list(written.all_model_checkpoint_paths) == [prefix]
    assert tp.latest_checkpoint(str(tmp_path)) == prefix


def test_a_path_list_of_something_else_is_an_argument_type_error(prefix: str, tmp_path: Path) -> None:
    with pytest.raises(tp.ArgumentTypeError, match=r"^get_checkpoint_mtimes: checkpoint_prefixes must be a path"):
        tp.get_checkpoint_mtimes(3)  # type: ignore[arg-type]
    with pytest.raises(tp.ArgumentTypeError, match=r"^update_checkpoint_state: all_model_checkpoint_paths must be"):
        tp.update_checkpoint_state(str(tmp_path), prefix, all_model_checkpoint_paths=[prefix, 3])  # type: ignore[list-item]


def test_a_saver_recovers_one_path(tmp_path: Path) -> None:
    v = tp.Variable(1.0, name="v")
    path = tp.Saver([v]).save(str(tmp_path / "m"), global_step=1)
    saver = tp.Saver([v])
    saver.recover_last_checkpoints(path)
    assert saver.last_checkpoints == [path]
