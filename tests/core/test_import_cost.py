"""``import trackpoint`` loads numpy, protobuf and trackpoint's own modules, nothing optional.

What an import loads is checked, not how long it takes: timings on a shared machine are noise, while
a module that appears in ``sys.modules`` is a fact. ml_dtypes alone takes several times as long to
import as numpy, so it must wait until bfloat16 is used.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

# Third-party top-level packages ``import trackpoint`` may load: numpy, protobuf (``google``) and itself.
ALLOWED_THIRD_PARTY = {"numpy", "google", "trackpoint"}
# Loaded only when used: bfloat16 (ml_dtypes), the plugin manager (pluggy, entry-point metadata), CRCs.
LAZY = ("ml_dtypes", "pluggy", "importlib.metadata", "crc32c", "trackpoint.plugins", "trackpoint.backends")


def _run(body: str) -> dict[str, Any]:
    script = f"""
import json, sys
before = set(sys.modules)
def new():
    return sorted(set(sys.modules) - before)
def loaded(name):
    return any(m == name or m.startswith(name + ".") for m in sys.modules)
{body}
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_import_loads_nothing_optional() -> None:
    result = _run(
        f"""
import trackpoint
mods = new()
third_party = sorted({{m.split(".")[0] for m in mods}} - set(sys.stdlib_module_names))
print(json.dumps({{"third_party": third_party, "lazy": [n for n in {LAZY!r} if loaded(n)]}}))
"""
    )
    assert set(result["third_party"]) <= ALLOWED_THIRD_PARTY, result["third_party"]
    assert result["lazy"] == []


def test_bfloat16_imports_ml_dtypes_on_first_use() -> None:
    result = _run(
        """
import numpy as np
import trackpoint as tp
from trackpoint.dtypes import as_dtype
plain = as_dtype("float32") == np.float32 and tp.Variable([1.0, 2.0]).dtype == np.float32
after_plain = loaded("ml_dtypes")
import ml_dtypes
print(json.dumps({"plain": bool(plain), "after_plain": after_plain,
                  "is_bf16": tp.bfloat16 == np.dtype(ml_dtypes.bfloat16)}))
"""
    )
    assert result == {"plain": True, "after_plain": False, "is_bf16": True}


def test_bfloat16_by_name_before_ml_dtypes_is_imported() -> None:
    # numpy knows the name "bfloat16" only after ml_dtypes registered it; trackpoint accepts it regardless.
    result = _run(
        """
import numpy as np
from trackpoint import Variable
from trackpoint.dtypes import as_dtype
was_loaded = loaded("ml_dtypes")
v = Variable([1.5, -2.0], dtype="bfloat16")
from trackpoint import bfloat16
print(json.dumps({"was_loaded": was_loaded, "dtype": str(as_dtype("bfloat16")), "ok": v.dtype == bfloat16,
                  "values": v.numpy().astype(np.float32).tolist()}))
"""
    )
    assert result == {"was_loaded": False, "dtype": "bfloat16", "ok": True, "values": [1.5, -2.0]}


def test_bundle_round_trip_of_numpy_types_leaves_ml_dtypes_unloaded(tmp_path: Any) -> None:
    result = _run(
        f"""
import numpy as np
import trackpoint as tp
root = tp.AutoTrackable()
root.w = tp.Variable(np.arange(6, dtype=np.float32).reshape(2, 3))
root.step = tp.Variable(3)
ckpt = tp.Checkpoint(model=root)
path = ckpt.write({str(tmp_path / "ckpt")!r})
root.w.assign(np.zeros((2, 3), np.float32))
ckpt.read(path).assert_consumed()
print(json.dumps({{"w": root.w.numpy().tolist(), "ml_dtypes": loaded("ml_dtypes")}}))
"""
    )
    assert result == {"w": [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]], "ml_dtypes": False}
