import gzip
import io
import json
import shutil
import subprocess
import tarfile
import time

import pytest

from platforge.errors import ArchiveError
from platforge.oci import mediatypes as mt
from platforge.oci.archive import (
    read_docker_archive,
    read_oci_archive,
    write_docker_archive,
    write_oci_archive,
)
from platforge.oci.content import ImageConfig, Index, Manifest
from platforge.oci.digest import Digest
from platforge.oci.layout import Layout
from platforge.platforms import parse as parse_platform

needs_skopeo = pytest.mark.skipif(not shutil.which("skopeo"), reason="needs skopeo")


def tar_with(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def write_image(layout, platform_text, layers, *, compress=True):
    """An image of ``layers`` (dicts of files); returns the manifest descriptor."""
    platform = parse_platform(platform_text)
    config = ImageConfig.new(platform, created="2024-01-01T00:00:00Z")
    config.config.cmd = ["/bin/true"]
    descs, diff_ids = [], []
    for files in layers:
        tar = tar_with(files)
        diff_ids.append(Digest.of(tar))
        if compress:
            blob, media_type = gzip.compress(tar, mtime=0), mt.OCI_LAYER_GZIP
        else:
            blob, media_type = tar, mt.OCI_LAYER
        descs.append(layout.write_blob(blob, media_type=media_type))
    config.diff_ids = diff_ids
    manifest = Manifest.build(layout.write_config(config), descs)
    return layout.write_manifest(manifest, manifest.descriptor(platform))


def two_platform_layout(path):
    layout = Layout.create(path)
    amd = write_image(layout, "linux/amd64", [{"a": b"amd64\n"}, {"b": b"shared"}])
    arm = write_image(layout, "linux/arm64", [{"a": b"arm64\n"}, {"b": b"shared"}])
    index = Index.build([amd, arm])
    top = layout.write_manifest(index)
    layout.add_ref(top, "v1")
    return layout, top


def run(*argv):
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)


def test_oci_archive_round_trip_keeps_every_digest(tmp_path):
    src, top = two_platform_layout(tmp_path / "src")
    index = write_oci_archive(src, tmp_path / "img.tar")
    assert [d.ref_name for d in index.manifests] == ["v1"]
    dst = Layout.create(tmp_path / "dst")
    entries = read_oci_archive(tmp_path / "img.tar", dst)
    assert [e.digest for e in entries] == [top.digest]
    assert dst.resolve("v1").digest == top.digest
    assert dst.check() == []
    assert sorted(d.digest for d in dst.walk(top)) == sorted(
        d.digest for d in src.walk(top)
    )


def test_oci_archive_holds_only_what_the_chosen_entries_reach(tmp_path):
    layout, top = two_platform_layout(tmp_path / "src")
    lone = write_image(layout, "linux/s390x", [{"only": b"here"}])
    layout.add_ref(lone, "lone")
    write_oci_archive(layout, tmp_path / "v1.tar", [layout.resolve("v1")])
    with tarfile.open(tmp_path / "v1.tar") as tar:
        names = tar.getnames()
        infos = tar.getmembers()
    assert names[:2] == ["oci-layout", "index.json"]
    assert f"blobs/sha256/{lone.digest.encoded}" not in names
    assert f"blobs/sha256/{top.digest.encoded}" in names
    blob_names = [n for n in names if n.startswith("blobs/sha256/") and n[13:]]
    # the index, per platform a manifest, a config and layer "a", and shared "b"
    assert len(blob_names) == len(set(blob_names)) == 8
    assert all(i.mtime == 0 and i.uid == 0 and i.uname == "" for i in infos)


def test_oci_archive_is_reproducible(tmp_path):
    layout, _ = two_platform_layout(tmp_path / "src")
    write_oci_archive(layout, tmp_path / "one.tar")
    write_oci_archive(layout, tmp_path / "two.tar")
    assert (tmp_path / "one.tar").read_bytes() == (tmp_path / "two.tar").read_bytes()


