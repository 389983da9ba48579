"""Every ```python block of docs/guide.md runs, in order, in one namespace.

The blocks run in an empty temporary working directory. The guide shows real
bucket URLs; to run offline, a block may be preceded by HTML comments (not
rendered) of the form::

    <!-- test: replace OLD with NEW -->

Before that block runs, every occurrence of ``OLD`` in it is replaced by
``NEW``, which is first formatted with the test's values: ``{s3_bucket}``
(``s3://<fresh bucket>`` on the local moto server) and ``{s3_storage_options}``
(the dict reaching that server; use ``!r`` to get a Python literal).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "guide.md"
# A fenced python block and the run of directive comments right above it.
BLOCK = re.compile(r"((?:^<!-- test: .*? -->\n)*)^```python\n(.*?)^```", re.S | re.M)
DIRECTIVE = re.compile(r"^<!-- test: replace (.+?) with (.+?) -->$", re.M)


def _blocks() -> list[tuple[list[tuple[str, str]], str]]:
    out = []
    for directives, code in BLOCK.findall(DOC.read_text()):
        replacements = DIRECTIVE.findall(directives)
        if directives.strip() and len(replacements) != directives.strip().count("\n") + 1:
            raise AssertionError(f"unrecognised test directive in docs/guide.md: {directives!r}")
        out.append((replacements, code))
    return out


def test_guide_has_examples_and_offline_directives() -> None:
    blocks = _blocks()
    assert len(blocks) >= 10
    # The bucket example must be rewritten for the test, or it would need the network.
    assert any(old == "s3://my-bucket" for reps, _ in blocks for old, _new in reps)


def test_directive_rewrites_only_its_block() -> None:
    text = '<!-- test: replace "a" with "{s3_bucket}" -->\n```python\nx = "a"\n```\n```python\ny = "a"\n```\n'
    found = [(DIRECTIVE.findall(d), c) for d, c in BLOCK.findall(text)]
    assert found == [([('"a"', '"{s3_bucket}"')], 'x = "a"\n'), ([], 'y = "a"\n')]


@pytest.mark.s3
def test_guide_examples_run(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    s3_bucket: str,
    s3_storage_options: dict[str, Any],
) -> None:
    monkeypatch.chdir(tmp_path)
    values = {"s3_bucket": s3_bucket, "s3_storage_options": dict(s3_storage_options)}
    namespace: dict[str, object] = {"__name__": "guide_doc"}
    for number, (replacements, code) in enumerate(_blocks(), start=1):
        for old, new in replacements:
            assert old in code, f"docs/guide.md block {number}: directive target {old!r} does not occur"
            code = code.replace(old, new.format(**values))
        try:
            exec(compile(code, f"{DOC.name} block {number}", "exec"), namespace)  # noqa: S102 - our own docs
        except Exception as exc:
            raise AssertionError(f"docs/guide.md python block {number} failed: {exc!r}\n{code}") from exc
