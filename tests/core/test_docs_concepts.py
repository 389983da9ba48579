"""Every ```python block of docs/concepts.md runs, in order, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "concepts.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def test_concepts_page_has_examples() -> None:
    assert len(BLOCK.findall(DOC.read_text())) >= 8


def test_concepts_examples_run() -> None:
    namespace: dict[str, object] = {"__name__": "concepts_doc"}
    for number, code in enumerate(BLOCK.findall(DOC.read_text()), start=1):
        try:
            exec(compile(code, f"{DOC.name} block {number}", "exec"), namespace)  # noqa: S102 - our own docs
        except Exception as exc:
            raise AssertionError(f"docs/concepts.md python block {number} failed: {exc!r}\n{code}") from exc
