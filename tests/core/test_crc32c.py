"""The formats' CRC-32C: the crc32c package's compiled function, loaded without the package's __init__."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from trackpoint import _crc32c

# RFC 3720 (iSCSI) check value of CRC-32C, and a continued CRC equal to the CRC of the joined bytes.
CHECK = 0xE3069283


def test_values() -> None:
    assert _crc32c.crc32c(b"123456789") == CHECK
    assert _crc32c.crc32c(b"6789", _crc32c.crc32c(b"12345")) == CHECK
    assert _crc32c.crc32c(memoryview(bytearray(b"123456789"))) == CHECK


def test_loaded_without_the_package_init() -> None:
    script = (
        "import sys, json; from trackpoint import _crc32c; "
        "print(json.dumps([_crc32c.crc32c(b'123456789'), 'crc32c' in sys.modules, "
        "'importlib.metadata' in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [CHECK, False, False]


def test_any_other_layout_imports_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    import crc32c

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert _crc32c._load_extension() is crc32c
