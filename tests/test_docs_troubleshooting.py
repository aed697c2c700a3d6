"""docs/troubleshooting.md quotes the errors platforge really prints.

Each test makes one documented failure happen through the command line, in a
subprocess as a user runs it (``main()`` is what turns an error into one line and
status 1), and checks that the stable part of the documented line is both on stderr
and on the page, so neither can change without the other.

A missing binfmt handler is *simulated*: ``PLATFORGE_BINFMT_DIR`` points emulation
at an empty directory, since this machine has the real handlers registered.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from testbed import Fault

if TYPE_CHECKING:
    from collections.abc import Callable

    from testbed import FaultProxy, Registry, Testbed

REPO = Path(__file__).resolve().parents[1]
PAGE = (REPO / "docs" / "troubleshooting.md").read_text()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A private store, home and docker config, so no user state leaks in."""
    for name in ("store", "home", "docker"):
        (tmp_path / name).mkdir()
    environ = {
        key: value
        for key, value in os.environ.items()
        if key not in {"PLATFORGE_CA_FILE", "PLATFORGE_SANDBOX", "PLATFORGE_RUNTIME"}
    }
    return {
        **environ,
        "PLATFORGE_STORE": str(tmp_path / "store"),
        "HOME": str(tmp_path / "home"),
        "DOCKER_CONFIG": str(tmp_path / "docker"),
    }


def platforge(
    *args: str | Path,
    env: dict[str, str],
    cwd: Path | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "platforge", *map(str, args)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
        cwd=cwd,
    )


