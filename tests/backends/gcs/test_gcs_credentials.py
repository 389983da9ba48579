"""Credentials given in ``storage_options['token']`` that cannot be used: a clear error that never shows them."""

from __future__ import annotations

import traceback
from pathlib import Path

import numpy as np
import pytest

import trackpoint as tp
from trackpoint.errors import StoragePermissionError

pytestmark = [pytest.mark.timeout(120)]


def _save(token: str) -> StoragePermissionError:
    opts = tp.CheckpointOptions(storage_options={"token": token})
    with pytest.raises(StoragePermissionError) as failed:
        tp.Checkpoint(w=tp.Variable(np.ones(3))).save("gs://some-bucket/run/ckpt", opts)
    return failed.value


def test_a_token_that_cannot_be_validated_is_a_permission_error_without_the_token() -> None:
    # gcsfs validates a raw access token by a request to Google whose URL holds it; offline (or with a
    # bad token) that request fails, and its message used to reach the user's error in full.
    error = _save("ya29.a0AfB_SECRET-TOKEN-123")
    shown = "".join(traceback.format_exception(error))
    assert "SECRET" not in shown
    assert "the credentials given by storage_options['token'] could not be set up" in str(error)
    assert "'anon' (public buckets, emulators)" in str(error)


def test_a_service_account_file_that_does_not_exist_is_named(tmp_path: Path) -> None:
    missing = str(tmp_path / "service-account.json")
    error = _save(missing)
    assert f"storage_options['token'] names a file that does not exist: {missing!r}" in str(error)
    assert error.__cause__ is None
