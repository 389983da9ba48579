"""Every ```python block of docs/backends/s3.md and docs/backends/gcs.md runs, in order, against its store's server."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from servers import ObjectStore

pytestmark = [pytest.mark.timeout(60)]

DOCS = Path(__file__).resolve().parents[3] / "docs" / "backends"


def test_python_blocks_run(store: ObjectStore) -> None:
    doc = DOCS / f"{store.name}.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)
    assert blocks, f"docs/backends/{doc.name} lost its examples"
    namespace: dict[str, Any] = {"bucket_url": store.bucket, "storage_options": dict(store.storage_options)}
    for number, code in enumerate(blocks, 1):
        try:
            exec(compile(code, f"{doc.name} block {number}", "exec"), namespace)  # noqa: S102 - our own docs
        except Exception as exc:
            raise AssertionError(f"docs/backends/{doc.name} python block {number} failed: {exc!r}\n{code}") from exc
