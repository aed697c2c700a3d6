"""`platforge task build` with oci-build-task's parameters, then put and get."""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from platforge.concourse.task import parse_env
from platforge.errors import ConcourseError
from test_concourse_support import (
    ROOT,
    answer,
    multi_image,
    push,
    resource,
    sha,
    single_image,
    source_for,
    write_layout,
)

SEED = """\
ARG BASE
FROM ${BASE}
ARG TARGETARCH
COPY note.txt /note-${TARGETARCH}.txt
LABEL org.opencontainers.image.authors="platforge developers"
CMD ["uname", "-m"]
"""


def task(workdir: Path, store: Path, **params: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "PYTHONPATH": str(ROOT / "src"),
        "PLATFORGE_STORE": str(store),
        **params,
    }
    return subprocess.run(
        [sys.executable, "-m", "platforge", "task", "build"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def seed_context(workdir: Path) -> None:
    (workdir / "src").mkdir(parents=True)
    (workdir / "src" / "Dockerfile").write_text(SEED)
    (workdir / "src" / "note.txt").write_text("built by the task\n")


@pytest.mark.registry
def test_seed_style_build_then_put_then_get(registry_plain, tmp_path, tmp_store):
    base_repo = f"concourse/base-{uuid.uuid4().hex[:8]}"
    push(registry_plain, base_repo, multi_image("base"), ["1"])
    seed_context(tmp_path)

    result = task(
        tmp_path,
        tmp_store,
        CONTEXT="src",
        IMAGE_PLATFORM="linux/amd64,linux/arm64",
        BUILD_ARG_BASE=f"{registry_plain.host}/{base_repo}:1",
        LABEL_team="ci",
    )
    assert result.returncode == 0, result.stderr
    layout = tmp_path / "image" / "image"
    index = json.loads((layout / "index.json").read_text())
    assert len(index["manifests"]) == 1
    root = index["manifests"][0]
    assert root["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert (tmp_path / "image" / "digest").read_text() == root["digest"]
    assert (tmp_path / "image" / "digest").stat().st_mode & 0o777 == 0o644
    assert not (tmp_path / "image" / "image.tar").exists()

    # put: the layout the task wrote is accepted as is
    repo = f"concourse/seed-{uuid.uuid4().hex[:8]}"
    source = source_for(registry_plain, repo, tag="latest")
    pushed = answer(
        resource(
            "out", {"source": source, "params": {"image": "image/image"}}, str(tmp_path)
        )
    )
    assert pushed["version"] == {"tag": "latest", "digest": root["digest"]}

    # the implicit get after the put fetches that version (arm64 rootfs here)
    dest = tmp_path / "get"
    params = {"platform": {"architecture": "arm64"}}
    request = {"source": source, "version": pushed["version"], "params": params}
    resource("in", request, str(dest))
    rootfs = dest / "rootfs"
    assert (rootfs / "seed.txt").read_text() == "base-arm64"
    assert (rootfs / "note-arm64.txt").read_text() == "built by the task\n"
    labels = json.loads((dest / "labels.json").read_text())
    assert labels["team"] == "ci"
    assert labels["org.opencontainers.image.authors"] == "platforge developers"
    assert json.loads((dest / "metadata.json").read_text())["cmd"] == ["uname", "-m"]


def test_single_platform_tarball_digest_and_unpacked_rootfs(tmp_path, tmp_store):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "Dockerfile").write_text(
        'FROM scratch\nCOPY a.txt /a.txt\nENV A=1\nUSER 7\nCMD ["x"]\n'
    )
    (tmp_path / "src" / "a.txt").write_text("a")
    (tmp_path / "cache").mkdir()
    result = task(tmp_path, tmp_store, CONTEXT="src", UNPACK_ROOTFS="true")
    assert result.returncode == 0, result.stderr

    out = tmp_path / "image"
    assert (out / "image.tar").is_file()
    assert not (out / "image").exists()
    assert (out / "rootfs" / "a.txt").read_text() == "a"
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["user"] == "7"
    assert "A=1" in metadata["env"]
    # digest holds the config digest, as oci-build-task writes it for docker load
    from platforge.concourse.put import layout_from_tarball  # noqa: PLC0415

    layout_from_tarball(out / "image.tar", tmp_path / "check")
    index = json.loads((tmp_path / "check" / "index.json").read_text())
    blobs = tmp_path / "check" / "blobs" / "sha256"
    manifest = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_text())
    assert (out / "digest").read_text() == manifest["config"]["digest"]
    # the cache output holds the store, for the next run
    assert any((tmp_path / "cache").iterdir())


def test_image_arg_layout_is_the_base_of_from(tmp_path, tmp_store):
    base = single_image("from-layout")
    write_layout(tmp_path / "base", base, ref_name="latest")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "Dockerfile").write_text(
        "ARG base_image\nFROM ${base_image}\nCOPY b.txt /b.txt\n"
    )
    (tmp_path / "src" / "b.txt").write_text("b")
    result = task(
        tmp_path,
        tmp_store,
        CONTEXT="src",
        IMAGE_ARG_base_image="base",
        OUTPUT_OCI="true",
        UNPACK_ROOTFS="1",
    )
    assert result.returncode == 0, result.stderr
    rootfs = tmp_path / "image" / "rootfs"
    assert (rootfs / "seed.txt").read_text() == "from-layout"
    assert (rootfs / "b.txt").read_text() == "b"
    assert sha(b"") != (tmp_path / "image" / "digest").read_text()


