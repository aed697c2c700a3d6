"""``platforge build``: every platform of a Dockerfile into one OCI image index.

The flags are buildx's: ``--platform``, ``-t``, ``--push``, ``--output``,
``--build-arg``, ``--target``, ``--build-context``, ``--label``, ``--no-cache``,
``--progress``, plus ``--compression``, ``--ca-file`` and ``--quiet``. The
digest of the result (the index for several platforms, the manifest for one) is
printed on stdout; progress goes to stderr, as plain lines or, on a terminal,
coloured ones.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import click

from platforge import platforms
from platforge.build import BuildRequest, Output, build
from platforge.cli.progress import build_display
from platforge.errors import BuildError

if TYPE_CHECKING:
    from platforge.build.request import OutputType

__all__ = ["parse_output", "register"]

_OUTPUT_TYPES: tuple[OutputType, ...] = ("oci", "oci-tar", "docker", "registry")


def parse_output(text: str) -> Output:
    """``type=oci,dest=DIR`` (or a bare ``DIR``) as an :class:`Output`."""
    if "=" not in text:
        return Output("oci", Path(text))
    fields: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep:
            raise click.BadParameter(
                f"{part!r} is not KEY=VALUE", param_hint="--output"
            )
        fields[key.strip()] = value.strip()
    kind: str = fields.pop("type", "oci")
    if kind == "image" and fields.get("push") == "true":
        kind = "registry"
    if kind not in _OUTPUT_TYPES:
        raise click.BadParameter(
            f"type={kind} is not one of {', '.join(_OUTPUT_TYPES)}",
            param_hint="--output",
        )
    dest = fields.pop("dest", None)
    if kind != "registry" and not dest:
        raise click.BadParameter(f"type={kind} needs dest=PATH", param_hint="--output")
    if dest == "-":
        # stdout carries the digest; a tarball there would be corrupted by it.
        raise click.BadParameter(
            f"type={kind},dest=- (standard output) is not supported; give a file "
            "path and read the tarball from there",
            param_hint="--output",
        )
    return Output(kind, Path(dest) if dest else None)


def _pairs(values: tuple[str, ...], flag: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{value!r} is not KEY=VALUE", param_hint=flag)
        result[key] = rest
    return result


def _build_args(values: tuple[str, ...]) -> dict[str, str]:
    """``KEY=VALUE``, or ``KEY`` alone to take the value from the environment;
    in the order given, a later value of a key wins (as buildx and ``dockerfile
    plan``)."""
    result: dict[str, str] = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not key:
            raise click.BadParameter(
                f"{value!r} is not KEY=VALUE", param_hint="--build-arg"
            )
        if sep:
            result[key] = rest
        elif key in os.environ:
            result[key] = os.environ[key]
    return result


def _secrets(values: tuple[str, ...], scratch: Path) -> dict[str, Path]:
    """``id=NAME,src=FILE`` or ``id=NAME,env=VAR`` (whose value goes to a private
    file in ``scratch``, removed after the build)."""
    secrets: dict[str, Path] = {}
    for value in values:
        fields = dict(part.partition("=")[::2] for part in value.split(","))
        ident = fields.get("id")
        source = fields.get("src") or fields.get("source")
        variable = fields.get("env")
        if not ident or not (source or variable):
            raise click.BadParameter(
                f"{value!r}: use id=NAME,src=FILE or id=NAME,env=VARIABLE",
                param_hint="--secret",
            )
        if variable and not source:
            if variable not in os.environ:
                raise click.BadParameter(
                    f"{value!r}: the environment has no {variable}; set it",
                    param_hint="--secret",
                )
            path = scratch / f"secret-{len(secrets)}"
            path.touch(mode=0o600)
            path.write_text(os.environ[variable], encoding="utf-8")
            secrets[ident] = path
            continue
        if not Path(str(source)).is_file():
            raise click.BadParameter(
                f"{value!r}: {source} is not a file; give an existing file",
                param_hint="--secret",
            )
        secrets[ident] = Path(str(source))
    return secrets


_CONTEXT_SCHEMES = ("docker-image://", "oci-layout://")


def _build_contexts(values: tuple[str, ...]) -> dict[str, str]:
    """NAME=DIR, NAME=docker-image://REF or NAME=oci-layout://DIR[:TAG], checked."""
    contexts = _pairs(values, "--build-context")
    for name, source in contexts.items():
        if source.startswith(_CONTEXT_SCHEMES):
            if source.split("://", 1)[1]:
                continue
        elif "://" not in source and source and Path(source).is_dir():
            continue
        raise click.BadParameter(
            f"{name}={source}: give an existing directory, docker-image://REF or "
            "oci-layout://DIR[:TAG] (Git and HTTP contexts are not supported)",
            param_hint="--build-context",
        )
    return contexts


