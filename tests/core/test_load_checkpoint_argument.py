"""load_checkpoint checks its path as save, restore and list_variables check theirs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import trackpoint as tp


@pytest.mark.parametrize("path", [123, 1.5, ["run/ckpt-1"]])
def test_a_path_of_another_type_is_an_argument_type_error(path: object) -> None:
    for call in (tp.load_checkpoint, tp.list_variables):
        with pytest.raises(tp.ArgumentTypeError, match=r"^load_checkpoint: ckpt_dir_or_file must be a path or URL"):
            call(path)  # type: ignore[arg-type]


def test_a_bytes_path_is_read_as_utf8(tmp_path: Path) -> None:
    prefix = tp.Checkpoint(w=tp.Variable(np.arange(2, dtype=np.float32))).write(str(tmp_path / "ckpt-1"))
    with tp.load_checkpoint(prefix.encode()) as reader:
        assert reader.get_tensor("w/.ATTRIBUTES/VARIABLE_VALUE").tolist() == [0.0, 1.0]
