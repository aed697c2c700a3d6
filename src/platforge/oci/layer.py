"""Layer tars: write them reproducibly, read them back, and speak whiteouts.

A layer is a tar archive of the files a step added or changed, plus *whiteouts* for
what it removed. The image spec marks a removed path ``dir/name`` with an empty
entry ``dir/.wh.name``, and a directory whose earlier content is all hidden (made
*opaque*) with ``dir/.wh..wh..opq``. ``whiteout_path``, ``whiteout_target``,
``opaque_marker_path`` and ``opaque_directory`` convert between the two forms.

Writing
-------

``write_layer(entries, out, compression)`` turns ``Entry`` objects into a tar and
writes it, compressed, into ``out`` in one streaming pass: the tar bytes are hashed
for the *diff ID* (the digest of the uncompressed tar, which goes in the image
config) and then compressed, and the compressed bytes hashed again for the *digest*
and size of the blob (which go in the manifest). File contents are copied in 1 MiB
chunks; memory does not grow with file or layer size.

Entries come from three places:

* ``entries_from_directory(root)``: a tree on disk, sorted, with mode, ownership,
  symlinks, hardlinks (detected by inode: the first path in sorted order carries the
  content, later ones link to it), device nodes, FIFOs and extended attributes;
  sockets cannot be stored in a tar and are skipped.
* ``Entry.file(...)``, ``Entry.directory(...)`` and friends: virtual entries whose
  content is a file path or bytes, so a COPY step can make a layer straight from
  its sources without staging a tree.
* ``entries_from_overlay(upper)``: the upper directory of an overlay mount. Its
  whiteouts (character devices 0/0, or files with an ``overlay.whiteout`` xattr)
  become ``.wh.`` entries, and opaque directories (xattr ``trusted.overlay.opaque``
  or ``user.overlay.opaque`` set to ``y``) become ``DIR/.wh..wh..opq``. Upper
  directories made with overlay's ``redirect_dir`` or ``metacopy`` features are
  refused: their content is not all in the upper directory.

Reproducibility
---------------

The same entries and options give the same bytes, so the same digests:

* entries are sorted by path component (a directory before its children, and an
  opaque marker right after its directory), unless ``sort=False``;
* headers are PAX (POSIX.1-2001) with no atime or ctime, integer mtimes only, and
  the end of the archive is two zero blocks with no record padding (as Go's tar
  writer does);
* ``mtime=N`` sets every timestamp to N; ``source_date_epoch=N`` clamps newer
  timestamps down to N (the SOURCE_DATE_EPOCH convention);
* user and group *names* are left empty unless given: ownership in an image is
  numeric, and host names would make the bytes depend on the host's passwd file;
* xattrs are written as ``SCHILY.xattr.NAME`` records in name order; overlay's own
  xattrs (``trusted.overlay.*``, ``user.overlay.*``) and ``security.selinux`` (a
  label of the host, not of the content) are never written;
* compression is pinned: ISA-L gzip or single-threaded zstd at a fixed level.

Reading
-------

``iter_entries(fileobj)`` reads a layer, compressed or not, as ``Entry`` objects with
a stream of each regular file's content.

Python's ``tarfile`` builds the headers (``TarInfo.tobuf``) and parses them; the
archive body is written here because ``tarfile.addfile`` copies content in small
pieces and cannot feed the two hashes and the compressor in one pass.
"""

from __future__ import annotations

import enum
import grp
import logging
import os
import posixpath
import pwd
import stat
import tarfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING

from platforge.errors import ContentError
from platforge.oci.compression import (
    Compression,
    WriteStream,
    layer_media_type,
    open_reader,
    open_writer,
)
from platforge.oci.content import Descriptor
from platforge.oci.digest import Digest, Hasher, HashingWriter

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

__all__ = [
    "OPAQUE_MARKER",
    "WHITEOUT_PREFIX",
    "Entry",
    "EntryType",
    "LayerInfo",
    "clean_path",
    "entries_from_directory",
    "entries_from_overlay",
    "entry_from_tarinfo",
    "iter_entries",
    "opaque_directory",
    "opaque_marker_path",
    "source_date_epoch_from_env",
    "whiteout_path",
    "whiteout_target",
    "write_layer",
]

