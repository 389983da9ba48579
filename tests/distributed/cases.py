"""What the ranks of the distributed tests run: each function is a case, called on every rank with the context.

Cases return plain data (compared by the test process) or raise; see ranks.py.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from typing import Any

import numpy as np

import trackpoint as tp
from trackpoint.distributed import Coordinator


@dataclass
class Context:
    framework: str
    rank: int
    world_size: int

    def coordinator(self, timeout: float = 30.0) -> Coordinator:
        if self.framework == "torch":
            return tp.distributed.TorchCoordinator(timeout=timeout)
        return tp.distributed.JaxCoordinator(timeout=timeout)


def _options(ctx: Context, timeout: float = 30.0, **kwargs: Any) -> tp.CheckpointOptions:
    return tp.CheckpointOptions(coordinator=ctx.coordinator(timeout), **kwargs)


def _model(seed: int, sizes: list[int]) -> tp.AutoTrackable:
    """The same model on every rank (replicated values): ``v0 .. vN`` of the given sizes, values from ``seed``."""
    rng = np.random.default_rng(seed)
    model = tp.AutoTrackable()
    for i, n in enumerate(sizes):
        setattr(model, f"v{i}", tp.Variable(rng.standard_normal(n).astype(np.float32)))
    model.step = tp.Variable(np.int64(seed))
    return model


def _values(model: tp.AutoTrackable, count: int) -> list[list[float]]:
    return [getattr(model, f"v{i}").numpy().tolist() for i in range(count)]


# ----------------------------------------------------------------- coordinator
def identity(ctx: Context) -> list[int]:
    c = ctx.coordinator()
    return [c.rank, c.world_size]


def collectives(ctx: Context) -> dict[str, Any]:
    c = ctx.coordinator()
    gathered = c.all_gather(f"rank{c.rank}".encode() * (c.rank + 1))
    sent = c.broadcast(b"\x00from-root\xff" if c.rank == 0 else None)
    from_last = c.broadcast(b"last" if c.rank == c.world_size - 1 else None, root=c.world_size - 1)
    c.barrier()
    big = c.all_gather(bytes([c.rank]) * 3_000_000)
    return {
        "gathered": [g.decode() for g in gathered],
        "sent": sent.hex(),
        "from_last": from_last.decode(),
        "big": [len(b) == 3_000_000 and b[:1] == bytes([r]) for r, b in enumerate(big)],
    }


def late_rank(ctx: Context, absent: int, timeout: float) -> str:
    """Every rank but ``absent`` joins an all-gather; they must time out, not hang."""
    import time

    c = ctx.coordinator(timeout)
    if ctx.rank == absent:
        # Join after the others gave up, so that every rank has taken part in the collective.
        time.sleep(timeout + 1.0)
        c.all_gather(b"x")
        return "late"
    c.all_gather(b"x")
    return "joined"


def set_if_absent_race(ctx: Context, key: str) -> list[str]:
    """Every rank records its own value under one key at once; each gets the recorded one, twice."""
    c = ctx.coordinator()
    c.barrier()
    first = c.set_if_absent(key, f"rank{ctx.rank}".encode())
    again = c.set_if_absent(key, b"late")
    c.barrier()
    return [first.decode(), again.decode()]


# ------------------------------------------------------------------- save/restore
def save_and_restore(
    ctx: Context,
    directory: str,
    sizes: list[int],
    seed: int = 1,
    storage_options: dict[str, Any] | None = None,
    backend: str | None = None,
    max_shard_bytes: int | None = None,
) -> dict[str, Any]:
    """Every rank saves the same model with ``Checkpoint.save``, then restores it into a fresh one."""
    extra: dict[str, Any] = {"storage_options": storage_options or {}, "backend": backend}
    if max_shard_bytes is not None:
        extra["max_shard_bytes"] = max_shard_bytes
    options = _options(ctx, **extra)
    model = _model(seed, sizes)
    ckpt = tp.Checkpoint(model=model)
    path = ckpt.save(f"{directory}/ckpt", options=options)
    fresh = _model(seed + 100, sizes)
    status = tp.Checkpoint(model=fresh).restore(path, options=options)
    status.assert_consumed()
    latest = tp.latest_checkpoint(
        directory, tp.CheckpointOptions(storage_options=storage_options or {}, backend=backend)
    )
    return {
        "path": path,
        "latest": latest,
        "same": _values(fresh, len(sizes)) == _values(model, len(sizes)),
        "step": int(fresh.step.numpy()),
    }


def write_then_fail(
    ctx: Context,
    prefix: str,
    failing: int,
    sizes: list[int],
    seed: int,
    storage_options: dict[str, Any] | None = None,
    backend: str | None = None,
) -> str:
    """Rank ``failing`` fails while writing its shard (an injected storage error); everyone must raise."""
    from trackpoint.backends.bundle import BundleBackend
    from trackpoint.backends.zarr import ZarrBackend

    model = _model(seed, sizes)
    originals = {cls: cls.write_shard for cls in (BundleBackend, ZarrBackend)}

    def broken(self: Any, prefix: str, spec: Any, items: Any) -> Any:
        raise tp.StorageError(f"disk full while writing shard {spec.shard_id} (injected on rank {ctx.rank})")

    if ctx.rank == failing:
        for cls in originals:
            cls.write_shard = broken  # type: ignore[method-assign]
    try:
        options = _options(ctx, storage_options=storage_options or {}, backend=backend)
        return tp.Checkpoint(model=model).write(prefix, options=options)
    finally:
        for cls, method in originals.items():
            cls.write_shard = method  # type: ignore[method-assign]


def write(
    ctx: Context,
    prefix: str,
    sizes: list[int],
    seed: int,
    storage_options: dict[str, Any] | None = None,
    timeout: float = 30.0,
    backend: str | None = None,
) -> str:
    model = _model(seed, sizes)
    options = _options(ctx, timeout, storage_options=storage_options or {}, backend=backend)
    return tp.Checkpoint(model=model).write(prefix, options=options)


def read(
    ctx: Context,
    prefix: str,
    sizes: list[int],
    seed: int,
    storage_options: dict[str, Any] | None = None,
    backend: str | None = None,
) -> bool:
    """Restore ``prefix`` into a fresh model and check it holds the values of ``_model(seed)``."""
    fresh = _model(seed + 1000, sizes)
    options = _options(ctx, storage_options=storage_options or {}, backend=backend)
    # A checkpoint from save() also holds a save_counter: every object here must be matched, not every value.
    tp.Checkpoint(model=fresh).read(prefix, options=options).assert_existing_objects_matched()
    return _values(fresh, len(sizes)) == _values(_model(seed, sizes), len(sizes))


def write_and_die(
    ctx: Context,
    prefix: str,
    dying: int,
    sizes: list[int],
    seed: int,
    timeout: float,
    storage_options: dict[str, Any] | None = None,
    backend: str | None = None,
) -> str:
    """Rank ``dying`` is SIGKILLed in the middle of writing its shard; the others must raise within ``timeout``."""
    model = _model(seed, sizes)
    if ctx.rank == dying:
        from trackpoint.backends.bundle import _writer

        original = _writer.write_data

        def dying_write(files: Any, path: str, items: Any, **kwargs: Any) -> Any:
            original(files, path, items[: len(items) // 2], **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)

        # The commit strategies call it through the module, so this one patch reaches every save.
        _writer.write_data = dying_write  # type: ignore[assignment]
    options = _options(ctx, timeout, storage_options=storage_options or {}, backend=backend)
    return tp.Checkpoint(model=model).write(prefix, options=options)


def write_slowly(
    ctx: Context, prefix: str, slow: int, step: str, delay: float, sizes: list[int], seed: int, timeout: float
) -> str:
    """Rank ``slow`` takes ``delay`` seconds longer in ``step`` (``"write"`` its shards, or ``"commit"``)."""
    import time

    from trackpoint.backends.bundle import BundleBackend

    name = {"write": "write_shard", "commit": "commit"}[step]
    original = getattr(BundleBackend, name)

    def slowed(self: Any, *args: Any, **kwargs: Any) -> Any:
        time.sleep(delay)
        return original(self, *args, **kwargs)

    if ctx.rank == slow:
        setattr(BundleBackend, name, slowed)
    try:
        return tp.Checkpoint(model=_model(seed, sizes)).write(prefix, options=_options(ctx, timeout))
    finally:
        setattr(BundleBackend, name, original)


def write_late_then_again(
    ctx: Context, prefix: str, late: int, delay: float, sizes: list[int], timeout: float
) -> list[list[str]]:
    """Rank ``late`` reaches the first save's planning step ``delay`` s after the others; then every rank saves again.

    Returns per save ``["ok", path]`` or ``[error class, message]``.
    """
    import time

    outcomes = []
    for attempt in (1, 2):
        if attempt == 1 and ctx.rank == late:
            time.sleep(delay)
        try:
            path = tp.Checkpoint(model=_model(attempt, sizes)).write(prefix, options=_options(ctx, timeout))
            outcomes.append(["ok", path])
        except tp.CheckpointError as exc:
            outcomes.append([type(exc).__name__, str(exc)])
    return outcomes


def different_paths(ctx: Context, directory: str) -> str:
    return tp.Checkpoint(model=_model(1, [4])).write(f"{directory}/rank{ctx.rank}", options=_options(ctx))


def mismatched(ctx: Context, prefix: str) -> str:
    """The ranks hold one key with different shapes."""
    return tp.Checkpoint(model=_model(1, [4 + ctx.rank])).write(prefix, options=_options(ctx))


def restore_different_paths(ctx: Context, directory: str) -> list[float]:
    """Two checkpoints on every rank; rank 1 restores the other one. Every rank must fail, restoring nothing."""
    for seed in (1, 2):
        tp.Checkpoint(model=_model(seed, [4])).write(f"{directory}/ckpt-{seed}", options=_options(ctx))
    model = _model(3, [4])
    path = f"{directory}/ckpt-2" if ctx.rank != 1 else f"{directory}/ckpt-1"
    try:
        tp.Checkpoint(model=model).read(path, options=_options(ctx))
    except tp.CoordinationError as exc:
        assert "the ranks restore different checkpoints" in str(exc), exc
        return _values(model, 1)[0]  # as it was: nothing was restored
    raise AssertionError("the restore of different checkpoints was not refused")


def restore_not_fitting_on_one_rank(ctx: Context, directory: str) -> str:
    """Rank 1's model does not fit the checkpoint every rank restores; every rank must fail."""
    model = _model(1, [4 if ctx.rank != 1 else 5])
    tp.Checkpoint(model=model).restore(f"{directory}/ckpt-1", options=_options(ctx))
    return "restored"


