"""Saves and restores by 1, 2 and 4 torch.distributed ranks against raw writes and reads of the same bytes.

The state is ``--vars`` float32 matrices of ``--size-mib`` in total, each partitioned by rows across the
ranks (``Variable(value, save_slice_info=SaveSliceInfo(...))``): every rank holds 1/N of it. Per round,
interleaved over the configurations:

* ``save``: every rank of an N-rank group calls ``Checkpoint.write`` with a ``TorchCoordinator``; the
  time is the slowest rank's (the save ends when the last rank returns). ``raw write``: every rank
  writes its share to one file (fsync) or one object, started together after a barrier: the figure the
  save is compared with. Aggregate throughput = total bytes / that time.
* ``restore N->M``: an M-rank group restores the checkpoint written by N ranks, each rank into its
  own 1/M of the rows; page cache dropped first (local disk). ``raw read``: every rank reads its share
  back from the raw write of the same M ranks. Bytes read per rank are counted at the store (data files
  only) and compared with the bytes the rank needed.
* ``coordination``: a tiny save (one scalar) by 4 coordinated ranks against the same save by one
  process without a coordinator, ``--tiny-reps`` times; the difference of the medians is the time the
  protocol costs per save.

Peak memory per rank is the highest RSS a sampling thread saw during the operation, minus the RSS just
before it (the rank's state is allocated before). Command and figures: docs/performance.md.

Usage: python benchmarks/bench_distributed.py [--size-mib 2048] [--s3-size-mib 256] [--rounds 3]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any

MiB = 1 << 20
COLS = 1024


# ------------------------------------------------------------------------------------------------ worker
class _Peak:
    """Highest RSS seen by a sampling thread while active (the op's extra memory = peak - start)."""

    def __init__(self) -> None:
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())
        return self.peak - self.start


class _Counter:
    """Bytes read from data files, counted at the stores' read calls (local files and S3 ranged GETs)."""

    data = 0

    @classmethod
    def install(cls) -> None:
        from trackpoint.backends.stores import LocalFiles
        from trackpoint.backends.stores.s3 import S3Files

        read_into, read_ranges, get_range = LocalFiles.read_into, LocalFiles.read_ranges, S3Files.object_get_range

        def counted_read_into(self: Any, path: str, offset: int, out: memoryview) -> None:
            if ".data-" in path:
                cls.data += out.nbytes
            read_into(self, path, offset, out)

        def counted_read_ranges(self: Any, path: str, ranges: Any) -> None:
            if ".data-" in path:
                cls.data += sum(o.nbytes for _, o in ranges)
            read_ranges(self, path, ranges)

        async def counted_get_range(self: Any, bucket: str, key: str, start: int, out: memoryview) -> None:
            if ".data-" in key:
                cls.data += out.nbytes
            await get_range(self, bucket, key, start, out)

        LocalFiles.read_into = counted_read_into  # type: ignore[method-assign]
        LocalFiles.read_ranges = counted_read_ranges  # type: ignore[method-assign]
        S3Files.object_get_range = counted_get_range  # type: ignore[method-assign]


def _rows(total_rows: int, rank: int, world: int) -> tuple[int, int]:
    return total_rows * rank // world, total_rows * (rank + 1) // world


def _arrays(spec: dict[str, Any], rank: int, world: int, fill: bool) -> list[Any]:
    """This rank's rows of every variable; rows [a, b) of variable i hold ``row index + i``."""
    import numpy as np

    a, b = _rows(spec["rows"], rank, world)
    out = []
    for i in range(spec["vars"]):
        value = np.zeros((b - a, COLS), np.float32)
        if fill:
            value[:] = np.arange(a, b, dtype=np.float32)[:, None] + i
        out.append(value)
    return out


def _state(spec: dict[str, Any], rank: int, world: int, fill: bool) -> Any:
    """This rank's slices of every variable, as partitioned ``Variable`` objects of one model."""
    import trackpoint as tp

    model = tp.AutoTrackable()
    rows = spec["rows"]
    a, b = _rows(rows, rank, world)
    for i, value in enumerate(_arrays(spec, rank, world, fill)):
        info = tp.SaveSliceInfo(f"v{i}", full_shape=[rows, COLS], var_offset=[a, 0], var_shape=[b - a, COLS])
        setattr(model, f"v{i}", tp.Variable(value, save_slice_info=info))
    return model


def _raw_path(spec: dict[str, Any], rank: int) -> str:
    return f"{spec['base']}/raw-{spec['world']}/rank{rank}.bin"


