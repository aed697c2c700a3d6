import gzip
import io
import json
import shutil
import subprocess
import tarfile
import threading

import pytest

from platforge.errors import DigestMismatchError, LayoutError
from platforge.oci import mediatypes as mt
from platforge.oci.content import Descriptor, ImageConfig, Index, Manifest
from platforge.oci.digest import CHUNK_SIZE, Digest
from platforge.oci.layout import Layout
from platforge.platforms import parse as parse_platform


def tar_with(name, data):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = 0
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def write_image(layout, platform_text, content=b"hello\n"):
    """One-layer image for a platform; returns the manifest descriptor."""
    tar = tar_with("hello.txt", content)
    layer = layout.write_blob(gzip.compress(tar, mtime=0), media_type=mt.OCI_LAYER_GZIP)
    platform = parse_platform(platform_text)
    config = ImageConfig.new(platform, created="2024-01-01T00:00:00Z")
    config.diff_ids = [Digest.of(tar)]
    config.config.cmd = ["/hello"]
    manifest = Manifest.build(layout.write_config(config), [layer])
    return layout.write_manifest(manifest, manifest.descriptor(platform))


def multi_platform(layout):
    entries = [write_image(layout, p) for p in ("linux/amd64", "linux/arm64")]
    index = Index.build(entries)
    return layout.write_manifest(index)


def test_create_writes_marker_and_empty_index(tmp_path):
    layout = Layout.create(tmp_path / "img")
    assert json.loads((tmp_path / "img" / "oci-layout").read_bytes()) == {
        "imageLayoutVersion": "1.0.0"
    }
    assert layout.index().manifests == ()
    assert layout.index().media_type == mt.OCI_INDEX
    assert (tmp_path / "img" / "blobs" / "sha256").is_dir()
    # creating again opens what is there, keeping the entries
    layout.add_ref(Descriptor.of(b"x", "application/x"), "x")
    assert len(Layout.create(tmp_path / "img").index().manifests) == 1


def test_open_refuses_directories_that_are_not_layouts(tmp_path):
    with pytest.raises(LayoutError, match="oci-layout is missing"):
        Layout.open(tmp_path)
    (tmp_path / "oci-layout").write_text('{"imageLayoutVersion": "2.0.0"}')
    with pytest.raises(LayoutError, match=r"'2\.0\.0' is not supported"):
        Layout.open(tmp_path)
    (tmp_path / "oci-layout").write_text("{")
    with pytest.raises(LayoutError, match="unreadable"):
        Layout.open(tmp_path)
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(LayoutError, match="it is a file"):
        Layout.create(afile)


def test_write_blob_streams_and_names_blob_by_digest(tmp_path):
    layout = Layout.create(tmp_path)
    data = b"z" * (3 * CHUNK_SIZE + 5)
    desc = layout.write_blob(io.BytesIO(data), media_type=mt.OCI_LAYER)
    assert desc.digest == Digest.of(data)
    assert desc.size == len(data)
    assert desc.media_type == mt.OCI_LAYER
    assert layout.blob_path(desc.digest).read_bytes() == data
    assert layout.has_blob(desc.digest)
    with layout.open_blob(desc.digest) as blob:
        assert blob.read(3) == b"zzz"
    assert layout.write_blob(b"abc").media_type == "application/octet-stream"
    assert layout.read_blob(Digest.of(b"abc")) == b"abc"


def test_write_blob_verifies_expected_and_leaves_nothing_behind(tmp_path):
    layout = Layout.create(tmp_path)
    good = Descriptor.of(b"right", mt.OCI_LAYER)
    wrong_size = Descriptor(mt.OCI_LAYER, Digest.of(b"right"), 99)
    with pytest.raises(DigestMismatchError, match="content hashes to"):
        layout.write_blob(b"wrong", good)
    with pytest.raises(DigestMismatchError, match="size is 5 bytes, expected 99"):
        layout.write_blob(io.BytesIO(b"right"), wrong_size)
    assert not layout.has_blob(good.digest)
    assert list((tmp_path / "blobs" / "sha256").iterdir()) == []
    assert layout.write_blob(io.BytesIO(b"right"), good) is good
    assert layout.has_blob(good.digest)


