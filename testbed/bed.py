"""Four real registries and a token server on loopback, started and stopped as one.

The test bed runs Debian's ``docker-registry`` (CNCF distribution 2.8) four times,
each with its own config, storage directory and free port on 127.0.0.1:

======  ==========================================================  ==============
name    what it checks                                              /v2/ answers
======  ==========================================================  ==============
plain   plain HTTP, no auth                                         200
basic   HTTP basic auth from an htpasswd file (bcrypt cost 5)       401 Basic
tls     HTTPS with a certificate from a throw-away CA (``ca.pem``)  200
token   bearer tokens from our token server (Docker Hub's flow)     401 Bearer
======  ==========================================================  ==============

Each registry starts on first use (``Testbed.registry(name)``), is ready when
``GET /v2/`` answers, and stops with the test bed (SIGTERM, then SIGKILL). A
running test bed is described by a JSON state file, so ``python -m testbed start``
can serve many pytest sessions; a session that attaches to it never stops it.

The package's own config is never used: it listens on every interface.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import yaml

from testbed.certs import make_tls, make_token_signer

__all__ = [
    "NAMES",
    "Registry",
    "Testbed",
    "TestbedError",
    "default_state_file",
    "free_port",
    "listens_on",
    "start_time",
    "stop_pid",
]

log = logging.getLogger("testbed")

NAMES = ("plain", "basic", "tls", "token")
TOKEN_SERVICE = "platforge-testbed"
TOKEN_ISSUER = "platforge-testbed-token-server"
READY_TIMEOUT = 30.0  # generous: many test sessions may share a few busy cores
STOP_TIMEOUT = 5.0
_PORT_ATTEMPTS = 5
_REPO = Path(__file__).resolve().parents[1]


class TestbedError(Exception):
    """The test bed could not start, attach or stop."""

    __test__ = False  # not a pytest test class despite the name


def default_state_file() -> Path:
    return Path(
        os.environ.get("PLATFORGE_TESTBED_STATE", _REPO / ".testbed/state.json")
    )


@dataclass(frozen=True)
class Registry:
    """One loopback registry: where it listens and how to log in to it."""

    __test__ = False

    name: str
    host: str  # "127.0.0.1:PORT"
    url: str  # "http(s)://127.0.0.1:PORT"
    username: str | None
    password: str | None
    ca_file: Path | None  # PEM CA for the TLS registry
    scheme: str  # "http" or "https"
    storage_dir: Path  # filesystem driver root; blobs live under docker/registry/v2
    log_file: Path | None = None  # the registry's own log (level warn)

    @property
    def creds(self) -> str | None:
        """``user:password`` as skopeo's ``--creds`` wants it, or None."""
        if self.username is None or self.password is None:
            return None
        return f"{self.username}:{self.password}"

    def ref(self, repository: str, tag: str = "latest") -> str:
        """``127.0.0.1:PORT/REPOSITORY:TAG`` (``@sha256:…`` when tag is a digest)."""
        sep = "@" if ":" in tag else ":"
        return f"{self.host}/{repository}{sep}{tag}"

    def blob_path(self, digest: str) -> Path:
        """Where the filesystem driver keeps a blob's bytes (tests corrupt it)."""
        algorithm, _, encoded = digest.partition(":")
        return (
            self.storage_dir
            / "docker/registry/v2/blobs"
            / algorithm
            / encoded[:2]
            / encoded
            / "data"
        )

    def ssl_context(self) -> ssl.SSLContext | bool:
        """What httpx's ``verify=`` needs to trust this registry."""
        if self.ca_file is None:
            return True
        return ssl.create_default_context(cafile=str(self.ca_file))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ca_file"] = str(self.ca_file) if self.ca_file else None
        data["storage_dir"] = str(self.storage_dir)
        data["log_file"] = str(self.log_file) if self.log_file else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Registry:
        return cls(
            name=data["name"],
            host=data["host"],
            url=data["url"],
            username=data["username"],
            password=data["password"],
            ca_file=Path(data["ca_file"]) if data["ca_file"] else None,
            scheme=data["scheme"],
            storage_dir=Path(data["storage_dir"]),
            log_file=Path(data["log_file"]) if data.get("log_file") else None,
        )


