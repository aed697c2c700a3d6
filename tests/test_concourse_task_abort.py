"""Aborting `platforge task build` (Concourse sends SIGTERM) stops the RUN and
removes what the task made: no container left running, no secret left on disk."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SLEEP = b"sleep\x0027"


def _running(marker: bytes) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker in cmdline.read_bytes():
                found.append(cmdline.parent.name)
        except OSError:
            continue
    return found


@pytest.mark.privileged
def test_sigterm_stops_the_run_and_removes_the_secrets(tmp_path, tmp_store, busybox):
    if os.geteuid() != 0:
        pytest.skip("the RUN sandbox's fast path needs root here")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    shutil.copy(busybox["amd64"] / "bin" / "busybox", ctx / "busybox")
    (ctx / "Dockerfile").write_text(
        "FROM scratch\nCOPY busybox /bin/busybox\n"
        'RUN --mount=type=secret,id=tok ["/bin/busybox", "sleep", "27"]\n'
    )
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "PLATFORGE_STORE": str(tmp_store),
        "TMPDIR": str(temp),
        "CONTEXT": "ctx",
        "IMAGE_PLATFORM": "linux/amd64",
        "BUILDKIT_SECRETTEXT_tok": "TOPSECRET-abort",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "platforge", "task", "build"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not _running(SLEEP) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.1)
        assert _running(SLEEP), "the RUN never started"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 5
    while _running(SLEEP) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _running(SLEEP) == []
    assert list(temp.glob("platforge-secrets-*")) == []
    mounts = Path("/proc/mounts").read_text()
    assert str(tmp_store) not in mounts
