"""Commands that run images and merge them: run, emulation, index create.

``platforge run`` behaves like ``docker run --rm``: the image's entrypoint and
command (``--entrypoint`` and the words after ``--`` override them), its
environment (``-e`` adds or overrides), user and working directory. The command's
own stdout and stderr pass straight through and its exit status becomes
platforge's. Nothing the command writes is kept.

``platforge index create`` merges images built elsewhere (one per platform, or
whole indexes) into one image index in the target repository. Children are copied
into that repository first (cross-repository mounts on the same registry), the
index after them, the tag last; the index digest goes to stdout.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import click

from platforge import platforms
from platforge.build import emulation, rootfs, sandbox
from platforge.build.store import default_store_path
from platforge.errors import (
    EmulationError,
    LayoutError,
    ManifestError,
    PlatformError,
    SandboxError,
)
from platforge.oci import mediatypes as mt
from platforge.oci.content import (
    ANNOTATION_REF_NAME,
    Descriptor,
    ImageConfig,
    Index,
    Manifest,
    parse_manifest,
)
from platforge.oci.layout import Layout
from platforge.registry.copy import (
    Registries,
    copy_image,
    fetch_manifest,
    layout_root,
    push_layout,
)
from platforge.registry.reference import Reference

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from platforge.oci.digest import Digest
    from platforge.platforms import Platform

__all__ = ["register"]

# Configs are small documents; anything bigger is refused rather than read.
_MAX_CONFIG = 4 << 20


_insecure_option = click.option(
    "--insecure",
    is_flag=True,
    help="Allow plain HTTP and unverified TLS (loopback registries always may "
    "use plain HTTP).",
)
_ca_file_option = click.option(
    "--ca-file",
    type=click.Path(exists=True, dir_okay=False),
    help="PEM file of extra CAs to trust for TLS.",
)


def _registries(*, insecure: bool, ca_file: str | None) -> Registries:
    return Registries(
        insecure=frozenset({"*"}) if insecure else frozenset(), ca_file=ca_file
    )


def _is_layout(text: str) -> bool:
    """Whether ``text`` names an OCI layout directory rather than an image."""
    if (Path(text) / "oci-layout").is_file():
        return True
    if text.startswith(("/", ".")):
        # No image reference starts so: the user meant a directory.
        raise LayoutError(
            f"{text} is not an OCI layout directory (it has no oci-layout file); "
            "give a directory written by `platforge build` or `platforge pull`, "
            "or an image reference"
        )
    if Path(text).is_dir():
        # An existing directory is what the user meant, not a Docker Hub image
        # of the same name (which ``docker.io/library/NAME`` still reaches).
        raise LayoutError(
            f"{text} is a directory but not an OCI layout (it has no oci-layout "
            "file); give a directory written by `platforge build` or `platforge "
            f"pull`, or write the image as docker.io/library/{text} if you meant it"
        )
    return False


# --- run -----------------------------------------------------------------------


def _pick(layout: Layout, root: Descriptor, raw: bytes, wanted: Platform) -> Manifest:
    """The manifest for ``wanted`` under ``root`` (an index, or itself)."""
    document = parse_manifest(raw, root.media_type)
    while isinstance(document, Index):
        chosen = document.find(wanted)
        if chosen is None:
            offered = ", ".join(str(p) for p in document.platforms() if p) or "none"
            raise LayoutError(
                f"image {root.digest} has no manifest for platform {wanted} "
                f"(it has: {offered}); pick one of those with --platform"
            )
        document = layout.read_manifest(chosen)
    return document


def _pull_into_store(
    reference: Reference, wanted: Platform, registries: Registries
) -> tuple[Layout, Manifest]:
    """Fetch ``wanted``'s manifest of ``reference`` and the blobs the store lacks."""
    store = Layout.create(default_store_path())
    root, raw = fetch_manifest(reference, registries=registries, platform=wanted)
    manifest = Manifest.parse(raw, root.media_type)
    client = registries.client(reference.registry)
    for blob in (manifest.config, *manifest.layers):
        if not store.has_blob(blob.digest):
            client.download_blob(
                reference.repository,
                str(blob.digest),
                store.blob_path(blob.digest),
                size=blob.size,
            )
    store.write_blob(raw, root)
    return store, manifest


