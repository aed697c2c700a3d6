"""``out`` (a put step): push an image and tag it.

``params.image`` is a glob (Go's ``filepath.Glob`` rules, which Python's ``glob``
shares for ``*``, ``?`` and ``[...]``) relative to the step's directory that must match
exactly one path. Every shape ``oci-build-task`` has written is accepted:

* an OCI layout directory (``image/image`` with ``OUTPUT_OCI``) whose ``index.json``
  holds one image manifest; or one entry that is itself an image index (a
  multi-platform build: that index is what is pushed); or several per-platform
  manifests (``index.json`` is then the index); or any entries plus the
  ``single-image-digest`` marker the registry-image resource's ``oci-layout``
  format writes (the image it names is pushed);
* a tarball (``image/image.tar``): a docker archive (``manifest.json``; layers as
  ``blobs/sha256/…`` or ``<id>/layer.tar``, compressed or not) or an OCI archive (a
  tarred layout), including BuildKit's that are both at once.

Tags, in this order: ``source.tag``; ``params.version`` written out in full
(``v1.2`` is pushed as ``1.2.0``, as upstream), with ``tag_prefix`` and the
``-variant`` suffix; with ``bump_aliases``, the aliases the version should move
(``1.2``, ``1``, ``latest`` — see :func:`platforge.concourse.semver.alias_tags`);
then each whitespace-separated tag in the ``additional_tags`` file (with
``tag_prefix``). With none of these, ``latest``. Blobs go first, then manifests, the
index, and the tags last, so no tag ever names a half-pushed image.

The answer's version is the first tag and the pushed digest (the index digest for a
multi-platform image).
"""

from __future__ import annotations

import glob
import logging
import shutil
import tarfile
import tempfile
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from platforge.concourse.get import SINGLE_IMAGE_MARKER
from platforge.concourse.protocol import metadata
from platforge.concourse.remote import open_remote
from platforge.concourse.semver import Version, alias_tags, parse_version
from platforge.errors import (
    ConcourseError,
    LayoutError,
    NotFoundError,
    ReferenceFormatError,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from platforge.concourse.remote import Remote
    from platforge.concourse.source import PutParams
    from platforge.registry.copy import CopyResult

__all__ = ["image_tags", "layout_from_tarball", "put"]

log = logging.getLogger("platforge.concourse.put")


def put(src: Path, params: PutParams) -> dict[str, Any]:
    """Push the image ``params.image`` names under ``src``; return the answer."""
    image = _find_image(src, params.image)
    source = params.source
    with open_remote(source, mirror=False) as remote:
        tags = image_tags(src, params, remote)
        log.info("pushing %s to %s as %s", image, remote.name, " ".join(tags))
        with _as_layout(image) as (layout_dir, digest):
            result = _push(layout_dir, digest, remote, tags)
    digest = str(result.digest)
    log.info("pushed %s", digest)
    pairs = [("repository", source.repository), ("tags", " ".join(tags))]
    return {"version": {"tag": tags[0], "digest": digest}, "metadata": metadata(pairs)}


def _push(
    layout_dir: Path, digest: str | None, remote: Remote, tags: list[str]
) -> CopyResult:
    from platforge.registry.copy import push_layout  # noqa: PLC0415

    reference = remote.at_tag(tags[0])
    try:
        return push_layout(
            layout_dir,
            reference,
            registries=remote.registries,
            tags=tags[1:],
            digest=digest,
        )
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
    version = parse_version(params.version)
    if version is None or "+" in params.version:
        raise ConcourseError(
            f"params.version {params.version!r} is not a semantic version usable as "
            "a tag; write it like 1.2.3 or 1.2.3-rc.1"
        )
    # As upstream: the tag is the version written out in full (v1.2 -> 1.2.0).
    canonical = str(
        Version(version.major, version.minor, version.patch, version.prerelease)
    )
    version_tag = prefix + canonical
    if source.variant:
        version_tag += f"-{source.variant}"
    tags = [version_tag]
    if params.bump_aliases and remote is not None:
        # The aliases carry no prefix, so every version they could name counts,
        # prefixed or not: a prefixed hotfix of an old line never moves `latest`
        # back.
        existing = _existing_tags(remote)
        tags += alias_tags(
            canonical,
            [*existing, *(t.removeprefix(prefix) for t in existing if prefix)],
            variant=source.variant,
            pre_release_prefixes=source.pre_release_prefixes,
        )
    return tags


def _existing_tags(remote: Remote) -> list[str]:
    """The repository's tags; none when it does not exist yet (its first push)."""
    try:
        tags = remote.client.list_tags(remote.repository)
    except NotFoundError:
        log.debug("repository %s is new: no tags to compare", remote.repository)
        return []
    return [tag for tag in tags if isinstance(tag, str)]


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
def _as_layout(image: Path) -> Iterator[tuple[Path, str | None]]:
    """The image as an OCI layout directory (a tarball is unpacked to a temp one),
    and the digest of the image to push when a ``single-image-digest`` marker names
    it (the registry-image resource writes that beside a layout holding one image
    rather than an index; whatever else ``index.json`` lists is not pushed)."""
    if image.is_dir():
        if not (image / "index.json").is_file():
            raise ConcourseError(
                f"params.image {image} is a directory without index.json; point it "
                "at an OCI layout (image/image) or a tarball (image/image.tar)"
            )
        marker = image / SINGLE_IMAGE_MARKER
        digest = (
            marker.read_text(encoding="utf-8").strip() if marker.is_file() else None
        )
        yield image, digest or None
        return
    temp = Path(tempfile.mkdtemp(prefix="platforge-put-"))
    try:
        layout_from_tarball(image, temp / "layout")
        yield temp / "layout", None
    finally:
        shutil.rmtree(temp, ignore_errors=True)


# --- tarballs ----------------------------------------------------------------------


def layout_from_tarball(tarball: Path, dest: Path) -> None:
    """Import a docker or OCI archive into a new OCI layout at ``dest``.

    A tarball holding ``index.json`` is read as an OCI archive (BuildKit's docker
    exporter writes both forms in one tar; the OCI side is exact); otherwise as a
    docker archive, which must hold one image. Blobs stream and are verified on the
    way in (:mod:`platforge.oci.archive`).
    """
    from platforge.oci.archive import (  # noqa: PLC0415 - only tarballs need it
        read_docker_archive,
        read_oci_archive,
    )
    from platforge.oci.layout import Layout  # noqa: PLC0415

    try:
        with tarfile.open(tarball) as tar:
            names = {name.removeprefix("./") for name in tar.getnames()}
    except (tarfile.TarError, OSError) as exc:
        raise ConcourseError(
            f"params.image {tarball} is neither an OCI layout nor a readable tarball "
            f"({exc}); point it at oci-build-task's image/image.tar or image/image"
        ) from exc
    layout = Layout.create(dest)
    if "index.json" in names and "oci-layout" in names:
        read_oci_archive(tarball, layout)
    elif "manifest.json" in names:
        images = set(read_docker_archive(tarball, layout))
        if len(images) != 1:
            raise ConcourseError(
                f"params.image {tarball} holds {len(images)} images; push an archive "
                "of exactly one image"
            )
        # One image, however many RepoTags name it: the tag comes from the put.
        (image,) = images
        layout.set_index([replace(image, annotations={})])
    else:
        raise ConcourseError(
            f"params.image {tarball} is a tarball without index.json or "
            "manifest.json; it is not an OCI or docker image archive"
        )
