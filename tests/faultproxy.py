"""A fault-injecting HTTP reverse proxy for the S3 and GCS tests.

The proxy listens on a free port of 127.0.0.1 and forwards every request to
one upstream server (moto or fake-gcs-server), except where a :class:`Rule`
says otherwise: answer with an error status, wait first, drop the connection
before or *after* forwarding (the store applied the request but the client
never heard back), or cut a response body short. Rules match by method and a
regular expression on the path and query, and fire on the Nth matching
request for a number of consecutive matches.

Every request is recorded (:attr:`FaultProxy.requests`), so tests can also
count requests, e.g. to check that many small tensors do not turn into one
request each, and when each was served (:attr:`FaultProxy.spans`), so tests
can check that requests went out together (:meth:`FaultProxy.peak_in_flight`).

Example::

    with FaultProxy(s3_endpoint) as proxy:
        proxy.add(Rule("PUT", r"\\.index", action="status", status=503, times=2))
        opts = {**s3_storage_options, "endpoint_url": proxy.url}
"""

from __future__ import annotations

import http.client
import re
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Literal
from urllib.parse import urlsplit

__all__ = ["FaultProxy", "Rule", "Seen", "Span"]

Action = Literal["status", "delay", "drop", "drop_after_forward", "truncate", "stall"]

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)


@dataclass
class Rule:
    """One fault.

    Parameters
    ----------
    method
        HTTP method to match (``None``: any).
    path
        Regular expression searched in the request target (path and query).
    action
        ``"status"``: answer ``status`` without forwarding. ``"delay"``: sleep
        ``delay`` seconds, then forward. ``"drop"``: close the connection
        without forwarding. ``"drop_after_forward"``: forward, then close
        without answering. ``"truncate"``: forward, answer with the full
        ``Content-Length`` but only half the body, then close. ``"stall"``:
        hold the request ``delay`` seconds (or until the proxy stops), then
        close without forwarding -- a store that hangs while a client is killed.
    nth
        The first matching request (1-based) the rule fires on.
    times
        How many consecutive matching requests it fires on (from ``nth``).
    body_match
        Optional regular expression the request body must also contain (GCS
        single-request uploads name the object only in the body).
    """

    method: str | None
    path: str
    action: Action = "status"
    status: int = 503
    delay: float = 0.0
    nth: int = 1
    times: int = 1
    body: bytes = b"<Error><Code>ServiceUnavailable</Code><Message>injected by faultproxy</Message></Error>"
    content_type: str = "application/xml"
    body_match: bytes | None = None
    seen: int = field(default=0, init=False)
    fired: int = field(default=0, init=False)

    def matches(self, method: str, target: str, body: bytes) -> bool:
        return (
            (self.method is None or self.method == method)
            and re.search(self.path, target) is not None
            and (self.body_match is None or re.search(self.body_match, body) is not None)
        )


@dataclass(frozen=True)
class Seen:
    """A request that reached the proxy, and the fault it got (``None``: forwarded untouched)."""

    method: str
    target: str
    fault: Action | None


class _Server(ThreadingHTTPServer):
    # The default backlog of 5 would hold back a client opening many connections at once: the rest wait
    # for the kernel's SYN retry (a second), and requests sent together would look sent one by one.
    request_queue_size = 128


@dataclass(frozen=True)
class Span:
    """When a request was being served (``time.monotonic`` seconds), to tell requests in flight together."""

    method: str
    target: str
    start: float
    end: float


