"""Snapshots to layers: what a COPY writes, or what a RUN changed, as one layer blob.

A layer is written in one streaming pass: the tar stream is hashed (the diff ID),
compressed, hashed again (the blob digest) and written to a temporary file in the
store, which is renamed to its digest at the end. Memory does not grow with the
size of the files.

Two inputs:

* :func:`write_copy_layer` takes the :class:`~platforge.build.context.CopyItem` list
  of a COPY or ADD and streams the files straight from their sources, with the
  destination path, owner and mode the instruction asks for, so a COPY never
  stages a tree on disk and needs no privilege. Parent directories of each
  destination are included, with the mode and owner they already have in the
  image (``0755 root`` when new).
* :func:`write_upper_layer` takes a RUN's overlay upper directory: a character
  device 0/0 becomes a ``.wh.NAME`` whiteout, a directory marked opaque (xattr
  ``trusted.overlay.opaque`` or ``user.overlay.opaque`` = ``y``) gets a
  ``.wh..wh..opq`` entry, hard links inside the directory stay hard links.

Tar headers are normalised for reproducibility: PAX format, entries in path
order, parents before children, no user or group names, no access or change
times, and modification times clamped to ``SOURCE_DATE_EPOCH`` when it is given.
These writers live in the builder because they map build instructions onto tar
entries (destinations, ``--chown``, ``--chmod``); the codecs and digests are
``platforge.oci``'s.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING

from platforge.build.image import LayerRef
from platforge.errors import BuildError
from platforge.oci import compression as codec

if TYPE_CHECKING:
    from collections.abc import Iterable

    from platforge.build.chown import ModeSpec, Owner
    from platforge.build.context import CopyItem
    from platforge.build.image import ImageTree
    from platforge.build.store import Store

__all__ = ["LayerOptions", "write_copy_layer", "write_upper_layer"]

_CHUNK = 1 << 20
_OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")


@dataclass(frozen=True)
class LayerOptions:
    """How layers are encoded: codec and the optional SOURCE_DATE_EPOCH clamp."""

    compression: codec.Compression = codec.Compression.GZIP
    epoch: int | None = None

    def mtime(self, value: float) -> int:
        seconds = int(value)
        if self.epoch is not None and seconds > self.epoch:
            return self.epoch
        return max(seconds, 0)


class _Hashing(io.RawIOBase):
    """Hashes and counts bytes on their way to ``inner``."""

    def __init__(self, inner: codec.WriteStream | IO[bytes]) -> None:
        super().__init__()
        self.inner = inner
        self.hash = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:
        view = memoryview(data)  # type: ignore[arg-type]
        self.hash.update(view)
        self.inner.write(view)
        self.size += view.nbytes
        return view.nbytes


class _LayerWriter:
    """A tar stream into a store blob, hashed before and after compression."""

    def __init__(self, store: Store, options: LayerOptions) -> None:
        self.store = store
        self.options = options

    def write(self, entries: Iterable[tuple[tarfile.TarInfo, Path | None]]) -> LayerRef:
        with self.store.blob_sink() as sink:
            compressed = _Hashing(sink.file)
            compressor = codec.open_writer(compressed, self.options.compression)
            plain = _Hashing(compressor)
            with tarfile.open(
                fileobj=plain,
                mode="w|",
                bufsize=_CHUNK,
                format=tarfile.PAX_FORMAT,
            ) as tar:
                tar.copybufsize = _CHUNK  # type: ignore[attr-defined]
                for info, source in entries:
                    if source is not None and info.isreg():
                        with source.open("rb") as fh:
                            tar.addfile(info, fh)
                    else:
                        tar.addfile(info)
            compressor.close()
            digest = "sha256:" + compressed.hash.hexdigest()
            self.store.commit(sink, digest)
        return LayerRef(
            media_type=codec.layer_media_type(self.options.compression),
            digest=digest,
            size=compressed.size,
            diff_id="sha256:" + plain.hash.hexdigest(),
        )


def _info(  # noqa: PLR0917 - the six fields of every tar header we write
    name: str, kind: bytes, mode: int, uid: int, gid: int, mtime: int
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.uid, info.gid = uid, gid
    info.uname = info.gname = ""
    info.mtime = mtime
    return info


def write_copy_layer(
    store: Store,
    items: list[CopyItem],
    *,
    tree: ImageTree,
    owner: Owner | None,
    chmod: ModeSpec | None,
    options: LayerOptions,
) -> LayerRef:
    """One layer holding ``items`` and their parent directories."""
    uid, gid = (owner.uid, owner.gid) if owner else (0, 0)
    parent_time = options.epoch or 0
    by_path = {item.dest.strip("/"): item for item in items}
    names: set[str] = set()
    for name in by_path:
        parts = PurePosixPath(name).parts
        names.update("/".join(parts[:i]) for i in range(1, len(parts)))
        names.add(name)
    names.discard("")

    def entries() -> Iterable[tuple[tarfile.TarInfo, Path | None]]:
        for name in sorted(names, key=lambda n: n.split("/")):
            item = by_path.get(name)
            if item is None:
                existing = tree.mode_of(name)
                if existing is not None:
                    mode, p_uid, p_gid = existing
                else:
                    mode, p_uid, p_gid = 0o755, uid, gid
                yield (
                    _info(name, tarfile.DIRTYPE, mode, p_uid, p_gid, parent_time),
                    None,
                )
                continue
            mode = item.mode
            if chmod is not None and item.kind != "symlink":
                mode = chmod.apply(mode, is_dir=item.kind == "dir")
            mtime = options.mtime(item.mtime)
            if item.kind == "dir":
                yield _info(name, tarfile.DIRTYPE, mode, uid, gid, mtime), None
            elif item.kind == "symlink":
                info = _info(name, tarfile.SYMTYPE, 0o777, uid, gid, mtime)
                info.linkname = item.link
                yield info, None
            else:
                info = _info(name, tarfile.REGTYPE, mode, uid, gid, mtime)
                info.size = item.source.stat().st_size if item.source else 0
                yield info, item.source

    return _LayerWriter(store, options).write(entries())


def _opaque(path: Path) -> bool:
    for attr in _OPAQUE_XATTRS:
        try:
            if os.getxattr(path, attr, follow_symlinks=False) == b"y":
                return True
        except OSError:
            continue
    return False


def write_upper_layer(
    store: Store, upperdir: Path, *, options: LayerOptions
) -> LayerRef:
    """One layer from a RUN's overlay upper directory."""

    def entries() -> Iterable[tuple[tarfile.TarInfo, Path | None]]:
        links: dict[tuple[int, int], str] = {}
        stack = [""]
        while stack:
            rel_dir = stack.pop()
            here = upperdir / rel_dir if rel_dir else upperdir
            children = sorted(os.scandir(here), key=lambda e: e.name)
            subdirs = []
            for entry in children:
                rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                st = entry.stat(follow_symlinks=False)
                yield from _upper_entry(Path(entry.path), rel, st, links, options)
                if stat.S_ISDIR(st.st_mode):
                    subdirs.append(rel)
            stack.extend(reversed(subdirs))

    return _LayerWriter(store, options).write(entries())


