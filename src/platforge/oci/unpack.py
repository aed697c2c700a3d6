"""Unpack image layers into a directory, safely.

``unpack_layers(layers, target)`` applies layer tars in order (lowest first) to make
a root filesystem: entries are written, ``.wh.NAME`` whiteouts delete ``NAME`` from
what earlier layers wrote, and an opaque marker ``DIR/.wh..wh..opq`` empties ``DIR``
of earlier content. Neither touches an entry of its own layer, whatever the order
of the tar (the image spec's rule). With
``whiteout_format="overlay"`` the whiteouts are not applied but written the way
overlayfs expects them, for a directory that becomes one ``lowerdir`` of an overlay
mount: a whiteout becomes a character device 0/0 and an opaque marker becomes the
``trusted.overlay.opaque`` xattr (``user.overlay.opaque`` when not privileged, for
mounts with ``userxattr``); such whiteouts need root, because only root can make
device nodes.

Confinement
-----------

A layer is untrusted input, and nothing in it may change anything outside
``target``. Every entry is handled as follows:

* its path is split into components; ``..`` anywhere is refused, and a leading
  ``/`` is dropped (layer paths are relative to the image root);
* the parent directory is reached one component at a time with ``os.open(...,
  O_DIRECTORY | O_NOFOLLOW, dir_fd=...)``, never through a path string; a symlink met
  on the way is resolved *inside* the target, as if ``target`` were ``/`` (an
  absolute link restarts at ``target``, ``..`` stops at it), so a symlink pointing
  outside, or one that replaced a directory earlier in the layer, can only lead to
  another place inside the target;
* the last component is never followed: whatever is there (a symlink included) is
  removed and the new entry made in its place with ``O_CREAT | O_EXCL |
  O_NOFOLLOW`` (a directory entry keeps an existing directory and updates it);
* a hardlink's target is resolved the same way, so it can only name a file inside
  the target; ``linkat`` without ``AT_SYMLINK_FOLLOW`` links a symlink itself;
* a whiteout may not name ``.``, ``..`` or the empty name;
* device nodes are made only when ``privileged`` (they are skipped, and logged,
  otherwise), setuid and setgid bits are kept only when privileged, and ownership is
  set only when privileged; permission bits are always kept;
* xattrs in the ``trusted.overlay.`` and ``user.overlay.`` namespaces are never
  copied from a layer: in an overlay ``lowerdir`` they would be obeyed by the
  kernel; ``trusted.*`` and ``security.*`` need privilege and are skipped without.

``tarfile``'s ``filter="data"`` checks one archive against one directory, but a
layer stack needs more: whiteouts and opaque directories, hardlinks to files of
earlier layers, symlinks from earlier layers that later entries must be confined
through, device nodes for privileged unpacks, and overlay-style output. So the
tar is read with ``tarfile`` and every file system change is made here through
directory descriptors.

Modes and timestamps of directories are applied after the last layer, deepest
first, so that writing children neither changes a directory's mtime after it was
set nor fails on a directory that is read-only in the image.

FIFOs and device nodes cannot be opened without side effects, so their mode is
set through an ``O_PATH`` descriptor (checked to be the node just made) and its
``/proc/self/fd`` link. Limitation: without ``/proc`` the mode is set by name, and a
process racing inside ``target`` could swap the node for a symlink in between;
unpack into a directory that no untrusted process can write.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal

from platforge.errors import ContentError, UnpackError
from platforge.oci.layer import (
    OPAQUE_MARKER,
    WHITEOUT_PREFIX,
    Entry,
    EntryType,
    iter_entries,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["WhiteoutFormat", "unpack_layers"]

log = logging.getLogger("platforge.oci.unpack")

WhiteoutFormat = Literal["apply", "overlay"]

_CHUNK = 1 << 20
_MAX_SYMLINKS = 40
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_WHITEOUT_META_PREFIX = ".wh..wh."
_PRIVILEGED_XATTR_PREFIXES = ("trusted.", "security.")
_OVERLAY_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.")
_SPECIAL_BITS = stat.S_ISUID | stat.S_ISGID

Parts = tuple[str, ...]


@dataclass(slots=True)
class _DirectoryMetadata:
    mode: int
    mtime: int


class _RefusedError(Exception):
    """An entry the layer may not apply; turned into UnpackError with context."""


def unpack_layers(
    layers: Iterable[IO[bytes]],
    target: str | os.PathLike[str],
    *,
    privileged: bool | None = None,
    whiteout_format: WhiteoutFormat = "apply",
) -> None:
    """Apply ``layers`` (plain, gzip or zstd tars, lowest first) to ``target``.

    ``target`` is created if missing. ``privileged`` defaults to "running as root"
    and decides ownership, setuid/setgid bits, device nodes and privileged xattrs.
    Raises ``UnpackError`` naming the layer and the entry when an entry would
    reach outside ``target`` or cannot be applied; what earlier entries wrote
    stays (unpack into a fresh directory and discard it on failure).
    """
    if whiteout_format not in ("apply", "overlay"):
        raise UnpackError(
            f"unknown whiteout format {whiteout_format!r}: use 'apply' or 'overlay'"
        )
    if privileged is None:
        privileged = os.geteuid() == 0
    root = Path(target)
    try:
        root.mkdir(parents=True, exist_ok=True)
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise UnpackError(
            f"cannot open unpack target {root}: {exc.strerror or exc}; give a "
            "writable directory"
        ) from exc
    tree = _Tree(root_fd, privileged=privileged, whiteout_format=whiteout_format)
    try:
        for number, layer in enumerate(layers, start=1):
            tree.apply_layer(layer, _layer_name(number, layer))
        try:
            tree.finish()
        except OSError as exc:
            raise UnpackError(
                f"cannot set directory modes and times in {root}: "
                f"{exc.strerror or exc}; check the target's file system"
            ) from exc
    finally:
        tree.close()


def _layer_name(number: int, layer: IO[bytes]) -> str:
    name = getattr(layer, "name", None)
    if isinstance(name, str) and name:
        return f"layer {number} ({name})"
    return f"layer {number}"


def _split(path: str) -> Parts:
    parts = tuple(part for part in path.split("/") if part not in ("", "."))
    if ".." in parts:
        raise _RefusedError("its path climbs out of the target with '..'")
    return parts


class _Tree:
    """The target directory, changed only through directory descriptors."""

    def __init__(
        self, root_fd: int, *, privileged: bool, whiteout_format: WhiteoutFormat
    ) -> None:
        self._root_fd = root_fd
        self._privileged = privileged
        self._format = whiteout_format
        self._directories: dict[Parts, _DirectoryMetadata] = {}
        # Consecutive entries mostly share a parent; keep that one open.
        self._cached_parts: Parts | None = None
        self._cached_fd = -1
        self._written: set[Parts] = set()
        self._buffer = bytearray(_CHUNK)

    def close(self) -> None:
        self._forget_cached()
        os.close(self._root_fd)

    # --- layers and entries ---------------------------------------------------

    def apply_layer(self, layer: IO[bytes], name: str) -> None:
        self._written = set()
        path = "?"
        try:
            for entry, content in iter_entries(layer):
                path = entry.path
                self._apply(entry, content)
        except _RefusedError as exc:
            raise UnpackError(
                f"{name}: entry {path!r} refused: {exc}; the layer is malicious or "
                "broken, do not use this image"
            ) from None
        except ContentError as exc:
            raise UnpackError(f"{name}: {exc}") from exc
        except OSError as exc:
            raise UnpackError(
                f"{name}: entry {path!r} could not be written: "
                f"{exc.strerror or exc}; check the target's file system and space"
            ) from exc
        log.debug("applied %s", name)

    def _apply(self, entry: Entry, content: IO[bytes] | None) -> None:
        parts = _split(entry.path)
        if not parts:
            if entry.type is not EntryType.DIRECTORY:
                raise _RefusedError("it would replace the target directory itself")
            self._directory_metadata(self._root_fd, (), entry)
            return
        name = parts[-1]
        parent_parts = parts[:-1]
        if name == OPAQUE_MARKER:
            self._opaque(parent_parts)
            return
        if name.startswith(_WHITEOUT_META_PREFIX):
            log.debug("skipping aufs bookkeeping entry %s", entry.path)
            return
        if name.startswith(WHITEOUT_PREFIX):
            self._whiteout(parent_parts, name[len(WHITEOUT_PREFIX) :])
            return
        self._written.add(parts)
        if entry.type is EntryType.DIRECTORY:
            self._make_directory(parts, entry)
        elif entry.type is EntryType.FILE:
            self._make_file(parts, entry, content)
        elif entry.type is EntryType.SYMLINK:
            parent_fd = self._replace(parts)
            os.symlink(entry.linkname, name, dir_fd=parent_fd)
            self._own(parent_fd, name, entry)
            self._touch(parent_fd, name, entry)
        elif entry.type is EntryType.HARDLINK:
            self._make_hardlink(parts, entry)
        else:
            self._make_special(parts, entry)

    # --- resolving paths inside the target ----------------------------------------

    def _forget_cached(self) -> None:
        if self._cached_fd >= 0:
            os.close(self._cached_fd)
        self._cached_fd = -1
        self._cached_parts = None

    def _parent(self, parts: Parts) -> int:
        """A descriptor of directory ``parts``, created if missing; do not close it."""
        if parts != self._cached_parts:
            fd = self._resolve(parts, create=True)
            self._forget_cached()
            self._cached_parts, self._cached_fd = parts, fd
        return self._cached_fd

    def _existing_parent(self, parts: Parts) -> int | None:
        """Like ``_parent`` but None, creating nothing, when ``parts`` is missing."""
        if parts == self._cached_parts:
            return self._cached_fd
        try:
            fd = self._resolve(parts, create=False)
        except FileNotFoundError:
            return None
        self._forget_cached()
        self._cached_parts, self._cached_fd = parts, fd
        return fd

    def _resolve(self, parts: Parts, *, create: bool) -> int:
        """Open directory ``parts`` with symlinks resolved inside the target.

        Returns a new descriptor the caller closes. Raises FileNotFoundError when a
        component is missing and ``create`` is false.
        """
        stack = [os.dup(self._root_fd)]
        pending = list(reversed(parts))
        hops = 0
        try:
            while pending:
                part = pending.pop()
                if part in ("", "."):
                    continue
                if part == "..":
                    # Resolving a symlink's target: ".." never goes above the root.
                    if len(stack) > 1:
                        os.close(stack.pop())
                    continue
                link = self._open_component(stack[-1], part, create=create)
                if isinstance(link, int):
                    stack.append(link)
                    continue
                hops += 1
                if hops > _MAX_SYMLINKS:
                    raise _RefusedError(
                        f"more than {_MAX_SYMLINKS} symlinks on the way to "
                        f"{'/'.join(parts)!r}"
                    )
                if link.startswith("/"):
                    while len(stack) > 1:
                        os.close(stack.pop())
                pending.extend(reversed(link.split("/")))
            return stack.pop()
        finally:
            for fd in stack:
                os.close(fd)

    def _open_component(self, dir_fd: int, part: str, *, create: bool) -> int | str:
        """Open directory ``part``; a symlink there gives its target instead."""
        try:
            return os.open(part, _DIR_FLAGS, dir_fd=dir_fd)
        except FileNotFoundError:
            if not create:
                raise
            os.mkdir(part, 0o755, dir_fd=dir_fd)
            return os.open(part, _DIR_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
        st = os.stat(part, dir_fd=dir_fd, follow_symlinks=False)
        if not stat.S_ISLNK(st.st_mode):
            raise _RefusedError(f"{part!r} on its path is not a directory")
        return os.readlink(part, dir_fd=dir_fd)

    # --- removing --------------------------------------------------------------

    def _remove(self, dir_fd: int, name: str, parts: Parts) -> None:
        """Remove ``name`` (a whole tree if a directory) without following links.

        Afterwards the cached parent descriptor is gone (it may have been inside
        what was removed): callers fetch their parent again with ``_parent``.
        """
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(name, dir_fd=dir_fd)
            self._forget_directories_under(parts)
        else:
            os.unlink(name, dir_fd=dir_fd)
        self._forget_cached()

    def _forget_directories_under(self, parts: Parts) -> None:
        depth = len(parts)
        for key in [key for key in self._directories if key[:depth] == parts]:
            del self._directories[key]

    def _replace(self, parts: Parts) -> int:
        """Clear the way for a new non-directory entry; returns its parent's fd."""
        self._remove(self._parent(parts[:-1]), parts[-1], parts)
        return self._parent(parts[:-1])

    def _whiteout(self, parent_parts: Parts, victim: str) -> None:
        if victim in ("", ".", ".."):
            raise _RefusedError(f"a whiteout may not name {victim!r}")
        if self._format == "overlay" and not self._privileged:
            raise _RefusedError(
                "overlay-style whiteouts are device nodes, which need root; "
                "unpack with whiteout_format='apply' instead"
            )
        parts = (*parent_parts, victim)
        if parts in self._written:
            # A whiteout hides what lower layers have, never its own layer's entry.
            log.debug("whiteout of %s ignored: its own layer wrote it", "/".join(parts))
            return
        if self._format == "overlay":
            self._remove(self._parent(parent_parts), victim, parts)
            parent_fd = self._parent(parent_parts)
            os.mknod(victim, stat.S_IFCHR, os.makedev(0, 0), dir_fd=parent_fd)
            return
        # Nothing below a missing directory to delete; do not create it.
        existing = self._existing_parent(parent_parts)
        if existing is not None:
            self._remove(existing, victim, parts)

    def _opaque(self, parts: Parts) -> None:
        if self._format == "overlay":
            name = (
                "trusted.overlay.opaque" if self._privileged else "user.overlay.opaque"
            )
            os.setxattr(self._parent(parts), name, b"y")
            return
        fd = self._existing_parent(parts)
        if fd is None:
            return
        for child in os.listdir(fd):  # noqa: PTH208 - listing a descriptor
            child_parts = (*parts, child)
            if child_parts not in self._written:
                self._remove(fd, child, child_parts)
                fd = self._parent(parts)

    # --- creating --------------------------------------------------------------

    def _mode(self, entry: Entry) -> int:
        mode = entry.mode & 0o7777
        return mode if self._privileged else mode & ~_SPECIAL_BITS

    def _make_directory(self, parts: Parts, entry: Entry) -> None:
        name = parts[-1]
        parent_fd = self._parent(parts[:-1])
        try:
            st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None and not stat.S_ISDIR(st.st_mode):
            self._remove(parent_fd, name, parts)
            parent_fd = self._parent(parts[:-1])
            st = None
        if st is None:
            os.mkdir(name, 0o700, dir_fd=parent_fd)
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        try:
            self._directory_metadata(fd, parts, entry)
        finally:
            os.close(fd)

    def _directory_metadata(self, fd: int, parts: Parts, entry: Entry) -> None:
        if self._privileged:
            os.fchown(fd, entry.uid, entry.gid)
        self._set_xattrs(fd, entry)
        mode = self._mode(entry)
        # Keep it writable and searchable for the rest of the unpack; the real
        # mode is applied at the end.
        os.fchmod(fd, mode | stat.S_IRWXU)
        self._directories[parts] = _DirectoryMetadata(mode, entry.mtime)

    def _make_file(self, parts: Parts, entry: Entry, content: IO[bytes] | None) -> None:
        parent_fd = self._replace(parts)
        fd = os.open(parts[-1], _NEW_FILE_FLAGS, 0o600, dir_fd=parent_fd)
        with open(fd, "wb", buffering=0) as out:  # noqa: PTH123 - an fd, not a path
            if content is not None:
                self._copy(content, out)
            if self._privileged:
                os.fchown(fd, entry.uid, entry.gid)
            self._set_xattrs(fd, entry)
            # After chown, which clears setuid and setgid.
            os.fchmod(fd, self._mode(entry))
            os.utime(fd, ns=(entry.mtime * 10**9, entry.mtime * 10**9))

    def _copy(self, content: IO[bytes], out: IO[bytes]) -> None:
        view = memoryview(self._buffer)
        while True:
            # IO[bytes] does not declare readinto; every stream given here has it.
            count = content.readinto(view)  # type: ignore[attr-defined]
            if not count:
                return
            written = 0
            while written < count:
                written += out.write(view[written:count])

    def _make_hardlink(self, parts: Parts, entry: Entry) -> None:
        source_parts = _split(entry.linkname)
        if not source_parts:
            raise _RefusedError("its hardlink names the target directory")
        if source_parts == parts:
            raise _RefusedError("it is a hardlink to itself")
        try:
            source_fd = self._resolve(source_parts[:-1], create=False)
        except FileNotFoundError:
            raise _RefusedError(
                f"its hardlink target {entry.linkname!r} does not exist in the target"
            ) from None
        try:
            parent_fd = self._replace(parts)
            try:
                os.link(
                    source_parts[-1],
                    parts[-1],
                    src_dir_fd=source_fd,
                    dst_dir_fd=parent_fd,
                    follow_symlinks=False,
                )
            except FileNotFoundError:
                raise _RefusedError(
                    f"its hardlink target {entry.linkname!r} does not exist in the "
                    "target (with whiteout_format='overlay' the target must be in "
                    "the same layer)"
                ) from None
            except PermissionError:
                raise _RefusedError(
                    f"its hardlink target {entry.linkname!r} is a directory"
                ) from None
        finally:
            os.close(source_fd)

    def _make_special(self, parts: Parts, entry: Entry) -> None:
        name = parts[-1]
        if entry.type is EntryType.FIFO:
            parent_fd = self._replace(parts)
            os.mkfifo(name, 0o600, dir_fd=parent_fd)
        else:
            if not self._privileged:
                log.warning(
                    "skipping device node %s: device nodes are made only when "
                    "unpacking as root",
                    "/".join(parts),
                )
                return
            kind = stat.S_IFCHR if entry.type is EntryType.CHAR_DEVICE else stat.S_IFBLK
            parent_fd = self._replace(parts)
            device = os.makedev(entry.devmajor, entry.devminor)
            os.mknod(name, kind | 0o600, device, dir_fd=parent_fd)
        self._own(parent_fd, name, entry)
        self._chmod_node(parent_fd, name, entry)
        self._touch(parent_fd, name, entry)

    def _chmod_node(self, parent_fd: int, name: str, entry: Entry) -> None:
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
        try:
            kind = stat.S_IFMT(os.fstat(fd).st_mode)
            if kind not in (stat.S_IFIFO, stat.S_IFCHR, stat.S_IFBLK):
                raise _RefusedError("it was replaced while it was being made")
            proc_link = Path(f"/proc/self/fd/{fd}")
            if proc_link.exists():
                proc_link.chmod(self._mode(entry))
            else:
                os.chmod(name, self._mode(entry), dir_fd=parent_fd)
        finally:
            os.close(fd)

    def _own(self, parent_fd: int, name: str, entry: Entry) -> None:
        if self._privileged:
            os.chown(
                name, entry.uid, entry.gid, dir_fd=parent_fd, follow_symlinks=False
            )

    def _touch(self, parent_fd: int, name: str, entry: Entry) -> None:
        when = entry.mtime * 10**9
        os.utime(name, ns=(when, when), dir_fd=parent_fd, follow_symlinks=False)

    def _set_xattrs(self, fd: int, entry: Entry) -> None:
        for key, value in sorted(entry.xattrs.items()):
            if key.startswith(_OVERLAY_XATTR_PREFIXES):
                log.warning(
                    "not copying xattr %s of %s: overlay's own attributes are "
                    "never taken from a layer",
                    key,
                    entry.path,
                )
                continue
            if not self._privileged and key.startswith(_PRIVILEGED_XATTR_PREFIXES):
                log.info("skipping xattr %s of %s: needs root", key, entry.path)
                continue
            try:
                os.setxattr(fd, key, value)
            except OSError as exc:
                log.info("cannot set xattr %s on %s: %s", key, entry.path, exc.strerror)

    # --- the end -----------------------------------------------------------------

    def finish(self) -> None:
        """Apply the deferred directory modes and mtimes, deepest first."""
        self._forget_cached()
        for parts in sorted(self._directories, key=len, reverse=True):
            metadata = self._directories[parts]
            try:
                fd = self._open_final_directory(parts)
            except (FileNotFoundError, NotADirectoryError, _RefusedError):
                continue
            try:
                os.fchmod(fd, metadata.mode)
                when = metadata.mtime * 10**9
                os.utime(fd, ns=(when, when))
            finally:
                os.close(fd)

    def _open_final_directory(self, parts: Parts) -> int:
        if not parts:
            return os.dup(self._root_fd)
        parent_fd = self._resolve(parts[:-1], create=False)
        try:
            return os.open(parts[-1], _DIR_FLAGS, dir_fd=parent_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise NotADirectoryError(exc.errno, exc.strerror) from exc
            raise
        finally:
            os.close(parent_fd)
