"""Links never lead a build to host files: the context, stages and images are
each resolved with their own root as ``/``, as BuildKit and buildah do.

The "host" files are in the test's own temporary directory, outside the trees.
"""

import json
import os

import pytest

from platforge.build.context import SourceTree
from platforge.errors import BuildError
from platforge.oci.compression import open_reader
from platforge.oci.layer import iter_entries
from test_build_support import build_image, oci_output, push_busybox_base


@pytest.fixture
def host(tmp_path):
    outside = tmp_path / "host"
    (outside / "dir").mkdir(parents=True)
    (outside / "secret.txt").write_text("HOST-SECRET\n")
    (outside / "dir" / "s").write_text("HOST-DIR-SECRET\n")
    return outside


@pytest.fixture
def context(tmp_path, host):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "inside.txt").write_text("inside\n")
    (ctx / "leakfile").symlink_to(host / "secret.txt")
    (ctx / "leakdir").symlink_to(host / "dir")
    (ctx / "up").symlink_to("../")
    (ctx / "abs-inside").symlink_to("/inside.txt")
    return ctx


@pytest.mark.parametrize(
    "source", ["leakfile", "leakdir/s", "leakdir", "up/host/secret.txt", "leak*"]
)
def test_links_out_of_the_context_are_not_found(context, source):
    # A link named as the source says where it points; one on the way, or a
    # wildcard match, is simply not there.
    found = "no such file or directory in the context|a symbolic link to /"
    with pytest.raises(BuildError, match=found):
        SourceTree(context).select([source], "/x/")


def test_a_link_to_an_absolute_path_resolves_inside_the_context(context):
    (item,) = SourceTree(context).select(["abs-inside"], "/x")
    assert item.kind == "file"
    assert item.source == context / "inside.txt"


def test_links_in_a_copied_directory_stay_links(context):
    items = {i.dest: i for i in SourceTree(context).select(["."], "/c/")}
    assert items["/c/leakfile"].kind == "symlink"
    assert items["/c/up"].link == "../"
    assert "/c/leakdir/s" not in items


def test_a_bind_mount_source_resolves_inside_its_tree(tmp_path, host):
    root = tmp_path / "stage"
    (root / "etc").mkdir(parents=True)
    (root / "hd").symlink_to(host)
    (root / "rel").symlink_to("../../../../../../.." + str(host))
    tree = SourceTree(root, name="stage s")
    with pytest.raises(BuildError, match="RUN --mount"):
        tree.host_path("/hd", instruction="RUN --mount")
    with pytest.raises(BuildError, match="RUN --mount"):
        tree.host_path("/rel", instruction="RUN --mount")
    assert tree.host_path("/etc") == root / "etc"


def _layer_files(store, descriptor):
    blobs = store / "blobs" / "sha256"
    manifest = json.loads((blobs / descriptor.digest.encoded).read_text())
    files = {}
    for layer in manifest["layers"]:
        with (blobs / layer["digest"][7:]).open("rb") as fh:
            for entry, content in iter_entries(open_reader(fh)):
                files[entry.path] = content.read() if content is not None else None
    return files


def test_copy_of_a_link_out_of_the_context_fails_the_build(tmp_path, context):
    (context / "Dockerfile").write_text("FROM scratch\nCOPY leakfile /x\n")
    with pytest.raises(BuildError, match="leakfile: it is a symbolic link to /"):
        build_image(context, store=tmp_path / "store")


def test_copy_from_a_stage_resolves_its_links_in_the_stage(tmp_path, context):
    # Stage s holds /leakfile -> <host>/secret.txt, copied as a link from the
    # context; COPY --from=s must read <stage>/<host>/secret.txt, which is absent.
    (context / "Dockerfile").write_text(
        "FROM scratch AS s\nCOPY leakfile inside.txt /\n"
        "FROM scratch\nCOPY --from=s /leakfile /x\n"
    )
    with pytest.raises(BuildError, match="leakfile: it is a symbolic link to /"):
        build_image(context, store=tmp_path / "store")
    (context / "Dockerfile").write_text(
        "FROM scratch AS s\nCOPY abs-inside inside.txt /\n"
        "FROM scratch\nCOPY --from=s /abs-inside /x\n"
    )
    result, _ = build_image(
        context, store=tmp_path / "store", outputs=oci_output(tmp_path / "out")
    )
    files = _layer_files(tmp_path / "store", result.manifests["linux/amd64"])
    assert files["x"] == b"inside\n"


