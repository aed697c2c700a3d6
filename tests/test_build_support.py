"""Helpers for the builder tests: a real multi-arch busybox base in a real registry.

``push_busybox_base(busybox, host)`` makes one image per architecture from the
``busybox`` fixture's Debian ``busybox-static`` packages — ``/bin/busybox``, a
symlink per applet the tests use, ``/etc/passwd`` and ``/etc/group`` with a user
``app`` (1000) and a group ``staff`` (50), an empty ``/tmp`` — and pushes the index
to the loopback registry ``host``. ``build(...)`` runs a build through the public
API with a progress list attached.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

from platforge import platforms
from platforge.build import BuildRequest, Output, build
from platforge.oci.compression import Compression
from platforge.oci.content import Descriptor, History, ImageConfig, Index, Manifest
from platforge.oci.layer import Entry, write_layer
from platforge.oci.layout import Layout
from platforge.registry.copy import Registries, push_layout
from platforge.registry.reference import Reference

PLATFORM_OF = {
    "amd64": "linux/amd64",
    "arm64": "linux/arm64",
    "armhf": "linux/arm/v7",
}
APPLETS = [
    "sh",
    "cat",
    "echo",
    "ls",
    "mkdir",
    "rm",
    "touch",
    "uname",
    "true",
    "false",
    "env",
    "id",
    "chmod",
    "chown",
    "ln",
    "cp",
    "mv",
    "sleep",
    "test",
    "printf",
    "grep",
    "sed",
    "wc",
    "head",
    "tail",
    "sort",
    "dirname",
    "basename",
]
PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"
GROUP = "root:x:0:\nstaff:x:50:app\napp:x:1000:\n"

_pushed: dict[tuple[str, tuple[str, ...]], str] = {}
_lock = threading.Lock()


def _image(layout, platform, busybox_root):
    entries = [
        Entry.directory("bin"),
        Entry.file("bin/busybox", busybox_root / "bin" / "busybox", mode=0o755),
        *[Entry.symlink(f"bin/{name}", "busybox") for name in APPLETS],
        Entry.directory("etc"),
        Entry.file("etc/passwd", PASSWD.encode()),
        Entry.file("etc/group", GROUP.encode()),
        Entry.directory("tmp", mode=0o1777),
        Entry.directory("root", mode=0o700),
    ]
    with tempfile.TemporaryFile(dir=layout.path) as tmp:
        info = write_layer(entries, tmp, Compression.GZIP, mtime=0)
        tmp.seek(0)
        layer = layout.write_blob(
            tmp, Descriptor(info.media_type, info.digest, info.size)
        )
    config = ImageConfig.new(platform, created="1970-01-01T00:00:00Z")
    config.config.cmd = ["sh"]
    config.config.env = [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    ]
    config.add_layer(info.diff_id, History(created_by="busybox base for tests"))
    manifest = Manifest.build(layout.write_config(config), [layer])
    layout.write_manifest(manifest)
    return manifest.descriptor(platform=platform)


def busybox_layout(busybox, dest, arches=("amd64", "arm64")):
    """Write the busybox base for ``arches`` as an OCI layout (ref ``latest``)."""
    layout = Layout.create(dest)
    children = [
        _image(layout, platforms.parse(PLATFORM_OF[a]), busybox[a]) for a in arches
    ]
    index = Index.build(children)
    layout.write_manifest(index)
    layout.add_ref(index.descriptor(), "latest")
    return layout


def push_busybox_base(busybox, host, arches=("amd64", "arm64"), repo="base/busybox"):
    """Push a multi-arch busybox image to ``host``; return its reference."""
    key = (host, tuple(arches))
    with _lock:
        if key in _pushed:
            return _pushed[key]
        reference = f"{host}/{repo}:{'-'.join(arches)}"
        with tempfile.TemporaryDirectory() as tmp:
            layout = busybox_layout(busybox, Path(tmp) / "layout", arches)
            with Registries() as regs:
                push_layout(layout.path, Reference.parse(reference), registries=regs)
        _pushed[key] = reference
        return reference


def build_image(context, *, platforms_text="linux/amd64", store=None, **kwargs):
    """Run a build; returns (result, events)."""
    events = []
    request = BuildRequest(
        context=Path(context),
        platforms=platforms.parse_list(platforms_text),
        store=store,
        progress=events.append,
        **kwargs,
    )
    return build(request), events


def oci_output(dest):
    return [Output("oci", Path(dest))]


def test_applets_include_what_the_build_tests_run():
    assert {"sh", "uname", "echo", "cat"} <= set(APPLETS)