def test_write_blob_skips_blobs_already_present(tmp_path):
    layout = Layout.create(tmp_path)
    desc = layout.write_blob(b"once")
    untouched = io.BytesIO(b"once")
    assert layout.write_blob(untouched, desc) is desc
    assert untouched.tell() == 0
    # without a descriptor the bytes are hashed, and the existing file is kept
    inode = layout.blob_path(desc.digest).stat().st_ino
    assert layout.write_blob(b"once").digest == desc.digest
    assert layout.blob_path(desc.digest).stat().st_ino == inode
    assert sorted(p.name for p in (tmp_path / "blobs" / "sha256").iterdir()) == [
        desc.digest.encoded
    ]


def test_write_blob_failure_mid_stream_leaves_no_temp_file(tmp_path):
    layout = Layout.create(tmp_path)

    class Broken:
        def __init__(self):
            self.calls = 0

        def read(self, _size=-1):
            self.calls += 1
            if self.calls > 2:
                raise OSError("connection reset")
            return b"x" * 10

    with pytest.raises(OSError, match="connection reset"):
        layout.write_blob(Broken())
    assert list((tmp_path / "blobs" / "sha256").iterdir()) == []


def test_sha512_blobs_go_to_their_own_directory(tmp_path):
    layout = Layout.create(tmp_path)
    expected = Descriptor(mt.OCI_LAYER, Digest.of(b"x", "sha512"), 1)
    layout.write_blob(b"x", expected)
    assert (
        tmp_path / "blobs" / "sha512" / expected.digest.encoded
    ).read_bytes() == b"x"


def test_read_blob_detects_corruption_and_missing_blobs(tmp_path):
    layout = Layout.create(tmp_path)
    desc = layout.write_blob(b"{}")
    layout.blob_path(desc.digest).chmod(0o644)
    layout.blob_path(desc.digest).write_bytes(b"[]")
    with pytest.raises(LayoutError, match="is corrupt"):
        layout.read_blob(desc.digest)
    with pytest.raises(LayoutError, match="is missing"):
        layout.read_blob(Digest.of(b"absent"))
    big = layout.write_blob(b"x" * 100)
    with pytest.raises(LayoutError, match="larger than 10 bytes"):
        layout.read_blob(big.digest, limit=10)


def test_add_ref_names_entries_and_replaces_same_name_in_place(tmp_path):
    layout = Layout.create(tmp_path)
    a = write_image(layout, "linux/amd64", b"a")
    b = write_image(layout, "linux/amd64", b"b")
    c = write_image(layout, "linux/amd64", b"c")
    layout.add_ref(a, "one")
    layout.add_ref(b, "two")
    layout.add_ref(c, "one")
    entries = layout.index().manifests
    assert [(d.ref_name, d.digest) for d in entries] == [
        ("one", c.digest),
        ("two", b.digest),
    ]
    assert entries[0].platform == parse_platform("linux/amd64")
    assert layout.resolve("one").digest == c.digest
    assert layout.resolve(str(b.digest)).digest == b.digest
    layout.add_ref(a)
    layout.add_ref(a)
    assert len(layout.index().manifests) == 3
    layout.remove_ref("two")
    assert [d.ref_name for d in layout.index().manifests] == ["one", None]


def test_resolve_without_name_needs_exactly_one_entry(tmp_path):
    layout = Layout.create(tmp_path)
    with pytest.raises(LayoutError, match="has no images"):
        layout.resolve()
    a = write_image(layout, "linux/amd64", b"a")
    layout.add_ref(a, "a")
    assert layout.resolve().digest == a.digest
    layout.add_ref(write_image(layout, "linux/arm64", b"b"), "b")
    with pytest.raises(LayoutError, match=r"holds 2 images \(a, b\); name one"):
        layout.resolve()
    with pytest.raises(LayoutError, match=r"no image named 'c'.*holds a, b"):
        layout.resolve("c")


