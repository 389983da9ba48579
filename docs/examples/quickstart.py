"""trackpoint in one minute: train a little, save, restore into fresh objects, print what came back.

Run with ``python docs/examples/quickstart.py``. It writes to a temporary
directory; pass a directory or URL as the first argument to keep the files
(``python docs/examples/quickstart.py /tmp/run``).
"""

from __future__ import annotations

import sys
import tempfile

import numpy as np

import trackpoint as tp


class Dense(tp.AutoTrackable):
    """A dense layer: attributes holding Variables become named edges of the object graph."""

    def __init__(self, n_in: int, n_out: int, rng: np.random.Generator) -> None:
        self.kernel = tp.Variable(rng.standard_normal((n_in, n_out)).astype(np.float32), name="kernel")
        self.bias = tp.Variable(np.zeros(n_out, np.float32), name="bias")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x @ self.kernel.numpy() + self.bias.numpy())


class Model(tp.AutoTrackable):
    def __init__(self, rng: np.random.Generator) -> None:
        self.layers = [Dense(3, 4, rng), Dense(4, 1, rng)]  # a list is tracked as children "0", "1"
        self.vocab = tp.Variable(np.array([b"cat", b"dog"], dtype=object))  # strings are state too

    def variables(self) -> list[tp.Variable]:
        return [v for layer in self.layers for v in (layer.kernel, layer.bias)]


def main(directory: str) -> None:
    model = Model(np.random.default_rng(0))
    optimizer = tp.optimizers.SGD(learning_rate=0.1, momentum=0.9)
    for _ in range(3):  # a few "training" steps with made-up gradients
        optimizer.apply_gradients([(np.full(v.shape, 0.5, np.float32), v) for v in model.variables()])

    ckpt = tp.Checkpoint(model=model, optimizer=optimizer)
    path = ckpt.save(f"{directory}/ckpt")
    print(f"saved {path}")
    for name, shape in tp.list_variables(path):
        print(f"  {name:<84} {shape}")

    # Fresh objects with different values; the optimizer has no slots yet: they are
    # created from the checkpoint when restore() matches them (restore-on-create).
    fresh = Model(np.random.default_rng(1))
    fresh_opt = tp.optimizers.SGD(learning_rate=0.1, momentum=0.9)
    restored = tp.Checkpoint(model=fresh, optimizer=fresh_opt)
    status = restored.restore(tp.latest_checkpoint(directory))
    status.assert_consumed()  # every value in the checkpoint found its object

    for old, new in zip(model.variables(), fresh.variables(), strict=True):
        assert np.array_equal(old.numpy(), new.numpy())
    print("restored:")
    print(f"  layer 0 kernel[0] = {fresh.layers[0].kernel.numpy()[0]}")
    print(f"  vocab             = {fresh.vocab.numpy().tolist()}")
    print(f"  momentum of bias  = {fresh_opt.get_slot(fresh.layers[1].bias, 'momentum').numpy()}")  # type: ignore[union-attr]
    print(f"  save_counter      = {int(restored.save_counter.numpy())}")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(tmp)
