"""An endpoint that answers 404 to everything is named as the likely mistake, not a bucket that does not exist.

Before: a wrong ``endpoint_url`` (a web server, another service) read as "bucket 'b' does not exist; create it
or correct the URL", sending the user to create a bucket that exists. S3 names what is missing in its answer
(``NoSuchBucket``, ``NoSuchKey``); a bare 404 is no S3 answer.
"""

from __future__ import annotations

import http.server
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from servers import ObjectStore
from trackpoint.errors import CheckpointNotFoundError


class _NotFound(http.server.BaseHTTPRequestHandler):
    """Answers every request with a 404 and an HTML page, as a web server at a wrong URL does."""

    def _answer(self) -> None:
        body = b"" if self.command == "HEAD" else b"<html><body>Not Found</body></html>"
        self.send_response(404)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


@pytest.fixture
def not_s3() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_an_endpoint_answering_404_to_everything_is_named(make_files: Callable[..., Any], not_s3: str) -> None:
    files = make_files(endpoint_url=not_s3)
    for call in (lambda: files.listdir("s3://bucket/run"), lambda: files.read("s3://bucket/run/a")):
        with pytest.raises(CheckpointNotFoundError) as info:
            call()
        message = str(info.value)
        assert f"the endpoint '{not_s3}' answered HTTP 404 without an S3 error code" in message
        assert message.endswith("is storage_options['endpoint_url'] right?")
        assert "does not exist" not in message


def test_a_missing_bucket_of_a_real_s3_is_still_named_as_such(files: Any, store: ObjectStore) -> None:
    bucket = f"tp-missing-{uuid.uuid4().hex[:12]}"
    with pytest.raises(CheckpointNotFoundError, match=f"bucket '{bucket}' does not exist") as info:
        files.listdir(f"s3://{bucket}/run")
    assert "endpoint" not in str(info.value)
    with pytest.raises(CheckpointNotFoundError) as info:
        files.read(f"{store.bucket}/run/a")  # an object missing from a bucket that exists: only the object
    assert "endpoint" not in str(info.value) and "bucket" not in str(info.value).replace(store.bucket, "")
