"""Registry commands: push, pull, copy, inspect, login, logout.

Digests and ``--raw`` documents go to stdout; progress and messages go to stderr.
Credentials come from docker's ``config.json`` unless ``--username`` and
``--password-stdin`` give them for the command's target registry.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from platforge import platforms
from platforge.cli.progress import BlobReporter
from platforge.oci import mediatypes as mt
from platforge.oci.content import Index, parse_manifest
from platforge.registry import auth
from platforge.registry.auth import Credentials
from platforge.registry.client import RegistryClient
from platforge.registry.copy import (
    CopyResult,
    Registries,
    copy_image,
    fetch_manifest,
    layout_platform,
    layout_root,
    pull_rootfs,
    pull_to_layout,
    push_layout,
)
from platforge.registry.reference import DOCKER_HUB, Reference

if TYPE_CHECKING:
    from collections.abc import Callable

    from platforge.platforms import Platform

__all__ = ["register"]


def _tls_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--insecure`` and ``--ca-file``, for every command that reaches a registry."""
    command = click.option(
        "--ca-file",
        type=click.Path(exists=True, dir_okay=False),
        help="PEM file of extra CAs to trust for TLS (PLATFORGE_CA_FILE and "
        "/etc/docker/certs.d/HOST/*.crt are trusted too).",
    )(command)
    return click.option(
        "--insecure",
        is_flag=True,
        help="Allow plain HTTP and unverified TLS (loopback registries always may "
        "use plain HTTP).",
    )(command)


def _connection_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Options every command that copies images takes."""

    @_tls_options
    @click.option("-u", "--username", help="User name for the target registry.")
    @click.option(
        "--password-stdin",
        is_flag=True,
        help="Read the password for --username from standard input.",
    )
    @click.option(
        "--parallel",
        type=click.IntRange(1, 32),
        default=4,
        show_default=True,
        help="Blobs transferred at once.",
    )
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return command(*args, **kwargs)

    return wrapper


def _registries(
    target: str | None,
    *,
    insecure: bool,
    ca_file: str | None,
    username: str | None,
    password_stdin: bool,
    parallel: int,
) -> Registries:
    credentials: dict[str, Credentials] = {}
    if password_stdin and not username:
        raise click.UsageError("--password-stdin needs --username")
    if username and target is not None:
        password = _read_password(password_stdin)
        credentials[target] = Credentials(username=username, password=password)
    return Registries(
        insecure=frozenset({"*"}) if insecure else frozenset(),
        ca_file=ca_file,
        credentials=credentials,
        parallel=parallel,
    )


def _prompt(label: str, *, hide: bool = False) -> str:
    """Ask on the terminal; without one there is nobody to ask (as docker says)."""
    if not sys.stdin.isatty():
        raise click.UsageError(
            f"cannot ask for the {label.lower()}: standard input is not a terminal; "
            "pass --username and --password-stdin"
        )
    return str(click.prompt(label, hide_input=hide, err=True))


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = _prompt("Password", hide=True)
    if not password:
        raise click.UsageError("an empty password was given")
    return password


def _platform(text: str | None) -> Platform | None:
    return None if text is None else platforms.parse(text)


def _counts(result: CopyResult) -> str:
    return (
        f"{result.count('mounted')} blobs mounted, {result.count('pushed')} sent, "
        f"{result.count('exists')} present"
    )


def _registry_name(text: str) -> str:
    """``https://host/v1/`` or ``host`` → the registry name a reference uses."""
    host = text.split("://", 1)[-1].split("/", 1)[0]
    if host in {"index.docker.io", "registry-1.docker.io", "docker.io", ""}:
        return DOCKER_HUB
    return host


# --- commands -----------------------------------------------------------------------


@click.command()
@click.argument("layout_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("ref")
@click.option("-t", "--tag", "tags", multiple=True, help="Also tag the image as T.")
@click.option("--name", help="Which image of a layout holding several (its ref name).")
@_connection_options
def push(
    layout_dir: str,
    ref: str,
    tags: tuple[str, ...],
    name: str | None,
    **options: Any,
) -> None:
    """Push the image in an OCI layout to a registry; print its digest.

    \b
    Example:
      platforge push ./image 127.0.0.1:5000/app:1.0 --tag latest
    """
    reference = Reference.parse(ref)
    for tag in tags:
        reference.with_tag(tag)  # validates
    with (
        _registries(reference.registry, **options) as registries,
        BlobReporter() as bar,
    ):
        result = push_layout(
            Path(layout_dir),
            reference,
            registries=registries,
            tags=tags,
            name=name,
            progress=bar,
        )
    click.echo(f"pushed {reference.name} ({_counts(result)})", err=True)
    click.echo(str(result.digest))


@click.command()
@click.argument("ref")
@click.argument("dest", type=click.Path(file_okay=False))
@click.option("--platform", help="Pull only this platform (os/arch[/variant]).")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["oci-layout", "rootfs"]),
    default="oci-layout",
    show_default=True,
    help="An OCI layout, or an unpacked rootfs/ plus metadata.json.",
)
@_connection_options
def pull(
    ref: str,
    dest: str,
    platform: str | None,
    output_format: str,
    **options: Any,
) -> None:
    """Pull an image into a new directory; print the pulled digest.

    \b
    Examples:
      platforge pull 127.0.0.1:5000/app:1.0 ./app
      platforge pull 127.0.0.1:5000/app:1.0 ./arm --platform linux/arm64 --format rootfs
    """
    reference = _remote(ref, "pull")
    wanted = _platform(platform)
    puller = pull_rootfs if output_format == "rootfs" else pull_to_layout
    with (
        _registries(reference.registry, **options) as registries,
        BlobReporter() as bar,
    ):
        result = puller(
            reference,
            Path(dest),
            registries=registries,
            platform=wanted,
            progress=bar,
            require_platform=True,
        )
    click.echo(f"pulled {reference} into {dest}", err=True)
    click.echo(str(result.digest))


