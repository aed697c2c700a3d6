"""``out`` (a put step): push an image and tag it.

``params.image`` is a glob (Go's ``filepath.Glob`` rules, which Python's ``glob``
shares for ``*``, ``?`` and ``[...]``) relative to the step's directory that must match
exactly one path. Every shape ``oci-build-task`` has written is accepted:

* an OCI layout directory (``image/image`` with ``OUTPUT_OCI``) whose ``index.json``
  holds one image manifest; or one entry that is itself an image index (a
  multi-platform build: that index is what is pushed); or several per-platform
  manifests beside the ``oci-layout`` marker (``index.json`` is then the index);
* a tarball (``image/image.tar``): a docker archive (``manifest.json``; layers as
  ``blobs/sha256/…`` or ``<id>/layer.tar``, compressed or not) or an OCI archive (a
  tarred layout), including BuildKit's that are both at once.

Tags, in this order: ``source.tag``; ``params.version`` (with ``tag_prefix`` and the
``-variant`` suffix); with ``bump_aliases``, the aliases the version should move
(``1.2``, ``1``, ``latest`` — see :func:`platforge.concourse.semver.alias_tags`);
then each whitespace-separated tag in the ``additional_tags`` file (with
``tag_prefix``). With none of these, ``latest``. Blobs go first, then manifests, the
index, and the tags last, so no tag ever names a half-pushed image.

The answer's version is the first tag and the pushed digest (the index digest for a
multi-platform image).
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import shutil
import tarfile
import tempfile
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any

from platforge.concourse.protocol import metadata
from platforge.concourse.remote import open_remote
from platforge.concourse.semver import alias_tags
from platforge.errors import ConcourseError, LayoutError, ReferenceFormatError
from platforge.oci import mediatypes as mt
from platforge.oci.compression import Compression, detect

if TYPE_CHECKING:
    from collections.abc import Iterator

    from platforge.concourse.remote import Remote
    from platforge.concourse.source import PutParams

__all__ = ["image_tags", "layout_from_tarball", "put"]

log = logging.getLogger("platforge.concourse.put")

_CHUNK = 1 << 20
_LAYER_TYPES = {
    Compression.GZIP: mt.OCI_LAYER_GZIP,
    Compression.ZSTD: mt.OCI_LAYER_ZSTD,
    Compression.NONE: mt.OCI_LAYER,
}


def put(src: Path, params: PutParams) -> dict[str, Any]:
    """Push the image ``params.image`` names under ``src``; return the answer."""
    image = _find_image(src, params.image)
    source = params.source
    with open_remote(source, for_push=True) as remote:
        tags = image_tags(src, params, remote)
        registries = remote.registries()
        try:
            with _as_layout(image) as layout_dir:
                result = _push(layout_dir, remote, tags, registries)
        finally:
            registries.close()
    digest = str(result.digest)
    pairs = [("repository", source.repository), ("tags", " ".join(tags))]
    return {"version": {"tag": tags[0], "digest": digest}, "metadata": metadata(pairs)}


def _push(layout_dir: Path, remote: Remote, tags: list[str], registries: Any) -> Any:
    from platforge.registry.copy import push_layout  # noqa: PLC0415

    reference = remote.at_tag(tags[0])
    try:
        return push_layout(layout_dir, reference, registries=registries, tags=tags[1:])
    except LayoutError as exc:
        raise ConcourseError(f"params.image: {exc}") from exc


def _find_image(src: Path, pattern: str) -> Path:
    matches = sorted(glob.glob(str(src / pattern)))  # noqa: PTH207 - glob semantics wanted
    if len(matches) != 1:
        found = ", ".join(matches[:5]) if matches else "nothing"
        raise ConcourseError(
            f"params.image {pattern!r} must match exactly one path under {src}, "
            f"matched {len(matches)} ({found}); point it at image/image.tar or the "
            "OCI layout image/image"
        )
    return Path(matches[0])


def _version_tags(params: PutParams, remote: Remote | None) -> list[str]:
    source = params.source
    prefix = params.tag_prefix or ""
    if not params.version:
        return []
    version_tag = prefix + params.version
    if source.variant:
        version_tag += f"-{source.variant}"
    tags = [version_tag]
    if params.bump_aliases and remote is not None:
        existing = remote.client.list_tags(remote.repository)
        tags += alias_tags(
            params.version,
            [t.removeprefix(prefix) for t in existing if t.startswith(prefix)],
            variant=source.variant,
            pre_release_prefixes=source.pre_release_prefixes,
        )
    return tags


def _additional_tags(src: Path, params: PutParams) -> list[str]:
    if not params.additional_tags:
        return []
    path = src / params.additional_tags
    try:
        words = path.read_text(encoding="utf-8").split()
    except OSError as exc:
        raise ConcourseError(
            f"params.additional_tags: cannot read {path}: {exc.strerror}; "
            "point it at a file of whitespace-separated tags"
        ) from exc
    return [(params.tag_prefix or "") + word for word in words]


def image_tags(src: Path, params: PutParams, remote: Remote | None) -> list[str]:
    """Every tag to push, first one first (see the module docstring)."""
    tags = [params.source.tag] if params.source.tag else []
    tags += _version_tags(params, remote)
    tags += _additional_tags(src, params)
    unique = list(dict.fromkeys(tags)) or ["latest"]
    if remote is not None:
        for tag in unique:
            try:
                remote.at_tag(tag)
            except ReferenceFormatError as exc:
                raise ConcourseError(f"cannot push tag {tag!r}: {exc}") from exc
    return unique


@contextmanager
def _as_layout(image: Path) -> Iterator[Path]:
    """The image as an OCI layout directory (a tarball is unpacked to a temp one)."""
    if image.is_dir():
        if not (image / "index.json").is_file():
            raise ConcourseError(
                f"params.image {image} is a directory without index.json; point it "
                "at an OCI layout (image/image) or a tarball (image/image.tar)"
            )
        yield image
        return
    temp = Path(tempfile.mkdtemp(prefix="platforge-put-"))
    try:
        layout_from_tarball(image, temp / "layout")
        yield temp / "layout"
    finally:
        shutil.rmtree(temp, ignore_errors=True)


# --- tarballs ----------------------------------------------------------------------


def _safe_name(name: str) -> str | None:
    path = PurePosixPath(name.removeprefix("./"))
    if path.is_absolute() or ".." in path.parts or not path.parts:
        return None
    return str(path)


def layout_from_tarball(tarball: Path, dest: Path) -> None:
    """Unpack a docker or OCI archive into a new OCI layout at ``dest``.

    An OCI archive (``index.json`` and ``oci-layout``) is extracted as it is; a docker
    archive gets an OCI manifest written for it, with each layer kept byte for byte
    (compressed or not), so the config and layer digests are those of the archive.
    Only the layout's own files are extracted, each streamed to disk.
    """
    try:
        tar = tarfile.open(tarball)  # noqa: SIM115 - closed below, after all reads
    except (tarfile.TarError, OSError) as exc:
        raise ConcourseError(
            f"params.image {tarball} is neither an OCI layout nor a readable tarball "
            f"({exc}); point it at oci-build-task's image/image.tar or image/image"
        ) from exc
    with tar:
        members = {
            safe: member
            for member in tar.getmembers()
            if (safe := _safe_name(member.name)) is not None
            and (member.isfile() or member.issym())
        }
        dest.mkdir(parents=True)
        (dest / "blobs" / "sha256").mkdir(parents=True)
        if "index.json" in members and "oci-layout" in members:
            _extract_oci(tar, members, dest)
        elif "manifest.json" in members:
            _convert_docker(tar, members, dest)
        else:
            raise ConcourseError(
                f"params.image {tarball} is a tarball without index.json or "
                "manifest.json; it is not an OCI or docker image archive"
            )


def _open_member(
    tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], name: str
) -> IO[bytes]:
    member = members.get(name)
    seen: set[str] = set()
    while member is not None and member.issym() and name not in seen:
        seen.add(name)
        target = _safe_name(str(PurePosixPath(name).parent / member.linkname))
        name = target or ""
        member = members.get(name)
    handle = tar.extractfile(member) if member is not None else None
    if handle is None:
        raise ConcourseError(
            f"image archive {tar.name!s} lacks {name!r}, which its manifest names; "
            "the tarball is incomplete"
        )
    return handle


def _extract_oci(
    tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], dest: Path
) -> None:
    for name in members:
        parts = PurePosixPath(name).parts
        if name in {"index.json", "oci-layout"} or (
            len(parts) == 3 and parts[0] == "blobs"
        ):
            target = dest.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with _open_member(tar, members, name) as source, target.open("wb") as out:
                shutil.copyfileobj(source, out, _CHUNK)


def _store(source: IO[bytes], dest: Path) -> tuple[str, int, bytes]:
    """Stream ``source`` into the layout's blobs; return digest, size, first bytes."""
    hasher = hashlib.sha256()
    size = 0
    head = b""
    fd, temp = tempfile.mkstemp(prefix=".blob-", dir=dest / "blobs" / "sha256")
    with os.fdopen(fd, "wb") as out:
        while chunk := source.read(_CHUNK):
            if len(head) < 16:
                head += chunk[:16]
            hasher.update(chunk)
            size += len(chunk)
            out.write(chunk)
    encoded = hasher.hexdigest()
    Path(temp).replace(dest / "blobs" / "sha256" / encoded)
    return f"sha256:{encoded}", size, head


