"""What S3 and GCS errors tell: which limit ended the retries, which bucket is missing, how to give credentials.

Messages say what failed, where, and what to do; these tests hold the "what
to do" to the option or action that would actually change the outcome. Each
runs against the real emulators, or against an endpoint that accepts
connections and never answers.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackpoint as tp
from faultproxy import FaultProxy, Rule
from servers import ObjectStore
from trackpoint.errors import CheckpointNotFoundError, TransientStorageError
from trackpoint.storage import CheckpointOptions

pytestmark = [pytest.mark.timeout(60)]

FAST = {"retry_base_delay": 0.01, "retry_max_delay": 0.05}


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a server that accepts every connection and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return  # the listening socket was closed: the test is over
            accepted.append(conn)  # held open, never read or answered

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()
        for conn in accepted:
            conn.close()
        thread.join(5)


def _options(store: ObjectStore, endpoint: str | None = None, **backend_options: Any) -> CheckpointOptions:
    so = dict(store.storage_options)
    if endpoint is not None:
        so["endpoint_url"] = endpoint
    return CheckpointOptions(storage_options=so, backend_options={**FAST, **backend_options})


# ---------------------------------------------------------------------- retries ended by a limit


def test_silent_endpoint_names_the_deadline_that_ended_the_retries(store: ObjectStore, silent_endpoint: str) -> None:
    """Ten retries allowed, but the deadline leaves time for two attempts: raising ``retries`` would change nothing."""
    opts = _options(store, silent_endpoint, request_timeout=0.5, retries=10, retry_deadline=0.8)
    with pytest.raises(TransientStorageError) as info:
        tp.Checkpoint(w=tp.Variable(np.ones(3))).save(f"{store.scheme}my-bucket/x/ckpt", options=opts)
    message = str(info.value)
    assert re.match(
        rf"{store.name}: \w[\w ]* '{store.scheme}my-bucket/x/[^']*' still failed after \d attempts", message
    )
    assert "each timed out after 0.5 s (backend_options['request_timeout'])" in message
    assert re.search(
        r"the retry_deadline of 0\.8 s \(backend_options\['retry_deadline'\]\) ended the retries with \d of 10 left",
        message,
    )
    assert "check that the store's endpoint is up and answers" in message
    assert "raise backend_options['request_timeout'] if its answers are slow" in message
    assert "backend_options['retry_deadline'] for more attempts" in message
    assert "backend_options['retries']" not in message
    assert "TimeoutError: )" not in message


def test_silent_endpoint_names_the_retries_when_they_ran_out(
    make_files: Any, silent_endpoint: str, store: ObjectStore
) -> None:
    files = make_files(endpoint_url=silent_endpoint, request_timeout=0.3, retries=1, retry_deadline=60, **FAST)
    with pytest.raises(TransientStorageError) as info:
        files.listdir(f"{store.scheme}my-bucket/run")
    message = str(info.value)
    assert message.startswith(f"{store.name}: listing '{store.scheme}my-bucket/run/' still failed after 2 attempts in ")
    assert "each timed out after 0.3 s (backend_options['request_timeout'])" in message
    assert "no retry was left (backend_options['retries'] is 1)" in message
    assert message.endswith(
        "check that the store's endpoint is up and answers, or raise backend_options['request_timeout'] if its "
        "answers are slow, or backend_options['retries'] for more attempts"
    )
    assert "retry_deadline" not in message


def _closed_port() -> str:
    """``http://127.0.0.1:PORT`` where nothing listens: every connection is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


@pytest.mark.parametrize("retries", [0, 1])
def test_a_refused_connection_points_at_the_endpoint(make_files: Any, store: ObjectStore, retries: int) -> None:
    files = make_files(endpoint_url=_closed_port(), retries=retries, retry_deadline=60, **FAST)
    with pytest.raises(TransientStorageError) as info:
        files.listdir(f"{store.scheme}my-bucket/run")
    message = str(info.value)
    tried = "1 attempt in" if retries == 0 else "2 attempts in"
    assert message.startswith(f"{store.name}: listing '{store.scheme}my-bucket/run/' still failed after {tried} ")
    assert (
        "nothing accepted a connection there: check that the store's endpoint is right and its server is running"
        in (message)
    )
    assert "overloaded" not in message


