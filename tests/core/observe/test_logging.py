"""The "trackpoint" logger: one INFO line per save and restore, DEBUG detail, nothing at WARNING when all is well."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest

import trackpoint as tp

LOGGER = "trackpoint"


def _lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == level]


def test_one_info_line_per_save_and_restore(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ckpt = tp.Checkpoint(v=tp.Variable(np.zeros(2**18, np.float32)))  # 1 MiB
    with caplog.at_level(logging.INFO, logger=LOGGER):
        path = ckpt.save(str(tmp_path / "ckpt"))
        ckpt.restore(path)
    infos = _lines(caplog, logging.INFO)
    assert len(infos) == 2, infos
    saved, restored = infos
    assert re.fullmatch(
        rf"saved {re.escape(path)} \(3 tensors, 1\.0 MiB\) in \d+\.\d{{3}} s, [\d.]+ [KMG]?i?B/s", saved
    ), saved
    assert re.fullmatch(
        rf"restored {re.escape(path)} \(\d tensors, 1\.0 MiB\) in \d+\.\d{{3}} s, [\d.]+ [KMG]?i?B/s", restored
    ), restored
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_debug_tells_the_backend_and_the_progress(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        path = tp.Checkpoint(v=tp.Variable(np.zeros(1000))).write(str(tmp_path / "ckpt"))
    debug = _lines(caplog, logging.DEBUG)
    assert debug[0] == f"saving {path} with backend 'bundle' (checkpoint): 2 tensors, 7.9 KiB"
    assert any(re.fullmatch(rf"saving {re.escape(path)}: .* of 7\.9 KiB written", line) for line in debug[1:])


def test_a_failed_save_is_an_info_line_and_the_error_is_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "file").write_text("")
    with caplog.at_level(logging.INFO, logger=LOGGER), pytest.raises(tp.StorageError):
        tp.Checkpoint(v=tp.Variable(1.0)).write(str(tmp_path / "file" / "ckpt"))
    infos = _lines(caplog, logging.INFO)
    assert len(infos) == 1 and re.match(r"save of .*file/ckpt failed after \d+\.\d{3} s: \w*Error: ", infos[0])
    # The caller gets the exception; the log does not raise an alarm of its own.
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_silent_by_default(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # The logger inherits WARNING from the root: a save logs nothing.
    with caplog.at_level(logging.WARNING):
        ckpt = tp.Checkpoint(v=tp.Variable(1.0))
        ckpt.restore(ckpt.save(str(tmp_path / "ckpt")))
    assert [r for r in caplog.records if r.name.startswith(LOGGER)] == []