def _remote(text: str, command: str) -> Reference:
    """``text`` as a registry reference; a directory there is a usage error.

    A relative path such as ``./image`` would otherwise fail as a reference with
    registry ``.``, which does not tell the user what to do.
    """
    if Path(text).is_dir():
        raise click.UsageError(
            f"{text} is a directory, and `platforge {command}` takes registry "
            "references (HOST/REPOSITORY[:TAG]); to send an OCI layout to a "
            f"registry, use `platforge push {text} REF`"
        )
    return Reference.parse(text)


@click.command()
@click.argument("src")
@click.argument("dst")
@click.option(
    "--platform",
    default="all",
    show_default=True,
    help="Copy one platform (os/arch[/variant]) or all of an index.",
)
@_connection_options
def copy(src: str, dst: str, platform: str, **options: Any) -> None:
    """Copy an image between repositories or registries; print its digest.

    Blobs are mounted when both repositories are on the same registry, otherwise
    streamed through. --username applies to the destination registry.

    \b
    Example:
      platforge copy 127.0.0.1:5000/app:1.0 127.0.0.1:5000/mirror/app:1.0
    """
    source, target = _remote(src, "copy"), _remote(dst, "copy")
    wanted = None if platform == "all" else platforms.parse(platform)
    with _registries(target.registry, **options) as registries, BlobReporter() as bar:
        result = copy_image(
            source,
            target,
            registries=registries,
            platform=wanted,
            progress=bar,
            require_platform=True,
        )
    click.echo(f"copied {source} to {target} ({_counts(result)})", err=True)
    click.echo(str(result.digest))


@click.command()
@click.argument("target")
@click.option("--raw", is_flag=True, help="Print the manifest or index bytes as is.")
@click.option("--platform", help="Inspect this platform's manifest of an index.")
@click.option("--name", help="Which image of a layout holding several (its ref name).")
@_connection_options
def inspect(
    target: str, raw: bool, platform: str | None, name: str | None, **options: Any
) -> None:
    """Show an image's manifest or index, from a registry or an OCI layout.

    \b
    Examples:
      platforge inspect 127.0.0.1:5000/app:1.0 --raw
      platforge inspect ./image --platform linux/arm64
      platforge inspect ./images --name app
    """
    wanted = _platform(platform)
    path = Path(target)
    if path.is_dir():
        from platforge.oci.layout import Layout  # noqa: PLC0415 - only for layouts

        layout = Layout.open(path)
        descriptor, document = layout_root(layout, name)
        if wanted is not None:
            descriptor, document = layout_platform(layout, descriptor, document, wanted)
        shown = str(path)
    else:
        reference = Reference.parse(target)
        shown = str(reference)
        with _registries(reference.registry, **options) as registries:
            descriptor, document = fetch_manifest(
                reference,
                registries=registries,
                platform=wanted,
                require_platform=True,
            )
    if raw:
        sys.stdout.buffer.write(document)
        sys.stdout.buffer.flush()
        return
    click.echo(json.dumps(_summary(shown, descriptor.media_type, document), indent=2))


def _summary(name: str, media_type: str, raw: bytes) -> dict[str, Any]:
    parsed = parse_manifest(raw, media_type)
    out: dict[str, Any] = {
        "name": name,
        "digest": str(parsed.digest),
        "mediaType": parsed.media_type,
        "size": parsed.size,
    }
    if isinstance(parsed, Index):
        out["manifests"] = [
            {
                "digest": str(d.digest),
                "platform": str(d.platform) if d.platform else None,
                "size": d.size,
            }
            for d in parsed.manifests
        ]
    else:
        out["config"] = str(parsed.config.digest)
        out["layers"] = [
            {"digest": str(d.digest), "size": d.size, "mediaType": d.media_type}
            for d in parsed.layers
        ]
        out["totalSize"] = sum(d.size for d in parsed.layers)
    if mt.is_docker(parsed.media_type):
        out["format"] = "docker"
    return out


@click.command()
@click.argument("registry")
@click.option("-u", "--username", help="User name (prompted for when absent).")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@_tls_options
def login(
    registry: str,
    username: str | None,
    password_stdin: bool,
    insecure: bool,
    ca_file: str | None,
) -> None:
    """Check credentials with a registry and save them as docker login does.

    The secret goes to the credential helper docker's config.json names for the
    registry (credHelpers, else credsStore), otherwise into config.json itself.

    \b
    Example:
      echo "$PASSWORD" | platforge login 127.0.0.1:5000 -u ci --password-stdin
    """
    host = _registry_name(registry)
    if username is None:
        username = _prompt("Username")
    password = _read_password(password_stdin)
    credentials = Credentials(username=username, password=password)
    with RegistryClient(
        host, credentials=credentials, insecure=insecure, ca_file=ca_file
    ) as client:
        client.check_login()
    where = auth.store_login(host, str(username), password)
    click.echo(f"logged in to {host}; credentials saved in {where}", err=True)


@click.command()
@click.argument("registry")
def logout(registry: str) -> None:
    """Remove a registry's credentials from docker's config.json and its helper.

    \b
    Example:
      platforge logout 127.0.0.1:5000
    """
    host = _registry_name(registry)
    if auth.remove_login(host):
        click.echo(f"removed credentials for {host}", err=True)
    else:
        click.echo(f"no credentials were saved for {host}", err=True)


def register(group: click.Group) -> None:
    """Add this area's commands to ``group``."""
    for command in (push, pull, copy, inspect, login, logout):
        group.add_command(command)
