"""One rank of a :class:`ranks.Ranks` group: joins the process group, then runs cases until told to stop.

Usage (by ranks.py only): _worker.py FRAMEWORK RANK WORLD_SIZE GROUP_PORT HOST:PORT AUTHKEY_HEX
"""

from __future__ import annotations

import ctypes
import importlib
import signal
import sys
import time
import traceback
from multiprocessing.connection import Client


def _die_with_parent() -> None:
    # A worker must not outlive a test process that was killed.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


def main() -> None:
    framework, rank_s, world_s, group_port, address, key = sys.argv[1:7]
    rank, world = int(rank_s), int(world_s)
    _die_with_parent()
    host, port = address.rsplit(":", 1)
    conn = Client((host, int(port)), authkey=bytes.fromhex(key))
    conn.send(rank)
    try:
        if framework == "torch":
            import datetime

            import torch.distributed as dist

            dist.init_process_group(
                "gloo",
                init_method=f"tcp://127.0.0.1:{group_port}",
                rank=rank,
                world_size=world,
                timeout=datetime.timedelta(seconds=60),
            )
        elif framework == "jax":
            import os

            import jax

            if os.environ.get("TP_TEST_JAX_RECOVERABLE") == "1":
                jax.config.update("jax_enable_recoverability", True)
            jax.distributed.initialize(
                coordinator_address=f"127.0.0.1:{group_port}",
                num_processes=world,
                process_id=rank,
                initialization_timeout=60,
                heartbeat_timeout_seconds=int(os.environ.get("TP_TEST_JAX_HEARTBEAT", "10")),
            )
        import cases
    except BaseException:
        conn.send(traceback.format_exc())
        raise
    conn.send("ready")
    ctx = cases.Context(framework, rank, world)
    while True:
        message = conn.recv()
        if message is None:
            break
        case, kwargs = message
        start = time.monotonic()
        try:
            # "module:function" runs a case kept in another module of this folder (imported on first use).
            module, _, name = case.rpartition(":")
            value = getattr(importlib.import_module(module) if module else cases, name)(ctx, **kwargs)
            reply = (rank, value, None, time.monotonic() - start)
        except Exception as exc:  # noqa: BLE001 - every failure of a case goes back to the test process
            reply = (rank, None, (type(exc).__name__, f"{exc}\n{traceback.format_exc()}"), time.monotonic() - start)
        conn.send(reply)
    if framework == "torch":
        import torch.distributed as dist

        dist.destroy_process_group()
    conn.close()


if __name__ == "__main__":
    main()
