"""Reference tools the tests compare platforge against, run with bounded time.

skopeo is the independent verifier: what platforge pushes must be readable by it,
and what it pushes must be readable by platforge. It runs with proxies disabled
for loopback and with an auth file of the test's (or a private, empty one), so a
user's logins never leak into a test and a test never writes to the user's files.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["ToolError", "loopback_env", "run_tool", "skopeo"]

_AUTH_DIR = Path(tempfile.gettempdir()) / f"platforge-testbed-auth-{os.getpid()}"
atexit.register(shutil.rmtree, _AUTH_DIR, ignore_errors=True)


class ToolError(Exception):
    """A reference tool exited non-zero or timed out; the message has its stderr."""


def loopback_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The current environment with proxies off for loopback addresses."""
    env = dict(os.environ)
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env.pop(name, None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost,::1"
    if extra:
        env.update(extra)
    return env


def run_tool(
    argv: list[str], timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    if shutil.which(argv[0]) is None:
        raise ToolError(f"{argv[0]} is not installed; run `make system`")
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env if env is not None else loopback_env(),
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ToolError(f"{' '.join(argv)} took over {timeout}s") from exc
    if done.returncode != 0:
        raise ToolError(
            f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}"
        )
    return done


def skopeo(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``skopeo ARGS…``; raise ToolError with its stderr when it fails.

    skopeo reads the auth file ``REGISTRY_AUTH_FILE`` names when a test set one
    (``tmp_docker_config`` does), else an empty one private to this process.
    """
    env = loopback_env()
    if "REGISTRY_AUTH_FILE" not in env:
        _AUTH_DIR.mkdir(mode=0o700, exist_ok=True)
        auth_file = _AUTH_DIR / "auth.json"
        if not auth_file.exists():
            auth_file.write_text('{"auths": {}}\n')
        env["REGISTRY_AUTH_FILE"] = str(auth_file)
    return run_tool(["skopeo", *args], timeout=timeout, env=env)