log = logging.getLogger("platforge.oci.layer")

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
# Names starting with this are aufs bookkeeping (.wh..wh.plnk and the like), not
# whiteouts; readers skip them.
_WHITEOUT_META_PREFIX = ".wh..wh."

_CHUNK = 1 << 20
_BLOCK = 512
_ZEROS = bytes(_BLOCK * 2)

_OVERLAY_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.")
_SKIPPED_XATTRS = frozenset({"security.selinux"})
_OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")
_WHITEOUT_XATTRS = ("trusted.overlay.whiteout", "user.overlay.whiteout")
_UNSUPPORTED_OVERLAY_XATTRS = (
    "trusted.overlay.redirect",
    "user.overlay.redirect",
    "trusted.overlay.metacopy",
    "user.overlay.metacopy",
)
_PAX_XATTR = "SCHILY.xattr."


class EntryType(enum.Enum):
    FILE = "file"
    DIRECTORY = "directory"
    SYMLINK = "symlink"
    HARDLINK = "hardlink"
    CHAR_DEVICE = "char-device"
    BLOCK_DEVICE = "block-device"
    FIFO = "fifo"


_TAR_TYPE = {
    EntryType.FILE: tarfile.REGTYPE,
    EntryType.DIRECTORY: tarfile.DIRTYPE,
    EntryType.SYMLINK: tarfile.SYMTYPE,
    EntryType.HARDLINK: tarfile.LNKTYPE,
    EntryType.CHAR_DEVICE: tarfile.CHRTYPE,
    EntryType.BLOCK_DEVICE: tarfile.BLKTYPE,
    EntryType.FIFO: tarfile.FIFOTYPE,
}
_ENTRY_TYPE = {tar_type: entry_type for entry_type, tar_type in _TAR_TYPE.items()}
# Old archives mark regular files with these; all are plain files to a reader.
_ENTRY_TYPE[tarfile.AREGTYPE] = EntryType.FILE
_ENTRY_TYPE[tarfile.CONTTYPE] = EntryType.FILE


def clean_path(path: str) -> str:
    """``path`` as a layer entry name: relative, no ``.`` or empty components.

    A leading ``/`` or ``./`` is dropped, because layers are always relative to the
    root of the image. ``..`` is refused: no layer platforge writes or accepts
    names a path above its root. The root itself is ``"."``.
    """
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ContentError(
            f"layer entry {path!r} has a '..' component: name paths inside the "
            "image root only"
        )
    return "/".join(parts) or "."


