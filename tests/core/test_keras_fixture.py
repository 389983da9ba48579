"""The examples of docs/tensorflow.md that read checkpoints TensorFlow wrote, run on those checkpoints.

Those examples are ``python fragment`` blocks, since a reader needs TensorFlow to write their input; here they
run on ``tests/fixtures/tf/adam_v1`` (TensorFlow 1's ``AdamOptimizer``) and ``tests/fixtures/tf/keras``
(Keras 3's ``Dense`` and ``Adam``), after the page's runnable blocks, in one namespace, as a reader would.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import docblocks
import trackpoint as tp
from fixtures.tf import tfcases
from trackpoint.cli import main

PAGE = "tensorflow.md"


@pytest.fixture
def page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The page's namespace after its runnable blocks and the fragments that read TensorFlow's checkpoints."""
    for case in ("adam_v1", "keras"):
        shutil.copytree(tfcases.FIXTURES / case, tmp_path / case)
    monkeypatch.chdir(tmp_path)
    blocks = docblocks.blocks(PAGE)
    ns = docblocks.run_page(blocks)
    readers = [
        b
        for b in blocks
        if b.lang == "python"
        and not b.runs
        and ('"adam_v1/ckpt-1"' in b.code or '"keras/ckpt-1"' in b.code)
        and "import keras" not in b.code
        and "import tensorflow" not in b.code
    ]
    assert len(readers) == 3, [b.where for b in readers]
    for block in readers:
        exec(block.compiled(), ns)  # noqa: S102 - our own documentation
    return ns


def _tensor(case: str, key: str) -> np.ndarray[Any, Any]:
    (checkpoint,) = tfcases.checkpoints(case)
    return checkpoint.tensor(key)


def test_the_adam_example_restores_and_continues_tensorflows_adam(page: dict[str, Any]) -> None:
    adam, layer = page["Adam"], page["Layer"]
    # Restored as TensorFlow wrote them, bit for bit.
    model = tp.AutoTrackable()
    model.dense = layer()
    optimizer, step = adam(learning_rate=0.1), tp.Variable(np.int64(0))
    tp.Checkpoint(model=model, optimizer=optimizer, step=step).restore("adam_v1/ckpt-1").assert_consumed()
    for name in ("kernel", "bias"):
        var = getattr(model.dense, name)
        key = f"model/dense/{name}/.ATTRIBUTES/VARIABLE_VALUE"
        tfcases.assert_same_tensor(var.numpy(), _tensor("adam_v1", key), key)
        for slot in ("m", "v"):
            slot_key = f"model/dense/{name}/.OPTIMIZER_SLOT/optimizer/{slot}/.ATTRIBUTES/VARIABLE_VALUE"
            tfcases.assert_same_tensor(optimizer.get_slot(var, slot).numpy(), _tensor("adam_v1", slot_key), slot_key)
    assert float(optimizer._power("beta1_power")) == pytest.approx(0.9**3)
    # The example's update is TensorFlow's: two steps from TensorFlow's initial values give its checkpoint
    # (to the last bit on x86-64; the tolerance allows for another machine's fused multiply-adds).
    initial = tfcases.expected("adam_v1")["initial_values"]
    replay = tp.AutoTrackable()
    replay.dense = layer()
    replay.dense.kernel.assign(np.array(initial["dense/kernel:0"], np.float32))
    replay.dense.bias.assign(np.array(initial["dense/bias:0"], np.float32))
    replayed, replay_step = adam(learning_rate=0.1), tp.Variable(np.int64(0))

    def one_step(target: Any, opt: Any, counter: tp.Variable) -> None:
        grads = [(np.full((3, 2), 0.5, np.float32), target.dense.kernel), (np.ones(2, np.float32), target.dense.bias)]
        opt.apply_gradients(grads, global_step=counter)

    for _ in range(2):
        one_step(replay, replayed, replay_step)
    np.testing.assert_allclose(replay.dense.kernel.numpy(), model.dense.kernel.numpy(), rtol=1e-6)
    replayed_v, restored_v = replayed.get_slot(replay.dense.bias, "v"), optimizer.get_slot(model.dense.bias, "v")
    np.testing.assert_allclose(replayed_v.numpy(), restored_v.numpy(), rtol=1e-6)
    # The page's third step continues from the restored state exactly as one more replayed step does.
    one_step(replay, replayed, replay_step)
    assert int(page["tf_step"]) == 3 == int(replay_step)
    np.testing.assert_allclose(page["tf_model"].dense.kernel.numpy(), replay.dense.kernel.numpy(), rtol=1e-6)


def test_the_keras_mirror_restores_every_value_keras_wrote(page: dict[str, Any]) -> None:
    model, optimizer = page["keras_model"], page["keras_optimizer"]
    kernel, bias = model._operations[1]._kernel, model._operations[1].bias
    pairs = {
        "optimizer/_trainable_variables/0": kernel,
        "optimizer/_trainable_variables/1": bias,
        "optimizer/_iterations": optimizer._iterations,
        "optimizer/_learning_rate": optimizer._learning_rate,
        "optimizer/_variables/2": optimizer._momentums[0],
        "optimizer/_variables/3": optimizer._velocities[0],
        "optimizer/_variables/4": optimizer._momentums[1],
        "optimizer/_variables/5": optimizer._velocities[1],
    }
    for path, var in pairs.items():
        key = f"{path}/.ATTRIBUTES/VARIABLE_VALUE"
        tfcases.assert_same_tensor(var.numpy(), _tensor("keras", key), key)
    # The mirror, saved, writes the keys Keras wrote.
    (checkpoint,) = tfcases.checkpoints("keras")
    assert [k for k, _ in tp.list_variables(page["saved"])] == [k for k, _ in checkpoint.list_variables]


def test_the_tree_the_page_shows_is_the_one_inspect_draws(
    page: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    del page  # for the working directory holding keras/ckpt-1
    (shown,) = [b.code for b in docblocks.blocks(PAGE) if b.lang == "text" and "_momentums" in b.code]
    assert main(["inspect", "--tree", "keras/ckpt-1"]) == 0
    drawn = capsys.readouterr().out
    assert drawn.splitlines()[-len(shown.splitlines()) :] == shown.splitlines()
