"""The registry commands end to end: a five-platform busybox image through real
registries (plain, basic auth, TLS, token auth), checked with skopeo and QEMU."""

import base64
import hashlib
import json
import os
import stat
import subprocess
import sys
import uuid

import pytest

from platforge import platforms
from platforge.oci.layer import Entry
from test_registry_auth import RECORDING_HELPER
from test_registry_images import _image, blob_files, busybox_layout, small_layout

pytestmark = pytest.mark.registry

COMMANDS = ["push", "pull", "copy", "inspect", "login", "logout"]


def platforge(*args, stdin=None, env=None, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "platforge", *map(str, args)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


def ok(*args, **kwargs):
    done = platforge(*args, **kwargs)
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture
def docker_config(tmp_path, monkeypatch):
    """A private DOCKER_CONFIG. (The test bed's docker_config also sets
    REGISTRY_AUTH_FILE, which docker-registry reads as a config override when the
    fixture runs before a registry's lazy start; only DOCKER_CONFIG is needed.)"""
    path = tmp_path / "docker-config"
    path.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(path))
    return path


@pytest.fixture(scope="module")
def image(busybox, tmp_path_factory):
    path = tmp_path_factory.mktemp("busybox") / "layout"
    _, index = busybox_layout(busybox, path)
    return path, index


def _repo():
    return f"cli/{uuid.uuid4().hex[:10]}"


def _access(registry):
    """CLI options and stdin reaching ``registry``, and skopeo's options."""
    options, stdin, skopeo_options = [], None, ["--tls-verify=false"]
    if registry.username:
        options += ["--username", registry.username, "--password-stdin"]
        stdin = registry.password + "\n"
        skopeo_options += ["--creds", registry.creds]
    if registry.ca_file:
        options += ["--ca-file", registry.ca_file]
    return options, stdin, skopeo_options


@pytest.mark.parametrize("kind", ["plain", "basic", "tls", "token"])
@pytest.mark.usefixtures("docker_config")
def test_push_then_pull_busybox_index_byte_identical(
    kind, request, image, skopeo, tmp_path
):
    registry = request.getfixturevalue(f"registry_{kind}")
    layout, index = image
    options, stdin, skopeo_options = _access(registry)
    ref = registry.ref(_repo(), "v1")

    pushed = ok("push", layout, ref, *options, stdin=stdin)
    assert pushed.stdout.strip() == str(index.digest)

    raw = skopeo("inspect", "--raw", *skopeo_options, f"docker://{ref}").stdout
    assert "sha256:" + hashlib.sha256(raw.encode()).hexdigest() == str(index.digest)

    dest = tmp_path / "pulled"
    pulled = ok("pull", ref, dest, "--format", "oci-layout", *options, stdin=stdin)
    assert pulled.stdout.strip() == str(index.digest)
    assert blob_files(dest) == blob_files(layout)
    entry = json.loads((dest / "index.json").read_text())["manifests"][0]
    assert entry["digest"] == str(index.digest)
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "v1"


