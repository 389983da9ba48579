"""What docs/guide.md must teach, beyond running (tests/test_docs_blocks.py runs its blocks).

The docs test creates the buckets a page names before running it, so a guide
that forgot to say so would still run; these checks keep the promises of the
page that the runner cannot see.
"""

from __future__ import annotations

import re

from docblocks import DOCS, blocks

PAGE = "guide.md"


def _runnable_code() -> str:
    return "".join(b.code for b in blocks(PAGE) if b.runs)


def test_the_bucket_section_says_a_bucket_must_exist_and_how_to_make_one() -> None:
    text = (DOCS / PAGE).read_text()
    section = text[text.index("## 4. Saving to a bucket") : text.index("## 5.")]
    assert "The bucket must exist first" in section
    for how in ("aws s3 mb s3://my-bucket", "gcloud storage buckets create gs://my-bucket", "(try-locally.md)"):
        assert how in section, how


def test_the_bucket_example_runs_without_hidden_rewrites() -> None:
    # The example uses the URL a reader would type; nothing on the page swaps it for the test.
    code = _runnable_code()
    assert 'tp.CheckpointManager(ckpt, "s3://my-bucket/runs/linear"' in code
    assert "<!-- test:" not in (DOCS / PAGE).read_text()


def test_convert_is_shown_both_ways_and_into_a_bucket() -> None:
    calls = re.findall(r"tp\.convert\(([^)]*)\)", _runnable_code())
    assert any('"zarr://' in c.split(",")[1] for c in calls)  # bundle -> zarr
    assert any(c.startswith('"zarr://') for c in calls)  # zarr -> bundle
    assert any('"s3://' in c.split(",")[1] for c in calls)  # local -> S3