def test_a_host_name_that_does_not_resolve_is_named(make_files: Any, store: ObjectStore) -> None:
    """A typo in the endpoint's host is a failed DNS lookup, not a server that refused the connection."""
    # .invalid is reserved (RFC 2606): no resolver answers it, so the lookup fails at once.
    files = make_files(endpoint_url=f"http://no-such-host.invalid:{_closed_port().rsplit(':', 1)[1]}", retries=1)
    with pytest.raises(TransientStorageError) as info:
        files.listdir(f"{store.scheme}my-bucket/run")
    message = str(info.value)
    assert message.startswith(f"{store.name}: listing '{store.scheme}my-bucket/run/' still failed after 2 attempts ")
    assert "the host name 'no-such-host.invalid' could not be resolved (DNS)" in message
    assert "raise backend_options['retries']" in message
    assert "nothing accepted a connection" not in message and "overloaded" not in message


def test_a_request_timed_out_last_says_after_how_long(make_files: Any, proxy: FaultProxy, store: ObjectStore) -> None:
    """An overloaded store (503) that then stops answering: the empty timeout is shown as the limit it hit."""
    files = make_files(endpoint_url=proxy.url, request_timeout=0.3, retries=1, retry_deadline=60, **FAST)
    # The client is set up by the first request (botocore reads its service model), which a loaded machine
    # may not finish within 0.3 s: that happens before the faults, however many tries it takes.
    for _ in range(20):
        try:
            assert files.listdir(f"{store.bucket}/run") == []
            break
        except TransientStorageError:
            continue
    proxy.add(Rule("GET", store.list_request, action="status", status=503))
    proxy.add(Rule("GET", store.list_request, action="stall", delay=5.0, nth=2, times=10))
    with pytest.raises(TransientStorageError) as info:
        files.listdir(f"{store.bucket}/run")
    message = str(info.value)
    assert "still failed after 2 attempts in " in message
    assert "(timed out after 0.3 s (backend_options['request_timeout'])); no retry was left" in message
    assert message.endswith(
        "the store may be overloaded or unreachable: retry later or raise backend_options['retries']"
    )


# ---------------------------------------------------------------------- missing buckets


def test_reads_of_a_missing_bucket_name_it(files: Any, store: ObjectStore) -> None:
    bucket = f"tp-missing-{uuid.uuid4().hex[:12]}"
    advice = rf"bucket '{bucket}' does not exist.*; create it or correct the URL$"
    with pytest.raises(CheckpointNotFoundError, match=rf"listing '{store.scheme}{bucket}/x/' failed: {advice}"):
        files.listdir(f"{store.scheme}{bucket}/x")
    with pytest.raises(CheckpointNotFoundError, match=rf"reading '{store.scheme}{bucket}/x/a' failed: {advice}"):
        files.read(f"{store.scheme}{bucket}/x/a")
    with pytest.raises(CheckpointNotFoundError, match=rf"reading '{store.scheme}{bucket}/x/a' failed: {advice}"):
        files.read_into(f"{store.scheme}{bucket}/x/a", 0, memoryview(bytearray(4)))


def test_reads_of_a_missing_object_do_not_blame_the_bucket(files: Any, store: ObjectStore) -> None:
    with pytest.raises(CheckpointNotFoundError) as whole:
        files.read(f"{store.bucket}/x/a")
    with pytest.raises(CheckpointNotFoundError) as ranged:
        files.read_into(f"{store.bucket}/x/a", 0, memoryview(bytearray(4)))
    assert str(whole.value) == f"{store.name}: '{store.bucket}/x/a' does not exist"
    assert "failed: the object does not exist" in str(ranged.value)
    assert "bucket" not in str(whole.value) + str(ranged.value).replace(store.bucket, "")


def test_latest_checkpoint_in_a_missing_bucket_names_it(store: ObjectStore) -> None:
    bucket = f"tp-missing-{uuid.uuid4().hex[:12]}"
    with pytest.raises(
        CheckpointNotFoundError,
        match=rf"^{store.name}: listing '{store.scheme}{bucket}/x/' failed: bucket '{bucket}' does not exist .*; "
        "create it or correct the URL$",
    ):
        tp.latest_checkpoint(f"{store.scheme}{bucket}/x", _options(store))
    # A missing directory of an existing bucket is only empty.
    assert tp.latest_checkpoint(f"{store.bucket}/x", _options(store)) is None