def env_for(tmp_path, **params):
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    return parse_env(dict(params), tmp_path)


PARAM_ERRORS = [
    ({"OUTPUT_OCX": "true"}, "OUTPUT_OCX"),
    ({"BUILD_ARGS": "x"}, "BUILD_ARGS"),
    ({"UNPACK_ROOTFS": "yes"}, "UNPACK_ROOTFS"),
    ({"IMAGE_PLATFORM": "linux/amd64/v2/extra"}, "IMAGE_PLATFORM"),
    ({"BUILDKIT_ADD_HOSTS": "host-without-ip"}, "BUILDKIT_ADD_HOSTS"),
    ({"BUILDKIT_SSH": "github=/key"}, "BUILDKIT_SSH"),
    ({"IMAGE_ARG_base": "missing.tar"}, "IMAGE_ARG_base"),
    ({"BUILDKIT_SECRET_npm": "missing"}, "BUILDKIT_SECRET_npm"),
    ({"DOCKERFILE": "nope/Dockerfile"}, "DOCKERFILE"),
    ({"CONTEXT": "nope"}, "CONTEXT"),
    ({"TARGET_FILE": "missing"}, "TARGET_FILE"),
]


@pytest.mark.parametrize(("params", "named"), PARAM_ERRORS)
def test_bad_parameters_fail_naming_the_parameter(tmp_path, params, named):
    with pytest.raises(ConcourseError, match=named) as caught:
        env_for(tmp_path, **params)
    assert "\n" not in str(caught.value)


def test_parameters_are_read_like_oci_build_task(tmp_path):
    (tmp_path / "args").write_text("EMAIL=me@example.com\n\nHOW_MANY=1\n")
    (tmp_path / "labels.yml").write_text("team: ci\nrelease: 3\n")
    (tmp_path / "target").write_text("  final \n")
    (tmp_path / "secret").write_text("s")
    config = env_for(
        tmp_path,
        BUILD_ARGS_FILE="args",
        BUILD_ARG_EXTRA="x",
        LABELS_FILE="labels.yml",
        LABEL_owner="me",
        TARGET_FILE="target",
        ADDITIONAL_TARGETS="test, lint",
        IMAGE_PLATFORM="linux/arm64,linux/amd64",
        BUILDKIT_SECRET_npm="secret",
        BUILDKIT_SECRETTEXT_token="t0ken",
        BUILDKIT_ADD_HOSTS="a.example=10.0.0.1,b=127.0.0.2",
        REGISTRY_MIRRORS="127.0.0.1:5999",
        PATH="/bin",  # the environment's own variables are left alone
    )
    assert config.build_args == {
        "EMAIL": "me@example.com",
        "HOW_MANY": "1",
        "EXTRA": "x",
    }
    assert config.labels == {"team": "ci", "release": "3", "owner": "me"}
    assert config.target == "final"
    assert config.additional_targets == ["test", "lint"]
    assert [str(p) for p in config.platforms] == ["linux/arm64", "linux/amd64"]
    assert config.output_oci  # implied by several platforms
    assert config.secret_files == {"npm": tmp_path / "secret"}
    assert config.secret_texts == {"token": "t0ken"}
    assert "t0ken" not in repr(config)
    assert config.add_hosts == [("a.example", "10.0.0.1"), ("b", "127.0.0.2")]
    assert config.registry_mirrors == ["127.0.0.1:5999"]
    assert config.dockerfile == tmp_path / "Dockerfile"