@dataclass(frozen=True, slots=True)
class Entry:
    """One member of a layer tar.

    ``source`` is where a regular file's content comes from: a path on disk (read
    when the layer is written) or bytes. ``linkname`` is a symlink's target, or the
    layer path a hardlink points to. ``mode`` is the permission bits including
    setuid, setgid and sticky. ``mtime`` is in whole seconds.
    """

    path: str
    type: EntryType
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    uname: str = ""
    gname: str = ""
    size: int = 0
    mtime: int = 0
    linkname: str = ""
    devmajor: int = 0
    devminor: int = 0
    xattrs: Mapping[str, bytes] = field(default_factory=dict)
    source: Path | bytes | None = None

    @classmethod
    def file(
        cls,
        path: str,
        content: bytes | Path,
        *,
        mode: int = 0o644,
        uid: int = 0,
        gid: int = 0,
        mtime: int = 0,
        xattrs: Mapping[str, bytes] | None = None,
    ) -> Entry:
        """A regular file whose content is ``content`` (bytes, or a file to read)."""
        size = len(content) if isinstance(content, bytes) else content.stat().st_size
        return cls(
            clean_path(path),
            EntryType.FILE,
            mode=mode,
            uid=uid,
            gid=gid,
            size=size,
            mtime=mtime,
            xattrs=dict(xattrs or {}),
            source=content,
        )

    @classmethod
    def directory(
        cls, path: str, *, mode: int = 0o755, uid: int = 0, gid: int = 0, mtime: int = 0
    ) -> Entry:
        return cls(
            clean_path(path),
            EntryType.DIRECTORY,
            mode=mode,
            uid=uid,
            gid=gid,
            mtime=mtime,
        )

    @classmethod
    def symlink(
        cls, path: str, target: str, *, uid: int = 0, gid: int = 0, mtime: int = 0
    ) -> Entry:
        return cls(
            clean_path(path),
            EntryType.SYMLINK,
            mode=0o777,
            uid=uid,
            gid=gid,
            mtime=mtime,
            linkname=target,
        )

    @classmethod
    def hardlink(cls, path: str, target: str, *, mtime: int = 0) -> Entry:
        """A second name for the file at layer path ``target``."""
        return cls(
            clean_path(path),
            EntryType.HARDLINK,
            mode=0o644,
            mtime=mtime,
            linkname=clean_path(target),
        )

    @classmethod
    def whiteout(cls, path: str, *, mtime: int = 0) -> Entry:
        """The entry that removes ``path`` from the layers below."""
        return cls(whiteout_path(path), EntryType.FILE, mode=0o644, mtime=mtime)

    @classmethod
    def opaque(cls, directory: str, *, mtime: int = 0) -> Entry:
        """The entry that hides everything the layers below put in ``directory``."""
        return cls(
            opaque_marker_path(directory), EntryType.FILE, mode=0o644, mtime=mtime
        )


@dataclass(frozen=True, slots=True)
class LayerInfo:
    """What ``write_layer`` wrote: the blob's descriptor fields and its diff ID."""

    media_type: str
    digest: Digest
    size: int
    diff_id: Digest

    def descriptor(self, annotations: Mapping[str, str] | None = None) -> Descriptor:
        return Descriptor(
            media_type=self.media_type,
            digest=self.digest,
            size=self.size,
            annotations=dict(annotations or {}),
        )


# --- whiteouts -----------------------------------------------------------------


def whiteout_path(path: str) -> str:
    """``dir/name`` → ``dir/.wh.name``: the entry that deletes ``path``."""
    cleaned = clean_path(path)
    if cleaned == ".":
        raise ContentError("cannot write a whiteout for the image root")
    parent, name = posixpath.split(cleaned)
    return posixpath.join(parent, WHITEOUT_PREFIX + name)


def whiteout_target(path: str) -> str | None:
    """``dir/.wh.name`` → ``dir/name``; None when ``path`` is not a whiteout.

    Opaque markers and aufs bookkeeping names (``.wh..wh.*``) are not whiteouts of
    a path and give None too.
    """
    parent, name = posixpath.split(path.rstrip("/"))
    if not name.startswith(WHITEOUT_PREFIX) or name.startswith(_WHITEOUT_META_PREFIX):
        return None
    return posixpath.join(parent, name[len(WHITEOUT_PREFIX) :])


def opaque_marker_path(directory: str) -> str:
    """``dir`` → ``dir/.wh..wh..opq``: the entry that makes ``dir`` opaque."""
    cleaned = clean_path(directory)
    return OPAQUE_MARKER if cleaned == "." else f"{cleaned}/{OPAQUE_MARKER}"


def opaque_directory(path: str) -> str | None:
    """``dir/.wh..wh..opq`` → ``dir`` (``"."`` for the root); None otherwise."""
    parent, name = posixpath.split(path.rstrip("/"))
    if name != OPAQUE_MARKER:
        return None
    return parent or "."


# --- writing -------------------------------------------------------------------


def source_date_epoch_from_env() -> int | None:
    """``SOURCE_DATE_EPOCH`` from the environment, for ``write_layer``'s clamp."""
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is None or not value.strip():
        return None
    try:
        return int(value)
    except ValueError:
        raise ContentError(
            f"SOURCE_DATE_EPOCH={value!r} is not a whole number of seconds: set it "
            "to a Unix timestamp such as $(git log -1 --format=%ct)"
        ) from None


