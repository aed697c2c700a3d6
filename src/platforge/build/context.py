"""Source trees for COPY and ADD: the build context, named contexts, other stages.

A *source tree* is a directory whose files a COPY may read: the build context
(with ``.dockerignore`` applied, so an ignored file is invisible to every COPY), a
named context given as a directory, or the unpacked filesystem of a stage or image
for ``COPY --from``. :meth:`SourceTree.select` turns a COPY's source words into the
files to copy and where each lands, with Docker's rules:

* sources are relative to the tree's root; ``..`` cannot climb out of it;
* wildcards ``*``, ``?``, ``[...]`` match within one path component, ``**`` any
  number of components; a wildcard that matches nothing is an error, as is a
  missing plain source;
* a directory source copies its *contents* into the destination, never the
  directory itself (unless ``--parents`` keeps the path);
* several sources, or a wildcard, need a destination ending in ``/``;
* ``--exclude`` patterns drop matching paths (relative to the source's root);
* ``--parents`` keeps each match's path below the root, or below a ``/./`` pivot.

Every path a COPY names is resolved with the tree's root as ``/``, as BuildKit
and buildah do: a link met on the way (``leak -> /etc/passwd``, ``up -> ../``)
is followed *inside* the tree and never reaches a host file outside it, which
usually makes such a source "not found". A source named directly (or matched by
a wildcard) that is a link is followed that way; links inside a copied directory
are copied as links. Hard links are copied as separate files.

:class:`FileHasher` gives the content hash of what a COPY reads, remembering
hashes by (path, size, mtime, inode) in a small JSON file so a rebuild of an
unchanged context stats files instead of reading them.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import re
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Literal

from platforge.errors import BuildError, SandboxError
from platforge.oci.layout import write_atomic

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from platforge.dockerfile.dockerignore import IgnoreMatcher

__all__ = [
    "CopyItem",
    "FileHasher",
    "SourceTree",
    "has_wildcard",
    "join_dest",
]

log = logging.getLogger("platforge.build.context")

EntryKind = Literal["file", "dir", "symlink", "fifo", "char-device", "block-device"]
_SPECIAL: dict[int, EntryKind] = {
    stat.S_IFIFO: "fifo",
    stat.S_IFCHR: "char-device",
    stat.S_IFBLK: "block-device",
}
_WILDCARD = re.compile(r"[*?\[]")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class CopyItem:
    """One path a COPY writes: where it lands in the image and what it is.

    ``dest`` is absolute in the image (``/usr/local/bin/app``); ``source`` is the
    host path to read for a file; ``mode`` holds the permission bits and
    ``mtime`` the source's modification time in seconds.
    """

    dest: str
    kind: EntryKind
    source: Path | None
    mode: int
    mtime: int
    size: int = 0
    link: str = ""
    # (size, mtime in ns, inode) from the walk: lets the hasher skip a stat.
    stamp: tuple[int, int, int] | None = None
    rdev: int = 0  # a device's number (major and minor)


def has_wildcard(word: str) -> bool:
    return _WILDCARD.search(word) is not None


def join_dest(workdir: str, dest: str) -> str:
    """The absolute destination of a COPY: relative ones start at WORKDIR."""
    base = PurePosixPath("/") / (workdir or "/")
    full = str(PurePosixPath(base, dest)) if not dest.startswith("/") else dest
    normal = os.path.normpath(full)
    normal = "/" + normal.lstrip("/")
    if dest.endswith("/") and normal != "/":
        normal += "/"
    return normal


def _component_match(pattern: str, name: str) -> bool:
    # Go's filepath.Match spells class negation [^...]; fnmatch spells it [!...].
    return fnmatch.fnmatchcase(name, pattern.replace("[^", "[!"))


def _pattern_match(pattern: str, relpath: str) -> bool:
    """Match a slash-separated ``relpath`` against ``pattern`` with ``**``."""
    pat = [p for p in pattern.split("/") if p not in ("", ".")]
    parts = [p for p in relpath.split("/") if p]

    def go(i: int, j: int) -> bool:
        if i == len(pat):
            return j == len(parts)
        if pat[i] == "**":
            return any(go(i + 1, k) for k in range(j, len(parts) + 1))
        if j == len(parts):
            return False
        return _component_match(pat[i], parts[j]) and go(i + 1, j + 1)

    return go(0, 0)


@dataclass
class SourceTree:
    """A directory COPY reads from, optionally filtered by ``.dockerignore``."""

    root: Path
    ignore: IgnoreMatcher | None = None
    name: str = "context"
    # Paths (relative, with "/") never part of the tree, nor anything below
    # them: platforge's own outputs when they lie inside the context.
    hidden: frozenset[str] = frozenset()

    def _hides(self, relpath: str) -> bool:
        return any(
            relpath == path or relpath.startswith(f"{path}/") for path in self.hidden
        )

    def _visible(self, relpath: str, *, is_dir: bool) -> bool:
        if self.hidden and self._hides(relpath):
            return False
        return self.ignore is None or not self.ignore.excluded(relpath, is_dir=is_dir)

    def _safe_rel(self, word: str) -> str:
        # Sources can never leave the tree: "/a", "../a" and "a/../../b" all
        # resolve inside it, as Docker clamps them.
        normal = os.path.normpath("/" + word.replace("\\", "/"))
        return normal.lstrip("/")

    def _real(self, rel: str) -> str:
        """``rel`` with every link on the way resolved inside the tree."""
        if not rel:
            return ""
        # Imported here: the sandbox module is heavy and only its path logic
        # (the same a RUN's mounts use) is needed.
        from platforge.build.sandbox import resolve_in_root  # noqa: PLC0415

        try:
            return resolve_in_root(self.root, rel)
        except SandboxError:
            raise BuildError(
                f"{rel} in the {self.name}: too many levels of symbolic links; "
                "fix the link"
            ) from None

    def host_path(self, word: str, *, instruction: str = "COPY") -> Path:
        """The host path of ``word`` in the tree, links resolved inside it."""
        real = self._real(self._safe_rel(word))
        path = self.root / real if real else self.root
        if not path.exists() or not self._visible(real, is_dir=path.is_dir()):
            raise self._missing(instruction, word)
        return path

    def _missing(self, instruction: str, word: str) -> BuildError:
        where = (
            f"the build context {self.root.absolute()}"
            if self.name == "context"
            else self.name
        )
        normal = os.path.normpath(word.replace("\\", "/"))
        if normal == ".." or normal.startswith("../"):
            # Docker reads "../x" as "x" of the context; say why it was not found.
            return BuildError(
                f"{instruction} {word}: the path leads outside {where}, which is all "
                "a build can read; move the file into it, or pass its directory "
                f"with --build-context NAME=DIR and use {instruction} --from=NAME"
            )
        link = self._final_link(word)
        if link is not None:
            fix = (
                "copy the file it points to into the context"
                if self.name == "context"
                else "make the link point inside it"
            )
            return BuildError(
                f"{instruction} {word}: it is a symbolic link to {link}, which is "
                f"looked up inside {where} (a build reads nothing outside it) and is "
                f"not there; {fix}"
            )
        return BuildError(
            f"{instruction} {word}: no such file or directory in the "
            f"{self.name}; check the path and .dockerignore"
        )

    def _final_link(self, word: str) -> str | None:
        """Where ``word`` points when it is itself a symbolic link in the tree."""
        if has_wildcard(word):
            return None
        rel = self._safe_rel(word)
        parent = self._real(os.path.dirname(rel))  # noqa: PTH120 - a "/" string
        path = self.root / parent / os.path.basename(rel)  # noqa: PTH119
        if not rel or not path.is_symlink():
            return None
        return os.readlink(path)  # noqa: PTH115 - Path.readlink drops a final "/"

    def _children(self, prefix: str) -> list[tuple[str, bool]]:
        """Names below ``prefix`` and whether each is a directory (not a link)."""
        real = self._real(prefix)
        base = self.root / real if real else self.root
        if not base.is_dir():
            return []
        with os.scandir(base) as it:
            return sorted((e.name, e.is_dir(follow_symlinks=False)) for e in it)

    def _glob(self, pattern: str) -> list[str]:
        parts = [p for p in pattern.split("/") if p]
        found: set[str] = set()
        self._glob_from("", parts, found)
        return sorted(found)

    def _glob_from(self, prefix: str, parts: list[str], found: set[str]) -> None:
        if not parts:
            found.add(prefix)
            return
        part, rest = parts[0], parts[1:]
        join = (lambda c: f"{prefix}/{c}") if prefix else (lambda c: c)
        if part == "**":
            self._glob_from(prefix, rest, found)
            for child, is_dir in self._children(prefix):
                rel = join(child)
                if is_dir and self._visible(rel, is_dir=True):
                    self._glob_from(rel, parts, found)
        elif not has_wildcard(part):
            real = self._real(prefix)
            if os.path.lexists(self.root / real / part if real else self.root / part):
                self._glob_from(join(part), rest, found)
        else:
            for child, _ in self._children(prefix):
                if _component_match(part, child):
                    self._glob_from(join(child), rest, found)

    def select(
        self,
        sources: Sequence[str],
        dest: str,
        *,
        excludes: Sequence[str] = (),
        parents: bool = False,
        instruction: str = "COPY",
        dest_is_dir_in_image: bool = False,
    ) -> list[CopyItem]:
        """The files, directories and links a COPY of ``sources`` writes.

        ``dest`` is absolute (see :func:`join_dest`); ``dest_is_dir_in_image``
        says whether it already names a directory in the image being built.
        """
        wildcard = any(has_wildcard(s) for s in sources)
        to_dir = dest.endswith("/") or dest_is_dir_in_image
        if (len(sources) > 1 or wildcard) and not dest.endswith("/"):
            if not dest_is_dir_in_image:
                raise BuildError(
                    f"{instruction} with several sources or a wildcard needs a "
                    f"destination ending in '/', got {dest!r}; add the slash"
                )
            to_dir = True
        dest_dir = dest.rstrip("/") or "/"
        items: dict[str, CopyItem] = {}
        for word in sources:
            pivot = ""
            if parents and "/./" in "/" + word:
                pivot = self._safe_rel(("/" + word).split("/./", 1)[0])
            rel = self._safe_rel(word)
            found = self._glob(rel) if has_wildcard(rel) else [rel]
            # (as named, as resolved in the tree): the name gives the
            # destination, the resolved path the content.
            matches = [(m, self._real(m)) for m in found if not _excluded(m, excludes)]
            matches = [
                (m, real)
                for m, real in matches
                if m == ""
                or (
                    self._visible(m, is_dir=(self.root / real).is_dir())
                    and self._visible(real, is_dir=(self.root / real).is_dir())
                )
            ]
            if not matches:
                raise self._missing(instruction, word)
            for match, real in matches:
                if match and not (self.root / real).exists():
                    raise self._missing(instruction, word)
                self._add_match(
                    items,
                    match,
                    real,
                    dest_dir=dest_dir,
                    to_dir=to_dir,
                    parents=parents,
                    pivot=pivot,
                    excludes=excludes,
                )
        return [items[k] for k in sorted(items)]

    def _add_match(
        self,
        items: dict[str, CopyItem],
        match: str,
        real: str,
        *,
        dest_dir: str,
        to_dir: bool,
        parents: bool,
        pivot: str,
        excludes: Sequence[str],
    ) -> None:
        path = self.root / real if real else self.root
        st = path.stat()  # resolved inside the tree: no link is left to follow
        if parents and match:
            keep = match[len(pivot) :].lstrip("/") if match.startswith(pivot) else match
            target_base = _posix_join(dest_dir, keep)
        else:
            target_base = None
        if stat.S_ISDIR(st.st_mode):
            base = target_base or dest_dir
            if target_base is not None:
                items[base] = _item(base, path, st)
            for rel, child, cst in self._walk(real, excludes):
                target = _posix_join(base, rel)
                items[target] = _item(target, child, cst)
            return
        if target_base is not None:
            target = target_base
        elif to_dir:
            target = _posix_join(dest_dir, PurePosixPath(match).name)
        else:
            target = dest_dir
        items[target] = _item(target, path, st)

    def _walk(
        self, top: str, excludes: Sequence[str]
    ) -> Iterator[tuple[str, Path, os.stat_result]]:
        """Everything below ``top`` (relative to it), parents before children."""
        start = self.root / top if top else self.root
        stack = [""]
        while stack:
            rel_dir = stack.pop()
            here = start / rel_dir if rel_dir else start
            with os.scandir(here) as it:
                entries = sorted(it, key=lambda e: e.name)
            subdirs = []
            for entry in entries:
                rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                full_rel = f"{top}/{rel}" if top else rel
                is_dir = entry.is_dir(follow_symlinks=False)
                if not self._visible(full_rel, is_dir=is_dir):
                    if (
                        is_dir
                        and self.ignore is not None
                        and not self.ignore.can_prune(full_rel)
                        and not self._hides(full_rel)
                    ):
                        subdirs.append(rel)  # a later "!" may re-include a child
                    continue
                if _excluded(rel, excludes) or _excluded(full_rel, excludes):
                    continue
                yield rel, Path(entry.path), entry.stat(follow_symlinks=False)
                if is_dir:
                    subdirs.append(rel)
            stack.extend(reversed(subdirs))


def _excluded(relpath: str, excludes: Sequence[str]) -> bool:
    return any(_pattern_match(p, relpath) for p in excludes if relpath)


def _posix_join(base: str, rel: str) -> str:
    # Plain string work: this runs once per copied file (100,000s of them).
    if not rel:
        return base
    if rel.startswith("/"):
        return rel
    return f"{base.rstrip('/')}/{rel}" if base != "/" else f"/{rel}"


def _item(dest: str, path: Path, st: os.stat_result) -> CopyItem:
    if stat.S_ISLNK(st.st_mode):
        kind: EntryKind = "symlink"
        link = os.readlink(path)  # noqa: PTH115 - Path.readlink drops a final "/"
    elif stat.S_ISDIR(st.st_mode):
        kind, link = "dir", ""
    elif stat.S_ISREG(st.st_mode):
        kind, link = "file", ""
    elif stat.S_IFMT(st.st_mode) in _SPECIAL:
        # FIFOs and device nodes are copied as what they are, as BuildKit does.
        kind, link = _SPECIAL[stat.S_IFMT(st.st_mode)], ""
    else:
        raise BuildError(
            f"COPY to {dest}: the source is a socket, which cannot be copied; "
            "remove it, or leave it out with --exclude or .dockerignore"
        )
    return CopyItem(
        dest=dest,
        kind=kind,
        source=path,
        mode=stat.S_IMODE(st.st_mode),
        mtime=int(st.st_mtime),
        size=st.st_size if kind == "file" else 0,
        link=link,
        stamp=(st.st_size, st.st_mtime_ns, st.st_ino),
        rdev=st.st_rdev if kind.endswith("-device") else 0,
    )


@dataclass
class FileHasher:
    """Content hashes of files, remembered by (path, size, mtime, inode).

    The memory lives in ``state_file`` (JSON, written atomically by :meth:`save`).
    A hash is reused only when all four match, so an edited file, even one edited
    within the same second by a tool that keeps its size, is read again when its
    inode or nanosecond mtime changes.
    """

    state_file: Path | None = None
    _known: dict[str, list[object]] = field(default_factory=dict)
    _dirty: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.state_file is not None and self.state_file.exists():
            try:
                self._known = json.loads(self.state_file.read_text())
            except (OSError, ValueError):
                self._known = {}

    def file_digest(
        self, path: Path, identity: tuple[int, int, int] | None = None
    ) -> str:
        """The sha256 of ``path``; ``identity`` is its (size, mtime ns, inode)."""
        if identity is None:
            st = path.stat()
            identity = (st.st_size, st.st_mtime_ns, st.st_ino)
        stamp: list[object] = list(identity)
        key = str(path)
        with self._lock:
            remembered = self._known.get(key)
        if remembered is not None and remembered[:3] == stamp:
            return str(remembered[3])
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
        value = digest.hexdigest()
        with self._lock:
            self._known[key] = [*stamp, value]
            self._dirty = True
        return value

    def items_digest(self, items: Sequence[CopyItem]) -> str:
        """One hash over what a COPY writes: paths, kinds, modes, links, contents."""
        digest = hashlib.sha256()
        for item in items:
            content = (
                self.file_digest(item.source, item.stamp)
                if item.kind == "file" and item.source is not None
                else ""
            )
            if item.rdev:
                content = f"{os.major(item.rdev)},{os.minor(item.rdev)}"
            line = f"{item.dest}\0{item.kind}\0{item.mode:o}\0{item.link}\0{content}\n"
            digest.update(line.encode("utf-8", "surrogateescape"))
        return digest.hexdigest()

    def save(self) -> None:
        if self.state_file is None or not self._dirty:
            return
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            data = json.dumps(self._known)
            self._dirty = False
        write_atomic(self.state_file, data.encode())