def worker(rank: int, world: int, group_port: int, address: str, key: str) -> None:
    import datetime

    import numpy as np
    import torch.distributed as dist
    from _common import drop_cache, touch_memory

    import trackpoint as tp
    from trackpoint.distributed import TorchCoordinator

    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{group_port}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=600),
    )
    coordinator = TorchCoordinator(timeout=600)
    _Counter.install()
    host, port = address.rsplit(":", 1)
    conn = Client((host, int(port)), authkey=bytes.fromhex(key))
    while (message := conn.recv()) is not None:
        op, spec = message
        spec = {**spec, "world": world}
        options = tp.CheckpointOptions(coordinator=coordinator, storage_options=spec.get("storage_options", {}))
        fs = None
        if spec["base"].startswith("s3://"):
            import s3fs

            fs = s3fs.S3FileSystem(
                endpoint_url=spec["storage_options"]["endpoint_url"],
                key="testing",
                secret="testing",
                skip_instance_cache=True,
                use_listings_cache=False,
            )
        out: dict[str, Any] = {"rank": rank}
        if op == "tiny":
            ckpt = tp.Checkpoint(v=tp.Variable(np.float32(rank)))
            plain = tp.CheckpointOptions(storage_options=spec.get("storage_options", {}))
            times = []
            for i in range(spec["reps"]):
                coordinator.barrier()
                t0 = time.perf_counter()
                ckpt.write(f"{spec['base']}/tiny-{world}-{i}", options=options if spec["coordinated"] else plain)
                coordinator.barrier()
                times.append(time.perf_counter() - t0)
            out["times"] = times
            conn.send(out)
            continue
        fill = op in ("save", "raw_write")
        raw = op.startswith("raw")
        # Raw I/O moves plain arrays; saves and restores go through the model's variables.
        model = None if raw else _state(spec, rank, world, fill)
        values = (
            _arrays(spec, rank, world, fill) if raw else [getattr(model, f"v{i}").value for i in range(spec["vars"])]
        )
        needed = sum(v.nbytes for v in values)
        scratch = None
        if spec["base"].startswith("/"):
            if op == "raw_read":
                drop_cache([_raw_path(spec, rank)])
            if op == "restore":
                drop_cache(str(p) for p in Path(spec["prefix"]).parent.glob(Path(spec["prefix"]).name + ".data-*"))
            # The page cache's pages for the operation, as the other benchmarks touch them before saves and
            # cold reads, but held across the barrier and freed only once every rank is there (see
            # touch_memory): a rank that waited for the others would otherwise write or read into memory
            # the hypervisor had taken back.
            scratch = touch_memory(needed)
        coordinator.barrier()
        del scratch
        peak = _Peak()
        _Counter.data = 0
        t0 = time.perf_counter()
        if op == "save":
            tp.Checkpoint(model=model).write(spec["prefix"], options=options)
        elif op == "restore":
            tp.Checkpoint(model=model).read(spec["prefix"], options=options).assert_consumed()
        elif op == "raw_write":
            path = _raw_path(spec, rank)
            if fs is None:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                for v in values:
                    view = memoryview(v.reshape(-1).view(np.uint8))
                    while view:
                        view = view[os.write(fd, view) :]
                os.fsync(fd)
                os.close(fd)
            else:
                with fs.open(path, "wb", block_size=64 * MiB) as f:
                    for v in values:
                        f.write(memoryview(v.reshape(-1).view(np.uint8)))
        elif op == "raw_read":
            path = _raw_path(spec, rank)
            if fs is None:
                with open(path, "rb", buffering=0) as f:
                    for v in values:
                        view = memoryview(v.reshape(-1).view(np.uint8))
                        while view:
                            view = view[f.readinto(view) :]
            else:
                with fs.open(path, "rb", block_size=64 * MiB) as f:
                    for v in values:
                        f.readinto(memoryview(v.reshape(-1).view(np.uint8)))
            _Counter.data = needed
        elapsed = time.perf_counter() - t0
        out.update(seconds=elapsed, extra_memory=peak.stop(), read=_Counter.data, needed=needed)
        if op == "restore":
            a, _ = _rows(spec["rows"], rank, world)
            values = [getattr(model, f"v{i}").value for i in range(spec["vars"])]
            out["correct"] = all(
                float(v[0, 0]) == a + i and float(v[-1, -1]) == a + len(v) - 1 + i for i, v in enumerate(values)
            )
        # Free this op's state before the next one allocates its own (a checkpoint and its load status
        # may hold the model in reference cycles until the collector runs).
        del model, values
        gc.collect()
        coordinator.barrier()
        conn.send(out)
    conn.close()
    dist.destroy_process_group()


# ------------------------------------------------------------------------------------------------ driver
class Group:
    """N worker processes forming one gloo group, commanded over local sockets."""

    def __init__(self, world: int) -> None:
        import socket

        self.world = world
        key = os.urandom(16)
        self._listener = Listener(("127.0.0.1", 0), authkey=key)
        host, port = self._listener.address
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            group_port = s.getsockname()[1]
        self.procs = [
            subprocess.Popen(
                [sys.executable, __file__, "--worker", str(r), str(world), str(group_port), f"{host}:{port}", key.hex()]
            )
            for r in range(world)
        ]
        conns = [self._listener.accept() for _ in range(world)]
        self.conns: list[Connection] = conns

    def run(self, op: str, spec: dict[str, Any]) -> list[dict[str, Any]]:
        for c in self.conns:
            c.send((op, spec))
        results = [c.recv() for c in self.conns]
        return sorted(results, key=lambda r: r["rank"])

    def close(self) -> None:
        for c in self.conns:
            c.send(None)
        for p in self.procs:
            p.wait(60)
        self._listener.close()