def _check_outputs(
    outputs: list[Output], *, push: bool, tags: tuple[str, ...], platform_count: int
) -> None:
    """Refuse, before any work, what no build could satisfy (as buildx does)."""
    to_registry = push or any(output.type == "registry" for output in outputs)
    if to_registry and not tags:
        option = "--push" if push else "type=registry"
        raise click.UsageError(
            f"{option} needs at least one -t REGISTRY/REPOSITORY[:TAG]"
        )
    if platform_count > 1 and any(output.type == "docker" for output in outputs):
        raise click.UsageError(
            "type=docker output holds one platform; build with one --platform or "
            "use type=oci / type=oci-tar for several"
        )


def _hosts(values: tuple[str, ...]) -> list[tuple[str, str]]:
    hosts = []
    for value in values:
        name, sep, address = value.partition(":")
        if not sep:
            raise click.BadParameter(f"{value!r}: use HOST:IP", param_hint="--add-host")
        hosts.append((name, address))
    return hosts


@click.command("build")
@click.argument(
    "context",
    default=".",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
)
@click.option(
    "-f",
    "--file",
    "dockerfile",
    type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=Path),
    help="The Dockerfile (default: CONTEXT/Dockerfile; - reads standard input).",
)
@click.option(
    "--platform",
    "platform_text",
    help="Platforms to build, comma-separated (default: this host's).",
)
@click.option("-t", "--tag", "tags", multiple=True, help="Image reference; repeatable.")
@click.option("--push", is_flag=True, help="Push the result to every -t reference.")
@click.option(
    "-o",
    "--output",
    "outputs",
    multiple=True,
    help="type=oci,dest=DIR | type=oci-tar,dest=FILE | type=docker,dest=FILE "
    "| type=registry. Each also writes a digest file beside its dest.",
)
@click.option(
    "--build-arg",
    "build_args",
    multiple=True,
    help="KEY=VALUE, or KEY to pass the environment's value; repeatable.",
)
@click.option("--target", help="Build this stage instead of the last one.")
@click.option(
    "--build-context",
    "build_contexts",
    multiple=True,
    help="NAME=DIR | NAME=docker-image://REF | NAME=oci-layout://DIR[:TAG].",
)
@click.option("--label", "labels", multiple=True, help="KEY=VALUE added to the image.")
@click.option("--no-cache", is_flag=True, help="Run every step, ignoring the cache.")
@click.option(
    "--progress",
    type=click.Choice(["auto", "plain", "tty"]),
    default="auto",
    show_default=True,
)
@click.option(
    "--compression",
    type=click.Choice(["gzip", "zstd"]),
    default="gzip",
    show_default=True,
)
@click.option("--secret", "secrets", multiple=True, help="id=NAME,src=FILE for RUN.")
@click.option("--add-host", "add_hosts", multiple=True, help="HOST:IP for RUN.")
@click.option(
    "--insecure-registry",
    "insecure",
    multiple=True,
    help="Registry allowed plain HTTP (loopback always is).",
)
@click.option(
    "--ca-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PEM file of CA certificates to trust for registries' TLS.",
)
@click.option("-q", "--quiet", is_flag=True, help="Print only the digest.")
def build_command(  # noqa: PLR0917 - one parameter per flag, as click passes them
    context: Path,
    dockerfile: Path | None,
    platform_text: str | None,
    tags: tuple[str, ...],
    push: bool,
    outputs: tuple[str, ...],
    build_args: tuple[str, ...],
    target: str | None,
    build_contexts: tuple[str, ...],
    labels: tuple[str, ...],
    no_cache: bool,
    progress: str,
    compression: str,
    secrets: tuple[str, ...],
    add_hosts: tuple[str, ...],
    insecure: tuple[str, ...],
    ca_file: Path | None,
    quiet: bool,
) -> None:
    """Build every platform of a Dockerfile into one OCI image index.

    Without --output and --push the image goes to an OCI layout in ./image.
    The digest is printed on stdout and written to a file named digest next to
    each output (./digest for ./image), as oci-build-task does; an existing
    digest file that holds anything but a digest is never overwritten. Outputs
    inside the build context are not part of it.

    \b
    Example:
      platforge build --platform linux/amd64,linux/arm64 \\
          -t 127.0.0.1:5000/app:v1 --push .
    """
    if quiet and logging.getLogger("platforge").getEffectiveLevel() > logging.DEBUG:
        # "Only the digest": the library's progress lines are INFO; warnings and
        # errors still show (--debug keeps everything).
        logging.getLogger("platforge").setLevel(logging.WARNING)
    parsed_outputs = [parse_output(text) for text in outputs]
    targets = platforms.parse_list(platform_text) if platform_text else []
    _check_outputs(parsed_outputs, push=push, tags=tags, platform_count=len(targets))
    if not parsed_outputs and not push:
        parsed_outputs = [Output("oci", _default_output(Path("image")))]
        if not quiet:
            click.echo(
                "no --output or --push: writing an OCI layout to ./image", err=True
            )
    with tempfile.TemporaryDirectory(prefix="platforge-build-") as scratch:
        from_stdin = dockerfile == Path("-")
        if from_stdin:
            dockerfile = Path(scratch) / "Dockerfile"
            dockerfile.write_bytes(sys.stdin.buffer.read())
        display = build_display(progress, quiet=quiet)
        request = BuildRequest(
            context=context,
            dockerfile=dockerfile,
            platforms=targets,
            tags=list(tags),
            build_args=_build_args(build_args),
            target=target,
            build_contexts=_build_contexts(build_contexts),
            labels=_pairs(labels, "--label"),
            outputs=parsed_outputs,
            push=push,
            no_cache=no_cache,
            secrets=_secrets(secrets, Path(scratch)),
            extra_hosts=_hosts(add_hosts),
            compression="zstd" if compression == "zstd" else "gzip",
            insecure_registries=list(insecure),
            ca_file=ca_file,
            dockerfile_name="<stdin>" if from_stdin else None,
            progress=display.on_build,
            blob_progress=display.on_blob,
        )
        with display:
            result = build(request)
        display.finished(result, request)
    click.echo(str(result.digest))


def _default_output(path: Path) -> Path:
    """``./image``, unless something other than a layout is already there.

    A layout an earlier build wrote is updated in place; anything else in that
    directory is the user's, so the build refuses it before it starts.
    """
    if path.exists() and not path.is_dir():
        raise BuildError(
            f"./{path} exists and is not a directory; platforge writes its default "
            "output there: move it away or pass --output type=oci,dest=DIR"
        )
    if path.is_dir() and not (path / "oci-layout").is_file() and any(path.iterdir()):
        raise BuildError(
            f"./{path} exists and is not an OCI layout (no oci-layout file); "
            "platforge writes its default output there: move it away or pass "
            "--output type=oci,dest=DIR"
        )
    return path


def register(group: click.Group) -> None:
    """Add ``build`` to ``group``."""
    group.add_command(build_command)
