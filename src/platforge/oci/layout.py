"""The OCI image layout: images as plain files in a directory.

::

    DIR/
      oci-layout                 {"imageLayoutVersion":"1.0.0"}
      index.json                 an image index: the layout's entry points
      blobs/sha256/<hex>         every blob, manifest, index and config, by digest

Entries of ``index.json`` are named by the annotation
``org.opencontainers.image.ref.name`` (what skopeo calls the tag in
``oci:DIR:TAG``). platforge's local store, ``--output type=oci`` and what it
pushes from are all layouts, so skopeo, umoci and crane read them too.

Writing is crash-safe: a blob is streamed into a temporary file in its final
directory while it is hashed, checked against the digest and size it should have,
and only then renamed to its name; ``index.json`` is replaced the same way. Changes
to ``index.json`` take an exclusive lock on the layout directory, so concurrent
platforge processes sharing a store do not lose each other's entries.

Limitations: nothing is ever deleted; blobs that no entry reaches stay until the
directory is removed. A process killed outright (SIGKILL, power loss) while writing
a blob leaves its ``blobs/<alg>/.tmp-*`` file behind; such files are never read and
may be deleted whenever no platforge process uses the layout.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import IO, TYPE_CHECKING

from platforge.errors import ContentError, LayoutError, ManifestError
from platforge.oci import mediatypes as mt
from platforge.oci.content import (
    ANNOTATION_REF_NAME,
    Descriptor,
    ImageConfig,
    Index,
    Manifest,
    canonical_json,
    parse_manifest,
)
from platforge.oci.digest import (
    CHUNK_SIZE,
    Digest,
    HashingWriter,
    Readable,
    digest_stream,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

__all__ = ["LAYOUT_DAMAGED", "Layout", "write_atomic"]

log = logging.getLogger("platforge.oci.layout")

# The one advice for a layout whose content does not match its digests: deleting
# the blob would leave a layout with a hole, and a built layout cannot be pulled.
LAYOUT_DAMAGED = (
    "the layout is damaged: build it again or pull/copy the image into a new directory"
)

LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"
BLOBS_DIR = "blobs"
OCTET_STREAM = "application/octet-stream"
# documents bigger than this are not manifests; refusing them bounds memory
MAX_DOCUMENT_SIZE = 4 << 20


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new file only."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        Path(temp).chmod(0o644)
        Path(temp).replace(path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


class Layout:
    """An OCI image layout directory; see the module documentation."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Layout({str(self.path)!r})"

    # -- creating and opening ------------------------------------------------

    @classmethod
    def create(cls, path: str | os.PathLike[str]) -> Layout:
        """Make an empty layout at ``path``, or open the layout already there."""
        layout = cls(path)
        if (layout.path / LAYOUT_FILE).exists():
            return cls.open(path)
        if layout.path.exists() and not layout.path.is_dir():
            raise LayoutError(
                f"cannot create an OCI layout at {layout.path}: it is a file; "
                "choose a directory"
            )
        (layout.path / BLOBS_DIR / "sha256").mkdir(parents=True, exist_ok=True)
        if not (layout.path / INDEX_FILE).exists():
            write_atomic(layout.path / INDEX_FILE, Index.build([]).raw)
        version = {"imageLayoutVersion": mt.OCI_LAYOUT_VERSION}
        write_atomic(layout.path / LAYOUT_FILE, canonical_json(version))
        return layout

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Layout:
        """Open an existing layout, checking its ``oci-layout`` marker."""
        layout = cls(path)
        marker = layout.path / LAYOUT_FILE
        try:
            document = json.loads(marker.read_bytes())
        except FileNotFoundError:
            raise LayoutError(
                f"{layout.path} is not an OCI image layout: {LAYOUT_FILE} is missing; "
                "give the directory an OCI layout was written to"
            ) from None
        except (OSError, ValueError) as exc:
            raise LayoutError(
                f"{marker} is unreadable: {exc}; write the layout again"
            ) from None
        version = (
            document.get("imageLayoutVersion") if isinstance(document, dict) else None
        )
        if version != mt.OCI_LAYOUT_VERSION:
            raise LayoutError(
                f"{marker}: imageLayoutVersion {version!r} is not supported; "
                f"expected {mt.OCI_LAYOUT_VERSION!r}"
            )
        return layout

    # -- blobs ---------------------------------------------------------------

    def blob_path(self, digest: Digest) -> Path:
        return self.path / BLOBS_DIR / digest.algorithm / digest.encoded

    def has_blob(self, digest: Digest) -> bool:
        return self.blob_path(digest).is_file()

    def open_blob(self, digest: Digest) -> IO[bytes]:
        """Open a blob for reading (streaming; the caller closes it)."""
        try:
            return self.blob_path(digest).open("rb")
        except FileNotFoundError:
            raise LayoutError(
                f"blob {digest} is missing from the OCI layout {self.path}; "
                "pull or copy the image into it again"
            ) from None

    def read_blob(self, digest: Digest, *, limit: int = MAX_DOCUMENT_SIZE) -> bytes:
        """Read a small blob (a manifest, index or config) and verify its digest."""
        with self.open_blob(digest) as blob:
            data = blob.read(limit + 1)
        if len(data) > limit:
            raise LayoutError(
                f"blob {digest} in {self.path} is larger than {limit} bytes; "
                "it is not a manifest or config, open it with open_blob instead"
            )
        if Digest.of(data, digest.algorithm) != digest:
            raise LayoutError(
                f"layout {self.path}: blob {digest} is corrupt (its content hashes "
                f"to {Digest.of(data, digest.algorithm)}); {LAYOUT_DAMAGED}"
            )
        return data

    def write_blob(
        self,
        source: bytes | Readable,
        expected: Descriptor | None = None,
        *,
        media_type: str = OCTET_STREAM,
    ) -> Descriptor:
        """Store a blob from bytes or a stream and return its descriptor.

        With ``expected``, the content must have its digest and size, and a blob
        already present is not written again (the stream is then left unread).
        """
        if expected is not None and self.has_blob(expected.digest):
            return expected
        algorithm = expected.digest.algorithm if expected else "sha256"
        directory = self.path / BLOBS_DIR / algorithm
        directory.mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(dir=directory, prefix=".tmp-")
        temp = Path(temp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                writer = HashingWriter(out, algorithm)
                if isinstance(source, bytes | bytearray | memoryview):
                    writer.write(bytes(source))
                else:
                    while chunk := source.read(CHUNK_SIZE):
                        writer.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if expected is not None:
                writer.verify(expected.digest, expected.size)
            digest = writer.digest()
            if self.has_blob(digest):
                # same name, same bytes: keep the file others may have linked
                temp.unlink()
            else:
                temp.chmod(0o644)
                temp.replace(self.blob_path(digest))
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        log.debug("wrote blob", extra={"digest": str(digest), "size": writer.size})
        if expected is not None:
            return expected
        return Descriptor(media_type=media_type, digest=digest, size=writer.size)

    def write_manifest(
        self, document: Manifest | Index, descriptor: Descriptor | None = None
    ) -> Descriptor:
        """Store a manifest or index by its exact bytes; return its descriptor."""
        self.write_blob(document.raw)
        return descriptor or document.descriptor()

    def write_config(
        self, config: ImageConfig, media_type: str = mt.OCI_CONFIG
    ) -> Descriptor:
        """Store an image config (as ``content()`` gives it); return its descriptor."""
        return self.write_blob(config.content(), media_type=media_type)

    def read_manifest(self, descriptor: Descriptor) -> Manifest | Index:
        """Read and parse the manifest or index ``descriptor`` points at."""
        raw = self.read_blob(descriptor.digest)
        media_type = (
            descriptor.media_type
            if mt.is_index(descriptor.media_type)
            or mt.is_manifest(descriptor.media_type)
            else None
        )
        return parse_manifest(raw, media_type)

    def read_config(self, descriptor: Descriptor) -> ImageConfig:
        return ImageConfig.parse(self.read_blob(descriptor.digest))

    # -- index.json ------------------------------------------------------------

    def index(self) -> Index:
        """The parsed ``index.json``, with its exact bytes in ``raw``."""
        path = self.path / INDEX_FILE
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise LayoutError(
                f"{self.path} has no {INDEX_FILE}; it is not a complete OCI layout"
            ) from None
        except OSError as exc:
            raise LayoutError(
                f"cannot read {path}: {exc.strerror or exc}; write the layout again"
            ) from None
        try:
            json.loads(raw)
        except ValueError as exc:
            # Said here, since a document's own error names its digest, and
            # index.json is not addressed by one.
            where = (
                f"line {exc.lineno} column {exc.colno}"
                if isinstance(exc, json.JSONDecodeError)
                else "not UTF-8"
            )
            raise LayoutError(
                f"{path} is not valid JSON ({where}); {LAYOUT_DAMAGED}"
            ) from None
        try:
            return Index.parse(raw)
        except ManifestError as exc:
            raise LayoutError(
                f"{path} is not a valid image index ({exc}); {LAYOUT_DAMAGED}"
            ) from None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # the directory itself is the lock, so no extra file appears in the layout
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _write_index(self, index: Index) -> None:
        write_atomic(self.path / INDEX_FILE, index.raw)

    def set_index(
        self,
        descriptors: Iterable[Descriptor],
        annotations: Mapping[str, str] | None = None,
    ) -> Index:
        """Replace ``index.json`` with these entries."""
        index = Index.build(list(descriptors), annotations)
        with self._locked():
            self._write_index(index)
        return index

    def add_ref(self, descriptor: Descriptor, name: str | None = None) -> Index:
        """Add an entry named ``name``, replacing an entry of the same name in place.

        Without a name the entry is added unnamed, unless the same descriptor is
        already listed.
        """
        if name is not None:
            descriptor = descriptor.with_annotations({ANNOTATION_REF_NAME: name})
        with self._locked():
            current = self.index()
            entries = list(current.manifests)
            for position, entry in enumerate(entries):
                if name is not None and entry.ref_name == name:
                    entries[position] = descriptor
                    break
                if name is None and entry == descriptor:
                    break
            else:
                entries.append(descriptor)
            index = Index.build(entries, current.annotations)
            self._write_index(index)
        log.debug("index entry", extra={"ref": name, "digest": str(descriptor.digest)})
        return index

    def remove_ref(self, name: str) -> Index:
        """Drop the entries named ``name`` (their blobs stay)."""
        with self._locked():
            current = self.index()
            kept = [d for d in current.manifests if d.ref_name != name]
            index = Index.build(kept, current.annotations)
            self._write_index(index)
        return index

    def resolve(self, name: str | None = None) -> Descriptor:
        """The entry named ``name``; without a name, the only entry.

        ``name`` may also be a digest (``sha256:…``) of an entry.
        """
        entries = self.index().manifests
        if name is None:
            if len(entries) == 1:
                return entries[0]
            if not entries:
                raise LayoutError(
                    f"the OCI layout {self.path} has no images in {INDEX_FILE}"
                )
            raise LayoutError(
                f"the OCI layout {self.path} holds {len(entries)} images "
                f"({self._names(entries)}); name one"
            )
        matches = [d for d in entries if d.ref_name == name]
        if not matches and name.startswith(("sha256:", "sha512:")):
            matches = [d for d in entries if str(d.digest) == name]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise LayoutError(
                f"no image named {name!r} in the OCI layout {self.path}; "
                f"it holds {self._names(entries) or 'nothing'}"
            )
        raise LayoutError(
            f"{len(matches)} entries are named {name!r} in {self.path}/{INDEX_FILE}; "
            "remove the duplicates"
        )

    @staticmethod
    def _names(entries: Iterable[Descriptor]) -> str:
        return ", ".join(d.ref_name or str(d.digest) for d in entries)

    # -- walking and checking ---------------------------------------------------

    def walk(self, descriptor: Descriptor) -> Iterator[Descriptor]:
        """Every descriptor reachable from ``descriptor``, itself first.

        Children of an index come before the index's siblings; a blob reached twice
        is yielded once.
        """
        seen: set[Digest] = set()
        stack = [descriptor]
        while stack:
            current = stack.pop()
            if current.digest in seen:
                continue
            seen.add(current.digest)
            yield current
            stack.extend(reversed(self._children(current)))

    def _children(self, descriptor: Descriptor) -> list[Descriptor]:
        """What a manifest or an index points at; nothing for any other blob."""
        if not (
            mt.is_index(descriptor.media_type) or mt.is_manifest(descriptor.media_type)
        ):
            return []
        document = self.read_manifest(descriptor)
        if isinstance(document, Index):
            return list(document.manifests)
        return [document.config, *document.layers]

    def check(self, *, verify_digests: bool = True) -> list[str]:
        """Problems with everything ``index.json`` reaches; empty when sound.

        Reports missing blobs, wrong sizes, content that does not hash to its
        name, and documents that do not parse. Non-distributable layers may be
        absent (they are fetched from their URLs).
        """
        problems: list[str] = []
        try:
            roots = list(self.index().manifests)
        except LayoutError as exc:
            return [str(exc)]
        seen: set[Digest] = set()
        stack = list(reversed(roots))
        while stack:
            desc = stack.pop()
            if desc.digest in seen:
                continue
            seen.add(desc.digest)
            problem = self._check_blob(desc, verify_digests=verify_digests)
            if problem:
                problems.append(problem)
                continue
            try:
                stack.extend(reversed(self._children(desc)))
            except (ContentError, LayoutError) as exc:
                problems.append(f"{desc.media_type} {desc.digest}: {exc}")
        return problems

    def _check_blob(self, desc: Descriptor, *, verify_digests: bool) -> str | None:
        path = self.blob_path(desc.digest)
        what = f"{desc.media_type} {desc.digest}"
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            if mt.is_nondistributable(desc.media_type):
                return None
            return f"{what}: blob missing ({path})"
        if size != desc.size:
            return f"{what}: blob is {size} bytes, descriptor says {desc.size}"
        if verify_digests:
            with path.open("rb") as blob:
                digest, _ = digest_stream(blob, desc.digest.algorithm)
            if digest != desc.digest:
                return f"{what}: content hashes to {digest}"
        return None
