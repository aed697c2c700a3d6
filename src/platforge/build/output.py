"""Where a built image goes: an OCI layout, an archive, a registry, a digest file.

:func:`assemble` writes each platform's config and manifest into the store and,
for several platforms, the image index over them. The outputs then copy what is
reachable from that root:

* ``oci``: an OCI image layout directory whose ``index.json`` has exactly one
  descriptor — the index for several platforms, the manifest for one — annotated
  with ``org.opencontainers.image.ref.name`` (the first tag's tag, else
  ``latest``), the shape ``oci-build-task`` writes and ``skopeo inspect
  oci:DIR:TAG`` reads. Blobs are copied from the store (and verified), never
  linked, so an edited output cannot change the cache.
* ``oci-tar``: the same layout as one tar stream (an OCI archive).
* ``docker``: a docker-archive (``docker save`` format) of one platform, which
  ``docker load`` accepts.

Both archives are written by :mod:`platforge.oci.archive`, reading the store as
the OCI layout it is.
* ``registry``: every tag pushed through ``platforge.registry.copy``: blobs, then
  manifests, then the index, then the tags.

Next to each output a file named ``digest`` holds the digest of the root — what a
push reports and what ``docker buildx`` calls the image digest (``oci-build-task``
users read it). An existing ``digest`` file is replaced only when it holds a
digest line; anything else there stops the build before it starts.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from platforge import platforms
from platforge.build.image import config_platform
from platforge.errors import BuildError, PlatforgeError
from platforge.oci import archive
from platforge.oci import mediatypes as mt
from platforge.oci.content import (
    ANNOTATION_REF_NAME,
    Descriptor,
    Index,
    Manifest,
    canonical_json,
)
from platforge.oci.digest import Digest
from platforge.oci.layout import Layout, write_atomic

if TYPE_CHECKING:
    from platforge.build.image import ImageState
    from platforge.build.store import Store
    from platforge.platforms import Platform

__all__ = [
    "Assembled",
    "assemble",
    "check_digest_file",
    "digest_file_of",
    "ref_name_for",
    "timestamp",
    "write_digest_file",
    "write_docker_archive",
    "write_oci_archive",
    "write_oci_layout",
]

log = logging.getLogger("platforge.build.output")

# A digest line is short; a bigger file is someone else's.
_DIGEST_FILE_LIMIT = 256


class Assembled:
    """The root descriptor of a build and one manifest descriptor per platform."""

    def __init__(self, root: Descriptor, manifests: dict[str, Descriptor]) -> None:
        self.root = root
        self.manifests = manifests


def timestamp(epoch: int | None) -> str:
    """``created`` text: SOURCE_DATE_EPOCH when given, else now (RFC 3339, UTC)."""
    seconds = epoch if epoch is not None else int(time.time())
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _image_time(state: ImageState, epoch: int | None) -> str:
    """SOURCE_DATE_EPOCH, else the time of the newest step, as BuildKit does.

    Taking it from the history (which the cache keeps) means a rebuild in which
    every step comes from the cache gives the very same image digest.
    """
    if epoch is not None:
        return timestamp(epoch)
    times = [
        str(entry["created"])
        for entry in state.config.get("history") or []
        if isinstance(entry, dict) and entry.get("created")
    ]
    return max(times) if times else timestamp(None)


def assemble(
    store: Store,
    images: list[tuple[Platform, ImageState]],
    *,
    epoch: int | None,
    annotations: dict[str, str] | None = None,
) -> Assembled:
    """Write configs, manifests and (for several platforms) the index."""
    manifests: dict[str, Descriptor] = {}
    for platform, state in images:
        config = _for_platform(dict(state.config), platform)
        config["created"] = _image_time(state, epoch)
        config_raw = canonical_json(_ordered_config(config))
        config_digest, config_size = store.put_bytes(config_raw)
        manifest = Manifest.build(
            Descriptor(mt.OCI_CONFIG, Digest.parse(config_digest), config_size),
            [
                Descriptor(layer.media_type, Digest.parse(layer.digest), layer.size)
                for layer in state.layers
            ],
        )
        store.put_bytes(manifest.raw)
        manifests[platforms.format(platform)] = manifest.descriptor(platform=platform)
    if len(images) == 1:
        only = next(iter(manifests.values()))
        root = Descriptor(only.media_type, only.digest, only.size)
    else:
        index = Index.build(list(manifests.values()), annotations)
        store.put_bytes(index.raw)
        root = index.descriptor()
    return Assembled(root, manifests)


def _for_platform(config: dict[str, Any], platform: Platform) -> dict[str, Any]:
    """The config names the platform the image was built for.

    A target stage built FROM a ``--platform=$BUILDPLATFORM`` stage starts from
    that stage's config, which names the build platform; the image is still the
    target platform's (its index entry says so). A config whose platform already
    runs as the target (arm64 with variant v8) is kept as it is.
    """
    named = config_platform(config)
    if named is not None and platforms.only_strict(platform).match(named):
        return config
    config["architecture"] = platform.architecture
    config["os"] = platform.os
    config.pop("variant", None)
    if platform.variant:
        config["variant"] = platform.variant
    return config


_CONFIG_ORDER = ("created", "author", "architecture", "os", "os.version", "variant")


def _ordered_config(config: dict[str, Any]) -> dict[str, Any]:
    # BuildKit's field order, so a config reads the same in both tools' output.
    ordered = {k: config[k] for k in _CONFIG_ORDER if k in config}
    for key in ("config", "rootfs", "history"):
        if key in config:
            ordered[key] = config[key]
    ordered.update({k: v for k, v in config.items() if k not in ordered})
    return ordered


def ref_name_for(tags: list[str]) -> str:
    """The ref name a layout gets: the first tag's tag part, else ``latest``."""
    if not tags:
        return "latest"
    from platforge.registry.reference import Reference  # noqa: PLC0415

    reference = Reference.parse(tags[0])
    return reference.tag or "latest"


