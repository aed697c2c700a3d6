"""Build outputs: copies independent of the store, and never left half-written."""

import errno
import json

import pytest

from platforge.build import Output
from platforge.errors import PlatforgeError
from platforge.oci.layout import Layout
from test_build_support import build_image, oci_output


@pytest.fixture
def context(tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY big.bin /big.bin\n")
    (ctx / "big.bin").write_bytes(bytes(range(256)) * 4096)
    return ctx


def _layer_file(out):
    index = json.loads((out / "index.json").read_text())
    blobs = out / "blobs" / "sha256"
    manifest = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_text())
    return blobs / manifest["layers"][0]["digest"][7:]


def test_an_edited_output_does_not_change_the_cache(tmp_path, context):
    store = tmp_path / "store"
    first = tmp_path / "one"
    build_image(context, store=store, outputs=oci_output(first))
    layer = _layer_file(first)
    assert layer.stat().st_nlink == 1
    with layer.open("r+b") as fh:
        fh.seek(100)
        fh.write(b"XXXX")
    second = tmp_path / "two"
    build_image(context, store=store, outputs=oci_output(second))
    assert Layout.open(second).check() == []


def test_a_failed_layout_output_leaves_nothing(tmp_path, context, monkeypatch):
    store = tmp_path / "store"
    build_image(context, store=store)  # the cache holds every blob now
    calls = []

    def full_disk(self, source, expected=None, **kwargs):
        calls.append(expected)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, source, expected, **kwargs)

    original = Layout.write_blob
    monkeypatch.setattr(Layout, "write_blob", full_disk)
    parent = tmp_path / "outputs"
    with pytest.raises(PlatforgeError, match=r"cannot write output .*No space left"):
        build_image(context, store=store, outputs=oci_output(parent / "img"))
    assert list(parent.iterdir()) == []


@pytest.mark.parametrize("kind", ["oci", "oci-tar", "docker"])
def test_an_output_below_a_file_is_one_error(tmp_path, context, kind):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(PlatforgeError, match=f"cannot write .*{blocker}"):
        build_image(
            context,
            store=tmp_path / "store",
            outputs=[Output(kind, blocker / "sub" / "out")],
        )
