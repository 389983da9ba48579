"""Real process groups for the distributed tests: N worker processes that run test cases on command.

Starting a rank costs seconds (importing torch or jax), so a :class:`Ranks`
group is started once and runs many cases: the test process sends a case name
and arguments to every rank and collects each rank's result or error. The
workers form a real ``torch.distributed`` group (gloo on 127.0.0.1) or a real
``jax.distributed`` job, and talk to the test process over local sockets.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, Listener
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent

HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_JAX = importlib.util.find_spec("jax") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="needs torch: pip install 'trackpoint[torch]'")
needs_jax = pytest.mark.skipif(not HAS_JAX, reason="needs jax: pip install 'trackpoint[jax]'")
WORKER = HERE / "_worker.py"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Result:
    """What one rank's case returned (``value``) or raised (``error``: class name and message)."""

    rank: int
    value: Any = None
    error: tuple[str, str] | None = None
    elapsed: float = 0.0

    def unwrap(self) -> Any:
        if self.error is not None:
            raise AssertionError(f"rank {self.rank} raised {self.error[0]}: {self.error[1]}")
        return self.value


class _StartFailed(Exception):
    """A group's start-up failed in a way that says nothing about the code under test."""


class Ranks:
    """``world_size`` worker processes forming one group of ``framework`` (``"torch"`` or ``"jax"``).

    ``env`` adds to the workers' environment; for JAX, ``TP_TEST_JAX_HEARTBEAT`` sets
    ``heartbeat_timeout_seconds`` (default 10) and ``TP_TEST_JAX_RECOVERABLE=1`` turns on
    ``jax_enable_recoverability``.
    """

    def __init__(
        self, world_size: int, framework: str = "torch", *, timeout: float = 60.0, env: dict[str, str] | None = None
    ) -> None:
        self.world_size = world_size
        self.framework = framework
        extra_env = env or {}
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
        env.setdefault("JAX_PLATFORMS", "cpu")
        env.update(extra_env)
        # On a machine loaded by other test workers, a rank now and then never gets going (a process that does not
        # reach its first line within the group's start-up time-out: torch's rendezvous then reports "5/6 clients
        # joined"). That says nothing about trackpoint, so a group that fails to start is started afresh, once.
        for attempt in (1, 2):
            try:
                self._start(world_size, framework, env, timeout)
                return
            except _StartFailed as exc:
                if attempt == 2:
                    raise RuntimeError(
                        f"the group of {world_size} {framework} ranks did not start, twice: {exc}"
                    ) from exc

    def _start(self, world_size: int, framework: str, env: dict[str, str], timeout: float) -> None:
        self._key = os.urandom(16)
        # A backlog for every rank: with multiprocessing's default of 1, ranks connecting while this process is
        # still starting the others have their connection attempts dropped, and the kernel's retries back off
        # past the group's start-up time-out on a loaded machine (seen as "5/6 clients joined").
        self._listener = Listener(("127.0.0.1", 0), authkey=self._key, backlog=world_size)
        host, port = self._listener.address
        group_port = free_port()
        self.procs: list[subprocess.Popen[bytes]] = []
        for rank in range(world_size):
            cmd = [
                sys.executable,
                str(WORKER),
                framework,
                str(rank),
                str(world_size),
                str(group_port),
                f"{host}:{port}",
                self._key.hex(),
            ]
            self.procs.append(subprocess.Popen(cmd, env=env))
        self.conns: list[Connection | None] = [None] * world_size
        try:
            self._accept_all(timeout)
            for rank, conn in enumerate(self.conns):
                assert conn is not None
                if not conn.poll(timeout):
                    raise _StartFailed(f"rank {rank} did not finish starting within {timeout} s")
                try:
                    ready = conn.recv()
                except (EOFError, OSError) as exc:
                    raise _StartFailed(f"rank {rank} exited while starting ({exc!r})") from exc
                if ready != "ready":
                    raise _StartFailed(f"rank {rank} failed to start: {ready}")
        except BaseException:
            self.close()
            raise

    def _accept_all(self, timeout: float) -> None:
        """Accept every rank's connection, failing (not hanging) when one exits or does not connect in time."""
        # multiprocessing's Listener offers no time-out: its listening socket gets one, to look at the ranks between.
        self._listener._listener._socket.settimeout(1.0)  # type: ignore[attr-defined]
        deadline = time.monotonic() + timeout
        while any(conn is None for conn in self.conns):
            try:
                conn = self._listener.accept()
            except TimeoutError:
                waiting = [r for r, c in enumerate(self.conns) if c is None]
                exited = {r: self.procs[r].poll() for r in waiting if self.procs[r].poll() is not None}
                if exited:
                    raise _StartFailed(f"rank(s) exited before connecting, with status {exited}") from None
                if time.monotonic() > deadline:
                    raise _StartFailed(f"rank(s) {waiting} did not connect within {timeout} s") from None
                continue
            self.conns[conn.recv()] = conn

    def run(self, case: str, *, wait: float = 120.0, ranks: list[int] | None = None, **kwargs: Any) -> list[Result]:
        """Run ``cases.<case>(ctx, **kwargs)`` on every rank; the results by rank (waiting up to ``wait`` s)."""
        wanted = list(range(self.world_size)) if ranks is None else ranks
        for r in wanted:
            conn = self.conns[r]
            assert conn is not None, f"rank {r} is gone"
            conn.send((case, kwargs))
        results = []
        deadline = time.monotonic() + wait
        for r in wanted:
            conn = self.conns[r]
            assert conn is not None
            try:
                ready = conn.poll(max(0.0, deadline - time.monotonic()))
            except (EOFError, OSError):
                ready = True
            if not ready:
                raise TimeoutError(f"rank {r} did not answer case {case!r} within {wait} s")
            try:
                rank, value, error, elapsed = conn.recv()
            except (EOFError, OSError):
                self.conns[r] = None
                results.append(Result(r, error=("died", f"rank {r} exited with {self.procs[r].wait(10)}")))
                continue
            results.append(Result(rank, value, None if error is None else tuple(error), elapsed))
        return results

    def values(self, case: str, **kwargs: Any) -> list[Any]:
        """Run ``case`` on every rank and return the values, failing on any rank's error."""
        return [r.unwrap() for r in self.run(case, **kwargs)]

    def close(self) -> None:
        for conn in self.conns:
            if conn is not None:
                try:
                    conn.send(None)
                except OSError:
                    pass
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
        for conn in self.conns:
            if conn is not None:
                conn.close()
        self._listener.close()

    def __enter__(self) -> Ranks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
