"""Every fenced block of every page under ``docs/`` follows the convention of ``tests/docblocks.py``, and runs.

Each page's ``python`` blocks run in order, in one namespace, in a fresh
interpreter (``python tests/docblocks.py PAGE``) whose working directory is an
empty temporary directory: as a user would run them, with no state left by
other pages or tests. A page whose code names a bucket (``s3://my-bucket/...``,
``gs://...``, ``zarr+s3://...``) runs in the environment that
``docs/try-locally.md`` tells users to export, with the endpoints of this
session's moto and fake-gcs-server instead of the documented ports; the code
is never rewritten. Such pages say that a bucket must exist first, so the
buckets their code names are created before they run (except on
``try-locally.md``, which creates its own) and removed afterwards.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import docblocks
from docblocks import (
    Block,
    DocBlockError,
    blocks,
    check_block,
    pages,
    parse,
    shell_exports,
)

RUNNER = Path(docblocks.__file__)
#: Pages whose own blocks create the buckets they use.
CREATES_ITS_BUCKETS = frozenset({"try-locally.md"})
#: A bucket URL in code, by any scheme that reaches S3 or GCS; group 1 the scheme, 2 the bucket.
_BUCKET_URL = re.compile(r"(?<![\w+])(?:zarr\+)?(s3a?|gs|gcs)://([a-z0-9][a-z0-9._-]{1,61}[a-z0-9])")
_STORE = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}
#: The variable of try-locally's exports that carries each emulator's endpoint.
ENDPOINT_VARIABLE = {"s3": "AWS_ENDPOINT_URL", "gcs": "STORAGE_EMULATOR_HOST"}
#: Set by tests/conftest.py for the rest of the suite; a docs reader does not set it.
_TEST_ONLY_VARIABLES = ("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT",)


def buckets(page_blocks: list[Block]) -> set[tuple[str, str]]:
    """``(store, bucket)`` for every bucket the runnable blocks name."""
    code = "".join(b.code for b in page_blocks if b.runs)
    return {(_STORE[scheme], bucket) for scheme, bucket in _BUCKET_URL.findall(code)}


def _page_params() -> Iterator[Any]:
    for page in pages():
        page_blocks = blocks(page)
        if not any(b.runs for b in page_blocks):
            continue
        stores = sorted({store for store, _ in buckets(page_blocks)})
        yield pytest.param(page, marks=[getattr(pytest.mark, s) for s in stores], id=page)


def _environment(request: pytest.FixtureRequest, stores: set[str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _TEST_ONLY_VARIABLES}
    if stores:
        for name, value in shell_exports(blocks("try-locally.md")):
            env[name] = value
        for store in stores:
            env[ENDPOINT_VARIABLE[store]] = request.getfixturevalue(f"{store}_endpoint")
    return env


def test_every_page_is_collected() -> None:
    found = pages()
    assert {"guide.md", "try-locally.md", "backends/s3.md", "backends/gcs.md"} <= set(found)
    assert all(p.endswith(".md") for p in found)


@pytest.mark.parametrize("page", pages())
def test_blocks_follow_the_convention(page: str) -> None:
    for block in blocks(page):
        check_block(block)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("page", list(_page_params()))
def test_python_blocks_run(page: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    page_blocks = blocks(page)
    named = buckets(page_blocks)
    stores = {store for store, _ in named}
    env = _environment(request, stores)
    raws = {store: request.getfixturevalue(f"{store}_raw") for store in stores}
    try:
        if page not in CREATES_ITS_BUCKETS:
            for store, bucket in named:
                raws[store].mkdir(bucket)
        done = subprocess.run(
            [sys.executable, str(RUNNER), page],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=110,
            check=False,
        )
    finally:
        for store, bucket in named:
            try:
                raws[store].rm(bucket, recursive=True)
            except (FileNotFoundError, OSError):
                pass
    assert done.returncode == 0, f"docs/{page}: a python block failed\n{done.stderr}"


# ----------------------------------------------------- the harness itself


def _run_file(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    page = tmp_path / "page.md"
    page.write_text(text)
    return subprocess.run(
        [sys.executable, str(RUNNER), str(page)], cwd=tmp_path, capture_output=True, text=True, check=False
    )


def test_an_unmarked_block_that_fails_fails_the_run(tmp_path: Path) -> None:
    done = _run_file(tmp_path, "# t\n\n```python\nx = 1\n```\n\ntext\n\n```python\nprint(undefined_name)\n```\n")
    assert done.returncode == 1
    assert "NameError" in done.stderr and "undefined_name" in done.stderr
    # The traceback and the message point at the Markdown file and line of the failing code.
    assert f'File "{tmp_path / "page.md"}", line 10' in done.stderr
    assert f"{tmp_path / 'page.md'}:9: the python block failed" in done.stderr


def test_blocks_share_one_namespace_and_fragments_do_not_run(tmp_path: Path) -> None:
    text = "```python\nx = 41\n```\n```python fragment\nraise SystemExit(3)\n```\n```python\nassert x + 1 == 42\n```\n"
    done = _run_file(tmp_path, text)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("```\nprint(1)\n```\n", r"page\.md:1: fence with no info string; start it with one of"),
        ("```py\nprint(1)\n```\n", r"info string 'py'"),
        ("```python skip\nprint(1)\n```\n", r"unknown tag\(s\) \['skip'\] on a python block; allowed: \['fragment'\]"),
        ("```bash fragment\nls\n```\n", r"unknown tag\(s\) \['fragment'\] on a bash block; allowed: none"),
        ("```python fragment\ndef f(:\n```\n", r"page\.md:1: the python block does not parse"),
        ("```bash\nif then fi (\n```\n", r"the bash block does not parse"),
        ("```toml\n[a\n```\n", r"the toml block does not parse"),
    ],
)
def test_convention_violations_are_reported(text: str, match: str) -> None:
    (block,) = parse(text, "/somewhere/page.md")
    with pytest.raises(DocBlockError, match=match):
        check_block(block)


def test_parse_fences() -> None:
    text = (
        "Inline ```` ```python ```` is no fence.\n"
        "- a list item:\n\n"
        "  ```python\n  a = 1\n    b = 2\n  ```\n"
        "~~~text\n```python\n~~~\n"
        "````python fragment\n```\n````\n"
    )
    got = [(b.line, b.lang, b.tags, b.code) for b in parse(text, "p.md")]
    assert got == [
        (4, "python", (), "a = 1\n  b = 2\n"),
        (8, "text", (), "```python\n"),
        (11, "python", ("fragment",), "```\n"),
    ]
    with pytest.raises(DocBlockError, match=r"p\.md:1: the fence ```python is never closed"):
        parse("```python\nx = 1\n", "p.md")


def test_buckets_named_by_code() -> None:
    code = 'a = "s3://my-bucket/x"; b = "zarr+gs://other-b/y"; c = f"{bucket_url}/z"; d = "gcs://third/k"\n'
    assert buckets([Block("p.md", 1, "python", (), code)]) == {
        ("s3", "my-bucket"),
        ("gcs", "other-b"),
        ("gcs", "third"),
    }
    assert buckets([Block("p.md", 1, "python", ("fragment",), code)]) == set()


def test_try_locally_exports_name_both_endpoints() -> None:
    exported = dict(shell_exports(blocks("try-locally.md")))
    assert set(ENDPOINT_VARIABLE.values()) <= set(exported)
    with pytest.raises(DocBlockError, match=r"`export FOO` sets no value"):
        list(shell_exports(parse("```bash\nexport FOO\n```\n", "p.md")))
