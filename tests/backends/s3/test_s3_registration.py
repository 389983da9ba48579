"""The s3 and gcs backends register through the entry points and keep ``import trackpoint`` light."""

from __future__ import annotations

import subprocess
import sys

import pytest

import trackpoint
from trackpoint.backends.stores import ObjectStore as StoreLayer
from trackpoint.plugins import open_backend
from trackpoint.storage import CheckpointOptions

pytestmark = pytest.mark.timeout(60)


def test_registered_with_schemes_and_extras() -> None:
    rows = {row.name: row for row in trackpoint.list_backends()}
    assert rows["s3"].schemes == ("s3", "s3a") and rows["s3"].available
    assert rows["gcs"].schemes == ("gs", "gcs") and rows["gcs"].available
    assert rows["s3"].capabilities is not None and rows["s3"].capabilities.conditional_create
    assert rows["s3"].capabilities.atomic_rename is False


@pytest.mark.parametrize(
    ("url", "store"), [("s3://b/x", "s3"), ("s3a://b/x", "s3"), ("gs://b/x", "gcs"), ("gcs://b/x", "gcs")]
)
def test_scheme_selects_backend(url: str, store: str) -> None:
    opts = CheckpointOptions(storage_options={"anon": True} if store == "s3" else {"token": "anon"})
    backend = open_backend(url, opts)
    assert backend.name == store
    files = backend.files  # type: ignore[attr-defined]
    assert isinstance(files, StoreLayer) and files.store_name == store


def test_registration_imports_no_storage_library() -> None:
    code = (
        "import sys, trackpoint, trackpoint.backends.stores.s3, trackpoint.backends.stores.gcs; "
        "trackpoint.list_backends(); "
        "heavy = sorted(m for m in ('s3fs', 'gcsfs', 'botocore', 'aiobotocore', 'fsspec') if m in sys.modules); "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == ""