def _sort_key(entry: Entry) -> tuple[tuple[bool, str], ...]:
    # Component-wise, so "a" < "a/b" < "a-b"; the opaque marker of a directory
    # sorts first among its children so it is applied before they are written.
    return tuple((part != OPAQUE_MARKER, part) for part in entry.path.split("/"))


class _TarWriter:
    """Writes tar members into the compressor while digesting the tar bytes."""

    def __init__(
        self,
        compressor: WriteStream,
        *,
        mtime: int | None,
        source_date_epoch: int | None,
    ) -> None:
        self._compressor = compressor
        self.hasher = Hasher()
        self._mtime = mtime
        self._epoch = source_date_epoch
        self._buffer = bytearray(_CHUNK)

    def _emit(self, data: bytes | bytearray | memoryview) -> None:
        self.hasher.update(data)
        self._compressor.write(data)

    def timestamp(self, mtime: int) -> int:
        if self._mtime is not None:
            return self._mtime
        if self._epoch is not None:
            return min(mtime, self._epoch)
        return mtime

    def add(self, entry: Entry) -> None:
        info = tarfile.TarInfo(entry.path)
        info.type = _TAR_TYPE[entry.type]
        info.mode = entry.mode & 0o7777
        info.uid = entry.uid
        info.gid = entry.gid
        info.uname = entry.uname
        info.gname = entry.gname
        info.mtime = self.timestamp(int(entry.mtime))
        info.linkname = entry.linkname
        info.devmajor = entry.devmajor
        info.devminor = entry.devminor
        info.size = entry.size if entry.type is EntryType.FILE else 0
        if entry.xattrs:
            info.pax_headers = {
                _PAX_XATTR + name: entry.xattrs[name].decode("utf-8", "surrogateescape")
                for name in sorted(entry.xattrs)
            }
        self._emit(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        if info.size:
            self._copy_content(entry)
            remainder = info.size % _BLOCK
            if remainder:
                self._emit(_ZEROS[: _BLOCK - remainder])

    def _copy_content(self, entry: Entry) -> None:
        source = entry.source
        if isinstance(source, bytes):
            if len(source) != entry.size:
                raise ContentError(
                    f"layer entry {entry.path!r}: {len(source)} bytes of content for "
                    f"a declared size of {entry.size}; pass a matching size"
                )
            self._emit(source)
            return
        if source is None:
            raise ContentError(
                f"layer entry {entry.path!r}: a regular file of {entry.size} bytes "
                "has no content source; give bytes or a file path"
            )
        view = memoryview(self._buffer)
        left = entry.size
        try:
            with source.open("rb", buffering=0) as stream:
                while left:
                    count = stream.readinto(view[: min(left, _CHUNK)])
                    if not count:
                        break
                    self._emit(view[:count])
                    left -= count
                grew = not left and bool(stream.read(1))
        except OSError as exc:
            raise ContentError(
                f"layer entry {entry.path!r}: cannot read {source}: "
                f"{exc.strerror or exc}; check the file is readable"
            ) from exc
        if left or grew:
            change = f"shrank ({left} bytes short)" if left else "grew"
            raise ContentError(
                f"layer entry {entry.path!r}: {source} {change} while the layer was "
                "written; do not change sources during a build"
            )

    def finish(self) -> None:
        self._emit(_ZEROS)


def write_layer(
    entries: Iterable[Entry],
    out: WriteStream,
    compression: Compression = Compression.GZIP,
    *,
    level: int | None = None,
    mtime: int | None = None,
    source_date_epoch: int | None = None,
    sort: bool = True,
    add_parents: bool = False,
) -> LayerInfo:
    """Write ``entries`` as a layer tar, compressed, into ``out``; hash both forms.

    ``out`` is written to and flushed, never closed (it is typically the temp file
    of a blob in a layout). ``mtime`` fixes every timestamp; ``source_date_epoch``
    clamps newer ones. With ``sort`` (the default) entries are put in canonical
    order first; this holds their metadata, never file contents, in memory.
    ``add_parents`` adds a directory entry (0755, root, timestamp 0 or ``mtime``)
    for every missing parent; by default missing parents are left to the
    unpacker, which creates them without touching an existing directory's mode.
    A path given twice is refused.
    """
    blob = HashingWriter(out)
    compressor = open_writer(blob, compression, level)
    tar = _TarWriter(compressor, mtime=mtime, source_date_epoch=source_date_epoch)
    checked = map(_checked, entries)
    ordered: Iterable[Entry] = sorted(checked, key=_sort_key) if sort else checked
    written: set[str] = set()
    for entry in ordered:
        if entry.path in written:
            raise ContentError(
                f"layer entry {entry.path!r} is given twice: each path may appear "
                "once in a layer"
            )
        if add_parents:
            for parent in _missing_parents(entry.path, written):
                tar.add(Entry.directory(parent, mtime=tar.timestamp(0)))
                written.add(parent)
        tar.add(entry)
        written.add(entry.path)
    tar.finish()
    compressor.close()
    blob.flush()
    info = LayerInfo(
        media_type=layer_media_type(compression),
        digest=blob.digest(),
        size=blob.size,
        diff_id=tar.hasher.digest(),
    )
    log.debug(
        "wrote layer digest=%s size=%d diff_id=%s entries=%d",
        info.digest,
        info.size,
        info.diff_id,
        len(written),
    )
    return info


def _checked(entry: Entry) -> Entry:
    """``entry`` with a clean path (and hardlink target); nonsense refused."""
    path = clean_path(entry.path)
    if path == "." and entry.type is not EntryType.DIRECTORY:
        raise ContentError(
            f"layer entry {entry.path!r} names the image root but is a "
            f"{entry.type.value}; only a directory can describe the root"
        )
    linkname = entry.linkname
    if entry.type is EntryType.HARDLINK:
        linkname = clean_path(linkname)
    if path == entry.path and linkname == entry.linkname:
        return entry
    return replace(entry, path=path, linkname=linkname)


def _missing_parents(path: str, written: set[str]) -> list[str]:
    missing: list[str] = []
    parent = posixpath.dirname(path)
    while parent and parent not in written:
        missing.append(parent)
        parent = posixpath.dirname(parent)
    missing.reverse()
    return missing


# --- entries from disk ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Ownership:
    uid: int | None
    gid: int | None
    uname: str | None
    gname: str | None
    lookup_names: bool

    def apply(self, st: os.stat_result) -> tuple[int, int, str, str]:
        uid = st.st_uid if self.uid is None else self.uid
        gid = st.st_gid if self.gid is None else self.gid
        uname = self.uname if self.uname is not None else ""
        gname = self.gname if self.gname is not None else ""
        if self.lookup_names and self.uname is None:
            uname = _user_name(uid)
        if self.lookup_names and self.gname is None:
            gname = _group_name(gid)
        return uid, gid, uname, gname


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return ""


def _read_xattrs(path: str, *, keep_overlay: bool = False) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        # The file system has no xattrs (or refuses them on this kind of file).
        return {}
    values: dict[str, bytes] = {}
    for name in names:
        if name in _SKIPPED_XATTRS:
            continue
        if not keep_overlay and name.startswith(_OVERLAY_XATTR_PREFIXES):
            continue
        try:
            values[name] = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            log.debug("xattr %s of %s vanished while read", name, path)
    return values


class _TreeWalker:
    """Walks a directory tree in sorted order and turns each file into an Entry."""

    def __init__(
        self, root: Path, prefix: str, ownership: _Ownership, *, overlay: bool
    ) -> None:
        self._root = root
        self._prefix = "" if clean_path(prefix) == "." else clean_path(prefix)
        self._ownership = ownership
        self._overlay = overlay
        self._links: dict[tuple[int, int], str] = {}

    def _layer_path(self, relative: str) -> str:
        if not self._prefix:
            return relative
        return f"{self._prefix}/{relative}" if relative else self._prefix

    def walk(self) -> Iterator[Entry]:
        try:
            root_stat = self._root.lstat()
        except OSError as exc:
            raise ContentError(
                f"cannot read layer source directory {self._root}: "
                f"{exc.strerror or exc}"
            ) from exc
        if not stat.S_ISDIR(root_stat.st_mode):
            raise ContentError(
                f"layer source {self._root} is not a directory: give a directory"
            )
        if self._prefix:
            yield from self._entries(str(self._root), "", root_stat)
        elif self._overlay and self._is_opaque(str(self._root)):
            yield Entry.opaque(".", mtime=int(root_stat.st_mtime))
        yield from self._walk_dir(str(self._root), "")

    def _walk_dir(self, directory: str, relative: str) -> Iterator[Entry]:
        try:
            with os.scandir(directory) as listing:
                children = sorted(listing, key=lambda child: child.name)
        except OSError as exc:
            raise ContentError(
                f"cannot list {directory} for a layer: {exc.strerror or exc}; "
                "check the directory is readable"
            ) from exc
        for child in children:
            child_relative = f"{relative}/{child.name}" if relative else child.name
            try:
                st = child.stat(follow_symlinks=False)
                entries = list(self._entries(child.path, child_relative, st))
            except OSError as exc:
                raise ContentError(
                    f"cannot read {child.path} for a layer: {exc.strerror or exc}; "
                    "do not change the tree while its layer is written"
                ) from exc
            yield from entries
            if stat.S_ISDIR(st.st_mode):
                yield from self._walk_dir(child.path, child_relative)

    def _is_opaque(self, path: str) -> bool:
        for name in _OPAQUE_XATTRS:
            try:
                if os.getxattr(path, name, follow_symlinks=False) == b"y":
                    return True
            except OSError:
                continue
        return False

    def _entries(self, path: str, relative: str, st: os.stat_result) -> Iterator[Entry]:
        layer_path = self._layer_path(relative)
        mtime = int(st.st_mtime)
        xattrs = _read_xattrs(path, keep_overlay=self._overlay)
        opaque = False
        if self._overlay:
            for name in _UNSUPPORTED_OVERLAY_XATTRS:
                if name in xattrs:
                    raise ContentError(
                        f"overlay upper directory entry {path} carries {name}: "
                        "upper directories of redirect_dir or metacopy mounts are "
                        "not supported; mount overlay without those features"
                    )
            if _is_overlay_whiteout(st, xattrs):
                yield Entry.whiteout(layer_path, mtime=mtime)
                return
            opaque = any(xattrs.get(name) == b"y" for name in _OPAQUE_XATTRS)
            xattrs = {
                name: value
                for name, value in xattrs.items()
                if not name.startswith(_OVERLAY_XATTR_PREFIXES)
            }
        uid, gid, uname, gname = self._ownership.apply(st)
        base = Entry(
            layer_path,
            EntryType.DIRECTORY,
            mode=stat.S_IMODE(st.st_mode),
            uid=uid,
            gid=gid,
            uname=uname,
            gname=gname,
            mtime=mtime,
            xattrs=xattrs,
        )
        if stat.S_ISDIR(st.st_mode):
            yield base
            if opaque:
                yield Entry.opaque(layer_path, mtime=mtime)
            return
        if st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            first = self._links.get(key)
            if first is not None:
                # xattrs belong to the inode, which the first name already carries.
                yield replace(base, type=EntryType.HARDLINK, linkname=first, xattrs={})
                return
            self._links[key] = layer_path
        entry = self._non_directory(path, base, st)
        if entry is not None:
            yield entry

    def _non_directory(
        self, path: str, base: Entry, st: os.stat_result
    ) -> Entry | None:
        mode = st.st_mode
        if stat.S_ISREG(mode):
            return replace(
                base, type=EntryType.FILE, size=st.st_size, source=Path(path)
            )
        if stat.S_ISLNK(mode):
            target = str(Path(path).readlink())
            return replace(base, type=EntryType.SYMLINK, linkname=target)
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            kind = (
                EntryType.CHAR_DEVICE if stat.S_ISCHR(mode) else EntryType.BLOCK_DEVICE
            )
            return replace(
                base,
                type=kind,
                devmajor=os.major(st.st_rdev),
                devminor=os.minor(st.st_rdev),
            )
        if stat.S_ISFIFO(mode):
            return replace(base, type=EntryType.FIFO)
        log.info("skipping %s: sockets cannot be stored in a layer", path)
        return None


def _is_overlay_whiteout(st: os.stat_result, xattrs: Mapping[str, bytes]) -> bool:
    if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
        return True
    # Newer kernels can also mark a whiteout with an xattr on an empty file.
    return stat.S_ISREG(st.st_mode) and any(name in xattrs for name in _WHITEOUT_XATTRS)


def entries_from_directory(
    root: str | os.PathLike[str],
    *,
    prefix: str = "",
    uid: int | None = None,
    gid: int | None = None,
    uname: str | None = None,
    gname: str | None = None,
    lookup_names: bool = False,
) -> Iterator[Entry]:
    """The entries of the tree under ``root``, sorted, parents before children.

    ``root`` itself is not an entry unless ``prefix`` places the tree under a
    directory of the layer (then ``root``'s metadata describes ``prefix``).
    ``uid``/``gid`` override every file's owner; user and group names are empty
    unless given, or looked up in this host's databases with ``lookup_names``.
    Files are read later, when the layer is written.
    """
    ownership = _Ownership(uid, gid, uname, gname, lookup_names)
    return _TreeWalker(Path(root), prefix, ownership, overlay=False).walk()


def entries_from_overlay(
    upper: str | os.PathLike[str],
    *,
    uid: int | None = None,
    gid: int | None = None,
    lookup_names: bool = False,
) -> Iterator[Entry]:
    """The entries of an overlay upper directory, whiteouts translated to ``.wh.``."""
    ownership = _Ownership(uid, gid, None, None, lookup_names)
    return _TreeWalker(Path(upper), "", ownership, overlay=True).walk()


# --- reading -------------------------------------------------------------------


def entry_from_tarinfo(info: tarfile.TarInfo) -> Entry:
    """The ``Entry`` a tar header describes (no content source)."""
    kind = _ENTRY_TYPE.get(info.type)
    if kind is None:
        raise ContentError(
            f"layer entry {info.name!r} has tar type {info.type!r}, which layers do "
            "not use; rebuild the layer with a standard tar writer"
        )
    xattrs = {
        key[len(_PAX_XATTR) :]: value.encode("utf-8", "surrogateescape")
        for key, value in info.pax_headers.items()
        if key.startswith(_PAX_XATTR)
    }
    return Entry(
        path=info.name,
        type=kind,
        mode=info.mode & 0o7777,
        uid=info.uid,
        gid=info.gid,
        uname=info.uname,
        gname=info.gname,
        size=info.size if kind is EntryType.FILE else 0,
        mtime=int(info.mtime),
        linkname=info.linkname,
        devmajor=info.devmajor,
        devminor=info.devminor,
        xattrs=xattrs,
    )


def iter_entries(fileobj: IO[bytes]) -> Iterator[tuple[Entry, IO[bytes] | None]]:
    """Each entry of a layer (plain, gzip or zstd) with its content stream.

    The stream is given for regular files and is only readable until the next
    entry is asked for; it is None for other entries. Entry paths are as stored
    (not cleaned), so that a reader can judge them; they have no trailing ``/``.
    """
    stream = open_reader(fileobj)
    try:
        with tarfile.open(
            fileobj=stream, mode="r|", bufsize=_CHUNK, errorlevel=2
        ) as archive:
            for info in archive:
                entry = entry_from_tarinfo(info)
                is_file = entry.type is EntryType.FILE
                yield entry, archive.extractfile(info) if is_file else None
    except tarfile.TarError as exc:
        raise ContentError(
            f"layer is not a valid tar archive ({exc}): fetch the blob again or "
            "rebuild the layer"
        ) from exc
    finally:
        stream.close()