@pytest.mark.parametrize(
    ("dest", "why"),
    [("file/img.tar", "Not a directory|File exists"), ("directory", "Is a directory")],
)
def test_an_unwritable_destination_is_one_error_and_leaves_nothing(tmp_path, dest, why):
    layout, _ = two_platform_layout(tmp_path / "src")
    (tmp_path / "file").write_text("not a directory\n")
    (tmp_path / "directory").mkdir()
    before = sorted(tmp_path.iterdir())
    with pytest.raises(ArchiveError, match=f"cannot write {tmp_path / dest}: ({why})"):
        write_oci_archive(layout, tmp_path / dest)
    with pytest.raises(ArchiveError, match=f"cannot write {tmp_path / dest}: ({why})"):
        write_docker_archive(
            layout,
            tmp_path / dest,
            layout.resolve("v1"),
            platform=parse_platform("linux/amd64"),
        )
    assert sorted(tmp_path.iterdir()) == before
    assert list((tmp_path / "directory").iterdir()) == []


def test_reading_an_oci_archive_with_a_corrupt_blob_fails_and_leaves_no_blob(tmp_path):
    layout, top = two_platform_layout(tmp_path / "src")
    write_oci_archive(layout, tmp_path / "img.tar")
    data = bytearray((tmp_path / "img.tar").read_bytes())
    # the layer blobs are gzip, so corrupt the (uncompressed) config instead
    config_pos = data.find(b'"architecture":"amd64"')
    assert config_pos > 0
    data[config_pos + 16 : config_pos + 21] = b"AMD64"
    (tmp_path / "bad.tar").write_bytes(bytes(data))
    dst = Layout.create(tmp_path / "dst")
    with pytest.raises(ArchiveError, match="content hashes to"):
        read_oci_archive(tmp_path / "bad.tar", dst)
    assert dst.index().manifests == ()
    assert top.digest not in {d.digest for d in dst.index().manifests}


def test_oci_archive_without_marker_or_blobs_is_refused(tmp_path):
    (tmp_path / "plain.tar").write_bytes(tar_with({"hello": b"x"}))
    dst = Layout.create(tmp_path / "dst")
    with pytest.raises(ArchiveError, match="has no oci-layout"):
        read_oci_archive(tmp_path / "plain.tar", dst)
    layout, _ = two_platform_layout(tmp_path / "src")
    index = layout.index().raw
    marker = b'{"imageLayoutVersion":"1.0.0"}'
    (tmp_path / "hollow.tar").write_bytes(
        tar_with({"oci-layout": marker, "index.json": index})
    )
    with pytest.raises(ArchiveError, match="is incomplete"):
        read_oci_archive(tmp_path / "hollow.tar", dst)
    assert dst.index().manifests == ()  # no name points at a partial image
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(ArchiveError, match="not a readable tar"):
        read_oci_archive(tmp_path / "junk.tar", dst)
    with pytest.raises(ArchiveError, match="does not exist"):
        read_oci_archive(tmp_path / "absent.tar", dst)


def test_docker_archive_from_an_index_needs_a_platform(tmp_path):
    layout, top = two_platform_layout(tmp_path / "src")
    with pytest.raises(
        ArchiveError, match=r"linux/amd64, linux/arm64.*pick a platform"
    ):
        write_docker_archive(layout, tmp_path / "d.tar", top)
    with pytest.raises(ArchiveError, match="no manifest for linux/s390x"):
        write_docker_archive(
            layout, tmp_path / "d.tar", top, platform=parse_platform("linux/s390x")
        )
    assert not (tmp_path / "d.tar").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["src"]


