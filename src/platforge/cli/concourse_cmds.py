"""``platforge resource check|in|out`` and ``platforge task build``.

These speak Concourse's languages rather than a person's: the resource commands read
a JSON request on stdin and print one JSON answer on stdout (the image's
``/opt/resource/check``, ``in`` and ``out`` are one-line wrappers around them); the
task reads ``oci-build-task``'s parameters from the environment.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

__all__ = ["register"]


@click.group("resource")
def resource() -> None:
    """Concourse resource steps, drop-in for the registry-image resource type.

    \b
    Example:
      echo '{"source": {"repository": "127.0.0.1:5000/app", "tag": "latest"}}' \\
        | platforge resource check
    """


@resource.command("check")
def check_cmd() -> None:
    """Print the image's versions (JSON on stdin, JSON on stdout).

    \b
    Example:
      echo '{"source": {"repository": "127.0.0.1:5000/app"}}' \\
        | platforge resource check
    """
    from platforge.concourse.resource import run_check  # noqa: PLC0415

    run_check(sys.stdin, sys.stdout)


@resource.command("in")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
def in_cmd(dest: Path) -> None:
    """Fetch the requested version into DEST (JSON on stdin, JSON on stdout).

    \b
    Example:
      echo '{"source": {"repository": "127.0.0.1:5000/app"},
             "version": {"tag": "latest", "digest": "sha256:..."},
             "params": {"format": "oci"}}' | platforge resource in ./app
    """
    from platforge.concourse.resource import run_in  # noqa: PLC0415

    dest.mkdir(parents=True, exist_ok=True)
    run_in(dest, sys.stdin, sys.stdout)


@resource.command("out")
@click.argument("src", type=click.Path(file_okay=False, exists=True, path_type=Path))
def out_cmd(src: Path) -> None:
    """Push the image named by params.image under SRC (JSON in, JSON out).

    \b
    Example:
      echo '{"source": {"repository": "127.0.0.1:5000/app", "tag": "dev"},
             "params": {"image": "image/image"}}' | platforge resource out .
    """
    from platforge.concourse.resource import run_out  # noqa: PLC0415

    run_out(src, sys.stdin, sys.stdout)


@click.group("task")
def task() -> None:
    """Concourse tasks, drop-in for oci-build-task.

    \b
    Example:
      CONTEXT=src IMAGE_PLATFORM=linux/amd64,linux/arm64 OUTPUT_OCI=true \\
        platforge task build
    """


@task.command("build")
@click.option(
    "--outputs",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(),
    show_default=True,
    help="Directory holding the task's outputs (image/, cache/, targets).",
)
def build_cmd(outputs: Path) -> None:
    """Build the image described by oci-build-task's environment parameters.

    Reads CONTEXT, DOCKERFILE, TARGET, BUILD_ARG_*, IMAGE_PLATFORM, OUTPUT_OCI,
    UNPACK_ROOTFS and the rest from the environment, and writes image/image.tar (or
    the OCI layout image/image/ with OUTPUT_OCI), image/digest and, with
    UNPACK_ROOTFS, image/rootfs/ and image/metadata.json.

    \b
    Example:
      CONTEXT=src IMAGE_PLATFORM=linux/amd64,linux/arm64 platforge task build
    """
    from platforge.cli.progress import PlainDisplay  # noqa: PLC0415
    from platforge.concourse.task import run_task  # noqa: PLC0415

    # The build log of a Concourse task is not a terminal: plain step lines and
    # RUN output, as oci-build-task shows BuildKit's.
    run_task(dict(os.environ), outputs, progress=PlainDisplay().on_build)


def register(group: click.Group) -> None:
    """Add ``resource`` and ``task`` to the top-level group."""
    group.add_command(resource)
    group.add_command(task)