def test_index_json_is_kept_exactly_and_foreign_annotations_survive(tmp_path):
    layout = Layout.create(tmp_path)
    desc = write_image(layout, "linux/amd64")
    foreign = {
        "schemaVersion": 2,
        "manifests": [desc.to_json()],
        "annotations": {"made.by": "someone else"},
    }
    raw = json.dumps(foreign, indent=2).encode()
    (tmp_path / "index.json").write_bytes(raw)
    assert layout.index().raw == raw
    layout.add_ref(desc, "v1")
    assert layout.index().annotations == {"made.by": "someone else"}


def test_set_index_replaces_entries(tmp_path):
    layout = Layout.create(tmp_path)
    one = write_image(layout, "linux/amd64")
    layout.set_index([one.with_annotations({"org.opencontainers.image.ref.name": "x"})])
    assert layout.resolve("x").digest == one.digest
    layout.set_index([])
    assert layout.index().manifests == ()


def test_check_reports_missing_truncated_and_corrupt_blobs(tmp_path):
    layout = Layout.create(tmp_path)
    top = multi_platform(layout)
    layout.add_ref(top, "latest")
    assert layout.check() == []

    index = layout.read_manifest(top)
    amd, arm = index.manifests
    amd_manifest = layout.read_manifest(amd)
    layer = amd_manifest.layers[0]
    config = amd_manifest.config
    layout.blob_path(layer.digest).unlink()
    arm_config = layout.read_manifest(arm).config
    with layout.blob_path(arm_config.digest).open("ab") as f:
        f.write(b" ")
    problems = layout.check()
    assert any("blob missing" in p and str(layer.digest) in p for p in problems)
    assert any(
        "bytes, descriptor says" in p and str(arm_config.digest) in p for p in problems
    )
    # same size, different bytes: found only by hashing
    path = layout.blob_path(config.digest)
    path.write_bytes(path.read_bytes().replace(b"amd64", b"AMD64"))
    assert any("content hashes to" in p for p in layout.check())
    assert not any("content hashes to" in p for p in layout.check(verify_digests=False))


def test_check_reports_unparseable_manifests(tmp_path):
    layout = Layout.create(tmp_path)
    junk = layout.write_blob(b"not json", media_type=mt.OCI_MANIFEST)
    layout.add_ref(junk, "junk")
    problems = layout.check()
    assert len(problems) == 1
    assert "is not JSON" in problems[0]


def test_walk_visits_each_blob_once_parents_first(tmp_path):
    layout = Layout.create(tmp_path)
    top = multi_platform(layout)
    kinds = [d.media_type for d in layout.walk(top)]
    assert kinds[0] == mt.OCI_INDEX
    assert kinds[1] == mt.OCI_MANIFEST
    assert kinds.count(mt.OCI_LAYER_GZIP) == 1  # the same layer in both images
    assert kinds.count(mt.OCI_CONFIG) == 2


