"""The protocol client: retries, error messages, pagination, upload fallbacks, TLS.

Most tests here talk to a *fake*: a tiny scripted HTTP server of our own on
127.0.0.1 that answers with the statuses a test needs (503 then 200, 429 with
Retry-After, 413 on a monolithic PUT, a short Range, a Link header, an upload
Location on another host). distribution 2.8 never answers that way, so a fake
stands in here; test_registry_copy.py repeats the retry cases against the real
registry behind the test bed's fault proxy. TLS tests use the real TLS registry.
"""

import contextlib
import hashlib
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from platforge.errors import (
    AuthError,
    DigestMismatchError,
    NotFoundError,
    RegistryError,
    TransportError,
)
from platforge.registry import client as client_module
from platforge.registry.auth import Credentials
from platforge.registry.client import RegistryClient
from platforge.registry.reference import is_loopback
from platforge.registry.retry import RetryPolicy, parse_retry_after

FAST = RetryPolicy(attempts=4, base=0.01, max_delay=2.0, max_total=5.0)
MANIFEST = (
    b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}'
)
MANIFEST_DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()


@pytest.fixture(autouse=True)
def _own_docker_config(tmp_path, monkeypatch):
    """Credentials come only from the test, never from the user's docker config."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))


class Script:
    """Answers per (method, path prefix): a list consumed in order, last repeats."""

    def __init__(self):
        self.routes = []
        self.log = []
        self.bodies = []

    def on(self, method, prefix, *answers):
        self.routes.append((method, prefix, list(answers)))

    def answer(self, method, path):
        # The longest matching prefix wins, so "/v2/" does not shadow the rest.
        routes = sorted(self.routes, key=lambda route: -len(route[1]))
        for route_method, prefix, answers in routes:
            if route_method == method and path.startswith(prefix):
                return answers.pop(0) if len(answers) > 1 else answers[0]
        return (404, {}, b'{"errors":[{"code":"NAME_UNKNOWN","message":"no"}]}')


@contextlib.contextmanager
def serve(script):
    """Run a scripted loopback HTTP server for ``script``; set ``script.host``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _handle(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            script.log.append((self.command, self.path, dict(self.headers)))
            script.bodies.append(body)
            status, headers, payload = script.answer(self.command, self.path)
            if callable(payload):
                payload = payload(self)
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        # http.server dispatches on these names.
        do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle  # noqa: N815

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    script.host = f"127.0.0.1:{server.server_address[1]}"
    try:
        yield script
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def fake():
    """A scripted loopback HTTP server (a fake registry; see the module docstring)."""
    script = Script()
    script.on("GET", "/v2/", (200, {}, b"{}"))
    with serve(script):
        yield script


def _manifest_ok():
    return (
        200,
        {
            "Content-Type": "application/vnd.oci.image.manifest.v1+json",
            "Docker-Content-Digest": MANIFEST_DIGEST,
        },
        MANIFEST,
    )


def test_503_then_ok_is_retried(fake):
    fake.on("GET", "/v2/a/manifests/", (503, {}, b""), (503, {}, b""), _manifest_ok())
    with RegistryClient(fake.host, retry=FAST) as client:
        info = client.get_manifest("a", "v1")
    assert info.digest == MANIFEST_DIGEST
    assert [m for m, p, _ in fake.log if "/manifests/" in p] == ["GET"] * 3


def test_429_waits_as_long_as_retry_after_says(fake):
    fake.on("GET", "/v2/a/manifests/", (429, {"Retry-After": "1"}, b""), _manifest_ok())
    started = time.monotonic()
    with RegistryClient(fake.host, retry=FAST) as client:
        client.get_manifest("a", "v1")
    assert time.monotonic() - started >= 0.95


def test_retry_after_beyond_the_total_bound_gives_up_at_once(fake):
    fake.on("GET", "/v2/a/manifests/", (429, {"Retry-After": "3600"}, b""))
    policy = RetryPolicy(attempts=5, base=0.01, max_delay=30, max_total=1.0)
    started = time.monotonic()
    with (
        RegistryClient(fake.host, retry=policy) as client,
        pytest.raises(RegistryError) as info,
    ):
        client.get_manifest("a", "v1")
    assert time.monotonic() - started < 1.0
    assert "429" in str(info.value)
    assert fake.host in str(info.value)


def test_persistent_5xx_ends_in_one_line_error_after_the_last_try(fake):
    fake.on("GET", "/v2/a/manifests/", (500, {}, b'{"errors":[{"code":"X"}]}'))
    with (
        RegistryClient(fake.host, retry=FAST) as client,
        pytest.raises(RegistryError) as info,
    ):
        client.get_manifest("a", "v1")
    message = str(info.value)
    assert "after 4 tries" in message
    assert "\n" not in message
    assert "pull manifest v1" in message
    assert len([p for _, p, _ in fake.log if "/manifests/" in p]) == 4


@pytest.mark.parametrize(
    ("status", "error"),
    [(404, NotFoundError), (400, RegistryError), (403, AuthError), (401, AuthError)],
)
def test_client_errors_are_never_retried(fake, status, error):
    fake.on("GET", "/v2/a/manifests/", (status, {}, b""))
    with RegistryClient(fake.host, retry=FAST) as client, pytest.raises(error):
        client.get_manifest("a", "v1")
    assert len([p for _, p, _ in fake.log if "/manifests/" in p]) == 1


def test_401_says_how_to_log_in(fake):
    challenge = {"WWW-Authenticate": 'Basic realm="r"'}
    fake.on("GET", "/v2/a/manifests/", (401, challenge, b""))
    with RegistryClient(fake.host, retry=FAST) as client, pytest.raises(AuthError) as e:
        client.get_manifest("a", "v1")
    assert str(e.value).endswith(
        f": no credentials found; run `platforge login {fake.host}` or pass "
        "--username and --password-stdin"
    )


def test_connection_refused_is_retried_then_reported(fake):
    client = RegistryClient("127.0.0.1:9", retry=FAST)
    with client, pytest.raises(TransportError) as info:
        client.get_manifest("a", "v1")
    assert "127.0.0.1:9" in str(info.value)
    assert "after 4 tries" in str(info.value)


def test_manifest_with_wrong_digest_is_refused(fake):
    wrong = "sha256:" + "0" * 64
    fake.on(
        "GET",
        "/v2/a/manifests/",
        (200, {"Docker-Content-Digest": wrong, "Content-Type": "x"}, MANIFEST),
    )
    client = RegistryClient(fake.host, retry=FAST)
    with client, pytest.raises(DigestMismatchError, match="corrupt"):
        client.get_manifest("a", "v1")


def test_manifest_get_sends_the_full_accept_list(fake):
    fake.on("GET", "/v2/a/manifests/", _manifest_ok())
    with RegistryClient(fake.host) as client:
        client.get_manifest("a", "v1")
    accept = next(h for m, p, h in fake.log if "/manifests/" in p)["Accept"]
    for media_type in (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ):
        assert media_type in accept


def test_tags_follow_link_headers(fake):
    fake.on(
        "GET",
        "/v2/a/tags/list?n=2&last=b",
        (200, {}, json.dumps({"name": "a", "tags": ["c"]}).encode()),
    )
    fake.on(
        "GET",
        "/v2/a/tags/list",
        (
            200,
            {"Link": '</v2/a/tags/list?n=2&last=b>; rel="next"'},
            json.dumps({"name": "a", "tags": ["a", "b"]}).encode(),
        ),
    )
    with RegistryClient(fake.host) as client:
        assert client.list_tags("a", page_size=2) == ["a", "b", "c"]


def test_tag_list_entries_that_are_no_strings_are_left_out(fake):
    body = {"name": "a", "tags": [1, None, {"a": 1}, "1.0.0", ["x"]]}
    fake.on("GET", "/v2/a/tags/list", (200, {}, json.dumps(body).encode()))
    with RegistryClient(fake.host) as client:
        assert client.list_tags("a") == ["1.0.0"]


def _blob(size):
    data = bytes(range(256)) * (size // 256 + 1)
    data = data[:size]
    return data, "sha256:" + hashlib.sha256(data).hexdigest()


def _upload_routes(fake, *patches, min_chunk="0"):
    fake.on("HEAD", "/v2/a/blobs/", (404, {}, b""))
    fake.on(
        "POST",
        "/v2/a/blobs/uploads/",
        (
            202,
            {"Location": "/v2/a/blobs/uploads/u1", "OCI-Chunk-Min-Length": min_chunk},
            b"",
        ),
    )
    fake.on(
        "PATCH",
        "/v2/a/blobs/uploads/u1",
        *[
            (202, {"Location": "/v2/a/blobs/uploads/u1", "Range": r}, b"")
            for r in patches
        ],
    )


def test_monolithic_put_refused_as_too_large_falls_back_to_chunks(fake):
    data, digest = _blob(10_000)
    _upload_routes(fake, "0-9999")
    # The monolithic PUT is refused; the PUT that ends the chunked upload is not.
    fake.on("PUT", "/v2/a/blobs/uploads/u1?digest", (413, {}, b""), (201, {}, b""))
    with RegistryClient(fake.host, retry=FAST) as client:
        action = client.upload_blob(
            "a", digest, len(data), lambda: contextlib.nullcontext(io.BytesIO(data))
        )
    assert action == "pushed"
    methods = [m for m, p, _ in fake.log if "/blobs/" in p]
    assert methods == ["HEAD", "POST", "PUT", "POST", "PATCH", "PUT"]
    patch_body = fake.bodies[[m for m, _, _ in fake.log].index("PATCH")]
    assert patch_body == data


def test_chunks_honour_min_length_and_resume_from_the_reported_range(fake):
    data, digest = _blob(10_000)
    # The server keeps one byte less than it got, twice: the client resends it.
    _upload_routes(fake, "0-3998", "0-7997", "0-9999", min_chunk="4000")
    fake.on("PUT", "/v2/a/blobs/uploads/u1?digest", (201, {}, b""))
    with RegistryClient(fake.host, retry=FAST, chunk_size=1000) as client:
        client.upload_blob(
            "a", digest, len(data), lambda: contextlib.nullcontext(io.BytesIO(data))
        )
    ranges = [h["Content-Range"] for m, _, h in fake.log if m == "PATCH"]
    assert ranges == ["0-3999", "3999-7998", "7998-9999"]
    bodies = [
        b for (m, _, _), b in zip(fake.log, fake.bodies, strict=True) if m == "PATCH"
    ]
    assert bodies == [data[0:4000], data[3999:7999], data[7998:]]


def test_plain_http_is_allowed_only_for_loopback_or_insecure_registries():
    assert RegistryClient("127.0.0.1:5000").plain_http_allowed
    assert RegistryClient("localhost:5000").plain_http_allowed
    assert not RegistryClient("registry.example:5000").plain_http_allowed
    assert RegistryClient("registry.example:5000", insecure=True).plain_http_allowed
    assert RegistryClient("docker.io").host == "registry-1.docker.io"


@pytest.mark.registry
def test_tls_registry_without_its_ca_is_refused_with_a_hint(registry_tls):
    client = RegistryClient(registry_tls.host, retry=FAST)
    with client, pytest.raises(TransportError) as info:
        client.list_tags("x")
    assert "--ca-file" in str(info.value)
    assert registry_tls.host in str(info.value)


@pytest.mark.registry
def test_tls_registry_is_verified_with_a_ca_file_or_pem_strings(registry_tls):
    for options in (
        {"ca_file": registry_tls.ca_file},
        {"ca_certs": (registry_tls.ca_file.read_text(),)},
        {"insecure": True},
    ):
        with RegistryClient(registry_tls.host, **options) as client:
            assert client.ping() == f"https://{registry_tls.host}"
            with pytest.raises(NotFoundError):
                client.get_manifest("nothing/here", "v1")


@pytest.mark.registry
def test_tls_advice_names_ways_every_command_has(registry_tls):
    client = RegistryClient(registry_tls.host, retry=FAST)
    with client, pytest.raises(TransportError) as info:
        client.ping()
    message = str(info.value)
    assert "PLATFORGE_CA_FILE=" in message
    assert f"/etc/docker/certs.d/{registry_tls.host}/ca.crt" in message
    assert "--insecure" not in message
    assert "\n" not in message


@pytest.mark.registry
def test_tls_ca_from_the_environment_or_a_certs_d_directory_is_trusted(
    registry_tls, tmp_path, monkeypatch
):
    monkeypatch.setenv("PLATFORGE_CA_FILE", str(registry_tls.ca_file))
    with RegistryClient(registry_tls.host) as client:
        assert client.ping() == f"https://{registry_tls.host}"
    monkeypatch.delenv("PLATFORGE_CA_FILE")

    certs_d = tmp_path / "certs.d"
    (certs_d / registry_tls.host).mkdir(parents=True)
    (certs_d / registry_tls.host / "ca.crt").write_bytes(
        registry_tls.ca_file.read_bytes()
    )
    monkeypatch.setattr(client_module, "CERTS_DIRS", (tmp_path / "none", certs_d))
    with RegistryClient(registry_tls.host) as client:
        assert client.ping() == f"https://{registry_tls.host}"


def test_an_unreadable_ca_file_is_a_one_line_error(tmp_path, monkeypatch):
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    monkeypatch.setenv("PLATFORGE_CA_FILE", str(bad))
    with pytest.raises(TransportError, match=r"cannot load CA file .*ca\.pem") as e:
        RegistryClient("registry.example:5000")
    assert "no certificate or crl found" in str(e.value)
    assert "_ssl.c" not in str(e.value)


def test_ca_certs_that_are_no_pem_are_a_one_line_error():
    with pytest.raises(TransportError, match=r"CA certificate 1 .* is not a PEM"):
        RegistryClient("registry.example:5000", ca_certs=("not a cert",))


def test_parse_retry_after_handles_seconds_and_dates():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    when = "Wed, 21 Oct 2015 07:28:00 GMT"
    assert parse_retry_after(when, now=1445412470.0) == pytest.approx(10.0)


def test_ping_503_is_retried(fake):
    fake.routes.clear()
    fake.on("GET", "/v2/", (503, {}, b""), (200, {}, b"{}"))
    fake.on("GET", "/v2/a/manifests/", _manifest_ok())
    with RegistryClient(fake.host, retry=FAST) as client:
        assert client.get_manifest("a", "v1").digest == MANIFEST_DIGEST
    assert [p for _, p, _ in fake.log].count("/v2/") == 2


def test_a_server_that_is_not_a_registry_is_named_as_such(fake):
    fake.routes.clear()
    fake.on("GET", "/", (404, {}, b"not here"))
    client = RegistryClient(fake.host, retry=FAST)
    with client, pytest.raises(RegistryError, match="not an OCI registry API"):
        client.get_manifest("a", "v1")


def test_credentials_are_never_sent_to_an_upload_location_on_another_host(fake):
    storage = Script()
    with serve(storage):
        data, digest = _blob(5000)
        fake.routes.clear()
        fake.on("GET", "/v2/", (401, {"WWW-Authenticate": 'Basic realm="r"'}, b""))
        fake.on("HEAD", "/v2/a/blobs/", (404, {}, b""))
        fake.on(
            "POST",
            "/v2/a/blobs/uploads/",
            (202, {"Location": f"http://{storage.host}/upload/1"}, b""),
        )
        storage.on("PUT", "/upload/1", (201, {}, b""))
        creds = Credentials("user", "secret")
        with RegistryClient(fake.host, credentials=creds, retry=FAST) as client:
            client.upload_blob(
                "a", digest, len(data), lambda: contextlib.nullcontext(io.BytesIO(data))
            )
    assert all("Authorization" in h for m, _, h in fake.log if m != "GET")
    ((method, path, headers),) = storage.log
    assert (method, path.split("?")[0]) == ("PUT", "/upload/1")
    assert "Authorization" not in headers
    assert storage.bodies == [data]


def _loopback_alias():
    """A name /etc/hosts maps to 127.0.0.1 that platforge does not count as loopback."""
    try:
        lines = Path("/etc/hosts").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2 or fields[0] != "127.0.0.1":
            continue
        for name in fields[1:]:
            if name != "localhost" and not is_loopback(name):
                return name
    return None


class _Counting(httpx.BaseTransport):
    def __init__(self, inner):
        self.inner = inner
        self.requests = 0

    def handle_request(self, request):
        self.requests += 1
        return self.inner.handle_request(request)

    def close(self):
        self.inner.close()


@pytest.mark.registry
def test_a_plain_http_registry_under_a_non_loopback_name_is_named_after_one_try(
    registry_plain,
):
    alias = _loopback_alias()
    if alias is None:
        pytest.skip("/etc/hosts maps no name but localhost to 127.0.0.1")
    port = registry_plain.host.rsplit(":", 1)[1]
    name = f"{alias}:{port}"
    counted = []

    def wrap(transport):
        counted.append(_Counting(transport))
        return counted[-1]

    client = RegistryClient(name, retry=FAST, wrap_transport=wrap)
    with client, pytest.raises(TransportError) as info:
        client.ping()
    assert str(info.value) == (
        f"registry {name} does not speak HTTPS (it answered the TLS greeting with "
        "something else, likely plain HTTP); platforge uses plain HTTP only for "
        f"loopback registries: pass --insecure (build: --insecure-registry {name}) "
        "if you trust the network"
    )
    assert counted[0].requests == 1
    with RegistryClient(name, insecure=True) as client:
        assert client.ping() == f"http://{name}"


class _AnswersWithoutTLS(httpx.BaseTransport):
    """Fails every request as OpenSSL does when a plain server answers (no network)."""

    def __init__(self, reason):
        self.reason = reason
        self.requests = 0

    def handle_request(self, request):
        self.requests += 1
        raise httpx.ConnectError(
            f"[SSL: {self.reason}] {self.reason.lower()} (_ssl.c:1006)", request=request
        )


@pytest.mark.parametrize(
    "reason",
    [
        "WRONG_VERSION_NUMBER",
        "UNKNOWN_PROTOCOL",
        "PACKET_LENGTH_TOO_LONG",
        "RECORD_LAYER_FAILURE",
    ],
)
def test_every_openssl_reason_for_a_non_tls_answer_means_no_https(reason):
    transport = _AnswersWithoutTLS(reason)
    client = RegistryClient("plain.test:5000", retry=FAST, transport=transport)
    with client, pytest.raises(TransportError) as info:
        client.get_manifest("a", "v1")
    assert "does not speak HTTPS" in str(info.value)
    assert "_ssl.c" not in str(info.value)
    assert transport.requests == 1
