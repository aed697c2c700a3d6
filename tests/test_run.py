"""`platforge run`: busybox images built here with the oci APIs, run for real.

Images are OCI layouts made from the test bed's busybox-static roots (one layer with
busybox and its applets, one layer on top), run in the real sandbox and, for foreign
platforms, through the real QEMU binfmt handlers. The missing-emulator case is
*simulated*: PLATFORGE_BINFMT_DIR points emulation at an empty directory, since
unregistering the kernel's real handlers would break every other user of the host.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from platforge import platforms
from platforge.build import rootfs
from platforge.errors import DigestMismatchError
from platforge.oci.content import ImageConfig, Manifest
from platforge.oci.digest import Digest
from platforge.oci.layer import Entry, entries_from_directory, write_layer
from platforge.oci.layout import Layout

APPLETS = ["sh", "true", "echo", "cat", "ls", "id", "env", "pwd", "uname", "rm"]


def busybox_tree(target: Path, busybox_root: Path) -> Path:
    (target / "bin").mkdir(parents=True)
    (target / "bin" / "busybox").write_bytes(
        (busybox_root / "bin/busybox").read_bytes()
    )
    (target / "bin" / "busybox").chmod(0o755)
    for applet in APPLETS:
        (target / "bin" / applet).symlink_to("busybox")
    (target / "etc").mkdir()
    (target / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"
    )
    (target / "etc" / "group").write_text("root:x:0:\napp:x:1000:\n")
    (target / "etc" / "motd").write_text("from the base layer\n")
    return target


def _add_layer(layout: Layout, entries, config: ImageConfig):
    buffer = io.BytesIO()
    info = write_layer(entries, buffer)
    layout.write_blob(buffer.getvalue(), media_type=info.media_type)
    config.json["rootfs"]["diff_ids"].append(str(info.diff_id))
    return info.descriptor()


def build_layout(
    path: Path,
    tree: Path,
    platform: str,
    *,
    cmd=None,
    entrypoint=None,
    env=None,
    user=None,
    workdir=None,
    name: str | None = "latest",
) -> Manifest:
    """An OCI layout at ``path`` holding one busybox image for ``platform``."""
    layout = Layout.create(path)
    config = ImageConfig.new(platforms.parse(platform))
    run = config.json["config"]
    run["Env"] = ["PATH=/bin", *(env or [])]
    for key, value in (
        ("Cmd", cmd),
        ("Entrypoint", entrypoint),
        ("User", user),
        ("WorkingDir", workdir),
    ):
        if value is not None:
            run[key] = value
    base = _add_layer(layout, entries_from_directory(tree), config)
    top = _add_layer(
        layout,
        [
            Entry.file("hello.txt", b"hello from the top layer\n", mode=0o644),
            Entry.whiteout("etc/motd"),
        ],
        config,
    )
    config_descriptor = layout.write_config(config)
    manifest = Manifest.build(config_descriptor, [base, top])
    layout.write_manifest(manifest)
    layout.add_ref(manifest.descriptor(platforms.parse(platform)), name)
    return manifest


def platforge(*args: str, env: dict[str, str] | None = None, timeout: int = 120):
    return subprocess.run(
        [sys.executable, "-m", "platforge", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def run_env(tmp_path: Path) -> dict[str, str]:
    store = tmp_path / "store"
    return {"PLATFORGE_STORE": str(store), "PLATFORGE_ROOTFS": str(tmp_path / "fs")}


@pytest.mark.parametrize("path", ["./no-such-layout", "/"])
def test_a_path_that_is_no_layout_is_named_as_such(path, run_env):
    done = platforge("run", path, "--", "true", env=run_env)
    assert done.returncode == 1
    assert done.stderr == (
        f"platforge: error: {path} is not an OCI layout directory (it has no "
        "oci-layout file); give a directory written by `platforge build` or "
        "`platforge pull`, or an image reference\n"
    )


def test_run_help_shows_examples():
    done = platforge("run", "--help")
    assert done.returncode == 0, done.stderr
    assert "platforge run --platform linux/arm64" in done.stdout
    assert "--ca-file" in done.stdout


@pytest.fixture(scope="module")
def amd64_tree(busybox, tmp_path_factory) -> Path:
    return busybox_tree(tmp_path_factory.mktemp("amd64"), busybox["amd64"])


@pytest.mark.qemu
@pytest.mark.parametrize(
    ("debian", "platform", "machine"),
    [("armhf", "linux/arm/v7", "armv7l"), ("s390x", "linux/s390x", "s390x")],
)
def test_run_prints_the_foreign_machine(  # noqa: PLR0917 - fixtures and parameters
    busybox, tmp_path, run_env, require_qemu, debian, platform, machine
):
    tree = busybox_tree(tmp_path / "tree", busybox[debian])
    build_layout(tmp_path / "image", tree, platform, cmd=["uname", "-m"])
    done = platforge(
        "run", "--platform", platform, str(tmp_path / "image"), env=run_env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{machine}\n"


def test_run_sees_every_layer_and_the_top_layers_whiteout(
    amd64_tree, tmp_path, run_env
):
    build_layout(tmp_path / "image", amd64_tree, "linux/amd64")
    done = platforge(
        "run",
        str(tmp_path / "image"),
        "--",
        "sh",
        "-c",
        "cat /hello.txt; ls /etc",
        env=run_env,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("hello from the top layer\n")
    assert "motd" not in done.stdout
    assert "passwd" in done.stdout


def test_a_failing_commands_exit_status_passes_through(amd64_tree, tmp_path, run_env):
    build_layout(tmp_path / "image", amd64_tree, "linux/amd64")
    done = platforge(
        "run",
        str(tmp_path / "image"),
        "--",
        "sh",
        "-c",
        "echo oops >&2; exit 42",
        env=run_env,
    )
    assert done.returncode == 42
    assert done.stderr.endswith("oops\n")
    assert done.stdout == ""


def test_entrypoint_and_cmd_combine_as_docker_does(amd64_tree, tmp_path, run_env):
    image = tmp_path / "image"
    build_layout(
        image,
        amd64_tree,
        "linux/amd64",
        entrypoint=["echo", "entry"],
        cmd=["default-arg"],
    )
    assert platforge("run", str(image), env=run_env).stdout == "entry default-arg\n"
    overridden = platforge("run", str(image), "--", "given", env=run_env)
    assert overridden.stdout == "entry given\n"
    replaced = platforge("run", "--entrypoint", "pwd", str(image), env=run_env)
    assert replaced.stdout == "/\n", "--entrypoint drops the image's Cmd"


def test_env_user_and_workdir_follow_the_image_and_the_flags(
    amd64_tree, tmp_path, run_env
):
    image = tmp_path / "image"
    build_layout(
        image,
        amd64_tree,
        "linux/amd64",
        cmd=["sh", "-c", "echo $GREETING $EXTRA; id -u; pwd"],
        env=["GREETING=hi"],
        user="app",
        workdir="/work/dir",
    )
    done = platforge("run", "-e", "EXTRA=there", str(image), env=run_env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "hi there\n1000\n/work/dir\n"
    flags = platforge(
        "run", "--user", "0", "--workdir", "/srv", str(image), env=run_env
    )
    assert flags.stdout == "hi\n0\n/srv\n"


def test_missing_emulator_gives_one_line_naming_the_fix(busybox, tmp_path, run_env):
    tree = busybox_tree(tmp_path / "tree", busybox["arm64"])
    build_layout(tmp_path / "image", tree, "linux/arm64", cmd=["uname", "-m"])
    empty = tmp_path / "no-binfmt"  # simulated: no handlers registered at all
    empty.mkdir()
    done = platforge(
        "run",
        "--platform",
        "linux/arm64",
        str(tmp_path / "image"),
        env={**run_env, "PLATFORGE_BINFMT_DIR": str(empty)},
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "platforge emulation install arm64" in lines[0]


def test_layers_are_unpacked_once_and_shared(amd64_tree, tmp_path):
    manifest = build_layout(tmp_path / "image", amd64_tree, "linux/amd64")
    layout = Layout.open(tmp_path / "image")
    first = rootfs.prepare(layout, manifest, cache=tmp_path / "cache")
    again = rootfs.prepare(layout, manifest, cache=tmp_path / "cache")
    assert first.lowerdirs == again.lowerdirs
    assert [p.name for p in first.lowerdirs] == [
        str(d).replace(":", "-") for d in first.config.diff_ids
    ]
    # A layer dir is "/" for overlayfs' merge: never the temp dir's 0700.
    assert {d.stat().st_mode & 0o777 for d in first.lowerdirs} == {0o755}
    motd = first.lowerdirs[1] / "etc" / "motd"
    assert motd.lstat().st_rdev == os.makedev(0, 0)
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []


def test_flatten_merges_layers_into_one_tree(amd64_tree, tmp_path):
    manifest = build_layout(tmp_path / "image", amd64_tree, "linux/amd64")
    layout = Layout.open(tmp_path / "image")
    image = rootfs.prepare(layout, manifest, cache=tmp_path / "cache")
    flat = rootfs.flatten(image.lowerdirs, tmp_path / "flat")
    assert flat.stat().st_mode & 0o777 == 0o755
    assert (flat / "hello.txt").is_file()
    assert not (flat / "etc" / "motd").exists()
    assert (flat / "bin" / "busybox").is_file()


@pytest.mark.registry
def test_run_pulls_a_pushed_image_into_the_store(
    amd64_tree, tmp_path, run_env, registry_plain, skopeo
):
    build_layout(
        tmp_path / "image", amd64_tree, "linux/amd64", cmd=["cat", "/hello.txt"]
    )
    ref = registry_plain.ref("run/busybox", "v1")
    skopeo(
        "copy",
        "--dest-tls-verify=false",
        f"oci:{tmp_path / 'image'}:latest",
        f"docker://{ref}",
    )
    done = platforge("run", ref, env=run_env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "hello from the top layer\n"
    store = Layout.open(run_env["PLATFORGE_STORE"])
    assert store.check() == []


@pytest.mark.qemu
def test_platform_picks_the_image_of_a_multi_platform_layout(
    busybox, amd64_tree, tmp_path, run_env, require_qemu
):
    if platforms.host().architecture != "amd64":
        pytest.skip("the expected native output is an amd64 host's")
    image = tmp_path / "image"
    s390x_tree = busybox_tree(tmp_path / "s390x", busybox["s390x"])
    build_layout(image, amd64_tree, "linux/amd64", cmd=["uname", "-m"], name=None)
    build_layout(image, s390x_tree, "linux/s390x", cmd=["uname", "-m"], name=None)
    assert len(Layout.open(image).index().manifests) == 2
    native = platforge("run", str(image), env=run_env)
    assert native.stdout == "x86_64\n", native.stderr
    foreign = platforge("run", "--platform", "linux/s390x", str(image), env=run_env)
    assert foreign.stdout == "s390x\n", foreign.stderr
    missing = platforge("run", "--platform", "linux/ppc64le", str(image), env=run_env)
    assert missing.returncode == 1
    assert "has no manifest for platform linux/ppc64le" in missing.stderr


def _swap_top_layer(layout: Layout, manifest: Manifest) -> None:
    """Put another valid layer's bytes where the top layer's blob is."""
    other = io.BytesIO()
    write_layer([Entry.file("TAMPERED", b"yes\n", mode=0o644)], other)
    blob = layout.blob_path(manifest.layers[-1].digest)
    blob.chmod(0o644)
    blob.write_bytes(other.getvalue())


def test_run_refuses_a_layer_whose_bytes_do_not_match_its_digest(
    amd64_tree, tmp_path, run_env
):
    manifest = build_layout(tmp_path / "image", amd64_tree, "linux/amd64")
    _swap_top_layer(Layout.open(tmp_path / "image"), manifest)
    done = platforge("run", str(tmp_path / "image"), "--", "ls", "/", env=run_env)
    assert done.returncode == 1
    assert "TAMPERED" not in done.stdout
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(
        f"platforge: error: {tmp_path / 'image'}: layer {manifest.layers[-1].digest}: "
    )
    assert lines[0].endswith("is not this blob")


def test_a_layer_that_no_longer_decompresses_is_named_as_a_corrupt_blob(
    amd64_tree, tmp_path, run_env
):
    manifest = build_layout(tmp_path / "image", amd64_tree, "linux/amd64")
    layer = manifest.layers[-1].digest
    blob = tmp_path / "image" / "blobs" / layer.algorithm / layer.encoded
    blob.write_bytes(blob.read_bytes()[:-20] + b"garbage")
    done = platforge("run", str(tmp_path / "image"), "--", "true", env=run_env)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    assert f"blob {layer} is corrupt" in done.stderr
    assert "the layout is damaged" in done.stderr


def test_a_layer_that_does_not_match_its_diff_id_is_never_cached(amd64_tree, tmp_path):
    # The cache is keyed by diff ID and trusted by every image that lists it, so
    # an image whose config lies about a layer must not fill that key.
    manifest = build_layout(tmp_path / "image", amd64_tree, "linux/amd64")
    layout = Layout.open(tmp_path / "image")
    config = layout.read_config(manifest.config)
    base_id, _ = config.diff_ids
    claimed = Digest.of(b"some other layer")
    config.diff_ids = [base_id, claimed]
    lying = Manifest.build(layout.write_config(config), manifest.layers)
    cache = tmp_path / "cache"
    with pytest.raises(
        DigestMismatchError, match=f"uncompressed, {claimed}: content hashes to"
    ):
        rootfs.prepare(layout, lying, cache=cache)
    assert sorted(p.name for p in (cache / "layers").iterdir()) == [
        str(base_id).replace(":", "-")
    ]
    assert list((cache / "tmp").iterdir()) == []


def test_platform_must_match_an_image_that_is_a_lone_manifest(
    amd64_tree, tmp_path, run_env
):
    build_layout(tmp_path / "image", amd64_tree, "linux/amd64")
    index_json = tmp_path / "image" / "index.json"
    index = json.loads(index_json.read_text())
    del index["manifests"][0]["platform"]  # nothing to choose from: the root only
    index_json.write_text(json.dumps(index))
    done = platforge(
        "run",
        "--platform",
        "linux/arm64",
        str(tmp_path / "image"),
        "--",
        "true",
        env=run_env,
    )
    assert done.returncode == 1
    assert done.stderr == (
        f"platforge: error: image {tmp_path / 'image'} is for linux/amd64, not "
        "linux/arm64; run it without --platform or give an image or index that "
        "has the platform\n"
    )
    same = platforge(
        "run",
        "--platform",
        "linux/amd64",
        str(tmp_path / "image"),
        "--",
        "true",
        env=run_env,
    )
    assert same.returncode == 0, same.stderr


def _processes_running(argument: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if argument.encode() in (entry / "cmdline").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
    return found


def test_sigterm_stops_the_container_and_cleans_up(amd64_tree, tmp_path, run_env):
    build_layout(tmp_path / "image", amd64_tree, "linux/amd64")
    run_dir = tmp_path / "run-dir"  # where the sandbox keeps its per-run files
    run_dir.mkdir()
    # A sleep argument of this test run alone: other test runs may share the host.
    marker = str(100000 + secrets.randbelow(900000))
    command = ["sh", "-c", f"echo started; exec sleep {marker}"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "platforge", "run", str(tmp_path / "image"), *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **run_env, "PLATFORGE_RUN_DIR": str(run_dir)},
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"started\n"
        deadline = time.monotonic() + 30
        while not _processes_running(marker):  # the shell execs sleep just after
            assert time.monotonic() < deadline, "the container never ran sleep"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            # Unwind the sandbox even when an assertion failed above.
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    assert proc.returncode == 143
    assert _processes_running(marker) == []
    assert list(run_dir.iterdir()) == []
    assert str(tmp_path) not in Path("/proc/self/mounts").read_text()


def test_a_rootfs_cache_that_is_a_file_is_one_line(amd64_tree, tmp_path, run_env):
    build_layout(tmp_path / "image", amd64_tree, "linux/amd64")
    (tmp_path / "not-a-dir").write_text("a file\n")
    env = {**run_env, "PLATFORGE_ROOTFS": str(tmp_path / "not-a-dir")}
    done = platforge("run", str(tmp_path / "image"), "--", "true", env=env)
    assert done.returncode == 1
    assert done.stderr == (
        f"platforge: error: cannot keep unpacked layers in {tmp_path / 'not-a-dir'}: "
        "Not a directory; point PLATFORGE_ROOTFS at a writable directory\n"
    )


def test_name_picks_one_image_of_a_layout_that_holds_several(
    amd64_tree, tmp_path, run_env
):
    for name in ("first", "second"):
        build_layout(
            tmp_path / "image", amd64_tree, "linux/amd64", cmd=["echo", name], name=name
        )
    unnamed = platforge("run", str(tmp_path / "image"), env=run_env)
    assert unnamed.returncode == 1
    assert "names: first, second" in unnamed.stderr
    assert len(unnamed.stderr.splitlines()) == 1
    done = platforge("run", "--name", "second", str(tmp_path / "image"), env=run_env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "second\n"


def test_flatten_keeps_the_tree_another_process_finished_first(amd64_tree, tmp_path):
    manifest = build_layout(tmp_path / "image", amd64_tree, "linux/amd64")
    layout = Layout.open(tmp_path / "image")
    lowers = rootfs.prepare(layout, manifest, cache=tmp_path / "cache").lowerdirs
    target = tmp_path / "flat" / "same-key"
    # The winner of a race renamed its copy into place after we checked for it.
    rootfs.flatten(lowers, target)
    (target / "winner").write_text("first\n")

    assert rootfs.flatten(lowers, target) == target

    assert (target / "winner").read_text() == "first\n"
    assert (target / "hello.txt").is_file()
    assert [p.name for p in target.parent.iterdir()] == ["same-key"]


def test_an_existing_directory_that_is_no_layout_is_never_pulled(tmp_path, run_env):
    (tmp_path / "notlayout").mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "platforge", "run", "notlayout", "--", "true"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
        env={**os.environ, **run_env},
    )
    assert done.returncode == 1
    assert "notlayout is a directory but not an OCI layout" in done.stderr
    assert "docker.io" not in done.stderr.split("write the image as")[0]
