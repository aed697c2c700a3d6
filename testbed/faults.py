"""A fault-injecting proxy in front of a real registry, with a request log.

Retry and upload-strategy code must be tested against a registry that misbehaves
on cue, which no real registry does. The proxy keeps the real registry as the
source of truth and only adds the misbehaviour: each ``Fault`` matches requests
by method and path and, for its first ``times`` matches, answers itself (a status
with headers such as ``Retry-After``), answers late, or drops the connection.
Every other request streams through unchanged, both ways, so blob uploads of any
size pass without being held in memory.

The ``Host`` header is forwarded as the client sent it, so the registry builds
upload ``Location`` URLs that point back at the proxy. ``requests`` records every
request (method, path, status, whether a fault answered it, request headers), so
tests can assert what a client did: "HEAD before upload", "no chunked PATCH".
Limitations: the proxy speaks plain HTTP to clients; an ``https`` upstream is
reached with the CA file given.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Self

import httpx

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["Fault", "FaultProxy", "Seen"]

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
    "expect",  # http.server already answered 100-continue to the client
}
_CHUNK = 64 * 1024


@dataclass
class Fault:
    """Answer ``times`` requests matching ``method`` and ``path``, after ``skip``.

    ``skip`` lets the first matching requests through untouched, so a fault can
    land in the middle of a sequence (the third PATCH of a chunked upload).
    """

    path: str = ".*"  # regular expression searched in the request path
    method: str | None = None  # None: any method
    status: int = 503
    times: int = 1
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0  # seconds to wait before answering (or forwarding)
    drop: bool = False  # close the connection without any answer
    forward: bool = False  # after the delay, forward instead of answering
    skip: int = 0
    seen: int = 0  # matching requests so far, skipped ones included
    hits: int = 0  # requests this fault answered

    def matches(self, method: str, path: str) -> bool:
        return (
            self.hits < self.times
            and (self.method is None or self.method == method)
            and re.search(self.path, path) is not None
        )

    def take(self) -> bool:
        """Count one matching request; True when the fault applies to it."""
        self.seen += 1
        if self.seen <= self.skip:
            return False
        self.hits += 1
        return True


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    status: int | None  # None when the connection was dropped
    faulted: bool
    headers: dict[str, str]


class FaultProxy:
    """``FaultProxy(upstream_url, faults)``; ``start()``, ``host``, ``stop()``."""

    def __init__(
        self,
        upstream: str,
        faults: list[Fault] | None = None,
        ca_file: str | None = None,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.faults = list(faults or [])
        self.requests: list[Seen] = []
        self.lock = threading.Lock()
        verify: ssl.SSLContext | bool = True
        if ca_file:
            verify = ssl.create_default_context(cafile=ca_file)
        self.client = httpx.Client(
            verify=verify, trust_env=False, timeout=60, follow_redirects=False
        )
        self.server = _Server(self)
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def start(self) -> Self:
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self._thread is not None:
            self._thread.join(10)
        self.client.close()

    def add(self, fault: Fault) -> Fault:
        with self.lock:
            self.faults.append(fault)
        return fault

    def seen(self, method: str | None = None, path: str = ".*") -> list[Seen]:
        """Recorded requests with that method whose path matches ``path``."""
        with self.lock:
            return [
                s
                for s in self.requests
                if (method is None or s.method == method) and re.search(path, s.path)
            ]

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.matches(method, path) and fault.take():
                    return fault
        return None

    def record(self, seen: Seen) -> None:
        with self.lock:
            self.requests.append(seen)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, proxy: FaultProxy) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.proxy = proxy


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # the request log is ``FaultProxy.requests``

    def do_GET(self) -> None:
        self._handle()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET  # noqa: N815

    def _handle(self) -> None:
        proxy = self.server.proxy
        headers = dict(self.headers.items())
        fault = proxy.take_fault(self.command, self.path)
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        if fault is not None and fault.drop:
            proxy.record(
                Seen(self.command, self.path, None, faulted=True, headers=headers)
            )
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(2)
            return
        if fault is not None and not fault.forward:
            self._drain_body()
            # Recorded before answering: a client that got its answer may look at
            # the log at once.
            proxy.record(
                Seen(
                    self.command, self.path, fault.status, faulted=True, headers=headers
                )
            )
            self.send_response(fault.status)
            for name, value in fault.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(fault.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(fault.body)
            return
        self._forward(
            Seen(self.command, self.path, None, fault is not None, headers=headers)
        )

    def _body(self) -> Iterator[bytes]:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    # Trailer section ends with an empty line.
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return
                yield self.rfile.read(size)
                self.rfile.readline()
        remaining = int(self.headers.get("Content-Length", "0") or "0")
        while remaining > 0:
            data = self.rfile.read(min(_CHUNK, remaining))
            if not data:
                return
            remaining -= len(data)
            yield data

    def _drain_body(self) -> None:
        for _ in self._body():
            pass

    def _forward(self, seen: Seen) -> None:
        proxy = self.server.proxy
        headers = [
            (k, v) for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP
        ]
        length = self.headers.get("Content-Length")
        if length is not None:
            headers.append(("Content-Length", length))
        has_body = (
            length not in (None, "0")
            or "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        )
        request = proxy.client.build_request(
            self.command,
            proxy.upstream + self.path,
            headers=headers,
            content=self._body() if has_body else None,
        )
        try:
            response = proxy.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            proxy.record(dataclasses.replace(seen, status=502))
            message = f"upstream {proxy.upstream} failed: {exc}".encode()
            self.send_response(502)
            self.send_header("Content-Length", str(len(message)))
            self.end_headers()
            self.wfile.write(message)
            return
        proxy.record(dataclasses.replace(seen, status=response.status_code))
        try:
            self._relay(response)
        finally:
            response.close()

    def _relay(self, response: httpx.Response) -> None:
        """Send the upstream's answer on, streaming its body as it arrives."""
        self.send_response_only(response.status_code)
        for name, value in response.headers.multi_items():
            if name.lower() not in _HOP_BY_HOP:
                self.send_header(name, value)
        upstream_length = response.headers.get("Content-Length")
        chunked = upstream_length is None and self.command != "HEAD"
        if upstream_length is not None:
            self.send_header("Content-Length", upstream_length)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if self.command != "HEAD":
            for data in response.iter_raw(_CHUNK):
                if chunked:
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                else:
                    self.wfile.write(data)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