# ---------------------------------------------------------------------- credentials


@pytest.mark.s3
def test_s3_without_credentials_says_how_to_give_them(s3_endpoint: str, s3_bucket: str, tmp_path: Path) -> None:
    """No key in the environment, no shared files, no instance metadata: a permission error that says what to set."""
    empty = tmp_path / "empty"
    empty.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_CONFIG_FILE=str(empty), AWS_SHARED_CREDENTIALS_FILE=str(empty), AWS_EC2_METADATA_DISABLED="true")
    script = textwrap.dedent(
        f"""
        import trackpoint as tp
        from trackpoint.errors import StoragePermissionError
        opts = tp.CheckpointOptions(storage_options={{"endpoint_url": {s3_endpoint!r}}})
        try:
            tp.latest_checkpoint({s3_bucket + "/run"!r}, opts)
        except StoragePermissionError as exc:
            print(exc)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    message = done.stdout.strip()
    # Its first request reads the state file "checkpoint", or lists: either way, refused before it was sent.
    assert re.match(rf"s3: \w[\w ]* '{s3_bucket}/run/[^']*' failed \(NoCredentialsError: ", message), message
    for advice in ("no credentials were found", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE",
                   "storage_options={'key': ..., 'secret': ...}", "'anon': True"):  # fmt: skip
        assert advice in message
    # The CLI reports the same error as a permission error.
    cli = subprocess.run(
        [sys.executable, "-m", "trackpoint", "ls", f"{s3_bucket}/run", "-o", f"endpoint_url={s3_endpoint}"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert cli.returncode != 0
    assert "StoragePermissionError: s3: listing" in cli.stderr and "no credentials were found" in cli.stderr


def test_timeouts_of_the_client_library_are_not_blamed_on_request_timeout(
    store: ObjectStore, silent_endpoint: str
) -> None:
    # The client's own read timeout (botocore's config_kwargs for S3) fires long before request_timeout.
    if store.name != "s3":
        pytest.skip("config_kwargs are botocore's")
    opts = _options(store, silent_endpoint, request_timeout=30, retries=1, retry_deadline=60)
    timeouts = {"config_kwargs": {"read_timeout": 0.2, "connect_timeout": 0.2}}
    opts = CheckpointOptions(storage_options={**opts.storage_options, **timeouts}, backend_options=opts.backend_options)
    with pytest.raises(TransientStorageError) as info:
        tp.Checkpoint(w=tp.Variable(np.ones(3))).save(f"{store.scheme}my-bucket/x/ckpt", options=opts)
    message = str(info.value)
    assert "before backend_options['request_timeout'] (30 s): a timeout of the client library fired first" in message
    assert "timed out after 30 s" not in message


def test_a_local_path_given_to_a_store_chosen_by_name_is_refused(
    store: ObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Read as "bucket/key", /tmp/.../ckpt went to a bucket named "tmp" without a word.
    options = CheckpointOptions(backend=store.name, storage_options=store.storage_options)
    prefix = str(tmp_path / "run" / "ckpt")
    bucket = store.bucket.split("://", 1)[1]
    for save in (
        lambda: tp.Checkpoint(v=tp.Variable(np.ones(2, np.float32))).save(prefix, options),
        lambda: tp.Checkpoint(v=tp.Variable(np.ones(2, np.float32))).write(f"{bucket}/ckpt", options),
    ):
        with pytest.raises(
            tp.BackendError, match=rf"no scheme \(a local path, or bucket/key\), where a {store.scheme}"
        ):
            save()
    monkeypatch.setenv("TRACKPOINT_BACKEND", store.name)
    with pytest.raises(tp.BackendError, match="it has no scheme"):
        tp.latest_checkpoint(prefix, CheckpointOptions(storage_options=store.storage_options))
    assert store.raw.ls(bucket) == [] and not (tmp_path / "run").exists()
