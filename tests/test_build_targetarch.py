"""The TARGETARCH idiom: one Dockerfile picks a per-architecture binary.

From the context (``COPY bin/${TARGETARCH}/busybox``) and from a URL served on
loopback by this test (``ADD http://127.0.0.1:PORT/${TARGETARCH}/tool``). A URL
that is the same for every platform is fetched once per build.
"""

import http.server
import json
import shutil
import subprocess
import threading
from collections import Counter

import pytest

from platforge.oci.compression import open_reader
from platforge.oci.unpack import unpack_layers
from test_build_support import build_image

DEBIAN_ARCH = {"amd64": "amd64", "arm64": "arm64"}
MACHINE = {"linux/amd64": "x86_64", "linux/arm64": "aarch64"}


@pytest.fixture
def file_server(busybox):
    hits: Counter[str] = Counter()
    files = {
        f"/{arch}/tool": busybox[deb] / "bin" / "busybox"
        for arch, deb in DEBIAN_ARCH.items()
    }

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits[self.path] += 1
            if self.path == "/shared/motd":
                body = b"built by platforge\n"
            elif self.path in files:
                body = files[self.path].read_bytes()
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            del args

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()


def _run(root, path, *argv):
    # busybox picks its applet from argv[0], so it runs as "busybox" whatever
    # the file is called.
    return subprocess.run(
        ["busybox", *argv],
        executable=str(root / path.lstrip("/")),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()


@pytest.mark.usefixtures("require_qemu")
def test_targetarch_picks_each_platforms_binary_from_context_and_url(
    tmp_path, tmp_store, busybox, file_server
):
    url, hits = file_server
    context = tmp_path / "ctx"
    for arch, deb in DEBIAN_ARCH.items():
        (context / "bin" / arch).mkdir(parents=True)
        shutil.copy(
            busybox[deb] / "bin" / "busybox", context / "bin" / arch / "busybox"
        )
    (context / "Dockerfile").write_text(
        "FROM scratch\n"
        "ARG TARGETARCH\n"
        "COPY bin/${TARGETARCH}/busybox /bin/busybox\n"
        f"ADD --chmod=755 {url}/${{TARGETARCH}}/tool /usr/local/bin/tool\n"
        f"ADD {url}/shared/motd /etc/motd\n"
    )

    result, _ = build_image(context, platforms_text="linux/amd64,linux/arm64")

    assert hits["/shared/motd"] == 1
    assert hits["/amd64/tool"] == 1
    assert hits["/arm64/tool"] == 1
    for platform, machine in MACHINE.items():
        manifest = json.loads(
            (
                tmp_store
                / "blobs"
                / "sha256"
                / result.manifests[platform].digest.encoded
            ).read_bytes()
        )
        root = tmp_path / platform.replace("/", "-")
        blobs = [
            open_reader(
                (tmp_store / "blobs" / "sha256" / layer["digest"][7:]).open("rb")
            )
            for layer in manifest["layers"]
        ]
        unpack_layers(blobs, root)
        assert _run(root, "/bin/busybox", "uname", "-m") == machine
        assert _run(root, "/usr/local/bin/tool", "uname", "-m") == machine
        assert (root / "etc" / "motd").stat().st_mode & 0o777 == 0o600
        assert (root / "usr" / "local" / "bin" / "tool").stat().st_mode & 0o777 == 0o755
