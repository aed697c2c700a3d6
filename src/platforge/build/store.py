"""The local store: one OCI image layout shared by pulls, builds and the cache.

Every blob a build pulls or makes lands here once, named by its digest, so
platforms and builds share base layers, and skopeo or umoci can read the store
like any other layout (``oci:$PLATFORGE_STORE``). Next to the standard layout
files the store keeps platforge's own records in ``platforge/``:

* ``platforge/cache/<hex>.json`` — the layer cache: a step's cache key mapped to
  the image state after the step (the config document and the layer
  descriptors). The layers live in the layout; a record whose layers are gone
  is ignored.
* ``platforge/file-hashes.json`` — content hashes of context files by stat data.
* ``platforge/trees/<hex>.json`` — the paths a layer holds (from its headers), so
  COPY and WORKDIR can ask "is this a directory, where does this link lead"
  without decompressing layers again.
* ``platforge/tmp/`` — scratch space for RUN upper directories and unpacked
  ``COPY --from`` sources, removed as each step ends.

Writes are atomic: a blob goes to a temporary file in its final directory and is
renamed to its digest once the bytes are known; a cache record likewise.

Temporary blobs and scratch directories that a killed build left and nobody has
touched for a day are removed when a store is opened. Limitation: nothing else
is ever removed from the store; delete the directory (or a record under
``platforge/cache``) to reclaim space or forget cached steps.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from platforge.errors import LayoutError
from platforge.oci.digest import Digest
from platforge.oci.layout import Layout, write_atomic

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["BlobSink", "Store", "default_store_path"]

log = logging.getLogger("platforge.build.store")

# Temporary files and scratch directories older than this belong to no build.
_LEFTOVER_AGE = 24 * 3600


def default_store_path() -> Path:
    """``$PLATFORGE_STORE``, else ``~/.local/share/platforge/store``."""
    env = os.environ.get("PLATFORGE_STORE")
    if env:
        return Path(env)
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "platforge" / "store"


@dataclass
class BlobSink:
    """A temporary file in the store that becomes a blob once its digest is known."""

    file: IO[bytes]
    path: Path


class Store:
    """The local store at ``path`` (created on first use)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.blobs = path / "blobs" / "sha256"
        self.own = path / "platforge"
        self.cache_dir = self.own / "cache"
        self.tmp = self.own / "tmp"
        try:
            # The blob side is a plain OCI layout; only platforge/ is ours.
            self.layout = Layout.create(path)
            for directory in (self.blobs, self.cache_dir, self.tmp):
                directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LayoutError(
                f"cannot use {path} as the store: {exc.strerror or exc}; set "
                "PLATFORGE_STORE to a writable directory"
            ) from None
        self._remove_leftovers()

    def _remove_leftovers(self) -> None:
        """Delete temporary blobs and scratch directories of killed builds.

        A build that ends normally removes its own; one killed with SIGKILL
        leaves them. Only what nobody has touched for a day goes, so the
        files of builds running now are safe.
        """
        cutoff = time.time() - _LEFTOVER_AGE
        for directory, prefix in ((self.blobs, ".tmp-"), (self.tmp, "")):
            with os.scandir(directory) as entries:
                old = [
                    Path(entry.path)
                    for entry in entries
                    if entry.name.startswith(prefix)
                    and entry.stat(follow_symlinks=False).st_mtime < cutoff
                ]
            for leftover in old:
                log.info("removing %s, left by a build that was killed", leftover)
                with contextlib.suppress(OSError):
                    if leftover.is_dir() and not leftover.is_symlink():
                        _remove_tree(leftover)
                    else:
                        leftover.unlink()

    # -- blobs ---------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        algorithm, _, encoded = digest.partition(":")
        if algorithm != "sha256" or len(encoded) != 64:
            raise LayoutError(
                f"store {self.path}: digest {digest!r} is not sha256; "
                "only sha256 content is kept in the store"
            )
        return self.blobs / encoded

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).exists()

    def read_blob(self, digest: str) -> bytes:
        """A small blob (manifest, index, config), verified against its digest."""
        self.blob_path(digest)  # only sha256 is kept
        return self.layout.read_blob(Digest.parse(digest))

    def open_blob(self, digest: str) -> IO[bytes]:
        try:
            return self.blob_path(digest).open("rb")
        except FileNotFoundError:
            raise LayoutError(
                f"store {self.path}: blob {digest} is missing; "
                "rebuild with --no-cache to fetch or make it again"
            ) from None

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        """Store small content (configs, manifests); return ``(digest, size)``."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        target = self.blob_path(digest)
        if not target.exists():
            write_atomic(target, data)
        return digest, len(data)

    @contextlib.contextmanager
    def blob_sink(self) -> Iterator[BlobSink]:
        """A temp file for a blob being written; :meth:`commit` names it.

        When the block raises, or the sink was never committed, the temp file is
        removed: the store never holds a half-written blob.
        """
        fd, name = tempfile.mkstemp(dir=self.blobs, prefix=".tmp-")
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as fh:
                yield BlobSink(fh, path)
        finally:
            path.unlink(missing_ok=True)

    def commit(self, sink: BlobSink, digest: str) -> None:
        sink.file.flush()
        # Blobs are public content: readable by every tool that opens the layout.
        sink.path.chmod(0o644)
        sink.path.replace(self.blob_path(digest))

    # -- cache records ---------------------------------------------------------

    def cache_get(self, key: str) -> dict[str, Any] | None:
        path = self.cache_dir / f"{key}.json"
        try:
            record: dict[str, Any] = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except ValueError:
            log.warning("ignoring unreadable cache record %s", path)
            return None
        wanted = [layer.get("digest", "") for layer in record.get("layers", [])]
        if not all(d and self.has_blob(d) for d in wanted):
            return None
        return record

    def cache_put(self, key: str, record: dict[str, Any]) -> None:
        data = json.dumps(record, separators=(",", ":")).encode()
        write_atomic(self.cache_dir / f"{key}.json", data)

    # -- scratch -------------------------------------------------------------

    @contextlib.contextmanager
    def scratch_dir(self, prefix: str) -> Iterator[Path]:
        """A temporary directory inside the store (same filesystem as blobs)."""
        path = Path(tempfile.mkdtemp(dir=self.tmp, prefix=prefix))
        try:
            yield path
        finally:
            _remove_tree(path)


def _remove_tree(path: Path) -> None:
    # A RUN may leave directories without write permission, or overlay whiteout
    # devices; make each directory writable before deleting its entries.
    if not path.exists():
        return
    for root, dirs, files in os.walk(path, topdown=True):
        for name in dirs:
            full = Path(root, name)
            if not full.is_symlink():
                with contextlib.suppress(OSError):
                    full.chmod(0o700)
        del files
    for root, dirs, files in os.walk(path, topdown=False):
        for name in files:
            Path(root, name).unlink(missing_ok=True)
        for name in dirs:
            full = Path(root, name)
            if full.is_symlink():
                full.unlink()
            else:
                full.rmdir()
    path.rmdir()
