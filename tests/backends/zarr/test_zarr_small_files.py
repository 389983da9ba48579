"""Small versioned files (the ``checkpoint`` state file) on every store."""

from __future__ import annotations

from typing import Any

import pytest

from trackpoint.errors import ConcurrentModificationError
from trackpoint.storage import ANY_VERSION, MUST_NOT_EXIST


def test_versions_and_preconditions(where: Any) -> None:
    path = where.backend.join(where.directory, "checkpoint")
    assert where.backend.read_file(path) is None
    v1 = where.backend.write_file(path, b"one", if_version=MUST_NOT_EXIST)
    got = where.backend.read_file(path)
    assert got is not None and (got.data, got.version) == (b"one", v1)
    with pytest.raises(ConcurrentModificationError, match="exists already \\(create-only write"):
        where.backend.write_file(path, b"two", if_version=MUST_NOT_EXIST)
    v2 = where.backend.write_file(path, b"two", if_version=v1)
    assert v2 != v1
    with pytest.raises(ConcurrentModificationError, match="changed since version .* was read"):
        where.backend.write_file(path, b"three", if_version=v1)
    v3 = where.backend.write_file(path, b"\x00\xff" * 10, if_version=ANY_VERSION)
    got = where.backend.read_file(path)
    assert got is not None and (got.data, got.version) == (b"\x00\xff" * 10, v3)
    where.backend.delete_file(path)
    where.backend.delete_file(path)
    assert where.backend.read_file(path) is None
    with pytest.raises(ConcurrentModificationError):
        where.backend.write_file(path, b"x", if_version=v3)