def _environment(image_env: Sequence[str], overrides: Sequence[str]) -> list[str]:
    """The image's environment with ``-e`` applied (``-e K`` copies the host's K)."""
    env = dict(item.partition("=")[::2] for item in image_env)
    for item in overrides:
        key, sep, value = item.partition("=")
        if sep:
            env[key] = value
        elif key in os.environ:
            env[key] = os.environ[key]
        else:
            env.pop(key, None)
    return [f"{k}={v}" for k, v in env.items()]


def _argv(
    config: ImageConfig, entrypoint: str | None, command: Sequence[str], image: str
) -> list[str]:
    """Docker's rules: ENTRYPOINT + CMD; --entrypoint also drops the image's CMD."""
    run = config.config
    if entrypoint is not None:
        first = [entrypoint] if entrypoint else []
        rest = list(command)
    else:
        first = list(run.entrypoint or [])
        rest = list(command) or list(run.cmd or [])
    argv = first + rest
    if not argv:
        raise SandboxError(
            f"image {image} has no Entrypoint or Cmd and no command was given; "
            "name one after `--`"
        )
    return argv


@click.command(context_settings={"allow_interspersed_args": False})
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("--platform", help="Platform to run (default: this host's).")
@click.option("-e", "--env", "env", multiple=True, help="Set K=V (or copy K).")
@click.option("--entrypoint", help="Run this instead of the image's entrypoint.")
@click.option("-u", "--user", help="User (name|uid[:group|gid]) to run as.")
@click.option("-w", "--workdir", help="Working directory inside the container.")
@click.option(
    "--network",
    type=click.Choice(["host", "none"]),
    default="host",
    show_default=True,
    help="Share the host's network, or only a loopback of its own.",
)
@click.option("-i", "--interactive", is_flag=True, help="Keep standard input open.")
@click.option(
    "--name",
    help="Of a layout holding several images, run the one with this ref name.",
)
@_insecure_option
@_ca_file_option
@click.pass_context
def run(  # noqa: PLR0917 - click passes each option as a parameter
    ctx: click.Context,
    image: str,
    command: tuple[str, ...],
    platform: str | None,
    env: tuple[str, ...],
    entrypoint: str | None,
    user: str | None,
    workdir: str | None,
    network: str,
    interactive: bool,
    name: str | None,
    insecure: bool,
    ca_file: str | None,
) -> None:
    """Run IMAGE (a reference or an OCI layout directory) like `docker run --rm`.

    \b
    Examples:
      platforge run --platform linux/arm64 127.0.0.1:5000/app -- uname -m
      platforge run ./out -- sh -c 'echo $PATH'
      platforge run --name app ./several -- id
    """
    if command[:1] == ("--",):
        command = command[1:]
    wanted = platforms.parse(platform) if platform else platforms.host()
    if _is_layout(image):
        layout = Layout.open(image)
        root, raw = layout_root(layout, name)
        manifest = _pick(layout, root, raw, wanted)
    elif name is not None:
        raise click.UsageError(
            f"--name picks an image of a layout directory; {image} is a reference"
        )
    else:
        with _registries(insecure=insecure, ca_file=ca_file) as registries:
            layout, manifest = _pull_into_store(
                Reference.parse(image), wanted, registries
            )
    # Layers unpack beside the store even for a layout: the cache is shared.
    cache = rootfs.default_cache_dir(default_store_path())
    config = layout.read_config(manifest.config)
    spec_platform = config.platform if config.architecture else wanted
    if platform and not platforms.only(wanted).match(spec_platform):
        # A lone manifest offers no choice; running it anyway would test the
        # wrong machine while reporting success.
        raise PlatformError(
            f"image {image} is for {spec_platform}, not {wanted}; run it without "
            "--platform or give an image or index that has the platform"
        )
    if sandbox.capabilities().mode != "proot":
        # Say what is missing before unpacking anything.
        emulation.ensure(spec_platform)
    # The config is in hand already; prepare() would read and parse it again.
    lowerdirs = rootfs.layer_dirs(
        layout, manifest, diff_ids=config.diff_ids, cache=cache
    )
    (cache / "tmp").mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".run-", dir=cache / "tmp"))
    try:
        result = sandbox.run(
            sandbox.RunSpec(
                lowerdirs=lowerdirs,
                upperdir=scratch / "upper",
                args=_argv(config, entrypoint, command, image),
                env=_environment(config.config.env, env),
                cwd=workdir or config.config.working_dir or "/",
                user=user if user is not None else (config.config.user or ""),
                platform=spec_platform,
                network="none" if network == "none" else "host",
                output=None,
                stdin_tty=interactive,
            )
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    ctx.exit(result.exit_code)


# --- emulation -------------------------------------------------------------------


def _has_emulator(architecture: str) -> bool:
    try:
        emulation.qemu_name(architecture)
    except EmulationError:
        return False
    return True


def _architecture(text: str) -> str:
    """An OCI architecture from ``arm64``, ``aarch64``, ``linux/arm64``, ``arm/v7``."""
    if "/" not in text:
        return emulation.oci_architecture(text)
    arch = platforms.parse(text).architecture
    if text.count("/") == 1 and not _has_emulator(arch):
        # Two words that are not os/arch are an architecture and its variant.
        arch = platforms.parse(f"linux/{text}").architecture
    emulation.qemu_name(arch)  # refuses unknown names with the list of known ones
    return arch


@click.group("emulation")
def emulation_group() -> None:
    """Inspect and register QEMU emulators for foreign platforms.

    \b
    Examples:
      platforge emulation status
      platforge emulation install arm64 linux/s390x arm/v7
    """


@emulation_group.command("status")
@click.argument("architectures", nargs=-1)
def emulation_status(architectures: tuple[str, ...]) -> None:
    """Show, per architecture, whether containers of it can run here.

    ARCHITECTURES are OCI or QEMU names or platforms (arm64, aarch64, linux/arm/v7);
    none means the common ones (amd64, 386, arm64, arm, ppc64le, s390x, riscv64).

    \b
    Example:
      platforge emulation status arm64 riscv64
    """
    from rich.console import Console  # noqa: PLC0415 - only this command draws
    from rich.table import Table  # noqa: PLC0415

    table = Table(title=f"binfmt_misc handlers in {emulation.binfmt_dir()}")
    for column in ("arch", "qemu", "runs", "handler", "flags", "interpreter"):
        table.add_column(column)
    table.add_column("static qemu")
    table.add_column("proot")
    # Several spellings of one architecture (armhf, arm/v7) make one row.
    wanted = dict.fromkeys(_architecture(a) for a in architectures)
    found_all = emulation.status(list(wanted))
    for found in found_all:
        if found.native:
            runs = "native"
        elif found.runnable:
            runs = "emulated"
        else:
            runs = "no"
        table.add_row(
            found.architecture,
            found.qemu,
            runs,
            found.handler or "-",
            found.flags or "-",
            found.interpreter or "-",
            str(found.qemu_static) if found.qemu_static else "-",
            "yes" if found.proot else "no",
        )
    Console(width=max(170, shutil.get_terminal_size().columns)).print(table)
    try:
        caps = sandbox.capabilities()
    except SandboxError as exc:
        click.echo(f"RUN steps: cannot run here: {exc}", err=True)
    else:
        how = f"{caps.mode} ({caps.runtime})" if caps.runtime else caps.mode
        why = f"; {'; '.join(caps.reasons)}" if caps.reasons else ""
        click.echo(f"RUN steps run in the {how} sandbox{why}", err=True)
    missing = [s.architecture for s in found_all if not s.runnable]
    if missing:
        click.echo(
            f"to run {', '.join(missing)}: platforge emulation install "
            + " ".join(missing),
            err=True,
        )


_DEFAULT_INSTALL = ("arm64", "arm", "ppc64le", "s390x", "riscv64")


@emulation_group.command("install")
@click.argument("architectures", nargs=-1)
def emulation_install(architectures: tuple[str, ...]) -> None:
    """Register QEMU binfmt handlers (F flag) for ARCH… (default: common ones).

    When this process may not register them, the commands to run as root are
    printed on stdout instead.

    \b
    Example:
      platforge emulation install arm64 s390x
    """
    wanted = [_architecture(a) for a in architectures] or list(_DEFAULT_INSTALL)
    printed: set[str] = set()
    for result in emulation.install(dict.fromkeys(wanted)):
        click.echo(
            f"{result.architecture}: {result.action} ({result.detail})", err=True
        )
        for line in result.commands:
            if line not in printed:  # the mount command is the same for every arch
                printed.add(line)
                click.echo(line)


# --- index create ---------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    """One child of the index to be, and where it comes from."""

    source: str
    descriptor: Descriptor
    reference: Reference | None = None  # a registry source
    layout: Path | None = None  # a layout source


def _config_platform(raw_config: bytes, where: str) -> Platform | None:
    try:
        config = ImageConfig.parse(raw_config)
    except ManifestError:
        return None  # an artifact, not an image: it has no platform
    if not config.architecture or not config.os:
        raise ManifestError(
            f"{where}: the image config names no os/architecture; "
            "rebuild the image or take it from an index that says its platform"
        )
    return config.platform


def _entries(
    source: _Entry,
    document: Manifest | Index,
    read_manifest: Callable[[Descriptor], Manifest],
    read_config: Callable[[Manifest], bytes | None],
) -> list[_Entry]:
    """The index entries a ``--from`` value offers, each with its platform.

    ``source`` is the entry of what the value names (``document``, an image or an
    index); the result is that image, or the children of that index. A child that
    names no platform gets the one its config says, as does a lone image; a config
    too large to read marks an artifact (no platform).
    """

    def described(descriptor: Descriptor, manifest: Manifest) -> Descriptor:
        raw_config = read_config(manifest)
        if raw_config is None:
            return _with_platform(descriptor, None)
        return _with_platform(descriptor, _config_platform(raw_config, source.source))

    if isinstance(document, Manifest):
        return [replace(source, descriptor=described(source.descriptor, document))]
    found = []
    for child in document.manifests:
        entry = _clean(child)
        if child.platform is None and mt.is_manifest(child.media_type):
            entry = described(child, read_manifest(child))
        found.append(replace(source, descriptor=entry))
    return found


def _registry_entries(text: str, registries: Registries) -> list[_Entry]:
    reference = Reference.parse(text)
    root, raw = fetch_manifest(reference, registries=registries)
    client = registries.client(reference.registry)

    def read_manifest(child: Descriptor) -> Manifest:
        info = client.get_manifest(reference.repository, str(child.digest))
        return Manifest.parse(info.raw, child.media_type)

    def read_config(manifest: Manifest) -> bytes | None:
        if manifest.config.size > _MAX_CONFIG:
            return None
        with client.open_blob(reference.repository, str(manifest.config.digest)) as f:
            return f.read(_MAX_CONFIG + 1)

    return _entries(
        _Entry(text, root, reference=reference),
        parse_manifest(raw, root.media_type),
        read_manifest,
        read_config,
    )


def _layout_entries(text: str) -> list[_Entry]:
    layout = Layout.open(text)
    root, raw = layout_root(layout)

    def read_manifest(child: Descriptor) -> Manifest:
        return Manifest.parse(layout.read_blob(child.digest), child.media_type)

    def read_config(manifest: Manifest) -> bytes:
        return layout.read_blob(manifest.config.digest)

    return _entries(
        _Entry(text, root, layout=Path(text)),
        parse_manifest(raw, root.media_type),
        read_manifest,
        read_config,
    )


def _with_platform(descriptor: Descriptor, platform: Platform | None) -> Descriptor:
    return Descriptor(
        descriptor.media_type,
        descriptor.digest,
        descriptor.size,
        platform,
        _annotations(descriptor),
    )


def _annotations(descriptor: Descriptor) -> dict[str, str]:
    # A layout's ref name says where an image sat, not what it is.
    return {k: v for k, v in descriptor.annotations.items() if k != ANNOTATION_REF_NAME}


def _clean(descriptor: Descriptor) -> Descriptor:
    return _with_platform(descriptor, descriptor.platform)


def _merge(entries: Sequence[_Entry], prefer: Sequence[str]) -> list[_Entry]:
    """One entry per platform; ``prefer`` settles platforms offered twice."""
    chosen: dict[str, _Entry] = {}
    extras: dict[Digest, _Entry] = {}
    for entry in entries:
        platform = entry.descriptor.platform
        if platform is None or platform.os == "unknown":
            # Attestations and other artifacts ride along with their images.
            extras.setdefault(entry.descriptor.digest, entry)
            continue
        key = platforms.format(platforms.normalize(platform))
        if platform.os_version:
            key += f"({platform.os_version})"
        held = chosen.get(key)
        if held is None or held.descriptor.digest == entry.descriptor.digest:
            chosen.setdefault(key, entry)
            continue
        winners = [e for e in (held, entry) if e.source in prefer]
        if len(winners) == 2:
            raise ManifestError(
                f"platform {key} comes from both {held.source} and {entry.source}, "
                "and both are given to --prefer; keep --prefer for the one to use"
            )
        if not winners:
            raise ManifestError(
                f"platform {key} comes from both {held.source} and {entry.source}; "
                f"pass --prefer {held.source} or --prefer {entry.source}"
            )
        chosen[key] = winners[0]
    # An attestation rides along only with the image it describes; an artifact
    # that names no image always does.
    kept = {str(e.descriptor.digest) for e in chosen.values()}
    riders = []
    for extra in extras.values():
        described = extra.descriptor.annotations.get("vnd.docker.reference.digest")
        if described is None or described in kept:
            riders.append(extra)
    return [*chosen.values(), *riders]


def _copy_children(
    entries: Sequence[_Entry], target: Reference, registries: Registries
) -> None:
    destination = Reference(target.registry, target.repository)
    pushed_layouts: set[Path] = set()
    for entry in entries:
        if entry.layout is not None:
            if entry.layout not in pushed_layouts:
                push_layout(entry.layout, destination, registries=registries)
                pushed_layouts.add(entry.layout)
            continue
        assert entry.reference is not None  # noqa: S101 - a registry source
        source = entry.reference
        if (source.registry, source.repository) == (target.registry, target.repository):
            continue
        copy_image(
            source.with_digest(str(entry.descriptor.digest)),
            destination,
            registries=registries,
        )


@click.group("index")
def index_group() -> None:
    """Image indexes made from images built elsewhere.

    \b
    Example:
      platforge index create 127.0.0.1:5000/app:1.0 \\
          --from 127.0.0.1:5000/app:1.0-amd64 --from 127.0.0.1:5000/app:1.0-arm64
    """


@index_group.command("create")
@click.argument("ref")
@click.option(
    "--from",
    "sources",
    multiple=True,
    required=True,
    help="An image, an index or an OCI layout directory to take entries from.",
)
@click.option("--annotation", multiple=True, help="K=V annotation on the index.")
@click.option(
    "--prefer", multiple=True, help="The --from source that wins a platform clash."
)
@_insecure_option
@_ca_file_option
def index_create(  # noqa: PLR0917 - click passes each option as a parameter
    ref: str,
    sources: tuple[str, ...],
    annotation: tuple[str, ...],
    prefer: tuple[str, ...],
    insecure: bool,
    ca_file: str | None,
) -> None:
    """Merge images into one index at REF and print its digest.

    \b
    Example:
      platforge index create 127.0.0.1:5000/app:1.0 \\
          --from 127.0.0.1:5000/app:amd64 --from 127.0.0.1:5000/app:arm64
    """
    unknown = [p for p in prefer if p not in sources]
    if unknown:
        raise click.UsageError(f"--prefer {unknown[0]} is not one of the --from values")
    annotations = {}
    for item in annotation:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.UsageError(f"--annotation {item!r} is not K=V")
        annotations[key] = value
    target = Reference.parse(ref)
    with _registries(insecure=insecure, ca_file=ca_file) as registries:
        entries: list[_Entry] = []
        for source in sources:
            if _is_layout(source):
                entries += _layout_entries(source)
            else:
                entries += _registry_entries(source, registries)
        merged = _merge(entries, prefer)
        _copy_children(merged, target, registries)
        index = Index.build([e.descriptor for e in merged], annotations)
        client = registries.client(target.registry)
        client.put_manifest(
            target.repository, str(index.digest), index.raw, index.media_type
        )
        if target.tag:
            client.put_manifest(target.repository, target.tag, index.raw, mt.OCI_INDEX)
    click.echo(str(index.digest))


def register(group: click.Group) -> None:
    """Add run, emulation and index to ``group``."""
    group.add_command(run)
    group.add_command(emulation_group)
    group.add_command(index_group)
