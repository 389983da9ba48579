"""Shared test configuration.

Environment set here must be in place before any storage library is imported:
gcsfs reads GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT at import time (otherwise every
bucket access stalls ~60 s on a gRPC probe), and dummy AWS credentials keep
botocore from ever reaching for the instance-metadata address.
"""

from __future__ import annotations

import os

os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
# Tests choose backends explicitly; a developer's shell setting must not leak in.
os.environ.pop("TRACKPOINT_BACKEND", None)

# Session-scoped S3 (moto) and GCS (fake-gcs-server) fixtures: tests/servers.py,
# importable because pyproject puts tests/ on sys.path (pythonpath).
pytest_plugins = ["servers"]
