"""Layer tars: reproducible writing, entries from trees, overlay upper dirs, reading."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import socket
import stat
import subprocess
import sys
import tarfile
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from platforge.errors import ContentError
from platforge.oci import mediatypes
from platforge.oci.compression import Compression, open_reader
from platforge.oci.digest import Digest
from platforge.oci.layer import (
    Entry,
    EntryType,
    entries_from_directory,
    entries_from_overlay,
    iter_entries,
    opaque_directory,
    opaque_marker_path,
    source_date_epoch_from_env,
    whiteout_path,
    whiteout_target,
    write_layer,
)

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (mknod, chown)")


def make_tree(root: Path) -> Path:
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("box\n")
    (root / "bin").mkdir()
    (root / "bin" / "tool").write_bytes(b"\x7fELF" + bytes(5000))
    (root / "bin" / "tool").chmod(0o4755)
    (root / "bin" / "alias").symlink_to("tool")
    os.link(root / "bin" / "tool", root / "bin" / "tool-hardlink")
    (root / "var" / "empty").mkdir(parents=True)
    (root / "var" / "empty").chmod(0o700)
    os.mkfifo(root / "var" / "pipe")
    (root / "zz-long-" / ("n" * 150)).mkdir(parents=True)
    (root / "unicode-é.txt").write_text("é")
    return root


def write(entries, compression=Compression.GZIP, **options) -> tuple[bytes, object]:
    out = io.BytesIO()
    info = write_layer(entries, out, compression, **options)
    return out.getvalue(), info


def members(blob: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=open_reader(io.BytesIO(blob)), mode="r|") as archive:
        return list(archive)


def test_same_tree_and_options_give_identical_bytes(tmp_path):
    first = make_tree(tmp_path / "one")
    blob_one, info_one = write(entries_from_directory(first), mtime=1700000000)
    # The same content made again later, elsewhere: other inodes, other mtimes.
    second = make_tree(tmp_path / "two")
    os.utime(second / "etc" / "hostname", (1, 1))
    blob_two, info_two = write(entries_from_directory(second), mtime=1700000000)
    assert blob_one == blob_two
    assert info_one == info_two


@pytest.mark.parametrize(
    "compression", [Compression.NONE, Compression.GZIP, Compression.ZSTD]
)
def test_digest_covers_the_blob_and_diff_id_the_uncompressed_tar(tmp_path, compression):
    tree = make_tree(tmp_path / "tree")
    blob, info = write(entries_from_directory(tree), compression)
    assert info.digest == Digest.of(blob)
    assert info.size == len(blob)
    tar_bytes = open_reader(io.BytesIO(blob)).read()
    assert info.diff_id == Digest.of(tar_bytes)
    assert (
        info.media_type
        == {
            Compression.NONE: mediatypes.OCI_LAYER,
            Compression.GZIP: mediatypes.OCI_LAYER_GZIP,
            Compression.ZSTD: mediatypes.OCI_LAYER_ZSTD,
        }[compression]
    )
    descriptor = info.descriptor()
    assert (descriptor.digest, descriptor.size) == (info.digest, info.size)


def test_the_tar_is_pax_without_atime_or_ctime(tmp_path):
    tree = make_tree(tmp_path / "tree")
    blob, _ = write(entries_from_directory(tree), Compression.NONE)
    for member in members(blob):
        assert "atime" not in member.pax_headers
        assert "ctime" not in member.pax_headers
    assert blob.endswith(bytes(1024))
    # Long and non-ASCII names are carried in PAX records.
    assert b"path=zz-long-" in blob


def test_entries_are_sorted_with_parents_first_and_metadata_kept(tmp_path):
    tree = make_tree(tmp_path / "tree")
    entries = list(entries_from_directory(tree))
    paths = [entry.path for entry in entries]
    assert paths == sorted(paths, key=lambda path: path.split("/"))
    by_path = {entry.path: entry for entry in entries}
    assert by_path["bin"].type is EntryType.DIRECTORY
    assert by_path["bin/tool"].mode == 0o4755
    assert by_path["bin/tool"].size == 5004
    assert by_path["bin/alias"].type is EntryType.SYMLINK
    assert by_path["bin/alias"].linkname == "tool"
    assert by_path["var/empty"].mode == 0o700
    assert by_path["var/pipe"].type is EntryType.FIFO
    for entry in entries:
        assert entry.uname == ""
        assert entry.gname == ""


def test_hardlinks_are_detected_by_inode_and_point_at_the_first_path(tmp_path):
    tree = make_tree(tmp_path / "tree")
    by_path = {entry.path: entry for entry in entries_from_directory(tree)}
    assert by_path["bin/tool"].type is EntryType.FILE
    link = by_path["bin/tool-hardlink"]
    assert link.type is EntryType.HARDLINK
    assert link.linkname == "bin/tool"


def test_sockets_are_skipped_because_tar_cannot_hold_them(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "kept").write_text("k")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tree / "listening.sock"))
        assert [entry.path for entry in entries_from_directory(tree)] == ["kept"]


def test_ownership_can_be_overridden_and_names_looked_up(tmp_path):
    tree = make_tree(tmp_path / "tree")
    for entry in entries_from_directory(tree, uid=1000, gid=1001, uname="app"):
        assert (entry.uid, entry.gid, entry.uname) == (1000, 1001, "app")
    looked_up = next(iter(entries_from_directory(tree, lookup_names=True)))
    if looked_up.uid == 0:
        assert looked_up.uname == "root"


def test_prefix_places_the_tree_under_a_directory_of_the_layer(tmp_path):
    tree = make_tree(tmp_path / "tree")
    entries = list(entries_from_directory(tree, prefix="/app/"))
    assert entries[0].path == "app"
    assert entries[0].type is EntryType.DIRECTORY
    assert all(e.path == "app" or e.path.startswith("app/") for e in entries)


@needs_root
def test_device_nodes_are_written_with_their_numbers(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    os.mknod(tree / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    (entry,) = entries_from_directory(tree)
    assert entry.type is EntryType.CHAR_DEVICE
    assert (entry.devmajor, entry.devminor) == (1, 3)
    blob, _ = write([entry], Compression.NONE)
    (member,) = members(blob)
    assert member.ischr()
    assert (member.devmajor, member.devminor) == (1, 3)


def test_xattrs_become_schily_records_and_read_back(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    path = tree / "caps"
    path.write_bytes(b"x")
    try:
        os.setxattr(path, "user.note", b"\xff\x00binary")
    except OSError as exc:
        pytest.skip(f"file system has no user xattrs: {exc}")
    blob, _ = write(entries_from_directory(tree), Compression.NONE)
    (member,) = members(blob)
    assert "SCHILY.xattr.user.note" in member.pax_headers
    ((entry, _),) = list(iter_entries(io.BytesIO(blob)))
    assert entry.xattrs == {"user.note": b"\xff\x00binary"}


def test_fixed_mtime_replaces_every_timestamp(tmp_path):
    tree = make_tree(tmp_path / "tree")
    blob, _ = write(entries_from_directory(tree), mtime=42)
    assert {member.mtime for member in members(blob)} == {42}


def test_source_date_epoch_clamps_only_newer_timestamps(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "old").write_text("o")
    (tree / "new").write_text("n")
    os.utime(tree / "old", (1000, 1000))
    os.utime(tree / "new", (2_000_000_000, 2_000_000_000))
    blob, _ = write(entries_from_directory(tree), source_date_epoch=1_500_000_000)
    mtimes = {member.name: member.mtime for member in members(blob)}
    assert mtimes == {"new": 1_500_000_000, "old": 1000}


def test_source_date_epoch_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert source_date_epoch_from_env() == 1700000000
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    assert source_date_epoch_from_env() is None
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(ContentError, match="SOURCE_DATE_EPOCH='yesterday'"):
        source_date_epoch_from_env()


def test_virtual_entries_make_a_layer_without_staging_a_tree(tmp_path):
    source = tmp_path / "app.py"
    source.write_text("print('hi')\n")
    entries = [
        Entry.file("/srv/app/app.py", source, mode=0o755, uid=1000, gid=1000),
        Entry.file("srv/app/VERSION", b"1.0\n"),
        Entry.directory("srv/app", mode=0o750),
        Entry.symlink("srv/current", "app"),
        Entry.hardlink("srv/app/main.py", "srv/app/app.py"),
    ]
    blob, _ = write(entries, Compression.ZSTD)
    read = {
        entry.path: (entry, content.read() if content else None)
        for entry, content in iter_entries(io.BytesIO(blob))
    }
    assert list(read) == [
        "srv/app",
        "srv/app/VERSION",
        "srv/app/app.py",
        "srv/app/main.py",
        "srv/current",
    ]
    assert read["srv/app/app.py"][1] == b"print('hi')\n"
    assert read["srv/app/app.py"][0].mode == 0o755
    assert read["srv/app/app.py"][0].uid == 1000
    assert read["srv/app"][0].mode == 0o750
    assert read["srv/app/main.py"][0].linkname == "srv/app/app.py"


def test_missing_parents_are_added_only_when_asked(tmp_path):
    entries = [Entry.file("a/b/c.txt", b"c")]
    blob, _ = write(entries, Compression.NONE)
    assert [m.name for m in members(blob)] == ["a/b/c.txt"]
    blob, _ = write(entries, Compression.NONE, add_parents=True, mtime=7)
    listed = [(m.name, m.type, m.mode, m.mtime) for m in members(blob)]
    assert listed == [
        ("a", tarfile.DIRTYPE, 0o755, 7),
        ("a/b", tarfile.DIRTYPE, 0o755, 7),
        ("a/b/c.txt", tarfile.REGTYPE, 0o644, 7),
    ]


def test_a_path_given_twice_is_refused():
    with pytest.raises(ContentError, match="'x' is given twice"):
        write([Entry.file("x", b"1"), Entry.file("./x", b"2")])


def test_entry_paths_with_dotdot_are_refused():
    with pytest.raises(ContentError, match=r"'\.\.' component"):
        Entry.file("a/../../etc/passwd", b"")


def test_hand_made_entries_get_clean_paths_and_dotdot_is_refused():
    raw = Entry("/./srv//app/", EntryType.DIRECTORY, mode=0o755)
    link = Entry("./srv/b", EntryType.HARDLINK, linkname="/srv/a")
    blob, _ = write([raw, Entry.file("srv/a", b"a"), link], Compression.NONE)
    names = [(m.name, m.linkname) for m in members(blob)]
    assert names == [("srv/a", ""), ("srv/app", ""), ("srv/b", "srv/a")]
    with pytest.raises(ContentError, match=r"'\.\.' component"):
        write([Entry("srv/../../x", EntryType.FILE)])
    with pytest.raises(ContentError, match="names the image root"):
        write([Entry("/", EntryType.FILE)])


def test_a_source_file_that_changes_size_while_writing_is_an_error(tmp_path):
    source = tmp_path / "data"
    source.write_bytes(b"x" * 100)
    entry = Entry.file("data", source)
    source.write_bytes(b"x" * 10)
    with pytest.raises(ContentError, match="shrank"):
        write([entry])
    source.write_bytes(b"x" * 101)
    with pytest.raises(ContentError, match="grew"):
        write([entry])


def test_whiteout_helpers_convert_both_ways():
    assert whiteout_path("etc/passwd") == "etc/.wh.passwd"
    assert whiteout_path("/top") == ".wh.top"
    assert whiteout_target("etc/.wh.passwd") == "etc/passwd"
    assert whiteout_target(".wh.top") == "top"
    assert whiteout_target("etc/passwd") is None
    assert whiteout_target("etc/.wh..wh..opq") is None
    assert whiteout_target("etc/.wh..wh.plnk") is None
    assert opaque_marker_path("etc") == "etc/.wh..wh..opq"
    assert opaque_marker_path("/") == ".wh..wh..opq"
    assert opaque_directory("etc/.wh..wh..opq") == "etc"
    assert opaque_directory(".wh..wh..opq") == "."
    assert opaque_directory("etc/.wh.x") is None
    with pytest.raises(ContentError):
        whiteout_path("/")


def test_opaque_marker_is_sorted_right_after_its_directory():
    entries = [
        Entry.file("d/a", b"a"),
        Entry.opaque("d"),
        Entry.directory("d"),
        Entry.whiteout("d/gone"),
    ]
    blob, _ = write(entries, Compression.NONE)
    assert [m.name for m in members(blob)] == [
        "d",
        "d/.wh..wh..opq",
        "d/.wh.gone",
        "d/a",
    ]


def test_the_gnu_tar_tool_extracts_what_was_written(tmp_path):
    if shutil.which("tar") is None:
        pytest.skip("tar not installed")
    tree = make_tree(tmp_path / "tree")
    layer = tmp_path / "layer.tar.gz"
    with layer.open("wb") as out:
        write_layer(entries_from_directory(tree), out, Compression.GZIP)
    extracted = tmp_path / "extracted"
    extracted.mkdir()
    subprocess.run(["tar", "-xzf", str(layer), "-C", str(extracted)], check=True)
    for name in ("etc/hostname", "bin/tool", "unicode-é.txt"):
        assert (extracted / name).read_bytes() == (tree / name).read_bytes()
    assert str((extracted / "bin" / "alias").readlink()) == "tool"
    tool = (extracted / "bin" / "tool").stat()
    assert tool.st_ino == (extracted / "bin" / "tool-hardlink").stat().st_ino


def test_layers_written_by_gnu_tar_are_read(tmp_path):
    if shutil.which("tar") is None:
        pytest.skip("tar not installed")
    tree = make_tree(tmp_path / "tree")
    layer = tmp_path / "gnu.tar.gz"
    subprocess.run(
        ["tar", "--format=gnu", "-czf", str(layer), "-C", str(tree), "."], check=True
    )
    with layer.open("rb") as stream:
        read = {entry.path.lstrip("./"): entry for entry, _ in iter_entries(stream)}
    assert read["bin/alias"].linkname == "tool"
    assert read["zz-long-/" + "n" * 150].type is EntryType.DIRECTORY


def test_reading_a_file_that_is_not_a_tar_is_an_error():
    blob = b"this is not a tar archive at all" * 40
    with pytest.raises(ContentError, match="not a valid tar"):
        list(iter_entries(io.BytesIO(blob)))


@pytest.mark.parametrize("compression", [Compression.GZIP, Compression.ZSTD])
def test_writing_streams_large_files_in_bounded_memory(tmp_path, compression):
    big = tmp_path / "big"
    with big.open("wb") as out:
        out.write(os.urandom(4 << 20))
        out.truncate(64 << 20)
    sink = hashlib.sha256()

    class Sink:
        def write(self, data):
            sink.update(data)
            return len(data)

        def flush(self):
            pass

        def close(self):
            pass

    tracemalloc.start()
    try:
        info = write_layer([Entry.file("big", big)], Sink(), compression)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.digest.encoded == sink.hexdigest()
    # A 1 MiB copy buffer and codec output pieces; far below the 64 MiB layer.
    assert peak < 8 << 20, f"peak Python allocation {peak} bytes"


# --- overlay upper directories ----------------------------------------------------


def test_overlay_whiteout_devices_and_opaque_xattrs_become_wh_entries(tmp_path):
    if not IS_ROOT:
        pytest.skip("needs root to make whiteout devices and trusted xattrs")
    upper = tmp_path / "upper"
    (upper / "etc").mkdir(parents=True)
    os.mknod(upper / "etc" / "motd", stat.S_IFCHR, os.makedev(0, 0))
    (upper / "var").mkdir()
    os.setxattr(upper / "var", "trusted.overlay.opaque", b"y")
    (upper / "var" / "new").write_text("n")
    (upper / "home").mkdir()
    os.setxattr(upper / "home", "user.overlay.opaque", b"y")
    paths = [(e.path, e.type) for e in entries_from_overlay(upper)]
    assert paths == [
        ("etc", EntryType.DIRECTORY),
        ("etc/.wh.motd", EntryType.FILE),
        ("home", EntryType.DIRECTORY),
        ("home/.wh..wh..opq", EntryType.FILE),
        ("var", EntryType.DIRECTORY),
        ("var/.wh..wh..opq", EntryType.FILE),
        ("var/new", EntryType.FILE),
    ]
    for entry in entries_from_overlay(upper):
        assert not any(name.startswith("trusted.overlay.") for name in entry.xattrs)


def test_overlay_redirect_directories_are_refused(tmp_path):
    if not IS_ROOT:
        pytest.skip("needs root for trusted xattrs")
    upper = tmp_path / "upper"
    (upper / "moved").mkdir(parents=True)
    os.setxattr(upper / "moved", "trusted.overlay.redirect", b"/old")
    with pytest.raises(ContentError, match="redirect_dir or metacopy"):
        list(entries_from_overlay(upper))


def mount_overlay(lower: Path, upper: Path, work: Path, merged: Path) -> None:
    options = f"lowerdir={lower},upperdir={upper},workdir={work}"
    result = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", options, str(merged)],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount overlay here: {result.stderr.decode().strip()}")


def test_a_real_overlay_upper_directory_becomes_a_layer(tmp_path):
    if not IS_ROOT:
        pytest.skip("mounting overlay needs root")
    lower, upper, work, merged = (tmp_path / n for n in ("l", "u", "w", "m"))
    for path in (lower / "etc", lower / "cache" / "old", upper, work, merged):
        path.mkdir(parents=True)
    (lower / "etc" / "motd").write_text("hello")
    (lower / "etc" / "keep").write_text("keep")
    mount_overlay(lower, upper, work, merged)
    try:
        (merged / "etc" / "motd").unlink()
        shutil.rmtree(merged / "cache")
        (merged / "cache").mkdir()
        (merged / "cache" / "fresh").write_text("f")
    finally:
        subprocess.run(["umount", str(merged)], check=True)
    blob, _ = write(entries_from_overlay(upper), Compression.GZIP)
    names = [member.name for member in members(blob)]
    assert names == [
        "cache",
        "cache/.wh..wh..opq",
        "cache/fresh",
        "etc",
        "etc/.wh.motd",
    ]


# --- property: what is written reads back -------------------------------------------

names = st.text(
    alphabet=st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=40,
).filter(lambda name: name not in (".", "..") and not name.startswith(".wh."))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    files=st.dictionaries(names, st.binary(max_size=3000), max_size=8),
    mode=st.integers(min_value=0, max_value=0o7777),
    compression=st.sampled_from(list(Compression)[:3]),
)
def test_virtual_files_read_back_with_their_content_and_mode(files, mode, compression):
    entries = [Entry.file(f"d/{name}", data, mode=mode) for name, data in files.items()]
    blob, _ = write(entries, compression)
    read = {
        entry.path: (entry.mode, content.read() if content else None)
        for entry, content in iter_entries(io.BytesIO(blob))
    }
    assert read == {f"d/{name}": (mode, data) for name, data in files.items()}
    blob_again, _ = write(reversed(entries), compression)
    assert blob_again == blob


def test_the_gzip_layer_bench_runs_on_a_small_tree(tmp_path):
    bench = Path(__file__).parents[1] / "bench" / "gzip_layer.py"
    result = subprocess.run(
        [sys.executable, str(bench), "--size", "2M", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert "isal over stdlib gzip -6:" in result.stdout
    assert "peak RSS" in result.stdout
    assert list(tmp_path.iterdir()) == []  # the bench cleans up after itself
