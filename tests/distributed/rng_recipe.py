"""The recipe for per-rank random generators of docs/distributed.md, as the page shows it.

test_rng_recipe.py runs it on real process groups and checks that the page shows exactly the code
below the marker line.
"""

# --- the recipe, as on the page ---
import logging

import numpy as np
import torch

import trackpoint as tp

log = logging.getLogger("train")


class RankGenerators:
    """This rank's random generators (torch's CPU generator and a numpy Generator) in a checkpoint.

    Saved as row ``rank`` of a ``[world_size, n]`` byte table named after the number of ranks, so that a
    checkpoint of N ranks restores on M ranks: rank r takes row r back if the saving job had a rank r,
    and is otherwise re-seeded from (seed, rank, step), which it logs.
    """

    def __init__(self, ckpt: tp.Checkpoint, rng: np.random.Generator, rank: int, world_size: int) -> None:
        self.rng, self.rank, self.world_size = rng, rank, world_size
        row = self.row()
        info = tp.SaveSliceInfo(
            f"generators/{world_size}", full_shape=[world_size, row.size], var_offset=[rank, 0], var_shape=[1, row.size]
        )
        self.table = tp.Variable(row[None], save_slice_info=info)
        # Attached after the restore, which then matches every object of the program; a restore of a
        # checkpoint of the same size fills the table (restore-on-create), and before_save replaces it.
        ckpt.generators = {str(world_size): self.table}

    def row(self) -> np.ndarray:
        """The generators' states as bytes: torch's, then the 37 bytes of numpy's PCG64."""
        state = self.rng.bit_generator.state
        fields = [(state["state"]["state"], 16), (state["state"]["inc"], 16), (state["has_uint32"], 1)]
        numpy_state = b"".join(v.to_bytes(n, "little") for v, n in [*fields, (state["uinteger"], 4)])
        return np.concatenate([torch.get_rng_state().numpy(), np.frombuffer(numpy_state, np.uint8)])

    def set_row(self, row: np.ndarray) -> None:
        size = torch.get_rng_state().numel()
        torch.set_rng_state(torch.from_numpy(row[:size].copy()))
        b = row[size:].tobytes()

        def number(start: int, stop: int) -> int:
            return int.from_bytes(b[start:stop], "little")

        self.rng.bit_generator.state = {
            "bit_generator": "PCG64",
            "state": {"state": number(0, 16), "inc": number(16, 32)},
            "has_uint32": number(32, 33),
            "uinteger": number(33, 37),
        }

    def before_save(self) -> None:
        """Record the generators' states now: call it right before each save."""
        self.table.assign(self.row()[None])

    def after_restore(self, path: str, seed: int, step: int, options: tp.CheckpointOptions | None = None) -> bool:
        """Take this rank's states from the checkpoint restored from ``path``, or re-seed; whether restored."""
        width = self.row().size
        with tp.load_checkpoint(path, options) as reader:  # the storage options of the restore
            saved = [(k, s) for k, s in reader.get_variable_to_shape_map().items() if k.startswith("generators/")]
            if len(saved) == 1 and self.rank < saved[0][1][0] and saved[0][1][1] == width:
                self.set_row(reader.get_slice(saved[0][0], [self.rank, 0], [1, width])[0])  # this row only
                return True
        entropy = [seed, self.rank, step]  # a new stream for this rank, the same on every run
        torch.manual_seed(int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]))
        self.rng.bit_generator.state = np.random.PCG64(np.random.SeedSequence(entropy)).state
        held = ", ".join(f"{s[0]} ranks' states" for _, s in saved) or "no generator states"
        log.warning("rank %d: %s holds %s; re-seeded from (seed %d, rank %d, step %d)", self.rank, path, held, *entropy)
        return False
