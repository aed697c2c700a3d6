"""Test images for the registry tests, built with platforge.oci from real busybox.

``busybox_layout(busybox, dest)`` writes a five-platform image: per architecture one
layer holding /bin/busybox, a config with Cmd ["busybox", "uname", "-m"], a manifest,
and one index over them, named ``latest`` in the layout. ``small_layout`` writes a
one-platform image of random bytes, quick to push many times.
"""

import json
import os
import tempfile
from pathlib import Path

import pytest

from platforge import platforms
from platforge.oci.compression import Compression
from platforge.oci.content import Descriptor, History, ImageConfig, Index, Manifest
from platforge.oci.layer import Entry, write_layer
from platforge.oci.layout import Layout

PLATFORM_OF = {
    "amd64": "linux/amd64",
    "arm64": "linux/arm64",
    "armhf": "linux/arm/v7",
    "ppc64el": "linux/ppc64le",
    "s390x": "linux/s390x",
}


def _image(layout, platform, entries, cmd):
    with tempfile.TemporaryFile(dir=layout.path) as tmp:
        info = write_layer(entries, tmp, Compression.GZIP, mtime=0)
        tmp.seek(0)
        layer = layout.write_blob(
            tmp, Descriptor(info.media_type, info.digest, info.size)
        )
    config = ImageConfig.new(platform, created="1970-01-01T00:00:00Z")
    config.config.cmd = cmd
    config.config.env = ["PATH=/bin"]
    config.add_layer(info.diff_id, History(created_by="test image"))
    config_desc = layout.write_config(config)
    manifest = Manifest.build(config_desc, [layer])
    layout.write_manifest(manifest)
    return manifest.descriptor(platform=platform)


def busybox_layout(busybox, dest):
    layout = Layout.create(dest)
    children = []
    for arch in sorted(PLATFORM_OF):
        binary = busybox[arch] / "bin" / "busybox"
        entries = [
            Entry.directory("bin"),
            Entry.file("bin/busybox", binary, mode=0o755),
        ]
        platform = platforms.parse(PLATFORM_OF[arch])
        children.append(_image(layout, platform, entries, ["busybox", "uname", "-m"]))
    index = Index.build(children)
    layout.write_manifest(index)
    layout.add_ref(index.descriptor(), "latest")
    return layout, index


def small_layout(dest, *, size=300_000, name="latest"):
    layout = Layout.create(dest)
    entries = [Entry.file("data.bin", os.urandom(size))]
    descriptor = _image(layout, platforms.parse("linux/amd64"), entries, ["true"])
    layout.add_ref(descriptor, name)
    return layout, descriptor


def blob_files(path):
    """Relative path → bytes of every blob of a layout."""
    root = Path(path) / "blobs"
    return {
        str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()
    }


def test_busybox_layout_has_five_platforms_and_skopeo_reads_it(
    busybox, skopeo, tmp_path
):
    layout, index = busybox_layout(busybox, tmp_path / "img")
    assert len(index.manifests) == 5
    assert {str(d.platform) for d in index.manifests} == set(PLATFORM_OF.values())
    done = skopeo("inspect", "--raw", f"oci:{tmp_path / 'img'}:latest")
    assert json.loads(done.stdout)["manifests"][0]["digest"] == str(
        index.manifests[0].digest
    )
    assert layout.check() == []


def test_small_layout_is_a_valid_single_image(tmp_path):
    layout, descriptor = small_layout(tmp_path / "s")
    assert layout.resolve("latest").digest == descriptor.digest
    assert layout.check() == []


if __name__ == "__main__":
    pytest.main([__file__])
