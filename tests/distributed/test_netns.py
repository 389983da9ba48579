"""Beyond one machine, by simulation: every rank in its own network namespace, S3 reachable only over veth.

The test creates (as root, with ``ip netns``) one namespace per rank and one for the
moto S3 server, each joined by a veth pair to a bridge in a hub namespace of its own,
so nothing is added to the test process's namespace and parallel runs cannot clash
(every name carries a random tag). Network namespaces isolate the network only, so
each process also gets a mount namespace with private ``/tmp`` and ``/dev/shm``
(empty tmpfs mounts; only the folders holding the interpreter, the installed sources
and the tests are bound back in when they live there, as in a clone under /tmp): a rank
sees no other rank's temporary files or shared memory, and reaches the others and the
object store only over its veth address. Two ranks
save row slices of one tensor to S3; three ranks restore another partitioning.
"""

from __future__ import annotations

import ctypes
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from ranks import HERE, needs_torch

pytestmark = [needs_torch, pytest.mark.slow]

SUBNET = "10.211.0"  # private to this run's namespaces: the same subnet in parallel runs never meets
MOTO_PORT = 5000
MASTER_PORT = 29500  # rank 0's namespace is this run's alone: no port can be taken there


def _die_with_parent() -> None:
    # Between fork and exec: a rank or server must not outlive a killed test process.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")


