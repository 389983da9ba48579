"""Every ```python block of docs/backends/s3.md runs, in order, against the moto server."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.s3, pytest.mark.timeout(60)]

DOC = Path(__file__).resolve().parents[3] / "docs" / "backends" / "s3.md"


def test_python_blocks_run(s3_bucket: str, s3_storage_options: dict[str, Any]) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert blocks, "docs/backends/s3.md lost its examples"
    namespace: dict[str, Any] = {"bucket_url": s3_bucket, "storage_options": dict(s3_storage_options)}
    for number, code in enumerate(blocks, 1):
        try:
            exec(compile(code, f"{DOC.name} block {number}", "exec"), namespace)  # noqa: S102 - our own docs
        except Exception as exc:
            raise AssertionError(f"docs/backends/s3.md python block {number} failed: {exc!r}\n{code}") from exc