@pytest.mark.registry
@pytest.mark.privileged
def test_rw_bind_mounts_of_a_stage_neither_reach_the_host_nor_change_the_stage(
    tmp_path, tmp_store, registry_plain, busybox, host
):
    base = push_busybox_base(busybox, registry_plain.host, arches=("amd64",))
    ctx = tmp_path / "rw"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f"FROM {base} AS s\n"
        f"RUN ln -s {host} /hd && ln -s ../../../../../../../..{host} /rel"
        " && echo orig > /marker\n"
        f"FROM {base}\n"
        "RUN --mount=type=bind,from=s,target=/x,rw echo HACKED > /x/marker\n"
        "RUN --mount=type=bind,from=s,source=/tmp,target=/h,rw echo in > /h/f\n"
        "COPY --from=s /marker /copied-marker\n"
    )
    result, _ = build_image(ctx)
    files = _layer_files(tmp_store, result.manifests["linux/amd64"])
    assert files["copied-marker"] == b"orig\n"
    assert not (ctx / "f").exists()
    for source in ("/hd", "/rel"):
        (ctx / "Dockerfile").write_text(
            f"FROM {base} AS s\n"
            f"RUN ln -s {host} /hd && ln -s ../../../../../../../..{host} /rel\n"
            f"FROM {base}\n"
            f"RUN --mount=type=bind,from=s,source={source},target=/h,rw "
            "echo PWNED > /h/pwned\n"
        )
        with pytest.raises(
            BuildError, match=r"no such file|is looked up inside stage s"
        ):
            build_image(ctx)
        assert sorted(p.name for p in host.iterdir()) == ["dir", "secret.txt"]


def test_fifos_in_a_tree_are_copied_as_fifos(tmp_path):
    ctx = tmp_path / "fifo"
    (ctx / "d").mkdir(parents=True)
    os.mkfifo(ctx / "d" / "pipe")
    (ctx / "d" / "file").write_text("f\n")
    (ctx / "Dockerfile").write_text(
        "FROM scratch AS s\nCOPY d /d/\nFROM scratch\nCOPY --from=s /d /copied/\n"
    )
    store = tmp_path / "store"
    result, _ = build_image(ctx, store=store)
    blobs = store / "blobs" / "sha256"
    manifest = json.loads(
        (blobs / result.manifests["linux/amd64"].digest.encoded).read_text()
    )
    with (blobs / manifest["layers"][-1]["digest"][7:]).open("rb") as fh:
        kinds = {e.path: e.type.value for e, _ in iter_entries(open_reader(fh))}
    assert kinds["copied/pipe"] == "fifo"
    assert kinds["copied/file"] == "file"


@pytest.mark.registry
@pytest.mark.privileged
def test_an_rw_bind_mount_keeps_owners_and_hard_links(
    tmp_path, tmp_store, registry_plain, busybox
):
    base = push_busybox_base(busybox, registry_plain.host, arches=("amd64",))
    ctx = tmp_path / "owners"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f"FROM {base} AS s\n"
        "RUN echo d > /own && chown 1000:1000 /own && ln /own /own-link\n"
        f"FROM {base}\n"
        "RUN --mount=type=bind,from=s,target=/ro ls -ln /ro/own > /ro.txt\n"
        "RUN --mount=type=bind,from=s,target=/rw,rw ls -ln /rw/own > /rw.txt\n"
    )
    result, _ = build_image(ctx)
    blobs = tmp_store / "blobs" / "sha256"
    manifest = json.loads(
        (blobs / result.manifests["linux/amd64"].digest.encoded).read_text()
    )
    seen = {}
    for layer in manifest["layers"][-2:]:
        with (blobs / layer["digest"][7:]).open("rb") as fh:
            for entry, content in iter_entries(open_reader(fh)):
                if content is not None:
                    seen[entry.path] = content.read().decode().split()[1:4]
    assert seen["ro.txt"] == ["2", "1000", "1000"]
    assert seen["rw.txt"] == seen["ro.txt"]