def test_concurrent_add_ref_keeps_every_entry(tmp_path):
    layout = Layout.create(tmp_path)
    descs = [Descriptor.of(str(n).encode(), "application/x") for n in range(16)]

    def add(n):
        Layout.open(tmp_path).add_ref(descs[n], f"t{n}")

    threads = [threading.Thread(target=add, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(d.ref_name for d in layout.index().manifests) == sorted(
        f"t{n}" for n in range(16)
    )


needs_skopeo = pytest.mark.skipif(not shutil.which("skopeo"), reason="needs skopeo")
needs_umoci = pytest.mark.skipif(not shutil.which("umoci"), reason="needs umoci")


def run(*argv):
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)


@needs_skopeo
def test_skopeo_reads_the_index_and_each_platform(tmp_path):
    layout = Layout.create(tmp_path / "img")
    top = multi_platform(layout)
    layout.add_ref(top, "latest")
    raw = run("skopeo", "inspect", "--raw", f"oci:{tmp_path}/img:latest")
    assert raw.returncode == 0, raw.stderr
    assert raw.stdout.encode() == layout.read_blob(top.digest)
    for arch in ("amd64", "arm64"):
        out = run(
            "skopeo",
            "--override-arch",
            arch,
            "inspect",
            f"oci:{tmp_path}/img:latest",
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["Architecture"] == arch


@needs_skopeo
def test_skopeo_copies_out_of_and_back_into_a_layout(tmp_path):
    src = Layout.create(tmp_path / "src")
    src.add_ref(multi_platform(src), "v1")
    copied = run(
        "skopeo",
        "copy",
        "--all",
        f"oci:{tmp_path}/src:v1",
        f"oci:{tmp_path}/dst:v2",
    )
    assert copied.returncode == 0, copied.stderr
    dst = Layout.open(tmp_path / "dst")
    assert dst.check() == []
    assert dst.resolve("v2").digest == src.resolve("v1").digest


@needs_umoci
def test_umoci_lists_and_unpacks_a_layout(tmp_path):
    layout = Layout.create(tmp_path / "img")
    layout.add_ref(write_image(layout, "linux/amd64", b"from platforge\n"), "amd")
    listed = run("umoci", "ls", "--layout", str(tmp_path / "img"))
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == ["amd"]
    bundle = tmp_path / "bundle"
    unpacked = run(
        "umoci", "unpack", "--rootless", "--image", f"{tmp_path}/img:amd", str(bundle)
    )
    assert unpacked.returncode == 0, unpacked.stderr
    assert (bundle / "rootfs" / "hello.txt").read_bytes() == b"from platforge\n"


@pytest.mark.skipif(not shutil.which("oci-image-tool"), reason="needs oci-image-tool")
def test_oci_image_tool_validates_each_image(tmp_path):
    # oci-image-tool 1.0.0-rc1 cannot validate a whole layout ("imageLayout
    # unimplemented") nor nested indexes, so each image manifest is named
    layout = Layout.create(tmp_path / "img")
    layout.add_ref(write_image(layout, "linux/amd64"), "amd")
    layout.add_ref(write_image(layout, "linux/arm64", b"x"), "arm")
    for name in ("amd", "arm"):
        out = run(
            "oci-image-tool",
            "validate",
            "--type",
            "image",
            "--ref",
            f"name={name}",
            str(tmp_path / "img"),
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert "Validation succeeded" in out.stdout


def test_write_config_stores_the_edits_made_to_a_parsed_config(tmp_path):
    layout = Layout.create(tmp_path / "layout")
    original = layout.write_config(ImageConfig.new(parse_platform("linux/amd64")))
    config = layout.read_config(original)
    config.diff_ids = [Digest.of(b"a layer")]

    written = layout.write_config(config)

    assert written.digest != original.digest
    assert layout.read_config(written).diff_ids == [Digest.of(b"a layer")]


def test_an_index_json_that_cannot_be_read_is_a_layout_error(tmp_path):
    layout = Layout.create(tmp_path / "layout")
    (layout.path / "index.json").unlink()
    (layout.path / "index.json").mkdir()
    with pytest.raises(LayoutError, match=r"cannot read .*index\.json: Is a directory"):
        layout.index()


def test_an_index_json_that_is_not_json_says_so_without_a_digest(tmp_path):
    layout = Layout.create(tmp_path / "layout")
    (layout.path / "index.json").write_text("{\n")
    with pytest.raises(LayoutError) as caught:
        layout.index()
    message = str(caught.value)
    assert "index.json is not valid JSON (line 2 column 1)" in message
    assert "sha256:" not in message
    assert "the layout is damaged" in message