def _store_bytes(data: bytes, dest: Path) -> tuple[str, int]:
    encoded = hashlib.sha256(data).hexdigest()
    (dest / "blobs" / "sha256" / encoded).write_bytes(data)
    return f"sha256:{encoded}", len(data)


def _convert_docker(
    tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], dest: Path
) -> None:
    with _open_member(tar, members, "manifest.json") as handle:
        entries = json.load(handle)
    if not isinstance(entries, list) or len(entries) != 1:
        count = len(entries) if isinstance(entries, list) else 0
        raise ConcourseError(
            f"image archive {tar.name!s} holds {count} images in manifest.json; "
            "push an archive of exactly one image"
        )
    entry = entries[0]
    with _open_member(tar, members, str(entry["Config"])) as handle:
        config_bytes = handle.read()
    config = json.loads(config_bytes)
    config_digest, config_size = _store_bytes(config_bytes, dest)

    layers = []
    for name in entry.get("Layers") or []:
        with _open_member(tar, members, str(name)) as handle:
            digest, size, head = _store(handle, dest)
        layers.append(
            {"mediaType": _LAYER_TYPES[detect(head)], "digest": digest, "size": size}
        )
    manifest = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {
            "mediaType": mt.OCI_CONFIG,
            "digest": config_digest,
            "size": config_size,
        },
        "layers": layers,
    }
    manifest_digest, manifest_size = _store_bytes(
        json.dumps(manifest, separators=(",", ":")).encode(), dest
    )
    platform = {"architecture": config.get("architecture"), "os": config.get("os")}
    if config.get("variant"):
        platform["variant"] = config["variant"]
    index = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "manifests": [
            {
                "mediaType": mt.OCI_MANIFEST,
                "digest": manifest_digest,
                "size": manifest_size,
                "platform": platform,
            }
        ],
    }
    (dest / "index.json").write_text(json.dumps(index), encoding="utf-8")
    (dest / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}', encoding="utf-8")
