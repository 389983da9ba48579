"""trackpoint's I/O thread outlives whatever a store's code raises on it, and no request waits on a dead loop.

Every store built without a loop of its own runs its requests on one thread,
``trackpoint-io``. asyncio lets ``KeyboardInterrupt`` and ``SystemExit`` out
of a loop: raised by a client call (in the store's thread pool or on the loop),
they used to end that thread, and every later request of every store in the
process waited for ever. Each scenario runs in a subprocess with a timeout, so
that a hang fails the test instead of the suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
#: Seconds a scenario may take; each takes about one (most of it importing).
LIMIT = 30

PRELUDE = """
import asyncio, json, signal, sys, threading, time
sys.path.insert(0, {here!r})
from test_objectstore_base import AsyncDictStore, DictStore, Flaky
from trackpoint.errors import StorageError

class GiveUp(BaseException):
    '''What gevent.Timeout is: a BaseException, not an Exception.'''

def io_threads():
    return sum(t.name == "trackpoint-io" for t in threading.enumerate())
"""


def scenario(code: str) -> Any:
    """Run ``code`` after :data:`PRELUDE` in a fresh interpreter; what its last line of output says, as JSON."""
    script = PRELUDE.format(here=HERE) + textwrap.dedent(code)
    try:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=LIMIT)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the scenario hung (killed after {LIMIT} s); it had printed: {exc.stdout!r} {exc.stderr!r}")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("store", ["DictStore", "AsyncDictStore"])
def test_a_client_call_raising_a_base_exception_fails_its_request_and_later_requests_run(store: str) -> None:
    # DictStore's put runs in the store's thread pool, AsyncDictStore's on the loop itself.
    results = scenario(f"""
        store = {store}()
        seen = []
        for raised in (SystemExit("client gave up"), KeyboardInterrupt(), GiveUp("gevent-style timeout")):
            store.calls.clear()
            store.fail_next = [raised]
            try:
                store.put("dict://b/k", b"x")
                seen.append("returned")
            except StorageError as exc:
                seen.append([str(exc), exc.__cause__ is raised, len(store.calls)])
            store.put("dict://b/k", b"y")  # the next request runs
            assert store.read("dict://b/k") == b"y"
        print(json.dumps([seen, io_threads()]))
        """)
    failures, io = results
    for (message, chained, attempts), name in zip(failures, ["SystemExit", "KeyboardInterrupt", "GiveUp"], strict=True):
        assert message.startswith(
            f"dict: writing 'dict://b/k' failed: its client call {store}.object_put raised a BaseException that is "
            f"no Exception ({name}"
        ), message
        assert "report this to the store's authors" in message
        assert chained, "the error must be raised from the client call's exception"
        assert attempts == 1, "a BaseException is not the store's answer: it must not be retried"
    assert io == 1, "trackpoint's I/O thread must go on"


def test_ctrl_c_during_a_save_aborts_it_and_stops_the_request_it_waited_for() -> None:
    # The main thread, waiting for a put that hangs, gets Ctrl-C: it must see KeyboardInterrupt, the save must
    # abort (clean up what it wrote), and the put must be cancelled rather than left to go on in the background.
    results = scenario("""
        import numpy as np
        from trackpoint.backends.bundle import BundleBackend
        from trackpoint.storage import WriteItem

        started, cancelled = threading.Event(), threading.Event()

        class Hangs(AsyncDictStore):
            async def object_put(self, bucket, key, data, condition, write_id):
                if not started.is_set():
                    started.set()
                    try:
                        await asyncio.sleep(3600)  # a request that does not come back
                    except asyncio.CancelledError:
                        cancelled.set()
                        raise
                return await super().object_put(bucket, key, data, condition, write_id)

        def ctrl_c():
            # Once the put hangs and the main thread waits for it (not a moment before: a signal there is no
            # interrupted wait).
            main = threading.main_thread().ident
            started.wait(10)
            deadline = time.monotonic() + 10
            while sys._current_frames()[main].f_code.co_name != "wait" and time.monotonic() < deadline:
                time.sleep(0.01)
            signal.pthread_kill(main, signal.SIGINT)

        store = Hangs()
        threading.Thread(target=ctrl_c).start()
        backend = BundleBackend(store)
        try:
            backend.save("dict://b/run/ckpt", [WriteItem("w", np.arange(4.0))])
            got = "returned"
        except KeyboardInterrupt:
            got = "KeyboardInterrupt"
        print(json.dumps([got, cancelled.wait(5), sorted(k for _, k in store.objects)]))
        """)
    assert results == ["KeyboardInterrupt", True, []]


def test_a_keyboard_interrupt_from_a_store_hook_on_the_loop_reaches_its_caller_and_the_loop_goes_on() -> None:
    # classify runs on the loop, outside any client call: asyncio lets its KeyboardInterrupt out of the loop.
    results = scenario("""
        class Interrupts(DictStore):
            def classify(self, exc):
                raise KeyboardInterrupt

        store = Interrupts()
        store.fail_next = [Flaky("503")]
        try:
            store.put("dict://b/k", b"x")
            got = "returned"
        except KeyboardInterrupt:
            got = "KeyboardInterrupt"
        store.put("dict://b/k", b"y")
        print(json.dumps([got, store.read("dict://b/k").decode(), io_threads()]))
        """)
    assert results == ["KeyboardInterrupt", "y", 1]


def test_requests_waiting_on_a_loop_that_ends_fail_and_later_ones_run_on_a_new_one() -> None:
    results = scenario("""
        started = threading.Event()

        class Hangs(AsyncDictStore):
            async def object_put(self, bucket, key, data, condition, write_id):
                if key == "hangs":
                    started.set()
                    await asyncio.sleep(3600)
                return await super().object_put(bucket, key, data, condition, write_id)

        store = Hangs()
        loop = store.loop
        threading.Thread(target=lambda: started.wait(10) and loop.call_soon_threadsafe(loop.stop)).start()
        try:
            store.put("dict://b/hangs", b"x")
            got = "returned"
        except StorageError as exc:
            got = str(exc)
        store.put("dict://b/k", b"y")
        print(json.dumps([got, store.read("dict://b/k").decode(), store.loop is not loop, io_threads()]))
        """)
    message, read, new_loop, io = results
    assert message == (
        "dict: trackpoint's I/O thread (trackpoint-io) ended before a request of this store did; the request may or "
        "may not have reached the store. Retry the operation: later requests start a new I/O thread"
    )
    assert (read, new_loop, io) == ("y", True, 1)