def _busybox_task_source(tmp_path, busybox):
    """``base/``: an amd64 busybox layout for IMAGE_ARG_base; ``src/``: the context."""
    base = single_image(
        "busybox",
        files={"bin/busybox": (busybox["amd64"] / "bin" / "busybox").read_bytes()},
    )
    write_layout(tmp_path / "base", base)
    (tmp_path / "src").mkdir()


@pytest.mark.privileged
def test_run_reads_a_secret_text_that_stays_out_of_the_image(
    tmp_path, tmp_store, busybox
):
    _busybox_task_source(tmp_path, busybox)
    (tmp_path / "src" / "Dockerfile").write_text(
        "ARG base\nFROM ${base}\nUSER 0\n"
        'SHELL ["/bin/busybox", "sh", "-c"]\n'
        "RUN --mount=type=secret,id=token "
        "/bin/busybox cat /run/secrets/token > /token.txt\n"
    )
    result = task(
        tmp_path,
        tmp_store,
        CONTEXT="src",
        IMAGE_ARG_base="base",
        BUILDKIT_SECRETTEXT_token="t0p-secret",
        UNPACK_ROOTFS="true",
        IMAGE_PLATFORM="linux/amd64",
    )
    assert result.returncode == 0, result.stderr
    rootfs = tmp_path / "image" / "rootfs"
    assert (rootfs / "token.txt").read_text() == "t0p-secret"
    assert not (rootfs / "run" / "secrets" / "token").exists()


@pytest.mark.privileged
def test_the_build_log_shows_each_step_and_the_run_output(tmp_path, tmp_store, busybox):
    _busybox_task_source(tmp_path, busybox)
    (tmp_path / "src" / "Dockerfile").write_text(
        "ARG base\nFROM ${base}\n"
        'SHELL ["/bin/busybox", "sh", "-c"]\n'
        "RUN /bin/busybox echo visible-output\n"
    )
    result = task(
        tmp_path,
        tmp_store,
        CONTEXT="src",
        IMAGE_ARG_base="base",
        IMAGE_PLATFORM="linux/amd64",
    )
    assert result.returncode == 0, result.stderr
    assert "RUN /bin/busybox echo visible-output" in result.stderr
    assert "visible-output\n" in result.stderr.replace(
        "RUN /bin/busybox echo visible-output", ""
    )


def test_image_arg_tarball_written_by_skopeo(tmp_path, tmp_store, skopeo):
    base = single_image("from-tarball")
    write_layout(tmp_path / "layout", base, ref_name="latest")
    skopeo(
        "copy",
        f"oci:{tmp_path / 'layout'}:latest",
        f"docker-archive:{tmp_path / 'base.tar'}",
    )
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "Dockerfile").write_text("ARG base_image\nFROM ${base_image}\n")
    result = task(
        tmp_path,
        tmp_store,
        CONTEXT="src",
        IMAGE_ARG_base_image="base.tar",
        UNPACK_ROOTFS="true",
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "image" / "rootfs" / "seed.txt").read_text() == "from-tarball"


def test_additional_targets_build_into_their_own_outputs(tmp_path, tmp_store):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "Dockerfile").write_text(
        "FROM scratch AS test\nCOPY t.txt /t.txt\n"
        "FROM scratch AS lint\nCOPY t.txt /lint.txt\n"
        "FROM scratch\nCOPY t.txt /final.txt\n"
    )
    (tmp_path / "src" / "t.txt").write_text("t")
    (tmp_path / "test").mkdir()  # the task declares an output named "test" only
    result = task(
        tmp_path,
        tmp_store,
        CONTEXT="src",
        ADDITIONAL_TARGETS="test,lint",
        UNPACK_ROOTFS="true",
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "test" / "image.tar").is_file()
    assert (tmp_path / "test" / "rootfs" / "t.txt").is_file()
    assert (tmp_path / "test" / "digest").read_text().startswith("sha256:")
    assert not (tmp_path / "lint").exists()
    assert sorted(p.name for p in (tmp_path / "image" / "rootfs").iterdir()) == [
        "final.txt"
    ]