def test_docker_archive_has_docker_save_shape_with_plain_layers(tmp_path):
    layout, top = two_platform_layout(tmp_path / "src")
    image_id = write_docker_archive(
        layout,
        tmp_path / "d.tar",
        top,
        platform=parse_platform("linux/arm64"),
        repo_tags=["example/app:v1"],
    )
    with tarfile.open(tmp_path / "d.tar") as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())
        config_raw = tar.extractfile(manifest[0]["Config"]).read()
        layer_tars = [tar.extractfile(n).read() for n in manifest[0]["Layers"]]
    assert manifest[0]["RepoTags"] == ["example/app:v1"]
    assert Digest.of(config_raw) == image_id
    config = ImageConfig.parse(config_raw)
    assert config.architecture == "arm64"
    assert [Digest.of(t) for t in layer_tars] == config.diff_ids
    assert manifest[0]["Layers"] == [f"{d.encoded}.tar" for d in config.diff_ids]
    with tarfile.open(fileobj=io.BytesIO(layer_tars[0])) as layer:
        assert layer.extractfile("a").read() == b"arm64\n"


def test_docker_archive_round_trip_through_a_layout(tmp_path):
    layout, top = two_platform_layout(tmp_path / "src")
    amd = parse_platform("linux/amd64")
    write_docker_archive(
        layout, tmp_path / "d.tar", top, platform=amd, repo_tags=["a:1", "b:2"]
    )
    dst = Layout.create(tmp_path / "dst")
    (desc,) = read_docker_archive(tmp_path / "d.tar", dst)
    assert desc.platform == amd
    assert dst.resolve("a:1").digest == dst.resolve("b:2").digest == desc.digest
    assert dst.check() == []
    original = layout.read_manifest(layout.read_manifest(top).find(amd))
    imported = dst.read_manifest(desc)
    assert imported.config.digest == original.config.digest
    # layers come back uncompressed, so their digests are the diff IDs
    assert [d.media_type for d in imported.layers] == [mt.OCI_LAYER, mt.OCI_LAYER]
    config = dst.read_config(imported.config)
    assert [d.digest for d in imported.layers] == config.diff_ids


def test_uncompressed_layers_are_copied_without_recompression(tmp_path):
    layout = Layout.create(tmp_path / "src")
    desc = write_image(layout, "linux/amd64", [{"x": b"1"}], compress=False)
    write_docker_archive(layout, tmp_path / "d.tar", desc)
    dst = Layout.create(tmp_path / "dst")
    (back,) = read_docker_archive(tmp_path / "d.tar", dst)
    assert back.digest == desc.digest  # same config, same layer: same manifest


def classic_docker_save(path, config_raw, layer_tars, tags):
    """A tarball in the shape docker save gives (layer dirs, a symlinked repeat).

    Hand-made: no docker daemon runs in this test; the shape follows what
    docker 20.10 writes.
    """
    with tarfile.open(path, "w") as tar:

        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        names = []
        for n, layer in enumerate(layer_tars):
            layer_id = f"{n:064x}"
            info = tarfile.TarInfo(layer_id)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
            if n and layer == layer_tars[0]:
                link = tarfile.TarInfo(f"{layer_id}/layer.tar")
                link.type = tarfile.SYMTYPE
                link.linkname = f"../{0:064x}/layer.tar"
                tar.addfile(link)
            else:
                add(f"{layer_id}/layer.tar", layer)
            add(f"{layer_id}/VERSION", b"1.0")
            names.append(f"{layer_id}/layer.tar")
        config_name = f"{Digest.of(config_raw).encoded}.json"
        add(config_name, config_raw)
        entry = {"Config": config_name, "RepoTags": tags, "Layers": names}
        add("manifest.json", json.dumps([entry]).encode())
        add("repositories", b"{}")


def test_reads_classic_docker_save_with_shared_layer_links(tmp_path):
    layer = tar_with({"etc/hostname": b"box\n"})
    config = ImageConfig.new(parse_platform("linux/arm/v7"))
    config.diff_ids = [Digest.of(layer), Digest.of(layer)]
    config_raw = config.to_bytes()
    classic_docker_save(tmp_path / "save.tar", config_raw, [layer, layer], [])
    dst = Layout.create(tmp_path / "dst")
    (desc,) = read_docker_archive(tmp_path / "save.tar", dst)
    assert desc.ref_name is None
    assert desc.platform == parse_platform("linux/arm/v7")
    manifest = dst.read_manifest(desc)
    assert [d.digest for d in manifest.layers] == [Digest.of(layer)] * 2
    assert dst.check() == []