def _upper_entry(
    path: Path,
    rel: str,
    st: os.stat_result,
    links: dict[tuple[int, int], str],
    options: LayerOptions,
) -> Iterable[tuple[tarfile.TarInfo, Path | None]]:
    mode = stat.S_IMODE(st.st_mode)
    mtime = options.mtime(st.st_mtime)
    fmt = stat.S_IFMT(st.st_mode)
    if fmt == stat.S_IFCHR and st.st_rdev == 0:
        parent, _, base = rel.rpartition("/")
        name = f"{parent}/.wh.{base}" if parent else f".wh.{base}"
        yield _info(name, tarfile.REGTYPE, 0, 0, 0, mtime), None
        return
    info = _info(rel, tarfile.REGTYPE, mode, st.st_uid, st.st_gid, mtime)
    if fmt == stat.S_IFDIR:
        info.type = tarfile.DIRTYPE
        yield info, None
        if _opaque(path):
            yield _info(f"{rel}/.wh..wh..opq", tarfile.REGTYPE, 0, 0, 0, mtime), None
    elif fmt == stat.S_IFLNK:
        info.type = tarfile.SYMTYPE
        info.linkname = str(path.readlink())
        yield info, None
    elif fmt == stat.S_IFREG:
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in links:
            info.type = tarfile.LNKTYPE
            info.linkname = links[key]
            yield info, None
            return
        links[key] = rel
        info.size = st.st_size
        yield info, path
    elif fmt in (stat.S_IFCHR, stat.S_IFBLK):
        info.type = tarfile.CHRTYPE if fmt == stat.S_IFCHR else tarfile.BLKTYPE
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        yield info, None
    elif fmt == stat.S_IFIFO:
        info.type = tarfile.FIFOTYPE
        yield info, None
    else:
        raise BuildError(
            f"RUN left {rel!r}, a socket, in the image; remove it in the RUN"
        )