class FaultProxy:
    """Threaded reverse proxy with fault rules; use as a context manager."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"upstream must be http://host:port, got {upstream!r}")
        self.upstream = upstream.rstrip("/")
        self._host = parts.hostname
        self._port = parts.port
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self.requests: list[Seen] = []
        self.spans: list[Span] = []
        self._stopping = threading.Event()
        self._server = _Server(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        # A short poll interval: shutdown() waits for the serving loop to notice.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="faultproxy", daemon=True
        )

    # ------------------------------------------------------------ control
    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def add(self, rule: Rule) -> Rule:
        """Install ``rule``; returns it so tests can read ``fired`` later."""
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        """Remove all rules and forget recorded requests."""
        with self._lock:
            self._rules.clear()
            self.requests.clear()
            self.spans.clear()

    def count(self, method: str | None = None, path: str = "") -> int:
        """How many recorded requests match ``method`` and the ``path`` regex."""
        with self._lock:
            return sum(1 for s in self.requests if (method is None or s.method == method) and re.search(path, s.target))

    def peak_in_flight(self, method: str | None = None, path: str = "") -> int:
        """The most requests matching ``method`` and the ``path`` regex that were served at the same time."""
        with self._lock:
            spans = [s for s in self.spans if (method is None or s.method == method) and re.search(path, s.target)]
        # Ends sort before starts at the same instant: back-to-back requests do not overlap.
        events = sorted([(s.start, 1) for s in spans] + [(s.end, -1) for s in spans])
        peak = current = 0
        for _, step in events:
            current += step
            peak = max(peak, current)
        return peak

    def _decide(self, method: str, target: str, body: bytes) -> Rule | None:
        with self._lock:
            chosen = None
            for rule in self._rules:
                if rule.matches(method, target, body):
                    rule.seen += 1
                    if chosen is None and rule.nth <= rule.seen < rule.nth + rule.times:
                        rule.fired += 1
                        chosen = rule
            self.requests.append(Seen(method, target, None if chosen is None else chosen.action))
            return chosen

    # ------------------------------------------------------------ serving
    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
                pass  # keep test output clean

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = bytearray()
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return bytes(out)
                        out += self.rfile.read(size)
                        self.rfile.readline()
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _drop(self) -> None:
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

            def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
                conn = http.client.HTTPConnection(proxy._host, proxy._port, timeout=120)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                    headers["Content-Length"] = str(len(body))
                    conn.request(self.command, self.path, body=body, headers=headers)
                    r = conn.getresponse()
                    data = r.read()
                    return r.status, r.reason, r.getheaders(), data
                finally:
                    conn.close()

            def _handle(self) -> None:
                started = time.monotonic()
                try:
                    self._serve()
                finally:
                    with proxy._lock:
                        proxy.spans.append(Span(self.command, self.path, started, time.monotonic()))

            def _serve(self) -> None:
                body = self._body()
                rule = proxy._decide(self.command, self.path, body)
                action = rule.action if rule is not None else None
                if rule is not None and action == "stall":
                    proxy._stopping.wait(rule.delay)
                if rule is not None and action in ("drop", "stall"):
                    self._drop()
                    return
                if rule is not None and action == "status":
                    self.send_response(rule.status)
                    self.send_header("Content-Type", rule.content_type)
                    self.send_header("Content-Length", str(len(rule.body)))
                    self.end_headers()
                    if self.command != "HEAD":  # a HEAD answer has headers only
                        self.wfile.write(rule.body)
                    return
                if rule is not None and action == "delay":
                    time.sleep(rule.delay)
                status, reason, headers, data = self._forward(body)
                if action == "drop_after_forward":
                    self._drop()
                    return
                self.send_response(status, reason)
                for k, v in headers:
                    kl = k.lower()
                    if kl in _HOP_BY_HOP or (kl == "content-length" and self.command != "HEAD"):
                        continue
                    if kl == "location":
                        # Resumable-upload sessions must come back through the proxy too.
                        v = v.replace(proxy.upstream, proxy.url)
                    self.send_header(k, v)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if action == "truncate":
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self._drop()
                    return
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _handle

        return Handler


def kill_when_fired(proc: subprocess.Popen[bytes], rule: Rule, what: str, timeout: float = 60.0) -> None:
    """SIGKILL ``proc`` once ``rule`` has fired (a request of it is being held), as a crash there would.

    Fails the test if ``proc`` exits first or ``rule`` does not fire within ``timeout`` seconds;
    ``what`` names the request in those messages.
    """
    try:
        deadline = time.monotonic() + timeout
        while rule.fired == 0:
            assert proc.poll() is None, f"the writer exited before {what}"
            assert time.monotonic() < deadline, f"the writer never reached {what}"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