def _index_json(root: Descriptor, ref_name: str) -> bytes:
    return Index.build([_named(root, ref_name)]).raw


def _named(root: Descriptor, ref_name: str) -> Descriptor:
    entry = Descriptor(root.media_type, root.digest, root.size)
    return entry.with_annotations({ANNOTATION_REF_NAME: ref_name})


def _cannot_write(dest: Path, exc: OSError) -> BuildError:
    blocker = _file_in_the_way(dest)
    if blocker is not None:
        return _not_a_directory(dest, blocker)
    return BuildError(
        f"cannot write output {dest}: {exc.strerror or exc}; choose a dest in a "
        "writable directory with room for the image"
    )


def _file_in_the_way(dest: Path) -> Path | None:
    """The nearest existing parent of ``dest`` when it is not a directory."""
    for parent in dest.absolute().parents:
        if os.path.lexists(parent):
            return None if parent.is_dir() else parent
    return None


def _not_a_directory(dest: Path, blocker: Path) -> BuildError:
    shown = blocker if dest.is_absolute() else Path(os.path.relpath(blocker))
    return BuildError(
        f"cannot write output {dest}: {shown} is a file, not a directory; "
        "choose a dest below a directory, or move that file away"
    )


def check_output_path(dest: Path) -> None:
    """Refuse, before the build starts, a ``dest`` below an existing file."""
    blocker = _file_in_the_way(dest)
    if blocker is not None:
        raise _not_a_directory(dest, blocker)


def write_oci_layout(store: Store, root: Descriptor, dest: Path, ref_name: str) -> None:
    """``dest`` becomes an OCI layout holding exactly this image.

    Blobs are copied from the store and verified on the way, so the output
    shares no inode with the cache: editing one never changes the other. A new
    ``dest`` is assembled beside it and renamed into place; into an existing
    layout the blobs go first and ``index.json`` last. Either way a failure
    leaves no half-written layout.
    """
    if dest.exists() and not dest.is_dir():
        raise BuildError(
            f"output {dest} exists and is not a directory; pick a new dest"
        )
    source = Layout.open(store.path)
    fresh = not dest.exists()
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        target = (
            Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
            if fresh
            else dest
        )
        try:
            layout = Layout.create(target)
            for descriptor in source.walk(root):
                with source.open_blob(descriptor.digest) as blob:
                    layout.write_blob(blob, descriptor)
            write_atomic(target / "index.json", _index_json(root, ref_name))
            if fresh:
                target.chmod(0o755)  # mkdtemp's 0700 would hide it from others
                target.replace(dest)
        except BaseException:
            if fresh:
                shutil.rmtree(target, ignore_errors=True)
            raise
    except OSError as exc:
        raise _cannot_write(dest, exc) from None


def write_oci_archive(
    store: Store, root: Descriptor, dest: Path, ref_name: str
) -> None:
    """``dest`` becomes an OCI archive: a tar of an OCI layout, streamed."""
    archive.write_oci_archive(Layout.open(store.path), dest, [_named(root, ref_name)])


def write_docker_archive(
    store: Store, manifest: Descriptor, dest: Path, tags: list[str]
) -> None:
    """``dest`` becomes a docker-archive of one platform's image."""
    if mt.is_index(manifest.media_type):
        raise BuildError(
            "type=docker output holds one platform; build with one --platform or "
            "use type=oci / type=oci-tar for several"
        )
    archive.write_docker_archive(
        Layout.open(store.path),
        dest,
        manifest,
        repo_tags=[_docker_tag(t) for t in tags],
    )


def _docker_tag(text: str) -> str:
    from platforge.registry.reference import Reference  # noqa: PLC0415

    reference = Reference.parse(text)
    return f"{reference.name}:{reference.tag or 'latest'}".removeprefix("docker.io/")


def digest_file_of(output: Path) -> Path:
    """The ``digest`` file that goes with ``output``: beside it."""
    return output.parent / "digest"


def holds_digest(path: Path) -> bool:
    """Whether ``path`` is a regular file holding one digest line, as builds write."""
    if path.is_symlink() or not path.is_file():
        return False
    try:
        with path.open("rb") as fh:
            head = fh.read(_DIGEST_FILE_LIMIT)
        Digest.parse(head.decode("ascii").strip())
    except (OSError, UnicodeDecodeError, ValueError, PlatforgeError):
        return False
    return True


def check_digest_file(output: Path) -> None:
    """Refuse an existing ``digest`` beside ``output`` that is not a digest line.

    Only a file a build wrote (one digest, as ``oci-build-task`` leaves it) may be
    replaced; anything else there is the user's.
    """
    target = digest_file_of(output)
    if not os.path.lexists(target):
        return
    if not holds_digest(target):
        raise BuildError(
            f"{target} exists and does not hold a digest; platforge writes the "
            "image digest there: move that file away or choose another dest"
        )


def write_digest_file(output: Path, digest: Digest) -> Path:
    """Write ``digest`` to a file named ``digest`` next to ``output``."""
    check_digest_file(output)
    target = digest_file_of(output)
    try:
        write_atomic(target, str(digest).encode())
    except OSError as exc:
        raise _cannot_write(target, exc) from None
    return target
