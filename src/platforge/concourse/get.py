"""``in`` (a get step): fetch the exact digest of a version into the step's directory.

Files written into the destination, as the ``registry-image`` resource writes them:

* ``repository`` — the repository as configured (``127.0.0.1:5000/app``);
* ``tag`` — the version's tag (empty for a version pinned only by digest);
* ``digest`` — the version's digest (the index digest for a multi-platform image);

and, unless ``skip_download`` is set, by ``format``:

* ``rootfs`` (default): ``rootfs/`` (the unpacked filesystem of one platform),
  ``metadata.json`` (``env``, ``user``, ``cmd``, ``entrypoint`` of the config) and
  ``labels.json`` (the config's labels) — what a task's ``image:`` needs;
* ``oci``: ``image.tar``, one platform as an OCI archive that also carries docker's
  ``manifest.json``, so both ``docker load`` and OCI tools read it, and
  ``labels.json``;
* ``oci-layout``: ``oci/``, an OCI image layout holding the whole image, as the
  registry-image resource writes it: for an index, ``index.json`` is that index
  itself (its sha256 is the digest; it lists every platform); for a single-platform
  image (a manifest), ``index.json`` names it and the marker file
  ``oci/single-image-digest`` holds its digest.

With a ``registry_mirror`` that applies, the mirror is tried first and the
repository's own registry after it fails (as upstream). The platform is
``params.platform``, else ``source.platform``, else the worker's own
(this machine's), picked from an index with containerd's fallbacks. A version whose
digest the repository no longer has fails the step, saying so.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tarfile
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from platforge import platforms
from platforge.concourse.protocol import metadata
from platforge.concourse.remote import open_remote, uses_mirror
from platforge.errors import ConcourseError, ContentError, PlatforgeError
from platforge.oci import mediatypes as mt
from platforge.oci.content import Manifest
from platforge.oci.layout import Layout, write_atomic

if TYPE_CHECKING:
    from collections.abc import Iterator

    from platforge.concourse.protocol import ResourceVersion
    from platforge.concourse.remote import Remote
    from platforge.concourse.source import GetParams
    from platforge.oci.content import ImageConfig
    from platforge.platforms import Platform
    from platforge.registry.copy import Registries
    from platforge.registry.reference import Reference

__all__ = ["SINGLE_IMAGE_MARKER", "get", "write_image_tar"]

log = logging.getLogger("platforge.concourse.get")

SINGLE_IMAGE_MARKER = "single-image-digest"
_FILE_MODE = 0o644


def _umask() -> int:
    """The process umask (reading it means setting it; it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_text(path: Path, text: str) -> None:
    write_atomic(path, text.encode())


def get(dest: Path, version: ResourceVersion, params: GetParams) -> dict[str, Any]:
    """Fetch ``version`` into ``dest``; return the answer ``{version, metadata}``."""
    if params.skip_download:
        # As upstream: no registry request at all, so the implicit get after a put
        # works with credentials given only to the put, or a registry now down.
        return _write_version(dest, version, params)
    if uses_mirror(params.source):
        try:
            with open_remote(params.source) as remote:
                return _get_from(remote, dest, version, params)
        except PlatforgeError as exc:
            log.warning("fetching from the mirror failed, using the origin: %s", exc)
    with open_remote(params.source, mirror=False) as remote:
        return _get_from(remote, dest, version, params)


def _get_from(
    remote: Remote, dest: Path, version: ResourceVersion, params: GetParams
) -> dict[str, Any]:
    source = params.source
    platform = params.platform or source.platform or platforms.host()
    if remote.client.head_manifest(remote.repository, version.digest) is None:
        shown = f"{version.tag}@{version.digest}" if version.tag else version.digest
        raise ConcourseError(
            f"version {shown} no longer exists in {remote.name}; it was deleted "
            "or the tag was overwritten and cleaned up, so run check again"
        )
    reference = remote.pinned(version.tag or None, version.digest)

    answer = _write_version(dest, version, params)
    registries = remote.registries
    log.info("fetching %s@%s (%s)", source.repository, version.digest, params.format)
    if params.format == "oci-layout":
        _get_layout(dest, reference, registries)
        return answer
    if params.format == "rootfs":
        config = _get_rootfs(dest, reference, registries, platform)
    else:
        config = _get_oci_tar(
            dest, reference, registries, platform, repository=source.repository
        )
    fetched = _platform_of(config, platform)
    if fetched != platform:
        # A lone manifest is fetched whatever its platform, as upstream does; the
        # worker's own platform (the default) deserves the warning as much as one
        # the pipeline named, since a later step would run a foreign rootfs.
        log.warning(
            "%s holds one image, for %s, not %s; fetched it anyway",
            remote.name,
            fetched,
            platform,
        )
    answer["metadata"].append({"name": "platform", "value": str(fetched)})
    return answer


def _write_version(
    dest: Path, version: ResourceVersion, params: GetParams
) -> dict[str, Any]:
    """Write ``repository``, ``tag`` and ``digest``; the answer without a platform."""
    repository = params.source.repository
    dest.mkdir(parents=True, exist_ok=True)
    _write_text(dest / "repository", repository)
    _write_text(dest / "tag", version.tag)
    _write_text(dest / "digest", version.digest)
    pairs = [("repository", repository), ("tag", version.tag)]
    return {"version": version.to_json(), "metadata": metadata(pairs)}


def _platform_of(config: ImageConfig | None, asked: Platform) -> Platform:
    """The platform the fetched image's config names (``asked`` when unreadable)."""
    if config is None:
        return asked
    try:
        return config.platform
    except PlatforgeError:
        return asked


@contextmanager
def _staging(dest: Path) -> Iterator[Path]:
    """A scratch directory inside ``dest``, removed afterwards whatever happens."""
    path = Path(tempfile.mkdtemp(prefix=".platforge-in-", dir=dest))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _get_rootfs(
    dest: Path, reference: Reference, registries: Registries, platform: Platform
) -> ImageConfig | None:
    from platforge.registry.copy import pull_rootfs  # noqa: PLC0415

    with _staging(dest) as staging:
        result = pull_rootfs(
            reference, staging / "image", registries=registries, platform=platform
        )
        for name in ("rootfs", "metadata.json"):
            target = dest / name
            if target.is_dir():
                shutil.rmtree(target)
            (staging / "image" / name).replace(target)
    if result.config is not None:
        _write_labels(dest, result.config)
    return result.config


def _write_labels(dest: Path, config: ImageConfig) -> None:
    """``labels.json``: the config labels of the platform's image (``{}`` if none)."""
    _write_text(dest / "labels.json", json.dumps(config.config.labels))


def _get_layout(dest: Path, reference: Reference, registries: Registries) -> None:
    from platforge.registry.copy import pull_to_layout  # noqa: PLC0415

    target = dest / "oci"
    if target.exists():
        shutil.rmtree(target)
    result = pull_to_layout(reference, target, registries=registries)
    if mt.is_manifest(result.descriptor.media_type):
        # registry-image's marker for "this layout holds one image, not an index";
        # `out` reads it back, and so do pipelines written for that resource.
        _write_text(target / SINGLE_IMAGE_MARKER, str(result.digest))
    else:
        # As upstream, index.json *is* the image index (byte for byte, so its
        # sha256 is the version's digest and it lists the platforms); the index
        # stays a blob too.
        write_atomic(
            target / "index.json", Layout.open(target).read_blob(result.digest)
        )


def _get_oci_tar(
    dest: Path,
    reference: Reference,
    registries: Registries,
    platform: Platform,
    *,
    repository: str,
) -> ImageConfig:
    from platforge.registry.copy import pull_to_layout  # noqa: PLC0415

    with _staging(dest) as staging:
        result = pull_to_layout(
            reference, staging / "layout", registries=registries, platform=platform
        )
        # Named as configured, as upstream: never after a mirror that served it.
        repo_tag = f"{repository}:{reference.tag}" if reference.tag else None
        write_image_tar(staging / "layout", dest / "image.tar", repo_tag)
        layout = Layout.open(staging / "layout")
        # One platform was asked for, so the root is an image manifest.
        manifest = Manifest.parse(
            layout.read_blob(result.digest), result.descriptor.media_type
        )
        config = layout.read_config(manifest.config)
        _write_labels(dest, config)
    return config


def write_image_tar(layout_dir: Path, out: Path, repo_tag: str | None) -> None:
    """Tar an OCI layout holding one image manifest, adding docker's manifest.json.

    The tarball is an OCI archive (``oci-layout``, ``index.json``, ``blobs/``) and
    at the same time a docker archive (``manifest.json`` naming the config and the
    layers by their blob paths), the shape ``docker save`` writes since docker 25.
    It is written to a temp file beside ``out`` and renamed into place.
    """
    index = json.loads((layout_dir / "index.json").read_text())
    entries = index.get("manifests") or []
    if len(entries) != 1 or not mt.is_manifest(entries[0].get("mediaType", "")):
        raise ContentError(
            f"layout {layout_dir} does not hold exactly one image manifest; "
            "pick a platform first"
        )
    blob_dir = layout_dir / "blobs"
    manifest_digest = str(entries[0]["digest"])
    manifest = json.loads(_blob(blob_dir, manifest_digest).read_bytes())
    docker_manifest = [
        {
            "Config": _blob_name(manifest["config"]["digest"]),
            "RepoTags": [repo_tag] if repo_tag else [],
            "Layers": [_blob_name(layer["digest"]) for layer in manifest["layers"]],
        }
    ]
    fd, temp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        os.fchmod(fd, 0o644)  # readable by a later step running as another user
        with (
            os.fdopen(fd, "wb") as raw,
            tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            for name in ("oci-layout", "index.json"):
                tar.add(layout_dir / name, arcname=name)
            _add_bytes(tar, "manifest.json", json.dumps(docker_manifest).encode())
            for path in sorted(blob_dir.rglob("*")):
                if path.is_file():
                    tar.add(path, arcname=str(path.relative_to(layout_dir)))
        # mkstemp makes the file 0600; a later step may run as a non-root user.
        Path(temp).chmod(_FILE_MODE & ~_umask())
        Path(temp).replace(out)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _blob(blob_dir: Path, digest: str) -> Path:
    algorithm, _, encoded = digest.partition(":")
    return blob_dir / algorithm / encoded


def _blob_name(digest: str) -> str:
    algorithm, _, encoded = digest.partition(":")
    return f"blobs/{algorithm}/{encoded}"


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    import io  # noqa: PLC0415

    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))
