"""Build errors say where they come from: the Dockerfile line, the stage and step,
and what platforge made of the input (a name taken as an image, a path outside
the context, a file where a directory was needed)."""

import pytest

from platforge.build.base import BaseResolver
from platforge.build.request import Output
from platforge.errors import BuildError, PlatforgeError, StepError, TransportError
from test_build_support import build_image, busybox_layout, oci_output


@pytest.fixture
def context(tmp_path, tmp_store):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a.txt").write_text("a\n")
    return ctx


@pytest.fixture
def no_docker_hub(monkeypatch):
    """Names that are no stage go to Docker Hub, which tests must never contact:
    this fake answers for it as an unreachable registry would."""
    real = BaseResolver.image

    def image(self, ref, platform):
        if "/" not in ref:
            msg = "connect to registry docker.io failed after 5 tries: unreachable"
            raise TransportError(msg)
        return real(self, ref, platform)

    monkeypatch.setattr(BaseResolver, "image", image)


def _fail(context, dockerfile, tmp_path, **kwargs):
    (context / "Dockerfile").write_text(dockerfile)
    with pytest.raises(PlatforgeError) as caught:
        build_image(context, outputs=oci_output(tmp_path / "out"), **kwargs)
    return caught.value


def test_a_misspelt_stage_in_copy_from_says_it_was_taken_as_an_image(
    context, tmp_path, no_docker_hub
):
    dockerfile = "FROM scratch AS build\nFROM scratch\nCOPY --from=buidl /x /x\n"
    error = _fail(context, dockerfile, tmp_path)
    assert isinstance(error, TransportError)
    assert str(error) == (
        f"{context}/Dockerfile:3: [stage-1 1/1] "
        "COPY --from=buidl: no stage named 'buidl' "
        "(stages: build), so it was taken as the image docker.io/library/buidl, "
        "and pulling it failed: connect to registry docker.io failed after 5 tries: "
        "unreachable"
    )


def test_a_misspelt_stage_in_from_says_it_was_taken_as_an_image(
    context, tmp_path, no_docker_hub
):
    dockerfile = "FROM scratch AS base\nCOPY a.txt /\nFROM bsae AS app\nCOPY a.txt /\n"
    message = str(_fail(context, dockerfile, tmp_path))
    assert message.startswith(
        f"{context}/Dockerfile:3: [app] "
        "FROM bsae: no stage named 'bsae' (stages: base, app), "
        "so it was taken as the image docker.io/library/bsae, and pulling it failed"
    )


def test_copy_errors_name_the_dockerfile_line_and_the_step(context, tmp_path):
    missing = _fail(context, "FROM scratch\nLABEL a=b\nCOPY nothere /\n", tmp_path)
    assert str(missing) == (
        f"{context}/Dockerfile:3: [stage-0 2/2] "
        "COPY nothere: no such file or directory in the "
        "context; check the path and .dockerignore"
    )
    dockerfile = "FROM scratch AS app\nCOPY --chown=nobodyx a.txt /\n"
    owner = _fail(context, dockerfile, tmp_path)
    where = f"{context}/Dockerfile:2: [app 1/1]"
    assert str(owner).startswith(f"{where} COPY --chown='nobodyx'")


def test_a_source_outside_the_context_is_said_to_be_outside_it(context, tmp_path):
    error = _fail(context, "FROM scratch\nCOPY ../etc/passwd /\n", tmp_path)
    assert str(error) == (
        f"{context}/Dockerfile:2: [stage-0 1/1] "
        "COPY ../etc/passwd: the path leads outside "
        f"the build context {context}, which is all a build can read; move the file "
        "into it, or pass its directory with --build-context NAME=DIR and use "
        "COPY --from=NAME"
    )
    (context / "pw").symlink_to("/etc/passwd")
    link = _fail(context, "FROM scratch\nCOPY pw /\n", tmp_path)
    assert "COPY pw: it is a symbolic link to /etc/passwd, which is looked up " in str(
        link
    )


def test_a_failed_run_names_the_dockerfile_line_and_the_stage(
    context, tmp_path, busybox
):
    base = busybox_layout(busybox, tmp_path / "base", arches=("amd64",))
    dockerfile = "FROM base AS tools\nRUN true\nRUN nosuchcommand\n"
    error = _fail(
        context,
        dockerfile,
        tmp_path,
        build_contexts={"base": f"oci-layout://{base.path}:latest"},
    )
    assert isinstance(error, StepError)
    assert str(error).startswith(
        f"{context}/Dockerfile:3: [tools 2/2] "
        "RUN 'nosuchcommand' on linux/amd64 exited with "
        "status 127"
    )


@pytest.mark.parametrize("kind", ["oci", "oci-tar", "docker"])
def test_an_output_below_a_regular_file_names_that_file(context, tmp_path, kind):
    (context / "Dockerfile").write_text("FROM scratch\nCOPY a.txt /\n")
    blocker = tmp_path / "afile"
    blocker.write_text("x\n")
    dest = blocker / "sub" / "img"
    with pytest.raises(BuildError) as caught:
        build_image(context, outputs=[Output(kind, dest)])
    assert str(caught.value) == (
        f"cannot write output {dest}: {blocker} is a file, not a directory; "
        "choose a dest below a directory, or move that file away"
    )
    assert blocker.read_text() == "x\n"


def test_a_misspelt_stage_in_a_run_mount_says_it_was_taken_as_an_image(
    context, tmp_path, busybox, no_docker_hub
):
    base = busybox_layout(busybox, tmp_path / "base", arches=("amd64",))
    dockerfile = (
        "FROM base AS tools\nRUN true\n"
        "FROM base\nRUN --mount=type=bind,from=tols,target=/t true\n"
    )
    error = _fail(
        context,
        dockerfile,
        tmp_path,
        build_contexts={"base": f"oci-layout://{base.path}:latest"},
    )
    assert str(error).startswith(
        f"{context}/Dockerfile:4: [stage-1 1/1] RUN --mount from=tols: no stage "
        "named 'tols' (stages: tools), so it was taken as the image "
        "docker.io/library/tols, and pulling it failed"
    )
