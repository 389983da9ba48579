"""Templates whose sharding is over an ``AbstractMesh``, as ``jax.eval_shape`` gives for Explicit mesh axes.

Such a sharding names the mesh's axes but no devices: a template of it is refused with a message that says
so and which templates to give instead (both verified here), unless the program set the concrete mesh of
those axes (``jax.set_mesh``), which it is then taken to be. Four host devices need XLA_FLAGS before jax
starts: a fresh interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("jax")

SCRIPT = """
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import AbstractMesh, AxisType, NamedSharding, PartitionSpec as P
import trackpoint as tp

mesh = jax.make_mesh((2, 2), ("x", "y"), axis_types=(AxisType.Explicit,) * 2)
sharding = NamedSharding(mesh, P("x", "y"))
state = {"w": jax.device_put(jnp.arange(16.0).reshape(4, 4), sharding)}
path = tp.Checkpoint(state=state).write(PATH)

def restored(template):
    ckpt = tp.Checkpoint(state=template)
    ckpt.read(path).assert_consumed()
    w = ckpt.state["w"]
    assert w.sharding == sharding and len(w.addressable_shards) == 4, w.sharding
    assert np.asarray(w).tolist() == np.arange(16.0).reshape(4, 4).tolist()
    return "restored"

abstract = jax.eval_shape(lambda: state)
assert isinstance(abstract["w"].sharding.mesh, AbstractMesh)
try:
    tp.Checkpoint(state=abstract)
except tp.TrackableError as exc:
    print("refused:", exc)
# The two templates the message offers.
print("tree_map:", restored(jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)))
init = jax.jit(lambda: {"w": jnp.zeros((4, 4))}, out_shardings={"w": sharding})
print("jit:", restored(jax.eval_shape(init)))
# With the mesh set, the AbstractMesh is taken to be it.
jax.set_mesh(mesh)
print("set_mesh:", restored(jax.eval_shape(lambda: state)))
"""


def test_an_abstract_mesh_template_is_refused_clearly_or_taken_to_be_the_mesh_set(tmp_path: Path) -> None:
    script = textwrap.dedent(SCRIPT).replace("PATH", repr(str(tmp_path / "ckpt")))
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    refused = lines[0]
    assert refused.startswith("refused: Checkpoint.state['w']: the jax.ShapeDtypeStruct template of shape (4, 4)")
    assert "over an AbstractMesh: it names the mesh's axes but no devices" in refused
    assert "sharding=x.sharding" in refused and "out_shardings" in refused and "jax.set_mesh(mesh)" in refused
    assert "NoDependency" not in refused
    assert lines[1:] == ["tree_map: restored", "jit: restored", "set_mesh: restored"]