# ------------------------------------------------------------------------ manager
def manager_run(
    ctx: Context, directory: str, saves: int, max_to_keep: int, storage_options: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A manager on every rank: restore_or_initialize, ``saves`` saves; what each rank's manager reports."""
    options = _options(ctx, storage_options=storage_options or {})
    model = _model(7, [16, 8])
    ckpt = tp.Checkpoint(model=model)
    manager = tp.CheckpointManager(ckpt, directory, max_to_keep=max_to_keep, options=options)
    restored = manager.restore_or_initialize()
    paths = []
    for _ in range(saves):
        model.step.assign_add(1)
        paths.append(manager.save())
    manager.close()
    return {
        "restored": restored,
        "step": int(model.step.numpy()),
        "paths": paths,
        "checkpoints": manager.checkpoints,
        "latest": manager.latest_checkpoint,
    }


class _FlakyState:
    """State saved through its state dict, whose ``state_dict()`` raises when told to."""

    def __init__(self) -> None:
        self.fail = False
        self.value = np.zeros(2, np.float32)

    def state_dict(self) -> dict[str, Any]:
        if self.fail:
            raise RuntimeError("state_dict() failed on this rank")
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = np.asarray(state["value"])


def a_rank_fails_before_its_save(ctx: Context, directory: str, how: str, asynchronous: bool) -> dict[str, Any]:
    """Three saves; the second fails on rank 1 alone, before its save begins; what every rank saw and stored."""
    model = _model(7, [4])
    extra = _FlakyState()
    options = _options(ctx, timeout=10.0, enable_async=asynchronous)
    manager = tp.CheckpointManager(
        tp.Checkpoint(model=model, extra=extra), directory, max_to_keep=None, options=options
    )
    outcomes = []
    for step in (1, 2, 3):
        model.step.assign(np.int64(step))
        extra.value = np.full(2, float(step), np.float32)
        extra.fail = how == "state_dict" and ctx.rank == 1 and step == 2
        number: Any = -1 if how == "number" and ctx.rank == 1 and step == 2 else step
        try:
            manager.save(checkpoint_number=number)
            manager.sync()
            outcomes.append("saved")
        except tp.CheckpointError as exc:
            outcomes.append(type(exc).__name__)
    manager.close()
    stored = {
        os.path.basename(path): [
            int(tp.load_variable(path, "model/step/.ATTRIBUTES/VARIABLE_VALUE")),
            float(tp.load_variable(path, "extra/.ATTRIBUTES/value")[0]),
        ]
        for path in manager.checkpoints
    }
    return {"outcomes": outcomes, "stored": stored}


def manager_reload(ctx: Context, directory: str) -> dict[str, Any]:
    """Two saves; rank 0 removes the newest behind the managers' backs; every rank's view after ``reload()``."""
    manager = tp.CheckpointManager(
        tp.Checkpoint(model=_model(7, [4])), directory, max_to_keep=None, options=_options(ctx)
    )
    paths = [manager.save(), manager.save()]
    if ctx.rank == 0:
        tp.remove_checkpoint(paths[-1])  # before rank 0 enters reload(), which the others wait for
    manager.reload()
    manager.close()
    return {"checkpoints": manager.checkpoints, "latest": manager.latest_checkpoint}


def manager_delete(ctx: Context, directory: str) -> dict[str, Any]:
    """Three saves, then every rank deletes the latest: rank 0 deletes, every rank adopts its record."""
    manager = tp.CheckpointManager(
        tp.Checkpoint(model=_model(7, [4])), directory, max_to_keep=None, options=_options(ctx)
    )
    paths = [manager.save(), manager.save(), manager.save()]
    manager.delete(paths[-1])
    manager.close()
    return {"checkpoints": manager.checkpoints, "latest": manager.latest_checkpoint}


def async_manager_run(ctx: Context, directory: str, saves: int) -> dict[str, Any]:
    """Async manager saves on every rank, values changed right after each returns; what ended up stored."""
    model = _model(7, [16, 8])
    manager = tp.CheckpointManager(
        tp.Checkpoint(model=model), directory, max_to_keep=2, options=_options(ctx, enable_async=True)
    )
    paths = []
    for i in range(saves):
        model.step.assign(np.int64(100 + i))
        paths.append(manager.save())
        # While each rank's writer thread runs the collective save: must not reach the checkpoint.
        model.step.assign(np.int64(-1))
    manager.sync()
    stored = [int(tp.load_variable(p, "model/step/.ATTRIBUTES/VARIABLE_VALUE")) for p in manager.checkpoints]
    manager.close()
    return {"paths": paths, "checkpoints": manager.checkpoints, "latest": manager.latest_checkpoint, "steps": stored}


def async_saves_with_preemption_checks(ctx: Context, directory: str, steps: int) -> dict[str, Any]:
    """A training loop: an async manager save every step and a coordinated preemption check between them.

    The writer thread's save collectives and the main thread's checks use one
    coordinator at the same time, as ``save_on_sigterm(..., coordinator=)``
    with async saves does.
    """
    from trackpoint.preemption import save_on_sigterm

    coordinator = ctx.coordinator(30.0)
    model = _model(11, [4096])
    options = tp.CheckpointOptions(coordinator=coordinator, enable_async=True)
    manager = tp.CheckpointManager(tp.Checkpoint(model=model), directory, max_to_keep=2, options=options)
    handler = save_on_sigterm(manager, coordinator=coordinator, exit_after=False)
    try:
        for step in range(steps):
            model.step.assign(np.int64(step))
            manager.save()
            for _ in range(20):
                handler.check()
        manager.sync()
    finally:
        handler.uninstall()
        manager.close()
    latest = manager.latest_checkpoint or ""
    return {
        "checkpoints": manager.checkpoints,
        "step": int(tp.load_variable(latest, "model/step/.ATTRIBUTES/VARIABLE_VALUE")),
    }


def async_saves_when_busy_raise(ctx: Context, directory: str, steps: int) -> dict[str, Any]:
    """An async save each step with ``async_when_busy="raise"``, skipping the step's save when refused.

    Rank 1's saves end 50 ms after rank 0's, as a rank that reads the outcome later (or a loaded host)
    has them end: rank 0 would start saves that rank 1 skips.
    """
    import time

    coordinator = ctx.coordinator(10.0)
    if ctx.rank == 1:
        leave = coordinator._leave  # type: ignore[attr-defined]

        def late(*args: Any) -> None:
            leave(*args)
            time.sleep(0.05)

        coordinator._leave = late  # type: ignore[attr-defined]
    model = _model(3, [1000])
    options = tp.CheckpointOptions(coordinator=coordinator, enable_async=True, async_when_busy="raise")
    manager = tp.CheckpointManager(tp.Checkpoint(model=model), directory, max_to_keep=3, options=options)
    started, skipped = [], 0
    for step in range(steps):
        model.step.assign(np.int64(step))
        try:
            started.append(step if manager.save() else None)
        except tp.SaveInProgressError:
            skipped += 1
        time.sleep(0.01)
    manager.sync()
    manager.close()
    return {"started": started, "checkpoints": manager.checkpoints, "skipped": skipped > 0}


# ---------------------------------------------------------------------- partitioned values
def _part(ctx: Context, rows: int, cols: int, fill: bool) -> tp.AutoTrackable:
    """This rank's rows of ``table`` (row-partitioned over the ranks) and the replicated ``bias``."""
    a, b = rows * ctx.rank // ctx.world_size, rows * (ctx.rank + 1) // ctx.world_size
    full = np.arange(rows * cols, dtype=np.float32).reshape(rows, cols)
    model = tp.AutoTrackable()
    info = tp.SaveSliceInfo("table", full_shape=[rows, cols], var_offset=[a, 0], var_shape=[b - a, cols])
    model.table = tp.Variable(full[a:b].copy() if fill else np.zeros((b - a, cols), np.float32), save_slice_info=info)
    model.bias = tp.Variable(np.arange(cols, dtype=np.float32) if fill else np.zeros(cols, np.float32))
    return model


def partitioned_write(
    ctx: Context,
    prefix: str,
    rows: int,
    cols: int,
    storage_options: dict[str, Any] | None = None,
    backend: str | None = None,
) -> str:
    options = _options(ctx, storage_options=storage_options or {}, backend=backend)
    return tp.Checkpoint(model=_part(ctx, rows, cols, fill=True)).write(prefix, options=options)


def partitioned_read(
    ctx: Context,
    prefix: str,
    rows: int,
    cols: int,
    storage_options: dict[str, Any] | None = None,
    backend: str | None = None,
) -> dict[str, Any]:
    """Restore this rank's rows; check them and count the data bytes read from local files or S3."""
    from trackpoint.backends.stores import LocalFiles
    from trackpoint.backends.stores.s3 import S3Files

    counted = [0]
    read_into, read_ranges, get_range = LocalFiles.read_into, LocalFiles.read_ranges, S3Files.object_get_range

    def count_into(self: Any, path: str, offset: int, out: memoryview) -> None:
        counted[0] += out.nbytes if ".data-" in path else 0
        read_into(self, path, offset, out)

    def count_ranges(self: Any, path: str, ranges: Any) -> None:
        counted[0] += sum(o.nbytes for _, o in ranges) if ".data-" in path else 0
        read_ranges(self, path, ranges)

    async def count_get(self: Any, bucket: str, key: str, start: int, out: memoryview) -> None:
        counted[0] += out.nbytes if ".data-" in key else 0
        await get_range(self, bucket, key, start, out)

    LocalFiles.read_into, LocalFiles.read_ranges = count_into, count_ranges  # type: ignore[method-assign]
    S3Files.object_get_range = count_get  # type: ignore[method-assign]
    try:
        model = _part(ctx, rows, cols, fill=False)
        options = _options(ctx, storage_options=storage_options or {}, backend=backend)
        tp.Checkpoint(model=model).read(prefix, options=options).assert_consumed()
    finally:
        LocalFiles.read_into, LocalFiles.read_ranges = read_into, read_ranges  # type: ignore[method-assign]
        S3Files.object_get_range = get_range  # type: ignore[method-assign]
    want = _part(ctx, rows, cols, fill=True)
    return {
        "same": bool(np.array_equal(model.table.numpy(), want.table.numpy()))
        and bool(np.array_equal(model.bias.numpy(), want.bias.numpy())),
        "read": counted[0],
        "needed": int(model.table.numpy().nbytes + model.bias.numpy().nbytes),
    }


def _gradient(rows: int, cols: int) -> np.ndarray:
    """A gradient for the whole table that differs row by row."""
    return (np.arange(rows * cols, dtype=np.float32).reshape(rows, cols) % 7) - 3.0


def partitioned_train_write(
    ctx: Context, prefix: str, rows: int, cols: int, storage_options: dict[str, Any] | None = None
) -> str:
    """One SGD momentum step on this rank's rows (and the replicated bias), then a save with the slots."""
    from trackpoint.optimizer import SGD

    model = _part(ctx, rows, cols, fill=True)
    a, b = rows * ctx.rank // ctx.world_size, rows * (ctx.rank + 1) // ctx.world_size
    opt = SGD(0.5, momentum=0.9)
    opt.apply_gradients([(_gradient(rows, cols)[a:b], model.table), (np.ones(cols, np.float32), model.bias)])
    options = _options(ctx, storage_options=storage_options or {})
    return tp.Checkpoint(model=model, opt=opt).write(prefix, options=options)


def partitioned_train_read(
    ctx: Context, prefix: str, rows: int, cols: int, storage_options: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Restore this rank's rows and their momentum slot (created on restore) into a fresh model and SGD."""
    from trackpoint.optimizer import SGD

    model = _part(ctx, rows, cols, fill=False)
    opt = SGD(0.5, momentum=0.9)
    options = _options(ctx, storage_options=storage_options or {})
    tp.Checkpoint(model=model, opt=opt).read(prefix, options=options).assert_consumed()
    a, b = rows * ctx.rank // ctx.world_size, rows * (ctx.rank + 1) // ctx.world_size
    grad = _gradient(rows, cols)[a:b]
    full = np.arange(rows * cols, dtype=np.float32).reshape(rows, cols)[a:b]
    slot = opt.get_slot(model.table, "momentum")
    assert slot is not None
    return {
        "table": bool(np.allclose(model.table.numpy(), full - 0.5 * grad)),
        "slot": bool(np.array_equal(slot.numpy(), grad)),
        "slot_slice": None if slot.save_slice_info is None else slot.save_slice_info.spec,
        "iterations": int(opt.iterations.numpy()),
    }


def manager_state_file_fails(ctx: Context, directory: str, timeout: float = 30.0) -> dict[str, Any]:
    """Save once; rank 0's state file then cannot be written (a directory is in its place); save; repair; save.

    Returns each save's ``["ok", path]`` or ``[error class, message]`` and what the manager reports after it.
    """
    import shutil
    from pathlib import Path

    manager = tp.CheckpointManager(
        tp.Checkpoint(model=_model(7, [16])), directory, max_to_keep=2, options=_options(ctx, timeout)
    )
    state_file = Path(directory) / "checkpoint"
    out: dict[str, Any] = {"saves": [], "latest": [], "checkpoints": []}
    for attempt in range(3):
        if ctx.rank == 0 and attempt == 1:
            # A real failing condition: os.replace cannot put the new state file over a non-empty directory.
            state_file.unlink()
            state_file.mkdir()
            (state_file / "blocker").write_text("x")
        if ctx.rank == 0 and attempt == 2:
            shutil.rmtree(state_file)
        try:
            out["saves"].append(["ok", manager.save()])
        except tp.CheckpointError as exc:
            out["saves"].append([type(exc).__name__, str(exc)])
        out["latest"].append(manager.latest_checkpoint)
        out["checkpoints"].append(manager.checkpoints)
    manager.close()
    return out


def manager_rank0_late_to_record(ctx: Context, directory: str, delay: float, timeout: float) -> dict[str, Any]:
    """Rank 0's write callback takes ``delay`` s (longer than ``timeout``) at the second save, between its commit
    and the state-file update; then every rank saves once more."""
    import time

    slow = [False]

    def callback() -> None:
        if slow[0]:
            time.sleep(delay)

    callbacks = [callback] if ctx.rank == 0 else None
    manager = tp.CheckpointManager(
        tp.Checkpoint(model=_model(7, [16])),
        directory,
        max_to_keep=3,
        options=_options(ctx, timeout, experimental_write_callbacks=callbacks),
    )
    out: dict[str, Any] = {"saves": [], "latest": []}
    for attempt in range(3):
        slow[0] = attempt == 1
        try:
            out["saves"].append(["ok", manager.save()])
        except tp.CheckpointError as exc:
            out["saves"].append([type(exc).__name__, str(exc)])
        out["latest"].append(manager.latest_checkpoint)
    manager.close()
    return out


# ------------------------------------------------------------- JAX arrays across processes
def jax_global_arrays(ctx: Context, directory: str) -> dict[str, Any]:
    """A JAX array replicated over the processes is saved from each one's copy (see jax_array_cases for sharded)."""
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.array(jax.devices()), ("x",))
    data = np.arange(8.0, dtype=np.float32)

    def global_array(spec: PartitionSpec, values: np.ndarray) -> Any:
        return jax.make_array_from_callback(values.shape, NamedSharding(mesh, spec), lambda index: values[index])

    replicated = global_array(PartitionSpec(), data)
    path = tp.Checkpoint(w=replicated).save(f"{directory}/ckpt", options=_options(ctx))
    target = tp.Checkpoint(w=global_array(PartitionSpec(), np.zeros(8, np.float32)))
    target.restore(path, options=_options(ctx)).assert_consumed()
    restored = target.w
    return {
        "fully_addressable": bool(replicated.is_fully_addressable),
        "values": np.asarray(restored.addressable_data(0)).tolist(),
        "same_sharding": restored.sharding == replicated.sharding,
    }
