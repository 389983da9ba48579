"""Every ```python block of docs/backends/gcs.md runs, in order, against fake-gcs-server."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.gcs, pytest.mark.timeout(60)]

DOC = Path(__file__).resolve().parents[3] / "docs" / "backends" / "gcs.md"


def test_python_blocks_run(gcs_bucket: str, gcs_storage_options: dict[str, Any]) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert blocks, "docs/backends/gcs.md lost its examples"
    namespace: dict[str, Any] = {"bucket_url": gcs_bucket, "storage_options": dict(gcs_storage_options)}
    for number, code in enumerate(blocks, 1):
        try:
            exec(compile(code, f"{DOC.name} block {number}", "exec"), namespace)  # noqa: S102 - our own docs
        except Exception as exc:
            raise AssertionError(f"docs/backends/gcs.md python block {number} failed: {exc!r}\n{code}") from exc
