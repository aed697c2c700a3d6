"""Image tarballs: docker-archive and oci-archive, to and from an OCI layout.

*oci-archive* is an OCI image layout packed into one tar: ``oci-layout``,
``index.json`` and ``blobs/<alg>/<hex>``. It holds any number of images and
platforms, exactly as the layout does.

*docker-archive* is what ``docker save`` writes and ``docker load`` reads::

    manifest.json        [{"Config": "<hex>.json", "RepoTags": ["repo:tag"],
                           "Layers": ["<hex>.tar", ...]}, ...]
    <hex>.json           the image config
    <hex>.tar            each layer, an uncompressed tar

It has no index and no manifests: each entry is one image of one platform, so
writing one from an index needs the caller to pick a platform. platforge writes
layers uncompressed, named by their diff ID, as ``docker save`` and skopeo do;
it reads archives from any docker version (the classic ``<id>/layer.tar`` shape
and the OCI-layout shape of docker 25 alike), with layers stored plain or
compressed and the whole tarball optionally gzipped.

Both directions stream: blobs go between the tarball and the layout in 1 MiB
chunks. A compressed layer written into a docker-archive is first decompressed
into a temporary file, because a tar header must state the size before the data.
Tarballs are written to a temporary file beside the destination and renamed
into place when complete; members carry zero timestamps and owners, so the same
images give the same tarball.

Limitation: nondistributable layers that the layout does not hold cannot be
written to either archive.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any

from platforge import platforms
from platforge.errors import ArchiveError, ContentError, LayoutError
from platforge.oci import compression
from platforge.oci import mediatypes as mt
from platforge.oci.content import (
    Descriptor,
    ImageConfig,
    Index,
    Manifest,
    canonical_json,
)
from platforge.oci.digest import CHUNK_SIZE, Digest, HashingWriter
from platforge.oci.layout import INDEX_FILE, LAYOUT_FILE, OCTET_STREAM, Layout

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from platforge.platforms import Platform

__all__ = [
    "read_docker_archive",
    "read_oci_archive",
    "write_docker_archive",
    "write_oci_archive",
]

log = logging.getLogger("platforge.oci.archive")

DOCKER_MANIFEST_FILE = "manifest.json"
# manifest.json and configs are small; anything bigger is not what it claims
_MAX_JSON = 16 << 20


# -- writing tarballs ---------------------------------------------------------


def _copy_in_chunks(tar: tarfile.TarFile) -> None:
    # Member data is copied in 1 MiB pieces, not tarfile's 16 KiB default;
    # copybufsize is a real attribute that typeshed does not list.
    tar.copybufsize = CHUNK_SIZE  # type: ignore[attr-defined]


@contextlib.contextmanager
def _tar_writer(dest: Path) -> Iterator[tarfile.TarFile]:
    """A tar written to a temporary file that replaces ``dest`` only when complete.

    Failing to write (no space, a file where a directory should be, ``dest`` a
    directory) is an ArchiveError naming ``dest``; nothing is left behind.
    """
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    except OSError as exc:
        raise _cannot_write(dest, exc) from exc
    temp = Path(temp_name)
    try:
        with (
            os.fdopen(fd, "wb") as out,
            tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            _copy_in_chunks(tar)
            yield tar
            tar.close()
            out.flush()
            os.fsync(out.fileno())
        temp.chmod(0o644)
        temp.replace(dest)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise _cannot_write(dest, exc) from exc
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _cannot_write(dest: Path, exc: OSError) -> ArchiveError:
    return ArchiveError(
        f"cannot write {dest}: {exc.strerror or exc}; give a path in a writable "
        "directory with room for the archive, not an existing directory"
    )


def _member(name: str, size: int = 0, *, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if directory:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
    else:
        info.mode = 0o644
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_member(name, len(data)), _BytesReader(data))


class _BytesReader:
    """The smallest reader tarfile accepts, without copying ``data``."""

    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            size = len(self._view)
        chunk, self._view = self._view[:size], self._view[size:]
        return bytes(chunk)


def _add_blob(
    tar: tarfile.TarFile, layout: Layout, name: str, desc: Descriptor
) -> None:
    path = layout.blob_path(desc.digest)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ArchiveError(
            f"cannot archive {desc.media_type} {desc.digest}: the blob is not in "
            f"the OCI layout {layout.path}; pull the image with all its layers first"
        ) from None
    if size != desc.size:
        raise ArchiveError(
            f"cannot archive blob {desc.digest}: it is {size} bytes in "
            f"{layout.path}, the descriptor says {desc.size}; run a layout check"
        )
    with path.open("rb") as blob:
        tar.addfile(_member(name, size), blob)


def write_oci_archive(
    layout: Layout,
    dest: str | os.PathLike[str],
    descriptors: Sequence[Descriptor] | None = None,
) -> Index:
    """Pack ``descriptors`` (default: every entry of ``index.json``) as an oci-archive.

    The archive's ``index.json`` lists exactly those descriptors (names kept), and
    it holds only the blobs they reach. Returns that index.
    """
    roots = list(layout.index().manifests if descriptors is None else descriptors)
    index = Index.build(roots)
    with _tar_writer(Path(dest)) as tar:
        _add_bytes(
            tar,
            LAYOUT_FILE,
            canonical_json({"imageLayoutVersion": mt.OCI_LAYOUT_VERSION}),
        )
        _add_bytes(tar, INDEX_FILE, index.raw)
        tar.addfile(_member("blobs/", directory=True))
        made: set[str] = set()
        seen: set[Digest] = set()
        for root in roots:
            for desc in _walk(layout, root):
                if desc.digest in seen:
                    continue
                seen.add(desc.digest)
                if desc.digest.algorithm not in made:
                    made.add(desc.digest.algorithm)
                    tar.addfile(
                        _member(f"blobs/{desc.digest.algorithm}/", directory=True)
                    )
                name = f"blobs/{desc.digest.algorithm}/{desc.digest.encoded}"
                _add_blob(tar, layout, name, desc)
    log.debug("wrote oci-archive", extra={"dest": str(dest), "blobs": len(seen)})
    return index


def _walk(layout: Layout, root: Descriptor) -> Iterator[Descriptor]:
    try:
        yield from layout.walk(root)
    except LayoutError as exc:
        raise ArchiveError(f"cannot archive {root.digest}: {exc}") from None


def _pick_manifest(
    layout: Layout, descriptor: Descriptor, platform: Platform | None
) -> Manifest:
    document = layout.read_manifest(descriptor)
    if isinstance(document, Manifest):
        return document
    if platform is None:
        present = ", ".join(
            str(p) for p in document.platforms() if p is not None and p.os != "unknown"
        )
        raise ArchiveError(
            f"image {descriptor.digest} is an index of several platforms ({present}); "
            "a docker-archive holds one: pick a platform (--platform)"
        )
    chosen = document.find(platform)
    if chosen is None:
        raise ArchiveError(
            f"image {descriptor.digest} has no manifest for {platform}; it has "
            f"{', '.join(str(p) for p in document.platforms() if p is not None)}"
        )
    return _pick_manifest(layout, chosen, None)


def write_docker_archive(
    layout: Layout,
    dest: str | os.PathLike[str],
    descriptor: Descriptor,
    *,
    platform: Platform | None = None,
    repo_tags: Sequence[str] = (),
) -> Digest:
    """Write one image as a docker-archive; returns its config digest (image ID).

    ``descriptor`` may point at a manifest or at an index, and then ``platform``
    picks the manifest (containerd's fallbacks apply). ``repo_tags`` become
    ``RepoTags`` (``repo:tag``), the names ``docker load`` gives the image.
    """
    dest_path = Path(dest)
    manifest = _pick_manifest(layout, descriptor, platform)
    config_raw = layout.read_blob(manifest.config.digest)
    config = ImageConfig.parse(config_raw)
    diff_ids = config.diff_ids
    if len(diff_ids) != len(manifest.layers):
        raise ArchiveError(
            f"image {manifest.digest}: {len(manifest.layers)} layers but "
            f"{len(diff_ids)} diff IDs in its config; the image is inconsistent"
        )
    config_name = f"{manifest.config.digest.encoded}.json"
    layer_names: list[str] = []
    with _tar_writer(dest_path) as tar:
        written: set[str] = set()
        for layer, diff_id in zip(manifest.layers, diff_ids, strict=True):
            name = f"{diff_id.encoded}.tar"
            layer_names.append(name)
            if name in written:
                continue  # a layer listed twice is stored once, as docker does
            written.add(name)
            _add_docker_layer(
                tar, layout, layer, diff_id=diff_id, name=name, scratch=dest_path.parent
            )
        _add_bytes(tar, config_name, config_raw)
        entry = {
            "Config": config_name,
            "RepoTags": list(repo_tags),
            "Layers": layer_names,
        }
        _add_bytes(tar, DOCKER_MANIFEST_FILE, canonical_json([entry]))
    log.debug(
        "wrote docker-archive", extra={"dest": str(dest), "image": str(config.digest)}
    )
    return manifest.config.digest


def _add_docker_layer(
    tar: tarfile.TarFile,
    layout: Layout,
    layer: Descriptor,
    *,
    diff_id: Digest,
    name: str,
    scratch: Path,
) -> None:
    if layer.digest == diff_id:  # stored uncompressed already
        _add_blob(tar, layout, name, layer)
        return
    # decompress to a file first: the tar header needs the size before the data
    with (
        layout.open_blob(layer.digest) as blob,
        tempfile.TemporaryFile(dir=scratch, prefix=".layer-") as plain,
    ):
        try:
            reader = compression.open_reader(blob)
            writer = HashingWriter(plain, diff_id.algorithm)
            while chunk := reader.read(CHUNK_SIZE):
                writer.write(chunk)
            writer.verify(diff_id, what=f"uncompressed layer {layer.digest}")
        except ContentError as exc:
            raise ArchiveError(f"cannot write layer {layer.digest}: {exc}") from None
        plain.seek(0)
        tar.addfile(_member(name, writer.size), plain)


# -- reading tarballs -----------------------------------------------------------


def _open_tar(src: str | os.PathLike[str], kind: str) -> tarfile.TarFile:
    try:
        # "r:*" reads plain or gzip/bz2/xz-compressed tarballs, with random access
        tar = tarfile.open(src, mode="r:*")  # noqa: SIM115 - the caller closes it
    except FileNotFoundError:
        raise ArchiveError(f"{kind} {src} does not exist") from None
    except tarfile.ReadError:
        # tarfile's message lists each codec it tried, one per line
        raise ArchiveError(
            f"{kind} {src} is not a readable tar file (plain, gzip, bzip2 or xz); "
            "give the tarball that docker save, skopeo or platforge wrote"
        ) from None
    except (tarfile.TarError, OSError) as exc:
        raise ArchiveError(f"{kind} {src} is not a readable tar file: {exc}") from None
    _copy_in_chunks(tar)
    return tar


def _members(tar: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    """Members by normalised name ("./a/b" and "a/b" are the same)."""
    out: dict[str, tarfile.TarInfo] = {}
    for member in tar.getmembers():
        name = PurePosixPath(member.name.lstrip("/")).as_posix().removeprefix("./")
        out[name] = member
    return out


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, src: object) -> IO[bytes]:
    try:
        stream = tar.extractfile(member)
    except (tarfile.TarError, KeyError) as exc:
        raise ArchiveError(f"{src}: cannot read {member.name}: {exc}") from None
    if stream is None:
        raise ArchiveError(f"{src}: {member.name} is not a regular file")
    return stream


def _read_small(
    tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], name: str, src: object
) -> bytes:
    member = members.get(name)
    if member is None:
        raise ArchiveError(
            f"{src} has no {name}; it is not the kind of archive expected"
        )
    if member.size > _MAX_JSON:
        raise ArchiveError(f"{src}: {name} is {member.size} bytes, too big to be JSON")
    with _extract(tar, member, src) as stream:
        return stream.read()


def read_oci_archive(src: str | os.PathLike[str], layout: Layout) -> list[Descriptor]:
    """Import an oci-archive into ``layout``; returns the archive's index entries.

    Every blob is verified against its name while it streams into the layout;
    entries keep their ``org.opencontainers.image.ref.name`` (replacing layout
    entries of the same name).
    """
    with _open_tar(src, "oci-archive") as tar:
        members = _members(tar)
        marker = _read_small(tar, members, LAYOUT_FILE, src)
        try:
            version = json.loads(marker).get("imageLayoutVersion")
        except (ValueError, AttributeError):
            version = None
        if version != mt.OCI_LAYOUT_VERSION:
            raise ArchiveError(
                f"oci-archive {src}: {LAYOUT_FILE} does not declare image layout "
                f"version {mt.OCI_LAYOUT_VERSION}"
            )
        try:
            index = Index.parse(_read_small(tar, members, INDEX_FILE, src))
        except ContentError as exc:
            raise ArchiveError(f"oci-archive {src}: {INDEX_FILE}: {exc}") from None
        _import_blobs(tar, members, layout, src)
    # names are added only once everything they reach is in the layout
    problems = [p for root in index.manifests for p in _check_root(layout, root)]
    if problems:
        raise ArchiveError(f"oci-archive {src} is incomplete: {problems[0]}")
    for entry in index.manifests:
        layout.add_ref(entry, entry.ref_name)
    return list(index.manifests)


def _import_blobs(
    tar: tarfile.TarFile,
    members: dict[str, tarfile.TarInfo],
    layout: Layout,
    src: object,
) -> None:
    for name, member in members.items():
        parts = name.split("/")
        if len(parts) != 3 or parts[0] != "blobs" or not member.isfile():
            continue
        try:
            digest = Digest(parts[1], parts[2])
        except ContentError as exc:
            raise ArchiveError(f"oci-archive {src}: {name}: {exc}") from None
        if layout.has_blob(digest):
            continue
        expected = Descriptor(OCTET_STREAM, digest, member.size)
        with _extract(tar, member, src) as stream:
            try:
                layout.write_blob(stream, expected)
            except ContentError as exc:
                raise ArchiveError(f"oci-archive {src}: {exc}") from None


def _check_root(layout: Layout, root: Descriptor) -> list[str]:
    if not layout.has_blob(root.digest):
        return [f"{root.media_type} {root.digest} is missing"]
    try:
        missing = [
            f"{d.media_type} {d.digest} is missing"
            for d in layout.walk(root)
            if not layout.has_blob(d.digest)
            and not mt.is_nondistributable(d.media_type)
        ]
    except (LayoutError, ContentError) as exc:
        return [str(exc)]
    return missing


def read_docker_archive(
    src: str | os.PathLike[str], layout: Layout
) -> list[Descriptor]:
    """Import every image of a docker-archive into ``layout`` as OCI manifests.

    Each image is named in ``index.json`` by each of its ``RepoTags``; an image
    without tags is added unnamed. Returns the manifest descriptors, one per
    image, in the order of ``manifest.json``.
    """
    with _open_tar(src, "docker-archive") as tar:
        members = _members(tar)
        entries = _docker_entries(
            _read_small(tar, members, DOCKER_MANIFEST_FILE, src), src
        )
        results: list[Descriptor] = []
        for number, entry in enumerate(entries):
            where = f"docker-archive {src} image {number}"
            config_raw = _read_small(tar, members, _clean(entry["Config"]), src)
            try:
                config = ImageConfig.parse(config_raw)
                diff_ids = config.diff_ids
            except ContentError as exc:
                raise ArchiveError(f"{where}: {exc}") from None
            if len(diff_ids) != len(entry["Layers"]):
                raise ArchiveError(
                    f"{where}: {len(entry['Layers'])} layers but {len(diff_ids)} "
                    "diff IDs in its config; the archive is inconsistent"
                )
            layers = [
                _import_docker_layer(
                    tar,
                    members,
                    layout,
                    name=_clean(name),
                    diff_id=diff_id,
                    where=where,
                )
                for name, diff_id in zip(entry["Layers"], diff_ids, strict=True)
            ]
            config_desc = layout.write_blob(config_raw, media_type=mt.OCI_CONFIG)
            manifest = Manifest.build(config_desc, layers)
            platform = _config_platform(config)
            desc = layout.write_manifest(manifest, manifest.descriptor(platform))
            tags = entry["RepoTags"] or [None]
            for tag in tags:
                layout.add_ref(desc, tag)
            results.append(desc)
    return results


def _config_platform(config: ImageConfig) -> Platform | None:
    try:
        return platforms.normalize(config.platform)
    except ContentError:
        return None


def _clean(name: str) -> str:
    return PurePosixPath(name.lstrip("/")).as_posix().removeprefix("./")


def _docker_entries(raw: bytes, src: object) -> list[dict[str, Any]]:
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise ArchiveError(
            f"docker-archive {src}: manifest.json is not JSON: {exc}"
        ) from None
    if not isinstance(document, list) or not document:
        raise ArchiveError(
            f"docker-archive {src}: manifest.json must be a non-empty list of images"
        )
    entries: list[dict[str, Any]] = []
    for number, entry in enumerate(document):
        ok = (
            isinstance(entry, dict)
            and isinstance(entry.get("Config"), str)
            and isinstance(entry.get("Layers"), list)
            and all(isinstance(x, str) for x in entry["Layers"])
            and isinstance(entry.get("RepoTags") or [], list)
        )
        if not ok:
            raise ArchiveError(
                f"docker-archive {src}: manifest.json entry {number} needs 'Config' "
                "(a path) and 'Layers' (a list of paths)"
            )
        entries.append({**entry, "RepoTags": list(entry.get("RepoTags") or [])})
    return entries


def _import_docker_layer(
    tar: tarfile.TarFile,
    members: dict[str, tarfile.TarInfo],
    layout: Layout,
    *,
    name: str,
    diff_id: Digest,
    where: str,
) -> Descriptor:
    member = members.get(name)
    if member is None:
        raise ArchiveError(f"{where}: layer {name} is not in the archive")
    member = _follow_links(member, members, where)
    with _extract(tar, member, where) as member_stream:
        prefix, stream = compression.peek(member_stream)
        codec = compression.detect(prefix)
        try:
            media_type = compression.layer_media_type(codec)
        except ContentError as exc:
            raise ArchiveError(f"{where}: layer {name}: {exc}") from None
        desc = layout.write_blob(stream, media_type=media_type)
    if codec is compression.Compression.NONE and desc.digest != diff_id:
        raise ArchiveError(
            f"{where}: layer {name} hashes to {desc.digest} but the config lists "
            f"diff ID {diff_id}; the archive is corrupt"
        )
    return desc


def _follow_links(
    member: tarfile.TarInfo,
    members: dict[str, tarfile.TarInfo],
    where: str,
) -> tarfile.TarInfo:
    # docker save stores a layer shared by two images once and links the other
    for _ in range(8):
        if member.isfile():
            return member
        if member.issym():
            target = str(PurePosixPath(member.name).parent / member.linkname)
        elif member.islnk():
            target = member.linkname
        else:
            break
        resolved = os.path.normpath(_clean(target))
        found = members.get(resolved)
        if found is None:
            break
        member = found
    raise ArchiveError(f"{where}: {member.name} is not a regular file in the archive")
