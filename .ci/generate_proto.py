"""Regenerate the committed ``*_pb2.py`` modules and ``*_pb2.pyi`` stubs from the ``.proto`` files.

Run ``python .ci/generate_proto.py`` after editing a ``.proto``. The test
suite (``tests/core/test_proto_generated.py``) runs :func:`generate` into a
temporary directory and compares, so committed code can never drift from its
source. This is a developer script: it lives outside the package folders so
that no distribution ships it.

Each ``.proto`` must be self-contained (it may import only
``google/protobuf/*``): protoc would otherwise emit top-level imports that do
not resolve inside the ``trackpoint`` package.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

__all__ = ["PROTO_DIRS", "generate", "main"]

_ROOT = Path(__file__).resolve().parents[1]
#: Folders (relative to the repository root) holding ``.proto`` sources.
PROTO_DIRS = ("core/proto", "backends/bundle/proto")


def generate(proto_dir: Path, out_dir: Path) -> list[Path]:
    """Compile every ``.proto`` in ``proto_dir`` into ``out_dir`` (modules and typing stubs); return the outputs."""
    import grpc_tools
    from grpc_tools import protoc  # dev dependency only

    include = Path(grpc_tools.__file__).parent / "_proto"
    protos = sorted(p.name for p in proto_dir.glob("*.proto"))
    if not protos:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    args = ["protoc", f"-I{proto_dir}", f"-I{include}", f"--python_out={out_dir}", f"--pyi_out={out_dir}", *protos]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed for {proto_dir}")
    return sorted([*out_dir.glob("*_pb2.py"), *out_dir.glob("*_pb2.pyi")])


def main() -> int:
    """Regenerate all committed modules in place."""
    for rel in PROTO_DIRS:
        src = _ROOT / rel
        with tempfile.TemporaryDirectory() as tmp:
            for out in generate(src, Path(tmp)):
                shutil.copyfile(out, src / out.name)
                print(f"wrote {rel}/{out.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