def _med(values: list[float]) -> str:
    return f"{statistics.median(values):7.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=2048, help="state on local disk, MiB (default 2048)")
    parser.add_argument("--s3-size-mib", type=int, default=256, help="state on the S3 emulator, MiB; 0 skips S3")
    parser.add_argument("--vars", type=int, default=8)
    parser.add_argument("--ranks", default="1,2,4")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tiny-reps", type=int, default=20)
    parser.add_argument("--dir", default=None, help="local directory (default: a temporary one)")
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        rank, world, port, address, key = args.worker
        worker(int(rank), int(world), int(port), address, key)
        return 0
    ranks = [int(n) for n in args.ranks.split(",")]
    local = Path(args.dir or tempfile.mkdtemp(prefix="tp-bench-dist-", dir="/var/tmp"))
    stores: list[tuple[str, str, dict[str, Any], int]] = [("local", str(local), {}, args.size_mib)]
    moto = None
    if args.s3_size_mib:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from servers import make_s3_fs, start_moto

        url, moto = start_moto()
        so = {"endpoint_url": url, "key": "testing", "secret": "testing"}
        make_s3_fs(so).mkdir("bench-dist")
        stores.append(("s3", "s3://bench-dist", so, args.s3_size_mib))
    groups = {n: Group(n) for n in sorted(set(ranks))}
    samples: dict[tuple[str, ...], list[Any]] = {}

    def add(key: tuple[str, ...], value: Any) -> None:
        samples.setdefault(key, []).append(value)

    try:
        for rnd in range(args.rounds):
            for name, base, so, size in stores:
                rows = size * MiB // (args.vars * COLS * 4)
                total = rows * COLS * 4 * args.vars
                spec = {"base": base, "storage_options": so, "rows": rows, "vars": args.vars}
                for n in ranks:
                    prefix = f"{base}/ckpt-n{n}"
                    for op in ("raw_write", "save") if rnd % 2 == 0 else ("save", "raw_write"):
                        res = groups[n].run(op, {**spec, "prefix": prefix})
                        seconds = max(r["seconds"] for r in res)
                        add((name, op, str(n)), total / MiB / seconds)
                        add((name, op + " memory", str(n)), max(r["extra_memory"] for r in res) / MiB)
                for n in ranks:
                    for m in ranks:
                        res = groups[m].run("restore", {**spec, "prefix": f"{base}/ckpt-n{n}"})
                        assert all(r["correct"] for r in res), res
                        seconds = max(r["seconds"] for r in res)
                        add((name, "restore", f"{n}->{m}"), total / MiB / seconds)
                        add((name, "read ratio", f"{n}->{m}"), max(r["read"] / r["needed"] for r in res))
                        add((name, "restore memory", f"{n}->{m}"), max(r["extra_memory"] for r in res) / MiB)
                for m in ranks:
                    res = groups[m].run("raw_read", spec)
                    add((name, "raw_read", str(m)), total / MiB / max(r["seconds"] for r in res))
                print(f"round {rnd + 1}/{args.rounds} {name} done", file=sys.stderr, flush=True)
            if 1 in groups and max(ranks) in groups:
                spec = {"base": str(local / "tiny"), "reps": args.tiny_reps}
                solo = groups[1].run("tiny", {**spec, "coordinated": False})[0]["times"]
                coord = groups[max(ranks)].run("tiny", {**spec, "coordinated": True})[0]["times"]
                add(("local", "tiny solo ms"), statistics.median(solo) * 1000)
                add(("local", f"tiny {max(ranks)} ranks ms"), statistics.median(coord) * 1000)
                add(("local", "coordination ms"), (statistics.median(coord) - statistics.median(solo)) * 1000)
    finally:
        for g in groups.values():
            g.close()
        if moto is not None:
            from servers import stop_process

            stop_process(moto)
        if args.dir is None:
            shutil.rmtree(local, ignore_errors=True)
    print(f"{'store':6} {'measure':22} {'ranks':6} median (range) over {args.rounds} rounds")
    for key, values in samples.items():
        unit = "MiB/s" if key[1] in ("save", "raw_write", "restore", "raw_read") else ""
        unit = "x" if key[1] == "read ratio" else ("MiB" if "memory" in key[1] else unit)
        label = key[2] if len(key) > 2 else ""
        print(f"{key[0]:6} {key[1]:22} {label:6} {_med(values)} {unit}")
    print(json.dumps({" ".join(k): v for k, v in samples.items()}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