def test_reads_gzipped_archives_with_compressed_layers(tmp_path):
    layer = tar_with({"f": b"data"})
    compressed = gzip.compress(layer, mtime=0)
    config = ImageConfig.new(parse_platform("linux/amd64"))
    config.diff_ids = [Digest.of(layer)]
    config_raw = config.to_bytes()
    plain = tmp_path / "plain.tar"
    classic_docker_save(plain, config_raw, [compressed], ["x:y"])
    (tmp_path / "save.tar.gz").write_bytes(gzip.compress(plain.read_bytes()))
    dst = Layout.create(tmp_path / "dst")
    (desc,) = read_docker_archive(tmp_path / "save.tar.gz", dst)
    layer_desc = dst.read_manifest(desc).layers[0]
    assert layer_desc.media_type == mt.OCI_LAYER_GZIP
    assert layer_desc.digest == Digest.of(compressed)
    assert dst.resolve("x:y").digest == desc.digest


def test_docker_archive_with_a_corrupt_layer_is_refused(tmp_path):
    layer = tar_with({"f": b"data"})
    config = ImageConfig.new(parse_platform("linux/amd64"))
    config.diff_ids = [Digest.of(b"something else")]
    classic_docker_save(tmp_path / "bad.tar", config.to_bytes(), [layer], [])
    dst = Layout.create(tmp_path / "dst")
    with pytest.raises(ArchiveError, match="the archive is corrupt"):
        read_docker_archive(tmp_path / "bad.tar", dst)


@pytest.mark.parametrize(
    ("manifest_json", "why"),
    [
        (b"nope", "manifest.json is not JSON"),
        (b"[]", "non-empty list"),
        (b'[{"Config": 1, "Layers": []}]', "needs 'Config'"),
        (b'[{"Config": "c.json", "Layers": ["l.tar"]}]', "has no c.json"),
    ],
)
def test_malformed_docker_archives_are_refused(tmp_path, manifest_json, why):
    (tmp_path / "bad.tar").write_bytes(tar_with({"manifest.json": manifest_json}))
    with pytest.raises(ArchiveError, match=why):
        read_docker_archive(tmp_path / "bad.tar", Layout.create(tmp_path / "dst"))


@needs_skopeo
def test_skopeo_accepts_our_docker_archive(tmp_path):
    layout, top = two_platform_layout(tmp_path / "src")
    arm = parse_platform("linux/arm64")
    write_docker_archive(
        layout, tmp_path / "d.tar", top, platform=arm, repo_tags=["example/app:v1"]
    )
    out = run("skopeo", "inspect", f"docker-archive:{tmp_path}/d.tar")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["Architecture"] == "arm64"
    assert len(info["Layers"]) == 2
    assert info["RepoTags"] == []  # skopeo lists registry tags only
    # skopeo can copy it on into a layout that we then read
    copied = run(
        "skopeo",
        "copy",
        f"docker-archive:{tmp_path}/d.tar",
        f"oci:{tmp_path}/back:t",
    )
    assert copied.returncode == 0, copied.stderr
    assert Layout.open(tmp_path / "back").check() == []


