"""COPY and ADD steps: choose the files, key the cache, write the layer.

A COPY reads from a source tree (the context, a named context, or the unpacked
filesystem of a stage or image for ``--from``), picks files with Docker's rules
(:mod:`platforge.build.context`), and writes them as one layer
(:mod:`platforge.build.snapshot`). Here-documents (``COPY <<EOF /file``) become
files of a small scratch tree. ``--chown`` names come from the image's own
``/etc/passwd`` and ``/etc/group``; ``--link`` makes the layer independent of
what is below it (parents are created as new directories).

ADD adds three things to COPY:

* a local tar archive (plain, gzip or zstd, recognised by content, not by name)
  is extracted into the destination instead of copied;
* an ``http://`` or ``https://`` URL is downloaded once per build and shared by
  every platform; ``--checksum=sha256:…`` is verified; the file lands with mode
  0600 as Docker does;
* for archives, ``--chown`` and ``--chmod`` apply to every extracted entry.

Limitations: Git URLs (``ADD https://…/repo.git``) are not supported (use a named
context); an archive's files are spooled to disk (the store's scratch space)
before its layer is written; ``COPY --link`` layers are rebuilt, not rebased,
when a lower layer changes.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import httpx

from platforge.build.chown import ModeSpec, Owner, parse_chmod, resolve_owner
from platforge.build.context import CopyItem, SourceTree, join_dest
from platforge.build.snapshot import LayerOptions, copy_entries, write_entries
from platforge.errors import BuildError, ContentError
from platforge.oci import compression as codec
from platforge.oci.layer import Entry, clean_path, entry_from_tarinfo

if TYPE_CHECKING:
    from collections.abc import Iterator

    from platforge.build.context import FileHasher
    from platforge.build.image import ImageState, ImageTree, LayerRef
    from platforge.build.store import Store
    from platforge.dockerfile.plan import Step

__all__ = ["CopyPlan", "UrlFetcher", "plan_copy", "write_copy"]

log = logging.getLogger("platforge.build.copy_step")

_URL_PREFIXES = ("http://", "https://")


@dataclass
class UrlFetcher:
    """Downloads ADD URLs once per build into the store's scratch space."""

    directory: Path
    _files: dict[str, tuple[Path, int]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _locks: dict[str, threading.Lock] = field(default_factory=dict)
    # (url, checksum) pairs already checked: every platform asks, one hashes.
    _verified: set[tuple[str, str]] = field(default_factory=set)

    def fetch(self, url: str, checksum: str | None) -> tuple[Path, int]:
        """The downloaded file and its Last-Modified time (0 when not given)."""
        with self._lock:
            lock = self._locks.setdefault(url, threading.Lock())
        with lock:
            if url not in self._files:
                self._files[url] = self._download(url)
            path, mtime = self._files[url]
            if checksum and (url, checksum) not in self._verified:
                self._verify(url, path, checksum)
                self._verified.add((url, checksum))
        return path, mtime

    @staticmethod
    def _verify(url: str, path: Path, checksum: str) -> None:
        algorithm, _, expected = checksum.partition(":")
        if algorithm != "sha256" or len(expected) != 64:
            raise BuildError(f"ADD --checksum={checksum}: use sha256:<64 hex digits>")
        actual = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                actual.update(chunk)
        if actual.hexdigest() != expected:
            raise BuildError(
                f"ADD {url}: content has sha256:{actual.hexdigest()}, not "
                f"{checksum}; fix the checksum or the URL"
            )

    def _download(self, url: str) -> tuple[Path, int]:
        self.directory.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha256(url.encode()).hexdigest()
        target = self.directory / name
        partial = self.directory / f"{name}.part"
        log.info("downloading %s", url)
        try:
            with httpx.stream("GET", url, follow_redirects=True, timeout=60) as resp:
                if resp.status_code != 200:
                    raise BuildError(
                        f"ADD {url}: the server answered {resp.status_code}; "
                        "check the URL"
                    )
                with partial.open("wb") as fh:
                    for chunk in resp.iter_bytes(1 << 20):
                        fh.write(chunk)
                modified = resp.headers.get("last-modified")
        except httpx.HTTPError as exc:
            partial.unlink(missing_ok=True)
            raise BuildError(
                f"ADD {url}: download failed ({exc}); check the URL"
            ) from None
        partial.replace(target)
        mtime = 0
        if modified:
            try:
                mtime = int(parsedate_to_datetime(modified).timestamp())
            except (TypeError, ValueError):
                mtime = 0
        return target, mtime


@dataclass
class CopyPlan:
    """What a COPY/ADD step will write, known before any byte is written."""

    items: list[CopyItem]
    archives: list[tuple[Path, str]]  # ADD: (archive file, destination directory)
    owner: Owner | None
    chmod: ModeSpec | None
    link: bool
    content_key: str


def _is_archive(path: Path) -> bool:
    with path.open("rb") as fh:
        # A whole tar header: a tar whose first name starts like a magic
        # number ("BZh...") is still a tar (codec.detect needs PEEK_SIZE bytes).
        head = fh.read(codec.PEEK_SIZE)
    try:
        kind = codec.detect(head)
    except ContentError:
        return False
    if kind not in (
        codec.Compression.NONE,
        codec.Compression.GZIP,
        codec.Compression.ZSTD,
    ):
        return False
    try:
        with path.open("rb") as raw:
            stream = codec.open_reader(raw)
            block = stream.read(512)
    except (OSError, ValueError, EOFError, ContentError) as exc:
        log.debug("not an archive: %s (%s)", path, exc)
        return False
    return len(block) == 512 and block[257:262] == b"ustar"


def _heredoc_tree(step: Step, scratch: Path) -> tuple[SourceTree, list[str]]:
    names = []
    for doc in step.heredocs:
        path = scratch / doc.name
        path.write_text(doc.content)
        path.chmod(0o644)
        names.append(doc.name)
    return SourceTree(scratch, None, name="here-documents"), names


def plan_copy(
    step: Step,
    state: ImageState,
    *,
    tree: ImageTree | None,
    source: SourceTree,
    scratch: Path,
    hasher: FileHasher,
    urls: UrlFetcher,
) -> CopyPlan:
    """Resolve a COPY/ADD step into the items it writes and a content key."""
    keyword = step.keyword
    words = list(step.args)
    if len(words) < 2 and not step.heredocs:
        raise BuildError(f"{keyword} needs a source and a destination")
    link = "link" in step.flags
    dest, dest_is_dir = _destination(words[-1], state, tree, link=link)
    heredoc_names = {f"<<{d.name}" for d in step.heredocs} | {
        f"<<-{d.name}" for d in step.heredocs
    }
    sources = [w for w in words[:-1] if w not in heredoc_names]
    owner = _owner(step, tree, keyword)
    chmod = (
        parse_chmod(step.flags["chmod"], instruction=keyword)
        if step.flags.get("chmod")
        else None
    )
    excludes = step.flag_lists.get("exclude", [])
    parents = "parents" in step.flags and step.flags["parents"] != "false"
    items: list[CopyItem] = []
    archives: list[tuple[Path, str]] = []
    key = hashlib.sha256()
    if step.heredocs:
        doc_tree, names = _heredoc_tree(step, scratch)
        items += doc_tree.select(
            names, dest, instruction=keyword, dest_is_dir_in_image=dest_is_dir
        )
    local: list[str] = []
    for word in sources:
        if keyword == "ADD" and word.startswith(_URL_PREFIXES):
            items.append(
                _url_item(word, dest, dest_is_dir, urls, step.flags.get("checksum"))
            )
            key.update(f"url {word} {step.flags.get('checksum', '')}\n".encode())
            continue
        local.append(word)
    if local:
        selected = source.select(
            local,
            dest,
            excludes=excludes,
            parents=parents,
            instruction=keyword,
            dest_is_dir_in_image=dest_is_dir,
        )
        if keyword == "ADD":
            for item in selected:
                if (
                    item.kind == "file"
                    and item.source is not None
                    and _is_archive(item.source)
                ):
                    target = dest.rstrip("/") or "/"
                    archives.append((item.source, target))
                else:
                    items.append(item)
        else:
            items += selected
    key.update(hasher.items_digest(items).encode())
    for archive, target in archives:
        key.update(f"archive {target} {hasher.file_digest(archive)}\n".encode())
    owner_text = f"{owner.uid}:{owner.gid}" if owner else ""
    key.update(
        f"owner {owner_text} chmod {step.flags.get('chmod', '')} link {link}".encode()
    )
    return CopyPlan(items, archives, owner, chmod, link, key.hexdigest())


def _destination(
    word: str, state: ImageState, tree: ImageTree | None, *, link: bool
) -> tuple[str, bool]:
    """Where a COPY writes, relative to WORKDIR and through the image's links."""
    workdir = str(state.run_config.get("WorkingDir") or "/")
    dest = join_dest(workdir, word)
    dest_is_dir = (
        tree is not None and not link and tree.is_dir(dest)
    ) or dest.endswith("/")
    if tree is not None and not link:
        dest = tree.real_path(dest)
    return dest, dest_is_dir


def _owner(step: Step, tree: ImageTree | None, keyword: str) -> Owner | None:
    spec = step.flags.get("chown")
    if not spec:
        return None
    passwd = tree.read_small("etc/passwd") if tree is not None else None
    group = tree.read_small("etc/group") if tree is not None else None
    return resolve_owner(spec, passwd, group, instruction=keyword)


def _url_item(
    url: str, dest: str, dest_is_dir: bool, urls: UrlFetcher, checksum: str | None
) -> CopyItem:
    path, mtime = urls.fetch(url, checksum)
    if dest_is_dir:
        name = PurePosixPath(httpx.URL(url).path).name or "index.html"
        target = str(PurePosixPath(dest.rstrip("/") or "/", name))
    else:
        target = dest
    return CopyItem(
        dest=target,
        kind="file",
        source=path,
        mode=0o600,
        mtime=mtime,
        size=path.stat().st_size,
    )


def _member_name(name: str) -> str | None:
    """An archive member's name as layer entries spell it (None if it climbs out)."""
    try:
        return clean_path(name)
    except ContentError:
        return None


def _link_member(member: tarfile.TarInfo) -> str | None:
    """The member a hard link joins."""
    return _member_name(member.linkname)


def _archive_entries(
    archive: Path,
    target: str,
    owner: Owner | None,
    chmod: ModeSpec | None,
    scratch: Path,
) -> Iterator[Entry]:
    """Entries of a tar archive placed under ``target``.

    Each regular file's content is streamed into a file under ``scratch`` (the
    layer writer reads it from there), so memory does not grow with the archive;
    owners, modes and times come from the archive's headers.
    """
    base = target.strip("/")
    spool = Path(tempfile.mkdtemp(prefix="archive-", dir=scratch))
    members: set[str] = set()
    with archive.open("rb") as raw:
        stream = codec.open_reader(raw)
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for number, member in enumerate(tar):
                entry = entry_from_tarinfo(member)
                if entry.path == ".":
                    continue
                joins = _link_member(member) if member.islnk() else None
                if member.islnk() and (joins is None or joins not in members):
                    # A hard link can only join a file the archive already
                    # wrote; anything else would make a layer no one can unpack.
                    raise BuildError(
                        f"ADD {archive.name}: member {entry.path} is a hard link "
                        f"to {member.linkname}, which is not an earlier member of "
                        "the archive; fix the archive"
                    )
                if (name := _member_name(entry.path)) is not None:
                    members.add(name)
                path = f"{base}/{entry.path}" if base else entry.path
                mode = entry.mode
                if chmod is not None and member.type != tarfile.SYMTYPE:
                    mode = chmod.apply(mode, is_dir=member.isdir())
                uid, gid = (owner.uid, owner.gid) if owner else (entry.uid, entry.gid)
                linkname = entry.linkname
                if joins is not None:
                    linkname = f"{base}/{joins}" if base else joins
                source: Path | None = None
                if member.isreg():
                    source = spool / str(number)
                    extracted = tar.extractfile(member)
                    with source.open("wb") as out:
                        if extracted is not None:
                            shutil.copyfileobj(extracted, out, 1 << 20)
                yield Entry(
                    path=path,
                    type=entry.type,
                    mode=mode,
                    uid=uid,
                    gid=gid,
                    size=member.size if source is not None else 0,
                    mtime=entry.mtime,
                    linkname=linkname,
                    devmajor=entry.devmajor,
                    devminor=entry.devminor,
                    source=source,
                )


def write_copy(
    store: Store,
    plan: CopyPlan,
    *,
    tree: ImageTree | None,
    options: LayerOptions,
    scratch: Path,
) -> tuple[LayerRef, list[Entry]]:
    """Write the layer a :class:`CopyPlan` describes; return it and its entries."""
    started = time.monotonic()
    entries: list[Entry] = list(
        copy_entries(
            plan.items,
            tree=None if plan.link else tree,
            owner=plan.owner,
            chmod=plan.chmod,
            epoch=options.epoch,
        )
    )
    seen = {entry.path for entry in entries}
    for archive, target in plan.archives:
        for entry in _archive_entries(archive, target, plan.owner, plan.chmod, scratch):
            if entry.path not in seen:
                seen.add(entry.path)
                entries.append(entry)
    layer = write_entries(store, entries, options)
    log.debug("copy layer %s in %.3fs", layer.digest, time.monotonic() - started)
    return layer, entries