def test_pull_arm64_rootfs_runs_under_qemu(
    registry_plain, image, tmp_path, require_qemu
):
    layout, _ = image
    ref = registry_plain.ref(_repo(), "v1")
    ok("push", layout, ref)
    dest = tmp_path / "arm"
    ok("pull", ref, dest, "--platform", "linux/arm64", "--format", "rootfs")

    run = subprocess.run(
        [dest / "rootfs" / "bin" / "busybox", "uname", "-m"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert run.stdout.strip() == "aarch64"
    metadata = json.loads((dest / "metadata.json").read_text())
    assert metadata["cmd"] == ["busybox", "uname", "-m"]
    assert metadata["env"] == ["PATH=/bin"]
    assert metadata["user"] == ""
    assert sorted(p.name for p in dest.iterdir()) == ["metadata.json", "rootfs"]


@pytest.mark.parametrize("kind", ["basic", "token"])
def test_wrong_credentials_are_one_line_naming_the_registry(
    kind, request, image, docker_config
):
    registry = request.getfixturevalue(f"registry_{kind}")
    layout, _ = image
    secret = "not-the-password-42"
    done = platforge(
        "push",
        layout,
        registry.ref(_repo(), "v1"),
        "--username",
        registry.username,
        "--password-stdin",
        stdin=secret + "\n",
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert registry.host in lines[0]
    assert f"platforge login {registry.host}" in lines[0]
    assert "Traceback" not in done.stderr
    assert secret not in done.stderr + done.stdout


def test_login_saves_credentials_push_uses_them_and_logout_forgets(
    registry_basic, image, docker_config
):
    layout, index = image
    env = {"DOCKER_CONFIG": str(docker_config)}
    ok(
        "login",
        registry_basic.host,
        "-u",
        registry_basic.username,
        "--password-stdin",
        stdin=registry_basic.password + "\n",
        env=env,
    )
    config = docker_config / "config.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    auth = json.loads(config.read_text())["auths"][registry_basic.host]["auth"]
    assert base64.b64decode(auth).decode() == registry_basic.creds

    ref = registry_basic.ref(_repo(), "v1")
    assert ok("push", layout, ref, env=env).stdout.strip() == str(index.digest)

    ok("logout", registry_basic.host, env=env)
    assert registry_basic.host not in json.loads(config.read_text())["auths"]
    refused = platforge("push", layout, ref, env=env)
    assert refused.returncode == 1
    assert "no credentials found" in refused.stderr


def test_login_through_a_creds_store_keeps_the_secret_out_of_config_json(
    registry_basic, image, docker_config, tmp_path
):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    helper = bindir / "docker-credential-rec"
    helper.write_text("#!/bin/sh\n" + RECORDING_HELPER)
    helper.chmod(0o755)
    env = {
        "DOCKER_CONFIG": str(docker_config),
        "PATH": f"{bindir}:{os.environ['PATH']}",
    }
    config = docker_config / "config.json"
    config.write_text(json.dumps({"credsStore": "rec"}))
    done = ok(
        "login",
        registry_basic.host,
        "-u",
        registry_basic.username,
        "--password-stdin",
        stdin=registry_basic.password + "\n",
        env=env,
    )
    assert "docker-credential-rec" in done.stderr
    assert registry_basic.password not in config.read_text()
    assert json.loads(config.read_text())["auths"] == {registry_basic.host: {}}

    layout, index = image
    ref = registry_basic.ref(_repo(), "v1")
    assert ok("push", layout, ref, env=env).stdout.strip() == str(index.digest)
    ok("logout", registry_basic.host, env=env)
    assert (bindir / "calls").read_text().split()[-1] == "erase"
    assert platforge("push", layout, ref, env=env).returncode == 1


def test_login_with_a_wrong_password_saves_nothing(registry_basic, docker_config):
    done = platforge(
        "login",
        registry_basic.host,
        "-u",
        registry_basic.username,
        "--password-stdin",
        stdin="wrong\n",
        env={"DOCKER_CONFIG": str(docker_config)},
    )
    assert done.returncode == 1
    assert not (docker_config / "config.json").exists()


def test_copy_within_a_registry_mounts_every_blob(registry_plain, image):
    layout, index = image
    source = registry_plain.ref(_repo(), "v1")
    target = registry_plain.ref(_repo(), "copy")
    ok("push", layout, source)
    done = ok("copy", source, target)
    assert done.stdout.strip() == str(index.digest)
    assert "10 blobs mounted, 0 sent" in done.stderr


def test_inspect_raw_gives_the_exact_bytes_from_registry_and_layout(
    registry_plain, image
):
    layout, index = image
    ref = registry_plain.ref(_repo(), "v1")
    ok("push", layout, ref)
    for target in (ref, layout):
        raw = subprocess.run(
            [sys.executable, "-m", "platforge", "inspect", str(target), "--raw"],
            capture_output=True,
            timeout=60,
            check=True,
        ).stdout
        assert raw == index.raw
    summary = json.loads(ok("inspect", ref, "--platform", "linux/s390x").stdout)
    s390x = next(d for d in index.manifests if d.platform.architecture == "s390x")
    assert summary["digest"] == str(s390x.digest)
    assert len(summary["layers"]) == 1


def test_push_of_a_corrupt_layout_fails_in_one_line(registry_plain, busybox, tmp_path):
    layout, index = busybox_layout(busybox, tmp_path / "img")
    manifest = layout.read_manifest(index.manifests[0])
    path = layout.blob_path(manifest.layers[0].digest)
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    ref = registry_plain.ref(_repo(), "v1")
    done = platforge("push", layout.path, ref)
    assert done.returncode == 1
    assert "corrupt" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert platforge("inspect", ref).returncode == 1


@pytest.mark.parametrize("command", COMMANDS)
def test_every_registry_command_help_shows_an_example(command):
    done = ok(command, "--help")
    assert "Example" in done.stdout
    assert "platforge " + command in done.stdout


def test_docker_format_image_pushed_by_skopeo_pulls_and_copies(
    registry_plain, image, skopeo, tmp_path
):
    layout, _ = image
    ref = registry_plain.ref(_repo(), "docker")
    skopeo(
        "copy",
        "--all",
        "--format",
        "v2s2",
        "--dest-tls-verify=false",
        f"oci:{layout}:latest",
        f"docker://{ref}",
    )
    summary = json.loads(ok("inspect", ref).stdout)
    assert summary["mediaType"] == (
        "application/vnd.docker.distribution.manifest.list.v2+json"
    )
    dest = tmp_path / "pulled"
    digest = ok("pull", ref, dest).stdout.strip()
    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{ref}").stdout
    assert digest == "sha256:" + hashlib.sha256(raw.encode()).hexdigest()
    target = registry_plain.ref(_repo(), "s390x")
    copied = ok("copy", ref, target, "--platform", "linux/s390x").stdout.strip()
    one = json.loads(ok("inspect", target).stdout)
    assert one["digest"] == copied
    assert one["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"


@pytest.mark.parametrize("kind", ["basic", "token"])
def test_debug_output_never_shows_the_password_or_tokens(kind, request, image):
    registry = request.getfixturevalue(f"registry_{kind}")
    layout, _ = image
    done = ok(
        "--debug",
        "push",
        layout,
        registry.ref(_repo(), "v1"),
        "--username",
        registry.username,
        "--password-stdin",
        stdin=registry.password + "\n",
    )
    assert "platforge.registry" in done.stderr
    assert registry.password not in done.stderr
    # Challenges are logged (they hold no secret); tokens (JWTs) and basic
    # credentials never are.
    assert "eyJ" not in done.stderr
    pair = base64.b64encode(registry.creds.encode()).decode()
    assert pair not in done.stderr


def test_platform_that_a_lone_manifest_lacks_is_refused_by_every_command(
    registry_plain, tmp_path
):
    layout, descriptor = small_layout(tmp_path / "img")
    ref = registry_plain.ref(_repo(), "amd64")
    ok("push", layout.path, ref)
    copied = registry_plain.ref(_repo(), "arm64")
    for args in (
        ("pull", ref, tmp_path / "pulled", "--platform", "linux/arm64"),
        (
            "pull",
            ref,
            tmp_path / "fs",
            "--platform",
            "linux/arm64",
            "--format",
            "rootfs",
        ),
        ("copy", ref, copied, "--platform", "linux/arm64"),
        ("inspect", ref, "--platform", "linux/arm64"),
        ("inspect", layout.path, "--platform", "linux/arm64"),
    ):
        done = platforge(*args)
        assert done.returncode == 1, (args, done.stderr)
        assert "is for linux/amd64, not linux/arm64" in done.stderr, args
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "pulled").exists()
    assert not (tmp_path / "fs").exists()
    assert platforge("inspect", copied).returncode == 1

    done = ok("inspect", ref, "--platform", "linux/amd64")
    assert json.loads(done.stdout)["digest"] == str(descriptor.digest)
    ok("pull", ref, tmp_path / "amd64", "--platform", "linux/amd64")


def test_inspect_name_picks_one_image_of_a_layout_holding_several(tmp_path):
    layout, first = small_layout(tmp_path / "img", name="one")
    entries = [Entry.file("other.txt", b"other")]
    second = _image(layout, platforms.parse("linux/arm64"), entries, ["true"])
    layout.add_ref(second, "two")

    for name, descriptor in (("one", first), ("two", second)):
        done = ok("inspect", layout.path, "--name", name)
        assert json.loads(done.stdout)["digest"] == str(descriptor.digest)
    refused = platforge("inspect", layout.path)
    assert refused.returncode == 1
    assert "holds 2 images (names: one, two)" in refused.stderr


def test_login_without_a_terminal_asks_for_password_stdin(registry_basic):
    for args in (["-u", registry_basic.username], []):
        done = platforge("login", registry_basic.host, *args, stdin="")
        assert done.returncode == 2, done.stderr
        assert "standard input is not a terminal" in done.stderr
        assert "--password-stdin" in done.stderr
        assert "Warning" not in done.stderr


@pytest.mark.parametrize("kind", ["basic", "token"])
@pytest.mark.usefixtures("docker_config")
def test_a_refused_login_says_to_check_the_password_not_to_log_in(kind, request):
    registry = request.getfixturevalue(f"registry_{kind}")
    done = platforge(
        "login",
        registry.host,
        "-u",
        registry.username,
        "--password-stdin",
        stdin="no\n",
    )
    assert done.returncode == 1
    line = done.stderr.strip().splitlines()[-1]
    assert line.endswith(
        f": user name or password refused for '{registry.username}' at "
        f"{registry.host}; check them"
    ), line
    assert "platforge login" not in done.stderr


def test_copy_to_a_digest_that_is_not_the_images_is_refused(registry_plain, tmp_path):
    layout, descriptor = small_layout(tmp_path / "img")
    source = registry_plain.ref(_repo(), "v1")
    ok("push", layout.path, source)
    target = registry_plain.ref(_repo(), "v1").rsplit(":", 1)[0]
    wrong = f"{target}@sha256:{'0' * 64}"
    done = platforge("copy", source, wrong)
    assert done.returncode == 1
    assert f"not sha256:{'0' * 64}" in done.stderr
    assert platforge("inspect", f"{target}@{descriptor.digest}").returncode == 1
    right = f"{target}@{descriptor.digest}"
    assert ok("copy", source, right).stdout.strip() == str(descriptor.digest)


def test_pull_into_the_empty_current_directory_fills_it(registry_plain, tmp_path):
    layout, descriptor = small_layout(tmp_path / "img")
    ref = registry_plain.ref(_repo(), "v1")
    ok("push", layout.path, ref)
    here = tmp_path / "here"
    here.mkdir()
    inode = here.stat().st_ino
    assert ok("pull", ref, ".", cwd=here).stdout.strip() == str(descriptor.digest)
    assert (here / "index.json").is_file()
    assert here.stat().st_ino == inode
    assert not [p for p in here.iterdir() if p.name.startswith(".partial")]


def test_push_name_that_the_layout_lacks_is_refused(registry_plain, tmp_path):
    layout, _ = small_layout(tmp_path / "img", name="only")
    done = platforge(
        "push", layout.path, registry_plain.ref(_repo(), "v1"), "--name", "x"
    )
    assert done.returncode == 1
    assert "has no image named 'x' (names: only)" in done.stderr


@pytest.mark.usefixtures("docker_config")
def test_a_push_with_a_pull_only_account_blames_the_token_scope_not_the_login(
    registry_token, testbed, tmp_path
):
    layout, _ = small_layout(tmp_path / "img")
    user = testbed.reader_username
    ok(
        "login",
        registry_token.host,
        "-u",
        user,
        "--password-stdin",
        stdin=testbed.reader_password + "\n",
    )
    repository = _repo()
    done = platforge(
        "--debug", "push", layout.path, registry_token.ref(repository, "v1")
    )
    assert done.returncode == 1, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith(
        f"platforge: error: registry {registry_token.host} answered "
    )
    assert line.endswith(
        f": the token granted to '{user}' does not include push to {repository}; ask "
        f"for push access to {repository} or use an account that has it"
    ), line
    assert "platforge login" not in line
    # --debug shows what the token server granted, not only what was asked.
    assert (
        f"requested repository:{repository}:pull,push, granted "
        f"repository:{repository}:pull," in done.stderr
    )


@pytest.mark.parametrize("command", [["pull", "image", "out"], ["copy", "image", "x"]])
def test_a_layout_directory_where_a_reference_goes_is_a_usage_error(tmp_path, command):
    (tmp_path / "image").mkdir()
    done = platforge(*command, cwd=tmp_path)
    assert done.returncode == 2
    assert "image is a directory" in done.stderr
    assert "platforge push image REF" in done.stderr
    assert not (tmp_path / "out").exists()
