"""Unpacking layer stacks: whiteouts, opaque directories, modes, ownership, overlay."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tracemalloc
from typing import TYPE_CHECKING

import pytest

from platforge.errors import UnpackError
from platforge.oci.compression import Compression
from platforge.oci.layer import Entry, EntryType, entries_from_directory, write_layer
from platforge.oci.unpack import unpack_layers

if TYPE_CHECKING:
    from pathlib import Path

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root")


def layer(*entries: Entry, compression=Compression.GZIP, sort=True) -> io.BytesIO:
    out = io.BytesIO()
    write_layer(entries, out, compression, sort=sort)
    out.seek(0)
    return out


def listing(root: Path) -> dict[str, tuple]:
    """Every path under root with its kind, mode, size and content or link."""
    found = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            detail = str(path.readlink())
        elif stat.S_ISREG(st.st_mode):
            detail = path.read_bytes()
        else:
            detail = None
        found[str(path.relative_to(root))] = (
            stat.S_IFMT(st.st_mode),
            stat.S_IMODE(st.st_mode),
            detail,
        )
    return found


def test_a_tree_round_trips_through_a_layer(tmp_path):
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "hostname").write_text("box\n")
    (tree / "bin").mkdir()
    (tree / "bin" / "tool").write_bytes(os.urandom(3 << 20))
    (tree / "bin" / "tool").chmod(0o751)
    (tree / "bin" / "alias").symlink_to("tool")
    os.link(tree / "bin" / "tool", tree / "bin" / "again")
    os.mkfifo(tree / "pipe")
    os.utime(tree / "etc" / "hostname", (1234567, 1234567))
    os.utime(tree / "etc", (7654321, 7654321))
    out = io.BytesIO()
    write_layer(entries_from_directory(tree), out, Compression.ZSTD)
    out.seek(0)
    target = tmp_path / "rootfs"
    unpack_layers([out], target)
    assert listing(target) == listing(tree)
    assert (target / "bin" / "again").stat().st_ino == (
        target / "bin" / "tool"
    ).stat().st_ino
    assert (target / "etc" / "hostname").stat().st_mtime == 1234567
    assert (target / "etc").stat().st_mtime == 7654321


def test_whiteouts_delete_files_and_whole_directories_of_earlier_layers(tmp_path):
    base = layer(
        Entry.file("etc/motd", b"hi"),
        Entry.file("etc/keep", b"k"),
        Entry.file("var/cache/a/b", b"b"),
    )
    change = layer(Entry.whiteout("etc/motd"), Entry.whiteout("var/cache"))
    unpack_layers([base, change], tmp_path / "t")
    assert sorted(listing(tmp_path / "t")) == ["etc", "etc/keep", "var"]


def test_whiteouts_and_opaque_markers_of_missing_paths_create_nothing(tmp_path):
    change = layer(Entry.whiteout("never/existed"), Entry.opaque("nor/this"))
    unpack_layers([change], tmp_path / "t")
    assert listing(tmp_path / "t") == {}


def test_opaque_directory_hides_earlier_content_but_keeps_its_own_layer(tmp_path):
    base = layer(Entry.file("d/old", b"o"), Entry.file("d/sub/older", b"o"))
    # Written in a deliberately bad order: a child before the marker.
    change = layer(
        Entry.file("d/new", b"n"),
        Entry.opaque("d"),
        Entry.file("d/newer", b"n"),
        sort=False,
    )
    unpack_layers([base, change], tmp_path / "t")
    assert sorted(listing(tmp_path / "t")) == ["d", "d/new", "d/newer"]


def test_a_whiteout_never_deletes_an_entry_of_its_own_layer(tmp_path):
    base = layer(Entry.file("+old", b"lower"))
    # "+" sorts before ".", so the file comes first and its whiteout after it.
    change = layer(Entry.file("+old", b"upper"), Entry.whiteout("+old"))
    unpack_layers([base, change], tmp_path / "t")
    assert (tmp_path / "t" / "+old").read_bytes() == b"upper"


def test_opaque_root_clears_everything_earlier(tmp_path):
    base = layer(Entry.file("a", b"a"), Entry.file("b/c", b"c"))
    change = layer(Entry.opaque("/"), Entry.file("z", b"z"))
    unpack_layers([base, change], tmp_path / "t")
    assert sorted(listing(tmp_path / "t")) == ["z"]


def test_later_layers_replace_files_with_directories_and_back(tmp_path):
    base = layer(Entry.file("x", b"file"), Entry.file("y/inner", b"i"))
    change = layer(Entry.file("x/child", b"c"), Entry.file("y", b"now a file"))
    # x/child needs x to become a directory first.
    change_with_dir = layer(Entry.directory("x"), Entry.file("x/child", b"c"))
    unpack_layers([base, change_with_dir], tmp_path / "a")
    assert (tmp_path / "a" / "x" / "child").read_bytes() == b"c"
    with pytest.raises(UnpackError, match="'x' on its path is not a directory"):
        unpack_layers([layer(Entry.file("x", b"file")), change], tmp_path / "b")
    base_again = layer(Entry.file("y/inner", b"i"))
    unpack_layers([base_again, layer(Entry.file("y", b"now a file"))], tmp_path / "c")
    assert (tmp_path / "c" / "y").read_bytes() == b"now a file"


def test_hardlinks_may_point_at_files_of_earlier_layers(tmp_path):
    base = layer(Entry.file("usr/bin/python3.11", b"py"))
    change = layer(Entry.hardlink("usr/bin/python3", "usr/bin/python3.11"))
    unpack_layers([base, change], tmp_path / "t")
    one = (tmp_path / "t" / "usr/bin/python3").stat()
    assert one.st_ino == (tmp_path / "t" / "usr/bin/python3.11").stat().st_ino


def test_paths_through_in_image_symlinks_land_where_the_link_points(tmp_path):
    # A merged-/usr base: /bin is a link to usr/bin, and a later layer adds bin/sh.
    base = layer(Entry.directory("usr/bin"), Entry.symlink("bin", "usr/bin"))
    absolute = layer(Entry.symlink("lib", "/usr/lib"), Entry.directory("usr/lib"))
    change = layer(Entry.file("bin/sh", b"sh"), Entry.file("lib/libc.so", b"c"))
    unpack_layers([base, absolute, change], tmp_path / "t")
    assert (tmp_path / "t" / "usr" / "bin" / "sh").read_bytes() == b"sh"
    assert (tmp_path / "t" / "usr" / "lib" / "libc.so").read_bytes() == b"c"
    assert (tmp_path / "t" / "bin").is_symlink()


def test_read_only_directories_get_children_and_their_mode_last(tmp_path):
    unpack_layers(
        [
            layer(Entry.directory("ro", mode=0o555, mtime=99)),
            layer(Entry.file("ro/inside", b"x")),
        ],
        tmp_path / "t",
        privileged=False,
    )
    ro = (tmp_path / "t" / "ro").stat()
    assert stat.S_IMODE(ro.st_mode) == 0o555
    assert ro.st_mtime == 99
    assert (tmp_path / "t" / "ro" / "inside").read_bytes() == b"x"
    (tmp_path / "t" / "ro").chmod(0o755)


def test_permissions_are_kept_exactly(tmp_path):
    modes = [0o600, 0o644, 0o700, 0o751, 0o1777]
    entries = [Entry.file(f"f{mode:o}", b"x", mode=mode) for mode in modes]
    entries.append(Entry.directory("sticky", mode=0o1777))
    unpack_layers([layer(*entries)], tmp_path / "t", privileged=False)
    for mode in modes:
        assert stat.S_IMODE((tmp_path / "t" / f"f{mode:o}").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "t" / "sticky").stat().st_mode) == 0o1777


@needs_root
def test_ownership_and_setuid_are_kept_when_privileged(tmp_path):
    entries = (
        Entry.file("bin/su", b"su", mode=0o4755, uid=0, gid=0),
        Entry.file("home/app/.profile", b"p", uid=1000, gid=1000),
        Entry.directory("home/app", mode=0o2750, uid=1000, gid=1000),
        Entry.symlink("home/app/link", ".profile", uid=1000, gid=1001),
    )
    unpack_layers([layer(*entries)], tmp_path / "t", privileged=True)
    root = tmp_path / "t"
    assert stat.S_IMODE((root / "bin/su").stat().st_mode) == 0o4755
    profile = (root / "home/app/.profile").stat()
    assert (profile.st_uid, profile.st_gid) == (1000, 1000)
    home = (root / "home/app").stat()
    assert (home.st_uid, stat.S_IMODE(home.st_mode)) == (1000, 0o2750)
    link = (root / "home/app/link").lstat()
    assert (link.st_uid, link.st_gid) == (1000, 1001)


@needs_root
def test_ownership_and_setuid_are_dropped_when_not_privileged(tmp_path):
    entries = (
        Entry.file("bin/su", b"su", mode=0o4755),
        Entry.file("shared", b"s", mode=0o2775, uid=1000, gid=1000),
    )
    unpack_layers([layer(*entries)], tmp_path / "t", privileged=False)
    assert stat.S_IMODE((tmp_path / "t/bin/su").stat().st_mode) == 0o755
    shared = (tmp_path / "t/shared").stat()
    assert stat.S_IMODE(shared.st_mode) == 0o775
    assert shared.st_uid == os.geteuid()


@needs_root
def test_device_nodes_are_made_when_privileged(tmp_path):
    null = Entry(
        "dev/null",
        EntryType.CHAR_DEVICE,
        mode=0o666,
        devmajor=1,
        devminor=3,
    )
    unpack_layers([layer(null)], tmp_path / "t", privileged=True)
    st = (tmp_path / "t/dev/null").lstat()
    assert stat.S_ISCHR(st.st_mode)
    assert os.major(st.st_rdev) == 1
    assert os.minor(st.st_rdev) == 3
    assert stat.S_IMODE(st.st_mode) == 0o666


def test_user_xattrs_are_restored(tmp_path):
    probe = tmp_path / "probe"
    probe.write_text("")
    try:
        os.setxattr(probe, "user.probe", b"1")
    except OSError as exc:
        pytest.skip(f"no user xattrs here: {exc}")
    entry = Entry.file("f", b"x", xattrs={"user.note": b"v\x00w"})
    unpack_layers([layer(entry)], tmp_path / "t")
    assert os.getxattr(tmp_path / "t" / "f", "user.note") == b"v\x00w"


def test_a_layer_from_gnu_tar_with_dot_slash_names_unpacks(tmp_path):
    if shutil.which("tar") is None:
        pytest.skip("tar not installed")
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "c").write_text("c")
    archive = tmp_path / "gnu.tar"
    subprocess.run(["tar", "-cf", str(archive), "-C", str(tree), "."], check=True)
    with archive.open("rb") as stream:
        unpack_layers([stream], tmp_path / "t")
    assert (tmp_path / "t" / "a" / "b" / "c").read_text() == "c"


def test_a_corrupt_layer_is_reported_with_its_number_and_name(tmp_path):
    bad = tmp_path / "blob"
    bad.write_bytes(b"\x1f\x8b\x08\x00" + bytes(100))
    with bad.open("rb") as stream, pytest.raises(UnpackError, match=r"layer 2 \("):
        unpack_layers([layer(Entry.file("ok", b"")), stream], tmp_path / "t")


def test_unknown_whiteout_format_is_refused(tmp_path):
    with pytest.raises(UnpackError, match="unknown whiteout format"):
        unpack_layers(
            [],
            tmp_path / "t",
            whiteout_format="aufs",  # type: ignore[arg-type]  # refused on purpose
        )


# --- overlay format -------------------------------------------------------------------


@needs_root
def test_overlay_format_writes_whiteout_devices_and_opaque_xattrs(tmp_path):
    change = layer(
        Entry.whiteout("etc/motd"), Entry.opaque("var"), Entry.file("v", b"")
    )
    unpack_layers([change], tmp_path / "t", whiteout_format="overlay")
    motd = (tmp_path / "t/etc/motd").lstat()
    assert stat.S_ISCHR(motd.st_mode)
    assert motd.st_rdev == 0
    assert os.getxattr(tmp_path / "t/var", "trusted.overlay.opaque") == b"y"
    assert not (tmp_path / "t/etc/.wh.motd").exists()


def test_overlay_opaque_dirs_use_user_xattrs_when_not_privileged(tmp_path):
    probe = tmp_path / "probe"
    probe.mkdir()
    try:
        os.setxattr(probe, "user.overlay.probe", b"1")
    except OSError as exc:
        pytest.skip(f"no user xattrs on directories here: {exc}")
    change = layer(Entry.directory("var"), Entry.opaque("var"))
    unpack_layers([change], tmp_path / "t", privileged=False, whiteout_format="overlay")
    assert os.getxattr(tmp_path / "t/var", "user.overlay.opaque") == b"y"
    assert "trusted.overlay.opaque" not in os.listxattr(tmp_path / "t/var")


def test_overlay_whiteouts_need_privilege(tmp_path):
    with pytest.raises(UnpackError, match="need root"):
        unpack_layers(
            [layer(Entry.whiteout("x"))],
            tmp_path / "t",
            privileged=False,
            whiteout_format="overlay",
        )


@needs_root
def test_overlay_lowerdirs_merge_to_the_same_tree_as_applying(tmp_path):
    def stack():
        return [
            layer(
                Entry.file("etc/motd", b"hello"),
                Entry.file("etc/keep", b"k"),
                Entry.file("cache/old/x", b"x"),
            ),
            layer(
                Entry.whiteout("etc/motd"),
                Entry.directory("cache"),
                Entry.opaque("cache"),
                Entry.file("cache/fresh", b"f"),
            ),
            layer(Entry.file("etc/motd", b"back"), Entry.whiteout("etc/keep")),
        ]

    applied = tmp_path / "applied"
    unpack_layers(stack(), applied)
    lowers = []
    for number, one in enumerate(stack()):
        lower = tmp_path / f"lower{number}"
        unpack_layers([one], lower, whiteout_format="overlay")
        lowers.append(str(lower))
    merged = tmp_path / "merged"
    merged.mkdir()
    options = "lowerdir=" + ":".join(reversed(lowers))
    mounted = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", options, str(merged)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount overlay here: {mounted.stderr.decode().strip()}")
    try:
        assert listing(merged) == listing(applied)
    finally:
        subprocess.run(["umount", str(merged)], check=True)


@pytest.mark.parametrize("compression", [Compression.GZIP, Compression.ZSTD])
def test_tar_members_are_streamed_not_read_whole(tmp_path, compression):
    big = tmp_path / "big"
    with big.open("wb") as out:
        out.write(os.urandom(4 << 20))
        out.truncate(48 << 20)
    blob = tmp_path / "layer"
    with blob.open("wb") as out:
        write_layer([Entry.file("big", big)], out, compression)
    tracemalloc.start()
    try:
        with blob.open("rb") as stream:
            unpack_layers([stream], tmp_path / "t")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (tmp_path / "t" / "big").read_bytes() == big.read_bytes()
    assert peak < 12 << 20, f"peak Python allocation {peak} bytes"


# --- interoperability with umoci (a real OCI image tool) ------------------------------


def run_umoci(*args: str, cwd: Path) -> None:
    subprocess.run(["umoci", *args], cwd=cwd, check=True, capture_output=True)


def write_image_layout(path: Path, layers: list[tuple[bytes, object]]) -> None:
    """A minimal OCI layout with one image tagged "t" made of ``layers``."""
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes, media_type: str) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {
            "mediaType": media_type,
            "digest": f"sha256:{digest}",
            "size": len(data),
        }

    config = {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [str(i.diff_id) for _, i in layers]},
        "config": {},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": put(
            json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json"
        ),
        "layers": [put(blob, info.media_type) for blob, info in layers],
    }
    descriptor = put(json.dumps(manifest).encode(), manifest["mediaType"])
    descriptor["annotations"] = {"org.opencontainers.image.ref.name": "t"}
    (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (path / "index.json").write_text(
        json.dumps({"schemaVersion": 2, "manifests": [descriptor]})
    )


def image_layers(path: Path) -> list[Path]:
    index = json.loads((path / "index.json").read_text())
    digest = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads((path / "blobs" / "sha256" / digest).read_text())
    return [
        path / "blobs" / "sha256" / layer["digest"].split(":")[1]
        for layer in manifest["layers"]
    ]


needs_umoci = pytest.mark.skipif(
    shutil.which("umoci") is None or not IS_ROOT, reason="needs umoci and root"
)


@needs_umoci
def test_umoci_unpacks_our_layers_to_the_same_tree_as_we_do(tmp_path):
    def blob(*entries: Entry) -> tuple[bytes, object]:
        out = io.BytesIO()
        info = write_layer(entries, out, Compression.GZIP)
        return out.getvalue(), info

    layers = [
        blob(
            Entry.directory("etc"),
            Entry.file("etc/motd", b"hello"),
            Entry.file("etc/keep", b"k", mode=0o600),
            Entry.directory("var"),
            Entry.directory("var/cache"),
            Entry.file("var/cache/old", b"o"),
            Entry.directory("bin"),
            Entry.file("bin/tool", b"\x7fELF", mode=0o755),
            Entry.hardlink("bin/tool2", "bin/tool"),
            Entry.symlink("bin/alias", "tool"),
        ),
        blob(
            Entry.whiteout("etc/motd"),
            Entry.directory("var/cache"),
            Entry.opaque("var/cache"),
            Entry.file("var/cache/new", b"n"),
        ),
    ]
    write_image_layout(tmp_path / "img", layers)
    run_umoci("unpack", "--image", "img:t", "bundle", cwd=tmp_path)
    ours = tmp_path / "ours"
    unpack_layers([io.BytesIO(data) for data, _ in layers], ours)
    assert listing(ours) == listing(tmp_path / "bundle" / "rootfs")
    assert sorted(listing(ours)) == [
        "bin",
        "bin/alias",
        "bin/tool",
        "bin/tool2",
        "etc",
        "etc/keep",
        "var",
        "var/cache",
        "var/cache/new",
    ]


@needs_umoci
def test_we_unpack_layers_umoci_made_to_the_same_tree_as_umoci(tmp_path):
    run_umoci("init", "--layout", "img", cwd=tmp_path)
    run_umoci("new", "--image", "img:t", cwd=tmp_path)
    run_umoci("unpack", "--image", "img:t", "b1", cwd=tmp_path)
    rootfs = tmp_path / "b1" / "rootfs"
    (rootfs / "gone").write_text("soon deleted")
    (rootfs / "d" / "sub").mkdir(parents=True)
    (rootfs / "d" / "sub" / "x").write_text("x")
    (rootfs / "link").symlink_to("d/sub/x")
    run_umoci("repack", "--image", "img:t", "b1", cwd=tmp_path)
    run_umoci("unpack", "--image", "img:t", "b2", cwd=tmp_path)
    rootfs = tmp_path / "b2" / "rootfs"
    (rootfs / "gone").unlink()
    shutil.rmtree(rootfs / "d" / "sub")
    (rootfs / "d" / "y").write_text("y")
    run_umoci("repack", "--image", "img:t", "b2", cwd=tmp_path)
    run_umoci("unpack", "--image", "img:t", "reference", cwd=tmp_path)
    layers = image_layers(tmp_path / "img")
    assert len(layers) == 2
    streams = [path.open("rb") for path in layers]
    try:
        unpack_layers(streams, tmp_path / "ours")
    finally:
        for stream in streams:
            stream.close()
    assert listing(tmp_path / "ours") == listing(tmp_path / "reference" / "rootfs")
    assert sorted(listing(tmp_path / "ours")) == ["d", "d/y", "link"]


def test_names_that_are_not_utf8_survive_write_and_unpack(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    raw_name = b"caf\xe9-latin1.txt"
    (tree / os.fsdecode(raw_name)).write_bytes(b"x")
    out = io.BytesIO()
    write_layer(entries_from_directory(tree), out, Compression.GZIP)
    out.seek(0)
    unpack_layers([out], tmp_path / "t")
    names = [os.fsencode(path.name) for path in (tmp_path / "t").iterdir()]
    assert names == [raw_name]
