"""docs/backends/s3.md and gcs.md teach what a first bucket save needs (tests/test_docs_blocks.py runs their blocks)."""

from __future__ import annotations

import pytest

from docblocks import DOCS, blocks

SCHEME = {"s3": "s3://", "gcs": "gs://"}
MAKE_BUCKET = {"s3": "aws s3 mb s3://my-bucket", "gcs": "gcloud storage buckets create gs://my-bucket"}


@pytest.mark.parametrize("name", sorted(SCHEME))
def test_page_says_the_bucket_must_exist_and_how_to_create_it(name: str) -> None:
    text = (DOCS / "backends" / f"{name}.md").read_text()
    intro = text[: text.index("## Configuration")]
    assert "The bucket must exist first" in intro
    assert MAKE_BUCKET[name] in intro and "(../try-locally.md)" in intro


@pytest.mark.parametrize("name", sorted(SCHEME))
def test_examples_run_on_their_store_as_written(name: str) -> None:
    # Literal URLs of the page's own store, and no names the reader must supply (the 0.1 pages used
    # `bucket_url` and `storage_options`, which only the old test defined).
    code = "".join(b.code for b in blocks(f"backends/{name}.md") if b.runs)
    assert f'"{SCHEME[name]}my-bucket/' in code
    for undefined in ("bucket_url", "storage_options=storage_options"):
        assert undefined not in code
