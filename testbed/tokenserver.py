"""The token server of the test bed: Docker's bearer-token flow, on loopback.

A registry configured with ``auth.token`` answers an anonymous request with
``401`` and ``WWW-Authenticate: Bearer realm=…,service=…,scope=…``. The client then
asks the realm for a token, and retries with ``Authorization: Bearer TOKEN``.

This server is that realm. It answers

- ``GET /token?service=S&scope=T:NAME:ACTIONS[&scope=…]`` with optional Basic
  credentials (the classic Docker flow), and
- ``POST /token`` with a form ``grant_type=password`` (``username``, ``password``)
  or ``grant_type=refresh_token`` (the OAuth2 flow), with space-separated scopes,

and issues RS256 JWTs with ``iss``, ``sub``, ``aud`` (the service), ``exp``,
``nbf``, ``iat``, ``jti`` and the ``access`` claim distribution reads:
``[{"type": "repository", "name": "x", "actions": ["pull", "push"]}]``. A user is
granted the requested actions that its entry allows; anonymous requests get an
empty access list (so the registry answers 401 again, as Docker Hub does for
private repositories). Wrong credentials get ``401``.

``GET /stats`` returns how many tokens were issued, so tests can check that a
client caches its tokens. stdlib ``http.server`` is enough for a test server that
serves a handful of requests per test.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import secrets
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt

from testbed.certs import libtrust_key_id, x5c_entry

__all__ = ["TokenServer", "TokenServerConfig", "main", "parse_scope"]

log = logging.getLogger("testbed.tokenserver")


class TokenServerConfig:
    """What the token server signs with and whom it knows."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.key_pem: bytes = Path(raw["key_file"]).read_bytes()
        self.cert_pem: bytes = Path(raw["cert_file"]).read_bytes()
        self.issuer: str = raw["issuer"]
        self.service: str = raw["service"]
        self.expires_in: int = int(raw.get("expires_in", 300))
        # Each user has a password and the actions it may be granted ("*": all).
        self.users: dict[str, dict[str, Any]] = raw["users"]


def parse_scope(text: str) -> tuple[str, str, list[str]] | None:
    """Split ``type:name:actions``; names may contain colons (``host:port/x``)."""
    kind, sep, rest = text.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not sep or not sep2 or not kind or not name:
        return None
    return kind, name, [a for a in actions.split(",") if a]


class TokenServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, config: TokenServerConfig, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.config = config
        self.kid = libtrust_key_id(config.cert_pem)
        self.x5c = [x5c_entry(config.cert_pem)]
        self.lock = threading.Lock()
        self.issued = 0
        self.refused = 0
        self.refresh_tokens: dict[str, str] = {}

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def authenticate(self, username: str, password: str) -> bool:
        entry = self.config.users.get(username)
        return entry is not None and secrets.compare_digest(
            str(entry["password"]).encode(), password.encode()
        )

    def grant(self, username: str | None, scopes: list[str]) -> list[dict[str, Any]]:
        if username is None:
            return []
        allowed = set(self.config.users[username].get("actions", ["*"]))
        access = []
        for scope in scopes:
            parsed = parse_scope(scope)
            if parsed is None:
                continue
            kind, name, wanted = parsed
            granted = [a for a in wanted if "*" in allowed or a in allowed]
            access.append({"type": kind, "name": name, "actions": granted})
        return access

    def issue(self, username: str | None, scopes: list[str]) -> dict[str, Any]:
        now = int(time.time())
        claims = {
            "iss": self.config.issuer,
            "sub": username or "",
            "aud": self.config.service,
            "exp": now + self.config.expires_in,
            "nbf": now - 1,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": self.grant(username, scopes),
        }
        token = jwt.encode(
            claims,
            self.config.key_pem,
            algorithm="RS256",
            headers={"kid": self.kid, "x5c": self.x5c},
        )
        with self.lock:
            self.issued += 1
        return {
            "token": token,
            "access_token": token,
            "expires_in": self.config.expires_in,
            "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        }


class _Handler(BaseHTTPRequestHandler):
    server: TokenServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug(format, *args)

    def _send_json(self, status: HTTPStatus, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == HTTPStatus.UNAUTHORIZED:
            self.send_header("WWW-Authenticate", 'Basic realm="platforge test bed"')
        self.end_headers()
        self.wfile.write(data)

    def _refuse(self, status: HTTPStatus, message: str) -> None:
        with self.server.lock:
            self.server.refused += 1
        self._send_json(
            status, {"errors": [{"code": status.phrase, "message": message}]}
        )

    def _basic_user(self) -> tuple[bool, str | None]:
        """(ok, username): ok is False when credentials were sent but are wrong."""
        header = self.headers.get("Authorization", "")
        if not header:
            return True, None
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False, None
        try:
            username, _, password = base64.b64decode(value).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False, None
        if not self.server.authenticate(username, password):
            return False, None
        return True, username

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/stats":
            with self.server.lock:
                stats = {"issued": self.server.issued, "refused": self.server.refused}
            self._send_json(HTTPStatus.OK, stats)
            return
        if url.path != "/token":
            self._refuse(HTTPStatus.NOT_FOUND, f"no such path {url.path}")
            return
        query = parse_qs(url.query)
        service = query.get("service", [""])[0]
        if service != self.server.config.service:
            self._refuse(HTTPStatus.BAD_REQUEST, f"unknown service {service!r}")
            return
        ok, username = self._basic_user()
        if not ok:
            self._refuse(HTTPStatus.UNAUTHORIZED, "wrong username or password")
            return
        scopes = [s for value in query.get("scope", []) for s in value.split(" ") if s]
        self._send_json(HTTPStatus.OK, self.server.issue(username, scopes))

    def do_POST(self) -> None:
        if urlsplit(self.path).path != "/token":
            self._refuse(HTTPStatus.NOT_FOUND, f"no such path {self.path}")
            return
        length = int(self.headers.get("Content-Length", "0"))
        if length > 65536:
            self._refuse(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "form too large")
            return
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        if form.get("service") != self.server.config.service:
            self._refuse(HTTPStatus.BAD_REQUEST, "unknown service")
            return
        grant = form.get("grant_type")
        username: str | None
        if grant == "password":
            username = form.get("username", "")
            if not self.server.authenticate(username, form.get("password", "")):
                self._refuse(HTTPStatus.UNAUTHORIZED, "wrong username or password")
                return
        elif grant == "refresh_token":
            with self.server.lock:
                username = self.server.refresh_tokens.get(form.get("refresh_token", ""))
            if username is None:
                self._refuse(HTTPStatus.UNAUTHORIZED, "unknown refresh token")
                return
        else:
            self._refuse(HTTPStatus.BAD_REQUEST, f"unsupported grant_type {grant!r}")
            return
        body = self.server.issue(username, form.get("scope", "").split())
        body.pop("token")
        body["scope"] = form.get("scope", "")
        if form.get("access_type") == "offline":
            refresh = secrets.token_urlsafe(24)
            with self.server.lock:
                self.server.refresh_tokens[refresh] = username
            body["refresh_token"] = refresh
        self._send_json(HTTPStatus.OK, body)


def main(argv: list[str]) -> int:
    """``python -m testbed.tokenserver CONFIG.json PORT_FILE``: serve until SIGTERM."""
    config_path, port_file = Path(argv[0]), Path(argv[1])
    config = TokenServerConfig(json.loads(config_path.read_text()))
    server = TokenServer(config, int(os.environ.get("TESTBED_TOKEN_PORT", "0")))
    temp = port_file.with_suffix(".tmp")
    temp.write_text(str(server.port))
    temp.replace(port_file)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
