"""ADD of local archives: recognised by content, extracted with bounded memory."""

import io
import json
import tarfile
import tracemalloc

import pytest

from platforge.errors import BuildError
from platforge.oci.compression import open_reader
from platforge.oci.layer import iter_entries
from test_build_support import build_image


def _layer_names(store, result):
    blobs = store / "blobs" / "sha256"
    descriptor = result.manifests["linux/amd64"]
    manifest = json.loads((blobs / descriptor.digest.encoded).read_text())
    with (blobs / manifest["layers"][-1]["digest"][7:]).open("rb") as fh:
        return {entry.path: entry.size for entry, _ in iter_entries(open_reader(fh))}


def test_a_tar_whose_first_name_looks_like_a_magic_number_is_extracted(tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    with tarfile.open(ctx / "odd.tar", "w") as tar:
        info = tarfile.TarInfo("BZh91AY&SY-notes.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"hi\n"))
    (ctx / "Dockerfile").write_text("FROM scratch\nADD odd.tar /d/\n")
    result, _ = build_image(ctx, store=tmp_path / "store")
    names = _layer_names(tmp_path / "store", result)
    assert "d/BZh91AY&SY-notes.txt" in names
    assert "d/odd.tar" not in names


def test_add_of_a_large_archive_member_does_not_hold_it_in_memory(tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    size = 48 << 20
    with tarfile.open(ctx / "big.tar", "w") as tar:
        info = tarfile.TarInfo("big.bin")
        info.size = size
        with (ctx / "payload").open("wb") as out:
            out.truncate(size)
        with (ctx / "payload").open("rb") as payload:
            tar.addfile(info, payload)
    (ctx / "payload").unlink()
    (ctx / "Dockerfile").write_text("FROM scratch\nADD big.tar /x/\n")
    tracemalloc.start()
    try:
        result, _ = build_image(ctx, store=tmp_path / "store")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert _layer_names(tmp_path / "store", result)["x/big.bin"] == size
    assert peak < 16 << 20


def test_an_archive_hard_link_to_a_path_outside_it_fails_the_build(tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    with tarfile.open(ctx / "links.tar", "w") as tar:
        info = tarfile.TarInfo("a.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"a\n"))
        good = tarfile.TarInfo("./b.txt")
        good.type, good.linkname = tarfile.LNKTYPE, "./a.txt"
        tar.addfile(good)
        bad = tarfile.TarInfo("hl")
        bad.type, bad.linkname = tarfile.LNKTYPE, "/etc/passwd"
        tar.addfile(bad)
    (ctx / "Dockerfile").write_text("FROM scratch\nADD links.tar /ex/\n")
    with pytest.raises(BuildError, match=r"member hl is a hard link to /etc/passwd"):
        build_image(ctx, store=tmp_path / "store")


def test_an_archive_hard_link_to_an_earlier_member_is_kept(tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    with tarfile.open(ctx / "links.tar", "w") as tar:
        info = tarfile.TarInfo("./a.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"a\n"))
        link = tarfile.TarInfo("./b.txt")
        link.type, link.linkname = tarfile.LNKTYPE, "./a.txt"
        tar.addfile(link)
    (ctx / "Dockerfile").write_text("FROM scratch\nADD links.tar /ex/\n")
    result, _ = build_image(ctx, store=tmp_path / "store")
    blobs = tmp_path / "store" / "blobs" / "sha256"
    manifest = json.loads(
        (blobs / result.manifests["linux/amd64"].digest.encoded).read_text()
    )
    with (blobs / manifest["layers"][-1]["digest"][7:]).open("rb") as fh:
        links = {e.path: e.linkname for e, _ in iter_entries(open_reader(fh))}
    assert links["ex/b.txt"] == "ex/a.txt"