def assert_documented(done: subprocess.CompletedProcess[str], *parts: str) -> None:
    """Status 1, and each part on the error line and on the page."""
    assert done.returncode == 1, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("platforge: error: "), done.stderr
    for part in parts:
        assert part in line, f"{part!r} is no longer printed: {line}"
        assert part in PAGE, f"{part!r} is printed but not in troubleshooting.md"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def tiny_layout(tmp_path: Path, env: dict[str, str]) -> Path:
    """An arm64 and amd64 image of one file, built without RUN (no emulation)."""
    context = tmp_path / "tiny"
    context.mkdir()
    (context / "hello.txt").write_text("hello\n")
    (context / "Dockerfile").write_text("FROM scratch\nCOPY hello.txt /\n")
    layout = tmp_path / "tiny-image"
    done = platforge(
        "build",
        "-q",
        "--platform",
        "linux/amd64,linux/arm64",
        "-o",
        f"type=oci,dest={layout}",
        context,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return layout


@pytest.fixture
def busybox_layout(
    busybox: dict[str, Path], tmp_path: Path, env: dict[str, str]
) -> Path:
    """busybox for amd64 as an OCI layout, a base that has a shell."""
    tree = tmp_path / "busybox-tree"
    (tree / "bin").mkdir(parents=True)
    shutil.copy(busybox["amd64"] / "bin" / "busybox", tree / "bin" / "busybox")
    (tree / "bin" / "sh").symlink_to("busybox")
    dockerfile = tmp_path / "base.Dockerfile"
    dockerfile.write_text("FROM scratch\nCOPY . /\n")
    layout = tmp_path / "busybox-image"
    done = platforge(
        "build",
        "-q",
        "-f",
        dockerfile,
        "--platform",
        "linux/amd64",
        "-o",
        f"type=oci,dest={layout}",
        tree,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return layout


# --- set-up and emulation ---------------------------------------------------------


def test_a_missing_binfmt_handler_names_the_install_command(
    tiny_layout: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    empty = tmp_path / "binfmt_misc"  # simulated: no handler registered at all
    empty.mkdir()
    done = platforge(
        "run",
        "--platform",
        "linux/arm64",
        tiny_layout,
        "--",
        "/hello.txt",
        env={**env, "PLATFORGE_BINFMT_DIR": str(empty)},
    )
    assert_documented(
        done,
        "cannot run platform linux/arm64: no binfmt_misc handler for qemu-aarch64 "
        "is registered in ",
        "; run `platforge emulation install arm64` as root",
    )


def test_an_unknown_sandbox_mode_is_refused(
    tiny_layout: Path, env: dict[str, str]
) -> None:
    done = platforge(
        "run",
        "--platform",
        "linux/amd64",
        tiny_layout,
        "--",
        "/hello.txt",
        env={**env, "PLATFORGE_SANDBOX": "bogus"},
    )
    assert_documented(
        done,
        "PLATFORGE_SANDBOX='bogus' is not a sandbox mode; use runtime, chroot or "
        "proot (or unset it to choose automatically)",
    )


# --- registries -------------------------------------------------------------------


def test_a_registry_that_is_not_running_is_reported_after_the_retries(
    env: dict[str, str],
) -> None:
    done = platforge("inspect", f"127.0.0.1:{free_port()}/app:1", env=env)
    assert_documented(
        done,
        "failed after 5 tries: ConnectError: [Errno 111] Connection refused; "
        "check that the registry is running and reachable",
    )


def test_a_ca_file_that_is_not_pem_is_named(
    tmp_path: Path, env: dict[str, str]
) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    done = platforge(
        "inspect",
        f"127.0.0.1:{free_port()}/app:1",
        env={**env, "PLATFORGE_CA_FILE": str(bad)},
    )
    assert_documented(
        done,
        "no certificate or crl found",
        "; give a readable PEM file",
    )
    assert "_ssl.c" not in done.stderr


def test_an_invalid_reference_says_repositories_are_lowercase(
    env: dict[str, str],
) -> None:
    done = platforge("inspect", "127.0.0.1:5000/App:1", env=env)
    assert_documented(
        done,
        "invalid repository path component 'App' in image reference "
        "'127.0.0.1:5000/App:1'",
    )


def test_a_registry_wanting_credentials_says_to_log_in(
    registry_basic: Registry, env: dict[str, str]
) -> None:
    done = platforge("inspect", f"{registry_basic.host}/app:1", env=env)
    assert_documented(
        done,
        " (UNAUTHORIZED: authentication required): no credentials found; run "
        "`platforge login ",
        "` or pass --username and --password-stdin",
    )


def test_a_refused_login_names_the_user_and_says_to_check_them(
    registry_basic: Registry, env: dict[str, str]
) -> None:
    done = platforge(
        "login",
        registry_basic.host,
        "-u",
        "ci",
        "--password-stdin",
        env=env,
        stdin="wrong\n",
    )
    assert_documented(
        done,
        " answered 401 for login (UNAUTHORIZED: authentication required): user "
        "name or password refused for 'ci' at ",
        "; check them",
    )


def test_a_push_with_a_pull_only_account_blames_the_token_scope(
    registry_token: Registry,
    testbed: Testbed,
    tiny_layout: Path,
    env: dict[str, str],
) -> None:
    login = platforge(
        "login",
        registry_token.host,
        "-u",
        testbed.reader_username,
        "--password-stdin",
        env=env,
        stdin=testbed.reader_password + "\n",
    )
    assert login.returncode == 0, login.stderr
    repository = f"docs-{uuid.uuid4().hex[:8]}"
    done = platforge(
        "push", tiny_layout, f"{registry_token.host}/{repository}:1", env=env
    )
    assert_documented(
        done,
        " (UNAUTHORIZED: authentication required): the token granted to 'reader' "
        "does not include push to ",
        "; ask for push access to ",
        " or use an account that has it",
    )


def test_an_unknown_ca_names_the_three_ways_to_trust_it(
    registry_tls: Registry, env: dict[str, str]
) -> None:
    done = platforge("inspect", f"{registry_tls.host}/app:1", env=env)
    assert_documented(
        done,
        "failed: certificate verify failed ([SSL: CERTIFICATE_VERIFY_FAILED] "
        "certificate verify failed: unable to get local issuer certificate); "
        "trust its CA with PLATFORGE_CA_FILE=CA.pem, /etc/docker/certs.d/",
    )


def test_a_plain_http_registry_off_loopback_is_not_https(
    registry_plain: Registry, env: dict[str, str]
) -> None:
    # A name /etc/hosts maps to 127.0.0.1, so nothing leaves the machine.
    alias = next(
        (
            name
            for line in Path("/etc/hosts").read_text().splitlines()
            if line.split()[:1] == ["127.0.0.1"]
            for name in line.split("#", 1)[0].split()[1:]
            if name != "localhost"
        ),
        None,
    )
    if alias is None:
        pytest.skip("/etc/hosts maps no name but localhost to 127.0.0.1")
    host = f"{alias}:{registry_plain.host.rsplit(':', 1)[1]}"
    done = platforge("inspect", f"{host}/app:1", env=env)
    assert_documented(
        done,
        " does not speak HTTPS (it answered the TLS greeting with something else, "
        "likely plain HTTP); platforge uses plain HTTP only for loopback "
        "registries: pass --insecure (build: --insecure-registry ",
        ") if you trust the network",
    )


def test_an_unknown_tag_is_manifest_unknown(
    registry_plain: Registry, env: dict[str, str]
) -> None:
    missing = f"{registry_plain.host}/docs-{uuid.uuid4().hex[:8]}:1"
    done = platforge("inspect", missing, env=env)
    assert_documented(
        done,
        "(MANIFEST_UNKNOWN: manifest unknown): not found; check the repository, "
        "tag or digest",
    )


def test_a_denied_repository_says_so(
    registry_plain: Registry,
    fault_proxy: Callable[..., FaultProxy],
    env: dict[str, str],
) -> None:
    body = b'{"errors": [{"code": "DENIED", "message": "requested access to the resource is denied"}]}'  # noqa: E501
    denied = Fault(
        path="/manifests/",
        status=403,
        times=10,
        headers={"Content-Type": "application/json"},
        body=body,
    )
    proxy = fault_proxy(registry_plain, denied)
    done = platforge("inspect", f"{proxy.host}/base:1", env=env)
    assert_documented(
        done,
        " (DENIED: requested access to the resource is denied): access denied; "
        "check that the account may access base",
    )


def test_a_rate_limit_is_reported_after_the_retries(
    registry_plain: Registry,
    fault_proxy: Callable[..., FaultProxy],
    env: dict[str, str],
) -> None:
    body = (
        b'{"errors": [{"code": "TOOMANYREQUESTS", "message": "rate limit exceeded"}]}'
    )
    limited = Fault(
        path="/manifests/",
        status=429,
        times=10,
        headers={"Content-Type": "application/json", "Retry-After": "0"},
        body=body,
    )
    proxy = fault_proxy(registry_plain, limited)
    done = platforge("inspect", f"{proxy.host}/base:1", env=env)
    assert_documented(
        done,
        "/base failed after 5 tries: registry ",
        " answered HTTP 429 (TOOMANYREQUESTS: rate limit exceeded); the registry's "
        "rate limit did not reset within 5 tries (",
        " s): wait and retry, or log in for a higher limit",
    )
    assert len([s for s in proxy.requests if s.status == 429]) == 5
    assert "/base: HTTP 429, retrying in " in done.stderr


# --- Dockerfiles ------------------------------------------------------------------


def test_an_unknown_instruction_is_located_and_corrected(
    tmp_path: Path, env: dict[str, str]
) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPYY a /\n")
    done = platforge("dockerfile", "plan", "Dockerfile", env=env, cwd=tmp_path)
    assert_documented(
        done, "Dockerfile:2: unknown instruction 'COPYY' (did you mean COPY?)"
    )


def test_a_dockerfile_that_is_not_utf8_is_refused(
    tmp_path: Path, env: dict[str, str]
) -> None:
    (tmp_path / "Dockerfile").write_bytes(b"FROM scratch\nLABEL a=caf\xe9\n")
    done = platforge("dockerfile", "plan", "Dockerfile", env=env, cwd=tmp_path)
    assert_documented(
        done, "Dockerfile: not UTF-8 text (byte 24); save the Dockerfile as UTF-8"
    )


def test_a_missing_target_stage_lists_the_stages(
    tmp_path: Path, env: dict[str, str]
) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch AS a\n")
    done = platforge(
        "build", "--target", "nope", "-o", "type=oci,dest=out", ".",
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert_documented(done, "Dockerfile: target stage 'nope' not found; stages: a")


def test_a_copy_source_outside_the_context_is_said_to_be_outside(
    tmp_path: Path, env: dict[str, str]
) -> None:
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM scratch\nCOPY ../etc/passwd /\n")
    done = platforge("build", "-o", "type=oci,dest=../out", ".", env=env, cwd=context)
    assert_documented(
        done,
        "platforge: error: Dockerfile:2: [stage-0 1/1] COPY ../etc/passwd: the path "
        "leads outside the build context ",
        ", which is all a build can read; move the file into it, or pass its "
        "directory with --build-context NAME=DIR and use COPY --from=NAME",
    )
    (context / "Dockerfile").write_text("FROM scratch\nCOPY nothere.txt /\n")
    done = platforge("build", "-o", "type=oci,dest=../out", ".", env=env, cwd=context)
    assert_documented(
        done,
        "platforge: error: Dockerfile:2: [stage-0 1/1] COPY nothere.txt: no such "
        "file or directory in the context; check the path and .dockerignore",
    )


def test_a_failing_run_step_gives_platform_status_and_last_output(
    busybox_layout: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM base\nRUN nosuchcommand\n")
    done = platforge(
        "build",
        "--build-context",
        f"base=oci-layout://{busybox_layout}",
        "--platform",
        "linux/amd64",
        "-o",
        f"type=oci,dest={tmp_path / 'out'}",
        context,
        env=env,
    )
    assert_documented(
        done,
        "Dockerfile:2: [stage-0 1/1] RUN 'nosuchcommand' on linux/amd64 exited "
        "with status 127 "
        "(last output: /bin/sh: nosuchcommand: not found); fix the command",
    )


# --- outputs and layouts ----------------------------------------------------------


def test_an_output_below_a_file_names_the_file(
    tmp_path: Path, env: dict[str, str]
) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY Dockerfile /\n")
    (tmp_path / "afile").write_text("x\n")
    done = platforge("build", "-o", "afile/img", ".", env=env, cwd=tmp_path)
    assert_documented(
        done,
        "cannot write output afile/img: afile is a file, not a directory; choose a "
        "dest below a directory, or move that file away",
    )


def test_a_default_output_directory_of_the_users_is_refused(
    tmp_path: Path, env: dict[str, str]
) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY Dockerfile /\n")
    (tmp_path / "image").mkdir()
    (tmp_path / "image" / "notes.txt").write_text("mine\n")
    done = platforge("build", ".", env=env, cwd=tmp_path)
    assert_documented(
        done,
        "./image exists and is not an OCI layout (no oci-layout file); platforge "
        "writes its default output there: move it away or pass --output "
        "type=oci,dest=DIR",
    )


def test_a_foreign_digest_file_is_never_overwritten(
    tmp_path: Path, env: dict[str, str]
) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY Dockerfile /\n")
    (tmp_path / "digest").write_text("my notes\n")
    done = platforge("build", ".", env=env, cwd=tmp_path)
    assert_documented(
        done,
        "digest exists and does not hold a digest; platforge writes the image "
        "digest there: move that file away or choose another dest",
    )
    assert (tmp_path / "digest").read_text() == "my notes\n"


def test_a_directory_that_is_not_a_layout_is_named(
    tmp_path: Path, env: dict[str, str]
) -> None:
    (tmp_path / "notlayout").mkdir()
    done = platforge("inspect", "notlayout", env=env, cwd=tmp_path)
    assert_documented(
        done,
        "notlayout is not an OCI image layout: oci-layout is missing; give the "
        "directory an OCI layout was written to",
    )


def test_a_corrupt_layer_stops_the_push_before_anything_is_sent(
    busybox_layout: Path, registry_plain: Registry, env: dict[str, str]
) -> None:
    # The busybox layer is by far the largest blob of the layout.
    blobs = sorted(
        (busybox_layout / "blobs" / "sha256").iterdir(),
        key=lambda p: p.stat().st_size,
    )
    with blobs[-1].open("ab") as out:
        out.write(b"x")
    target = f"{registry_plain.host}/docs-{uuid.uuid4().hex[:8]}:1"
    done = platforge("push", busybox_layout, target, env=env)
    assert_documented(
        done,
        "), so nothing was pushed; the layout is damaged: build it again or "
        "pull/copy the image into a new directory",
    )
    assert " is corrupt (" in done.stderr


def test_a_corrupt_index_blob_is_named_when_read(
    tiny_layout: Path, env: dict[str, str]
) -> None:
    index = json.loads((tiny_layout / "index.json").read_text())
    digest = index["manifests"][0]["digest"].removeprefix("sha256:")
    with (tiny_layout / "blobs" / "sha256" / digest).open("ab") as out:
        out.write(b" ")
    done = platforge("inspect", tiny_layout, env=env)
    assert_documented(
        done,
        " bytes hashing to sha256:",
        "); the layout is damaged: build it again or pull/copy the image into a new "
        "directory",
    )


# --- run --------------------------------------------------------------------------


def test_run_exits_with_the_status_of_its_command(
    busybox_layout: Path, env: dict[str, str]
) -> None:
    done = platforge("run", busybox_layout, "--", "sh", "-c", "exit 7", env=env)
    assert done.returncode == 7, done.stderr
    missing = platforge("run", busybox_layout, "--", "nosuchcmd", env=env)
    assert missing.returncode == 127
    line = "platforge: exec: 'nosuchcmd': executable file not found in $PATH"
    assert line in missing.stderr
    assert line in PAGE


# --- Concourse --------------------------------------------------------------------


def test_an_unknown_source_key_is_refused_before_any_request(
    env: dict[str, str],
) -> None:
    repository = f"127.0.0.1:{free_port()}/app"
    request = f'{{"source": {{"repository": "{repository}", "tagg": "1"}}}}'
    done = platforge("resource", "check", env=env, stdin=request)
    assert_documented(
        done,
        "source has unknown key 'tagg'; check its spelling against the "
        "registry-image documentation",
    )


def test_a_task_parameter_that_is_not_a_boolean_is_named(
    tmp_path: Path, env: dict[str, str]
) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    done = platforge(
        "task",
        "build",
        env={**env, "CONTEXT": ".", "OUTPUT_OCI": "maybe"},
        cwd=tmp_path,
    )
    assert_documented(
        done,
        "task parameter OUTPUT_OCI='maybe' is not a boolean; use true or false",
    )
