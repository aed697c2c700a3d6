"""The resource waits out throttling, says so on stderr, and gives up in bounded time.

The registry here is a fake: a tiny loopback HTTP server of the test's own, because
a real registry cannot be made to answer 429 or 503 on demand. It speaks just enough
of the distribution API for a tag-mode check (``GET /v2/``, ``HEAD`` a manifest).
"""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from test_concourse_support import resource

DIGEST = "sha256:" + "c" * 64


class FakeRegistry(BaseHTTPRequestHandler):
    """Answers HEAD manifest with the queued statuses, then 200."""

    plan: ClassVar[list[tuple[int, dict[str, str]]]] = []
    heads = 0

    def log_message(self, *args):  # keep the test output quiet
        del args

    def _answer(self, status, headers):
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        self._answer(200, {"Docker-Distribution-API-Version": "registry/2.0"})

    def do_HEAD(self):
        type(self).heads += 1
        if type(self).plan:
            status, headers = type(self).plan.pop(0)
            self._answer(status, headers)
            return
        self._answer(
            200,
            {
                "Docker-Content-Digest": DIGEST,
                "Content-Type": "application/vnd.oci.image.manifest.v1+json",
            },
        )


@pytest.fixture
def fake_registry():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeRegistry)
    FakeRegistry.plan = []
    FakeRegistry.heads = 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_429_with_retry_after_is_waited_out_and_announced(fake_registry):
    FakeRegistry.plan = [(429, {"Retry-After": "1"})]
    request = {"source": {"repository": f"{fake_registry}/app", "tag": "t"}}
    started = time.monotonic()
    result = resource("check", request)
    elapsed = time.monotonic() - started
    assert json.loads(result.stdout) == [{"tag": "t", "digest": DIGEST}]
    assert "HTTP 429" in result.stderr
    assert "waiting 1.0s and retrying" in result.stderr
    assert elapsed >= 1.0
    assert FakeRegistry.heads == 2


def test_a_registry_that_stays_down_fails_in_one_line_after_bounded_tries(
    fake_registry,
):
    FakeRegistry.plan = [(503, {"Retry-After": "0"})] * 20
    request = {"source": {"repository": f"{fake_registry}/app", "tag": "t"}}
    result = resource("check", request, check=False)
    assert result.returncode == 1
    assert result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1
    assert "failed after 6 tries" in errors[0]
    assert FakeRegistry.heads == 6
