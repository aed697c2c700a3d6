"""A Dockerfile without RUN builds as an ordinary user with no capabilities.

The build runs as ``nobody`` through ``setpriv`` with every capability dropped:
it pulls a real base from the loopback registry, copies files with ``--chown``
by name (resolved from the base image's /etc/passwd and /etc/group, not the
host's), and writes a two-platform OCI layout — no sandbox, no unpacking.
"""

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from nobody_support import python_for_nobody, stage_platforge
from platforge.oci.compression import open_reader
from platforge.oci.layer import iter_entries
from test_build_support import push_busybox_base

pytestmark = pytest.mark.registry


@pytest.fixture
def nobody_dir():
    # pytest's own temporary directories are private to root; nobody needs a
    # directory it can reach.
    path = Path(tempfile.mkdtemp(prefix="platforge-nobody-"))
    path.chmod(0o777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


SETPRIV = [
    "setpriv",
    "--reuid=nobody",
    "--regid=nogroup",
    "--clear-groups",
    "--inh-caps=-all",
]


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv is not installed")
@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to nobody needs root first")
def test_no_run_dockerfile_builds_as_nobody_without_capabilities(
    nobody_dir, registry_plain, busybox
):
    base = push_busybox_base(busybox, registry_plain.host)
    work = nobody_dir
    (work / "ctx" / "site").mkdir(parents=True)
    (work / "ctx" / "site" / "index.html").write_text("<p>hi</p>\n")
    (work / "ctx" / "Dockerfile").write_text(
        f"FROM {base}\n"
        "COPY --chown=app:staff site/ /srv/www/\n"
        "WORKDIR /srv/www\n"
        "USER app\n"
        'ENTRYPOINT ["httpd", "-f"]\n'
    )
    for path in [*work.rglob("*"), work]:
        path.chmod(0o777 if path.is_dir() else 0o666)
    caps = subprocess.run(
        [*SETPRIV, "grep", "CapEff", "/proc/self/status"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert caps.split()[1] == "0000000000000000"

    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(stage_platforge(work / "site")),
        "HOME": str(work),
        "PLATFORGE_STORE": str(work / "store"),
        "PLATFORGE_ROOTFS": str(work / "rootfs-must-not-appear"),
    }
    ran = subprocess.run(
        [
            *SETPRIV,
            python_for_nobody(),
            "-m",
            "platforge",
            "build",
            str(work / "ctx"),
            "--platform",
            "linux/amd64,linux/arm64",
            "--output",
            f"type=oci,dest={work / 'out'}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
        cwd=work,
    )
    assert ran.returncode == 0, ran.stderr
    assert not (work / "rootfs-must-not-appear").exists()
    assert (work / "out").stat().st_uid != 0

    blobs = work / "out" / "blobs" / "sha256"
    index = json.loads((work / "out" / "index.json").read_text())
    root = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_text())
    assert len(root["manifests"]) == 2
    manifest = json.loads((blobs / root["manifests"][0]["digest"][7:]).read_text())
    with (blobs / manifest["layers"][-1]["digest"][7:]).open("rb") as fh:
        owners = {
            entry.path: (entry.uid, entry.gid)
            for entry, _ in iter_entries(open_reader(fh))
        }
    assert owners["srv/www/index.html"] == (1000, 50)