@needs_skopeo
def test_skopeo_accepts_our_oci_archive(tmp_path):
    layout, top = two_platform_layout(tmp_path / "src")
    write_oci_archive(layout, tmp_path / "o.tar")
    raw = run("skopeo", "inspect", "--raw", f"oci-archive:{tmp_path}/o.tar:v1")
    assert raw.returncode == 0, raw.stderr
    assert raw.stdout.encode() == layout.read_blob(top.digest)
    out = run(
        "skopeo",
        "--override-arch",
        "arm64",
        "inspect",
        f"oci-archive:{tmp_path}/o.tar:v1",
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["Architecture"] == "arm64"


@needs_skopeo
def test_we_read_archives_skopeo_writes(tmp_path):
    two_platform_layout(tmp_path / "src")
    docker = run(
        "skopeo",
        "--override-arch",
        "arm64",
        "copy",
        f"oci:{tmp_path}/src:v1",
        f"docker-archive:{tmp_path}/s.tar:example/app:v2",
    )
    assert docker.returncode == 0, docker.stderr
    oci = run(
        "skopeo",
        "copy",
        "--all",
        f"oci:{tmp_path}/src:v1",
        f"oci-archive:{tmp_path}/s.oci:v3",
    )
    assert oci.returncode == 0, oci.stderr
    dst = Layout.create(tmp_path / "dst")
    (desc,) = read_docker_archive(tmp_path / "s.tar", dst)
    assert desc.platform == parse_platform("linux/arm64")
    assert dst.resolve("docker.io/example/app:v2").digest == desc.digest
    (entry,) = read_oci_archive(tmp_path / "s.oci", dst)
    assert entry.ref_name == "v3"
    assert dst.check() == []


DOCKERD = shutil.which("dockerd") or shutil.which("dockerd", path="/usr/sbin:/sbin")


@pytest.fixture(scope="module")
def docker(tmp_path_factory):
    """A private dockerd with only loopback networking; yields a docker CLI runner."""
    if not (DOCKERD and shutil.which("unshare") and shutil.which("ip")):
        pytest.skip("needs dockerd, unshare and ip")
    root = tmp_path_factory.mktemp("dockerd")
    sock = root / "sock"
    # unshare and sh exec into dockerd, so the PID we hold is dockerd's own
    script = (
        "ip link set lo up && exec "
        f"{DOCKERD} --iptables=false --ip6tables=false --bridge=none "
        f"--data-root {root}/data --exec-root {root}/exec -H unix://{sock} "
        f"--pidfile {root}/dockerd.pid"
    )
    log = (root / "dockerd.log").open("wb")
    daemon = subprocess.Popen(
        ["unshare", "--net", "sh", "-c", script], stdout=log, stderr=log
    )

    def cli(*args):
        return run("/usr/bin/docker", "-H", f"unix://{sock}", *args)

    try:
        for _ in range(100):
            if daemon.poll() is not None:
                pytest.skip(f"dockerd exited; see {root}/dockerd.log")
            if sock.exists() and cli("info").returncode == 0:
                break
            time.sleep(0.2)
        else:
            pytest.skip("dockerd did not become ready in 20 s")
        yield cli
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        log.close()


@pytest.mark.slow
def test_docker_loads_our_archive_and_we_read_what_docker_saves(tmp_path, docker):
    layout, top = two_platform_layout(tmp_path / "src")
    image_id = write_docker_archive(
        layout,
        tmp_path / "d.tar",
        top,
        platform=parse_platform("linux/arm64"),
        repo_tags=["example/platforge:v1"],
    )
    loaded = docker("load", "-i", str(tmp_path / "d.tar"))
    assert loaded.returncode == 0, loaded.stderr
    inspected = docker(
        "image",
        "inspect",
        "example/platforge:v1",
        "--format",
        "{{.Id}} {{.Architecture}}",
    )
    assert inspected.returncode == 0, inspected.stderr
    assert inspected.stdout.split() == [str(image_id), "arm64"]

    saved = docker("save", "-o", str(tmp_path / "saved.tar"), "example/platforge:v1")
    assert saved.returncode == 0, saved.stderr
    dst = Layout.create(tmp_path / "dst")
    (desc,) = read_docker_archive(tmp_path / "saved.tar", dst)
    assert dst.read_manifest(desc).config.digest == image_id
    assert dst.resolve("example/platforge:v1").digest == desc.digest
    assert dst.check() == []


@pytest.mark.parametrize("reader", [read_oci_archive, read_docker_archive])
def test_a_file_that_is_no_tar_is_refused_in_one_line(tmp_path, reader):
    not_tar = tmp_path / "notes.txt"
    not_tar.write_text("FROM scratch\n" * 100)
    with pytest.raises(ArchiveError) as caught:
        reader(not_tar, Layout.create(tmp_path / "dst"))
    assert "is not a readable tar file (plain, gzip, bzip2 or xz)" in str(caught.value)
    assert "\n" not in str(caught.value)
