"""An object store's endpoint given without its scheme is refused as a bad option, before any request."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

import trackpoint as tp


@pytest.mark.parametrize(
    ("url", "storage", "shown"),
    [
        ("s3://bucket/run/ckpt", {"endpoint_url": "127.0.0.1:5123"}, "storage_options['endpoint_url']"),
        (
            "s3://bucket/run/ckpt",
            {"client_kwargs": {"endpoint_url": "localhost:9000"}},
            "storage_options['client_kwargs']['endpoint_url']",
        ),
        ("gs://bucket/run/ckpt", {"endpoint_url": "localhost:4443"}, "storage_options['endpoint_url']"),
    ],
)
def test_an_endpoint_without_scheme_is_a_bad_option(url: str, storage: dict[str, Any], shown: str) -> None:
    ckpt = tp.Checkpoint(v=tp.Variable(np.ones(2)))
    with pytest.raises(tp.BackendOptionError, match=re.escape(shown) + r" is '.*', with no scheme.*http://"):
        ckpt.save(url, options=tp.CheckpointOptions(storage_options=storage))


def test_the_command_line_reports_it_as_a_usage_error() -> None:
    ls = subprocess.run(
        [sys.executable, "-m", "trackpoint", "ls", "s3://bucket/run", "-o", "endpoint_url=127.0.0.1:5123"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ls.returncode == 2, ls.stderr
    assert "-o endpoint_url is '127.0.0.1:5123', with no scheme" in ls.stderr
    assert "http://127.0.0.1:5123" in ls.stderr