def free_port() -> int:
    """A port that was free a moment ago; callers retry when they lose the race."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), None if gone.

    A PID and its start time name one process for good: a recycled PID has a later
    start time, so a stale state file never stops somebody else's process.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[19])


def _pid_is_ours(pid: int, started: int | None = None) -> bool:
    """True when ``pid`` is alive and is a registry or token server we started."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    if started is not None and start_time(pid) != started:
        return False
    return b"docker-registry" in cmdline or b"testbed.tokenserver" in cmdline


def listens_on(pid: int, port: int) -> bool:
    """True when process ``pid`` holds the listening TCP socket on 127.0.0.1:port."""
    inodes = set()
    try:
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and local == f"0100007F:{port:04X}":
                inodes.add(f"socket:[{inode}]")
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if str(fd.readlink()) in inodes:
                return True
    return False


def _status_of(url: str, verify: ssl.SSLContext | bool, timeout: float = 2.0) -> int:
    with httpx.Client(verify=verify, trust_env=False, timeout=timeout) as client:
        return client.get(f"{url}/v2/").status_code


def stop_pid(
    pid: int, started: int | None = None, timeout: float = STOP_TIMEOUT
) -> None:
    """SIGTERM ``pid``, wait, then SIGKILL; only for processes the test bed started."""
    if not _pid_is_ours(pid, started):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_is_ours(pid, started) or _is_zombie(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


class Testbed:
    """The registries and token server of one test run (or of a shared state file).

    ``Testbed()`` owns what it starts and stops it in ``stop()``;
    ``Testbed.attach(state_file)`` uses what another process started and leaves it
    running.
    """

    __test__ = False

    def __init__(self, workdir: Path | None = None, *, detach: bool = False) -> None:
        self.owned = True
        # A detached test bed outlives the process that started it (the CLI);
        # otherwise every child dies with that process, even when it is killed.
        self.detach = detach
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="platforge-testbed-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.username = "platforge"
        self.password = secrets.token_urlsafe(12)
        # A second token-server user allowed only to pull, for permission tests.
        self.reader_username = "reader"
        self.reader_password = secrets.token_urlsafe(12)
        self.registries: dict[str, Registry] = {}
        self.token_url: str | None = None
        self.pids: dict[str, int] = {}
        self.started: dict[str, int] = {}
        self._lock = threading.RLock()
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    def _launcher(self) -> list[str]:
        """argv prefix: setpriv asks the kernel to SIGTERM the child if we die."""
        if self.detach or shutil.which("setpriv") is None:
            return []
        return ["setpriv", "--pdeathsig", "TERM", "--"]

    # -- attaching to a running test bed -----------------------------------------

    @classmethod
    def attach(cls, state_file: Path) -> Testbed | None:
        """The test bed a state file describes, if every part of it answers."""
        try:
            state = json.loads(state_file.read_text())
            started = state.get("started", {})
            # Check the processes before touching the workdir the state names.
            if not all(
                _pid_is_ours(int(pid), started.get(name))
                for name, pid in state["pids"].items()
            ):
                return None
            bed = cls._from_state(state)
        except (OSError, KeyError, TypeError, ValueError, AttributeError):
            return None
        if set(bed.registries) != set(NAMES) or not bed.answers():
            return None
        return bed

    def answers(self) -> bool:
        """True when every started registry answers `GET /v2/` (any status)."""
        try:
            for registry in self.registries.values():
                _status_of(registry.url, registry.ssl_context())
        except httpx.HTTPError:
            return False
        return True

    @classmethod
    def _from_state(cls, state: dict[str, Any]) -> Testbed:
        bed = cls(workdir=Path(state["workdir"]))
        bed.owned = False
        bed.username = state["username"]
        bed.password = state["password"]
        bed.reader_username = state["reader_username"]
        bed.reader_password = state["reader_password"]
        bed.registries = {
            name: Registry.from_json(data) for name, data in state["registries"].items()
        }
        bed.token_url = state["token_url"]
        bed.pids = {name: int(pid) for name, pid in state["pids"].items()}
        bed.started = {name: int(t) for name, t in state.get("started", {}).items()}
        return bed

    def state(self) -> dict[str, Any]:
        return {
            "version": 1,
            "workdir": str(self.workdir),
            "username": self.username,
            "password": self.password,
            "reader_username": self.reader_username,
            "reader_password": self.reader_password,
            "registries": {n: r.to_json() for n, r in self.registries.items()},
            "token_url": self.token_url,
            "pids": self.pids,
            "started": self.started,
        }

    def write_state(self, state_file: Path) -> None:
        state_file.parent.mkdir(parents=True, exist_ok=True)
        temp = state_file.with_name(f".{state_file.name}.{os.getpid()}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(self.state(), out, indent=2)
        temp.replace(state_file)

    # -- starting ---------------------------------------------------------------

    def start_all(self) -> None:
        for name in NAMES:
            self.registry(name)

    def registry(self, name: str) -> Registry:
        """The registry called ``name`` (one of NAMES), started on first use."""
        if name not in NAMES:
            raise TestbedError(f"unknown registry {name!r}; choose one of {NAMES}")
        with self._lock:
            if name not in self.registries:
                if not self.owned:
                    raise TestbedError(f"attached test bed has no {name!r} registry")
                self.registries[name] = self._start_registry(name)
            return self.registries[name]

    def _start_registry(self, name: str) -> Registry:
        directory = self.workdir / name
        storage = directory / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(storage)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {"secret": secrets.token_hex(16)},
        }
        username = password = None
        ca_file = None
        scheme = "http"
        if name == "basic":
            username, password = self.username, self.password
            htpasswd = directory / "htpasswd"
            hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5))
            htpasswd.write_text(f"{username}:{hashed.decode()}\n")
            config["auth"] = {
                "htpasswd": {"realm": "platforge-testbed", "path": str(htpasswd)}
            }
        elif name == "tls":
            tls = make_tls(directory)
            ca_file, scheme = tls.ca_file, "https"
            config["http"]["tls"] = {
                "certificate": str(tls.cert_file),
                "key": str(tls.key_file),
            }
        elif name == "token":
            username, password = self.username, self.password
            signer_cert = self._start_token_server()
            config["auth"] = {
                "token": {
                    "realm": f"{self.token_url}/token",
                    "service": TOKEN_SERVICE,
                    "issuer": TOKEN_ISSUER,
                    "rootcertbundle": str(signer_cert),
                }
            }

        for _attempt in range(_PORT_ATTEMPTS):
            port = free_port()
            config["http"]["addr"] = f"127.0.0.1:{port}"
            config_file = directory / "config.yml"
            config_file.write_text(yaml.safe_dump(config))
            registry = Registry(
                name=name,
                host=f"127.0.0.1:{port}",
                url=f"{scheme}://127.0.0.1:{port}",
                username=username,
                password=password,
                ca_file=ca_file,
                scheme=scheme,
                storage_dir=storage,
                log_file=directory / "registry.log",
            )
            log_file = directory / "registry.log"
            with log_file.open("ab") as log_out:
                proc = subprocess.Popen(
                    [*self._launcher(), "docker-registry", "serve", str(config_file)],
                    stdin=subprocess.DEVNULL,
                    stdout=log_out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self._remember(name, proc)
            if self._wait_ready(registry, proc):
                log.info("registry %s listening on %s", name, registry.url)
                return registry
            tail = log_file.read_text(errors="replace")[-600:]
            if "address already in use" not in tail:
                raise TestbedError(
                    f"registry {name} did not answer {registry.url}/v2/ within "
                    f"{READY_TIMEOUT:.0f}s; its log ({log_file}) ends: {tail.strip()}"
                )
            log.info(
                "registry %s lost port %d to another process; retrying", name, port
            )
        raise TestbedError(
            f"registry {name}: no free port after {_PORT_ATTEMPTS} tries"
        )

    def _remember(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        self._procs[name] = proc
        self.pids[name] = proc.pid
        started = start_time(proc.pid)
        if started is not None:
            self.started[name] = started

    def _wait_ready(self, registry: Registry, proc: subprocess.Popen[bytes]) -> bool:
        # Another test session may have taken the port between free_port() and
        # the bind; its server would answer too, so the listener must be ours.
        port = int(registry.host.rpartition(":")[2])
        deadline = time.monotonic() + READY_TIMEOUT
        verify = registry.ssl_context()
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            with contextlib.suppress(httpx.HTTPError):
                if _status_of(registry.url, verify, timeout=1.0) in (
                    200,
                    401,
                ) and listens_on(proc.pid, port):
                    return True
            time.sleep(0.05)
        self._stop_proc(registry.name)
        return False

    def _start_token_server(self) -> Path:
        directory = self.workdir / "token-server"
        directory.mkdir(parents=True, exist_ok=True)
        signer = make_token_signer(directory)
        config = {
            "key_file": str(signer.key_file),
            "cert_file": str(signer.cert_file),
            "issuer": TOKEN_ISSUER,
            "service": TOKEN_SERVICE,
            "users": {
                self.username: {"password": self.password, "actions": ["*"]},
                self.reader_username: {
                    "password": self.reader_password,
                    "actions": ["pull"],
                },
            },
        }
        config_file = directory / "config.json"
        fd = os.open(config_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(config, out)
        port_file = directory / "port"
        port_file.unlink(missing_ok=True)
        env = dict(os.environ, PYTHONPATH=str(_REPO))
        with (directory / "server.log").open("ab") as log_out:
            proc = subprocess.Popen(
                [
                    *self._launcher(),
                    sys.executable,
                    "-m",
                    "testbed.tokenserver",
                    str(config_file),
                    str(port_file),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log_out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self._remember("token-server", proc)
        deadline = time.monotonic() + READY_TIMEOUT
        while not port_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                self._stop_proc("token-server")
                raise TestbedError(
                    f"token server did not start; see {directory / 'server.log'}"
                )
            time.sleep(0.05)
        self.token_url = f"http://127.0.0.1:{int(port_file.read_text())}"
        return signer.cert_file

    def token_stats(self) -> dict[str, int]:
        """How many tokens the token server issued and refused so far."""
        if self.token_url is None:
            raise TestbedError("the token server is not running")
        with httpx.Client(trust_env=False, timeout=5) as client:
            stats: dict[str, int] = client.get(f"{self.token_url}/stats").json()
        return stats

    # -- stopping ---------------------------------------------------------------

    def _stop_proc(self, name: str) -> None:
        proc = self._procs.pop(name, None)
        pid = self.pids.pop(name, None)
        started = self.started.pop(name, None)
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(STOP_TIMEOUT)
        elif pid is not None:
            stop_pid(pid, started)

    def stop(self) -> None:
        """Stop what this test bed started and remove its files; no-op if attached."""
        if not self.owned:
            return
        for name in list(self.pids):
            self._stop_proc(name)
        self.registries.clear()
        self.token_url = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    def env(self) -> dict[str, str]:
        """Environment variables naming each registry, for scripts and demos."""
        out = {
            "PLATFORGE_TESTBED_USERNAME": self.username,
            "PLATFORGE_TESTBED_PASSWORD": self.password,
        }
        for name, reg in self.registries.items():
            prefix = f"PLATFORGE_TESTBED_{name.upper()}"
            out[f"{prefix}_HOST"] = reg.host
            out[f"{prefix}_URL"] = reg.url
            if reg.ca_file:
                out[f"{prefix}_CA_FILE"] = str(reg.ca_file)
        if self.token_url:
            out["PLATFORGE_TESTBED_TOKEN_SERVER"] = self.token_url
        return out
