"""A program that saved and restored through S3 or GCS exits silently.

Before: ``zarr+s3://`` left its asynchronous client's aiohttp session open
("Unclosed client session" on stderr at exit), and ``zarr+gs://`` had gcsfs'
exit-time fallback close a session bound to zarr's event loop on fsspec's
("RuntimeError ... attached to a different loop"). The program below never
calls ``close()``; the interpreter must still exit with status 0 and nothing
on stderr. The bundle backend of the same store runs in the same program, so
filesystems on both loops are open at exit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

_PROGRAM = """
import json, sys
import numpy as np
import trackpoint as tp

bucket, scheme, storage_options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
opts = tp.CheckpointOptions(storage_options=storage_options)
model = tp.AutoTrackable()
model.w = tp.Variable(np.arange(6.0))
model.step = tp.Variable(np.array(3, np.int64))
ckpt = tp.Checkpoint(model=model)
for url in (f"zarr+{scheme}://{bucket}/run/zarr-ckpt", f"{scheme}://{bucket}/run/bundle-ckpt"):
    path = ckpt.write(url, options=opts)
    model.w.assign(np.zeros(6))
    ckpt.read(path, options=opts).assert_consumed()
    assert np.array_equal(model.w.numpy(), np.arange(6.0)), url
print("restored")
"""


@pytest.mark.parametrize(
    "scheme",
    [pytest.param("s3", marks=pytest.mark.s3), pytest.param("gs", marks=pytest.mark.gcs)],
)
def test_save_and_restore_then_exit_prints_nothing(request: pytest.FixtureRequest, scheme: str) -> None:
    kind = "s3" if scheme == "s3" else "gcs"
    bucket: str = request.getfixturevalue(f"{kind}_bucket").split("://", 1)[1]
    storage_options: dict[str, Any] = request.getfixturevalue(f"{kind}_storage_options")
    done = subprocess.run(
        [sys.executable, "-c", _PROGRAM, bucket, scheme, json.dumps(storage_options)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=dict(os.environ),
    )
    assert done.stdout.strip() == "restored", done.stdout + done.stderr
    assert done.stderr == ""
    assert done.returncode == 0
