"""Shared test configuration.

The tests run with the environment a user has: no variable that changes how a
storage library behaves is set here (credentials and endpoints go into
``storage_options``, as the docs tell users). The one exception is
``AWS_EC2_METADATA_DISABLED`` in ``servers.py``, which only matters when
credentials are missing and keeps botocore from probing the cloud
instance-metadata address from a test machine.
"""

from __future__ import annotations

import os

# Tests choose backends explicitly; a developer's shell setting must not leak in.
os.environ.pop("TRACKPOINT_BACKEND", None)

# Session-scoped S3 (moto) and GCS (fake-gcs-server) fixtures: tests/servers.py,
# importable because pyproject puts tests/ on sys.path (pythonpath).
pytest_plugins = ["servers"]