class Namespaces:
    """Network namespaces named ``tp<tag><role>``, each with one veth address in ``SUBNET``.0/24."""

    def __init__(self, roles: Sequence[str]) -> None:
        self.tag = uuid.uuid4().hex[:6]
        self.roles = list(roles)
        self.hub = f"tp{self.tag}h"
        self.created: list[str] = []
        self.procs: list[subprocess.Popen[bytes]] = []

    def ns(self, role: str) -> str:
        return f"tp{self.tag}{role}"

    def ifname(self, role: str) -> str:
        return f"tp{self.tag}a{self.roles.index(role)}"

    def address(self, role: str) -> str:
        return f"{SUBNET}.{10 + self.roles.index(role)}"

    def __enter__(self) -> Namespaces:
        try:
            _ip("netns", "add", self.hub)
        except RuntimeError as exc:
            pytest.skip(f"cannot create network namespaces here: {exc}")
        self.created.append(self.hub)
        try:
            _ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.hub, "link", "set", "br0", "up")
            for i, role in enumerate(self.roles):
                ns, inner, outer = self.ns(role), self.ifname(role), f"tp{self.tag}b{i}"
                _ip("netns", "add", ns)
                self.created.append(ns)
                # Created in this namespace, then both ends moved out at once: nothing stays here.
                _ip("link", "add", inner, "type", "veth", "peer", "name", outer)
                _ip("link", "set", inner, "netns", ns)
                _ip("link", "set", outer, "netns", self.hub)
                _ip("-n", self.hub, "link", "set", outer, "master", "br0")
                _ip("-n", self.hub, "link", "set", outer, "up")
                _ip("-n", ns, "addr", "add", f"{self.address(role)}/24", "dev", inner)
                _ip("-n", ns, "link", "set", inner, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise
        return self

    def popen(self, role: str, cmd: Sequence[str], env: dict[str, str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Run ``cmd`` in the namespace of ``role``, with a private ``/tmp`` and ``/dev/shm`` of its own."""
        argv = ["ip", "netns", "exec", self.ns(role), "unshare", "--mount", "--propagation", "private"]
        proc = subprocess.Popen(
            [*argv, "sh", "-c", _private_tmp(_kept()), "sh", *cmd],
            env=env,
            cwd="/",
            preexec_fn=_die_with_parent,
            **kwargs,
        )
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        errors = []
        for ns in reversed(self.created):  # deleting a namespace deletes its veth ends and the bridge
            try:
                _ip("netns", "del", ns)
            except RuntimeError as exc:
                errors.append(str(exc))
        self.created.clear()
        assert not errors, errors

    def __exit__(self, *exc: object) -> None:
        self.close()


PRIVATE = ("/tmp", "/dev/shm")


def _kept() -> list[str]:
    """The folders under /tmp or /dev/shm that the ranks need: this interpreter's, the tests', the imports'.

    A clone in /tmp (CI clones into /tmp/cc) holds the virtualenv, the editable install's sources and
    the tests; each top folder under /tmp or /dev/shm that holds one of them is kept.
    """
    needed = [sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable)), str(HERE), *sys.path]
    kept: list[str] = []
    for path in needed:
        path = os.path.realpath(path) if path else ""
        for root in PRIVATE:
            if path.startswith(root + "/"):
                top = os.path.join(root, path[len(root) + 1 :].split("/")[0])
                if os.path.isdir(top) and top not in kept:
                    kept.append(top)
    return kept


def _private_tmp(kept: list[str]) -> str:
    """A shell prelude: empty tmpfs mounts on /tmp and /dev/shm, with the ``kept`` folders bound back in.

    Each kept folder is opened (a file descriptor from 3 on) before the tmpfs hides it, then bound from
    that descriptor onto the same path in the new mount (``--no-canonicalize``: the source is the
    descriptor's folder, not the path it names, which the tmpfs now covers). Nothing is created outside
    this mount namespace.
    """
    if len(kept) > 7:
        raise AssertionError(f"more folders to keep than file descriptors 3-9: {kept}")
    fds = list(range(3, 3 + len(kept)))
    lines = ["set -e"]
    lines += [f"exec {fd}<{shlex.quote(path)}" for fd, path in zip(fds, kept, strict=True)]
    lines += [f"mount -t tmpfs tp {root}" for root in PRIVATE]
    for fd, path in zip(fds, kept, strict=True):
        lines.append(f"mkdir -p {shlex.quote(path)}")
        lines.append(f"mount --no-canonicalize --bind /proc/self/fd/{fd} {shlex.quote(path)}")
    lines += [f"exec {fd}<&-" for fd in fds]
    lines.append('exec "$@"')
    return "\n".join(lines)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(TMPDIR="/tmp", PYTHONPATH=os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]), **extra)
    env.pop("S3_UPLOAD_PART_MIN_SIZE", None)  # S3's real 5 MiB minimum part size
    return env


_WAIT_FOR_MOTO = """
import sys, time, urllib.request
url = sys.argv[1]
deadline = time.monotonic() + 60
while True:
    try:
        urllib.request.urlopen(url + "/moto-api/", timeout=2).read()
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.1)
urllib.request.urlopen(urllib.request.Request(url + "/" + sys.argv[2], method="PUT"), timeout=10).read()
"""


def _run_ranks(net: Namespaces, roles: list[str], case: str, **kwargs: Any) -> list[Any]:
    """Run ``cases.<case>`` on one rank per namespace of ``roles`` (rank i in ``roles[i]``); their values."""
    procs = []
    for rank, role in enumerate(roles):
        env = _env(
            RANK=str(rank),
            WORLD_SIZE=str(len(roles)),
            MASTER_ADDR=net.address(roles[0]),
            MASTER_PORT=str(MASTER_PORT),
            GLOO_SOCKET_IFNAME=net.ifname(role),
        )
        cmd = [sys.executable, str(HERE / "_netns_rank.py"), case, json.dumps(kwargs)]
        procs.append(net.popen(role, cmd, env, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    values = []
    for rank, proc in enumerate(procs):
        out, err = proc.communicate(timeout=180)
        if proc.returncode != 0:
            raise AssertionError(f"rank {rank} of {case} exited with {proc.returncode}:\n{err.decode()[-3000:]}")
        values.append(json.loads(out.decode().strip().splitlines()[-1]))
    return values


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="creating network namespaces needs root")
@pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2's ip (ip netns)")
def test_ranks_in_separate_network_namespaces_save_and_restore_through_s3() -> None:
    roles = ["s3", "r0", "r1", "r2"]
    with Namespaces(roles) as net:
        endpoint = f"http://{net.address('s3')}:{MOTO_PORT}"
        net.popen(
            "s3",
            [sys.executable, "-m", "moto.server", "-H", net.address("s3"), "-p", str(MOTO_PORT)],
            _env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        bucket = "netns"
        waiter = net.popen("r0", [sys.executable, "-c", _WAIT_FOR_MOTO, endpoint, bucket], _env())
        assert waiter.wait(90) == 0, "moto did not come up in its namespace"
        # This process's namespace has no interface of the run and no address in its subnet (its routes may
        # lead somewhere, but not into these namespaces): only the veths connect the ranks and S3.
        here = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True, check=True).stdout
        assert f"tp{net.tag}" not in here and f" {SUBNET}." not in here

        storage = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
        prefix = f"s3://{bucket}/run/ckpt"
        rows, cols = 300, 64
        written = _run_ranks(
            net, ["r0", "r1"], "partitioned_write", prefix=prefix, rows=rows, cols=cols, storage_options=storage
        )
        assert written == [prefix, prefix]
        read = _run_ranks(
            net,
            ["r0", "r1", "r2"],
            "partitioned_read",
            prefix=prefix,
            rows=rows,
            cols=cols,
            storage_options=storage,
        )
        for rank, r in enumerate(read):
            assert r["same"], f"rank {rank} of 3 restored other values than the 2 ranks saved"
            assert r["read"] <= 1.1 * r["needed"], (rank, r)
