"""The two-process example of docs/distributed.md runs as the page says: torchrun, twice, resuming."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ranks import needs_torch

from docblocks import DOCS, blocks

pytestmark = [pytest.mark.xdist_group("ranks"), needs_torch, pytest.mark.slow]


def _page_block(marker: str, lang: str) -> str:
    found = [b.code for b in blocks(DOCS / "distributed.md") if b.lang == lang and marker in b.code]
    assert len(found) == 1, f"docs/distributed.md should hold one {lang} block with {marker!r}"
    return found[0]


def test_the_torchrun_example_runs_and_resumes(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(_page_block("dist.init_process_group", "python"))
    expected = _page_block("rank 0: resumed from None", "text")
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun"
    lines: list[str] = []
    for _ in range(2):
        out = subprocess.run(
            [torchrun, "--standalone", "--nproc_per_node=2", str(script), "runs/distributed"],  # as on the page
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        # Two processes share the pipe: a line's text and its newline may be written apart, so one rank's
        # line can run into the other's. Match the lines' own shape rather than split on newlines.
        lines += sorted(re.findall(r"rank \d: resumed from .*?, saved .*?, step \d+", out.stdout))
    assert lines == expected.strip().splitlines()
    names = sorted(p.name for p in (tmp_path / "runs" / "distributed").iterdir())
    assert [n for n in names if not n.startswith(("ckpt-5.data-", "ckpt-6.data-"))] == [
        "checkpoint",
        "ckpt-5.index",
        "ckpt-6.index",
    ]
