"""Copying images between OCI layouts and registries: push, pull, copy.

Every copy walks the image from its root (an index or a manifest) and moves it in
one order, so that nothing ever points at content that is not there yet:

1. all blobs (configs and layers), in parallel — skipped when the target has them,
   mounted from the source repository when both are on the same registry;
2. child manifests (and nested indexes), deepest first;
3. the root, by digest;
4. tags, last, so a tag never names an incomplete image.

When the target repository lists the root digest already, steps 1-3 are skipped: a
registry accepts a manifest only once everything it refers to is there.

A push from a layout never stores a corrupt blob and never names one: small blobs
the registry lacks (configs, small layers, up to 8 MiB) are verified before anything
is sent, so their corruption leaves the registry untouched; bigger ones are hashed
while they upload, in the same pass, and the registry commits one only when its
bytes match (see :mod:`platforge.registry.client`). A mismatch stops the push
before any manifest or tag: other intact blobs may be stored by then, but nothing
refers to them. Downloads are verified as they stream; a pull into a new directory
is staged beside it and renamed into place, so a failed pull leaves nothing.

Which image a layout holds: ``index.json`` with one entry is that image (an entry
that is itself an index is pushed as that index); with several entries, the one
whose ``org.opencontainers.image.ref.name`` matches the wanted name (or the target
tag); several unnamed image manifests with platforms are taken together as the
image index that ``index.json`` is.

Limitation: non-distributable (foreign) layers that carry ``urls`` are not copied
when the source does not hold them; their descriptors are kept as they are.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from platforge import platforms
from platforge.errors import (
    DigestMismatchError,
    LayoutError,
    NotFoundError,
    PlatformError,
)
from platforge.oci import mediatypes as mt
from platforge.oci.content import (
    ANNOTATION_REF_NAME,
    Descriptor,
    ImageConfig,
    Index,
    Manifest,
    parse_manifest,
)
from platforge.oci.digest import Digest, digest_stream
from platforge.oci.layout import (
    LAYOUT_DAMAGED,
    MAX_DOCUMENT_SIZE,
    Layout,
    write_atomic,
)
from platforge.registry.client import ManifestInfo, RegistryClient
from platforge.registry.progress import BlobEvent, ProgressFn, emit
from platforge.registry.retry import RetryPolicy

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

    import httpx

    from platforge.platforms import Platform
    from platforge.registry.auth import Credentials
    from platforge.registry.reference import Reference

__all__ = [
    "CopyResult",
    "Registries",
    "copy_image",
    "fetch_manifest",
    "layout_platform",
    "layout_root",
    "pull_rootfs",
    "pull_to_layout",
    "push_layout",
]

log = logging.getLogger("platforge.registry.copy")

# Image configs are small; a bigger one is not read whole.
_MAX_CONFIG = 4 << 20
# Blobs up to this size are verified before a push sends anything.
VERIFY_FIRST_MAX = 8 << 20


@dataclass
class Registries:
    """Clients for the registries one command talks to, sharing their options.

    ``insecure`` names registries allowed plain HTTP and unverified TLS (``"*"``
    for all); ``credentials`` maps a registry to explicit credentials.
    """

    insecure: frozenset[str] = frozenset()
    ca_file: str | None = None
    ca_certs: tuple[str, ...] = ()
    credentials: Mapping[str, Credentials] = field(default_factory=dict)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    config: Path | None = None
    wrap_transport: Callable[[httpx.BaseTransport], httpx.BaseTransport] | None = None
    parallel: int = 4
    chunk_size: int | None = None
    _clients: dict[str, RegistryClient] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def client(self, registry: str) -> RegistryClient:
        with self._lock:
            found = self._clients.get(registry)
            if found is None:
                found = RegistryClient(
                    registry,
                    credentials=self.credentials.get(registry),
                    insecure="*" in self.insecure or registry in self.insecure,
                    ca_file=self.ca_file,
                    ca_certs=self.ca_certs,
                    retry=self.retry,
                    config=self.config,
                    wrap_transport=self.wrap_transport,
                    parallel=self.parallel,
                    chunk_size=self.chunk_size,
                )
                self._clients[registry] = found
            return found

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()

    def __enter__(self) -> Registries:  # noqa: PYI034 - a dataclass, not subclassed
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class CopyResult:
    """What a copy did: the root descriptor and how each blob was handled.

    ``config`` is the image config when the operation read it (``pull_rootfs``).
    """

    descriptor: Descriptor
    actions: Mapping[str, str]
    config: ImageConfig | None = None

    @property
    def digest(self) -> Digest:
        return self.descriptor.digest

    def count(self, action: str) -> int:
        return sum(1 for value in self.actions.values() if value == action)


# --- sources and targets -----------------------------------------------------------


class _Source(Protocol):
    @property
    def registry(self) -> str | None: ...

    @property
    def repository(self) -> str | None: ...

    def read_manifest(self, descriptor: Descriptor) -> bytes: ...

    def open_blob(
        self, descriptor: Descriptor
    ) -> contextlib.AbstractContextManager[IO[bytes]]: ...


@dataclass
class _LayoutSource:
    layout: Layout
    registry: str | None = None
    repository: str | None = None

    def read_manifest(self, descriptor: Descriptor) -> bytes:
        # Read unverified and checked here, so a corrupt manifest is reported in
        # the same words as a corrupt layer.
        with self.open_blob(descriptor) as blob:
            raw = blob.read(MAX_DOCUMENT_SIZE + 1)
        if len(raw) > MAX_DOCUMENT_SIZE:
            raise LayoutError(
                f"layout {self.layout.path}: blob {descriptor.digest} is larger than "
                f"{MAX_DOCUMENT_SIZE} bytes, too large for a manifest; "
                f"{LAYOUT_DAMAGED}"
            )
        actual = Digest.of(raw, descriptor.digest.algorithm)
        if actual != descriptor.digest:
            raise DigestMismatchError(
                f"layout {self.layout.path}: blob {descriptor.digest} is corrupt "
                f"({len(raw)} bytes hashing to {actual}); {LAYOUT_DAMAGED}"
            )
        return raw

    def open_blob(
        self, descriptor: Descriptor
    ) -> contextlib.AbstractContextManager[IO[bytes]]:
        try:
            return self.layout.blob_path(descriptor.digest).open("rb")
        except FileNotFoundError:
            raise LayoutError(
                f"layout {self.layout.path} lacks blob {descriptor.digest}; rebuild "
                "or re-pull the layout"
            ) from None


@dataclass
class _RegistrySource:
    client: RegistryClient
    repository: str
    registry: str | None = None

    def __post_init__(self) -> None:
        self.registry = self.client.registry

    def read_manifest(self, descriptor: Descriptor) -> bytes:
        info = self.client.get_manifest(self.repository, str(descriptor.digest))
        return info.raw

    def open_blob(
        self, descriptor: Descriptor
    ) -> contextlib.AbstractContextManager[IO[bytes]]:
        return self.client.open_blob(self.repository, str(descriptor.digest))


@dataclass
class _Plan:
    """Everything under a root: blobs to move, manifests children-first."""

    blobs: list[Descriptor] = field(default_factory=list)
    manifests: list[tuple[Descriptor, bytes]] = field(default_factory=list)

    def add_blob(self, descriptor: Descriptor) -> None:
        if all(b.digest != descriptor.digest for b in self.blobs):
            self.blobs.append(descriptor)


def _walk(source: _Source, descriptor: Descriptor, raw: bytes, plan: _Plan) -> None:
    document = parse_manifest(raw, descriptor.media_type)
    if isinstance(document, Index):
        for child in document.manifests:
            if not (mt.is_index(child.media_type) or mt.is_manifest(child.media_type)):
                # Artifacts listed in an index (attestations, signatures) are blobs.
                plan.add_blob(child)
                continue
            _walk(source, child, source.read_manifest(child), plan)
    else:
        plan.add_blob(document.config)
        for layer in document.layers:
            if layer.urls and mt.is_nondistributable(layer.media_type):
                continue
            plan.add_blob(layer)
    if all(d.digest != descriptor.digest for d, _ in plan.manifests):
        plan.manifests.append((descriptor, raw))


def _pick_platform(
    source: _Source,
    root: Descriptor,
    raw: bytes,
    platform: Platform,
    *,
    require: bool,
) -> tuple[Descriptor, bytes]:
    document = parse_manifest(raw, root.media_type)
    if not isinstance(document, Index):
        if require:
            _check_lone_manifest(source, root, document, platform)
        return root, raw
    chosen = document.find(platform)
    if chosen is None:
        offered = (
            ", ".join(str(p) for p in document.platforms() if p is not None) or "none"
        )
        raise NotFoundError(
            f"image {root.digest} has no manifest for platform {platform} (it has: "
            f"{offered}); pick one of those with --platform"
        )
    child_raw = source.read_manifest(chosen)
    if mt.is_index(chosen.media_type):
        return _pick_platform(source, chosen, child_raw, platform, require=require)
    return chosen, child_raw


def _check_lone_manifest(
    source: _Source, root: Descriptor, manifest: Manifest, platform: Platform
) -> None:
    """Refuse a manifest whose config is for another platform than ``platform``.

    A lone manifest offers no choice; acting on it anyway would, say, test an amd64
    image where arm64 was asked for, and report success.
    """
    with source.open_blob(manifest.config) as handle:
        config = ImageConfig.parse(handle.read(_MAX_CONFIG))
    if config.architecture and not platforms.only(platform).match(config.platform):
        raise PlatformError(
            f"image {root.digest} is for {config.platform}, not {platform}; leave "
            "out --platform or name an image or index that has the platform"
        )


# --- moving blobs ------------------------------------------------------------------


def _in_parallel(
    work: Callable[[Descriptor], str], blobs: Sequence[Descriptor], parallel: int
) -> dict[str, str]:
    actions: dict[str, str] = {}
    if not blobs:
        return actions
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        futures = {pool.submit(work, blob): blob for blob in blobs}
        try:
            for future, blob in futures.items():
                actions[str(blob.digest)] = future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return actions


def _verify_blob(source: _LayoutSource, descriptor: Descriptor) -> str:
    with source.open_blob(descriptor) as handle:
        actual, size = digest_stream(handle, descriptor.digest.algorithm)
    if actual != descriptor.digest or size != descriptor.size:
        raise DigestMismatchError(
            f"layout {source.layout.path}: blob {descriptor.digest} is corrupt ({size} "
            f"bytes hashing to {actual}, expected {descriptor.size} bytes), so "
            f"nothing was pushed; {LAYOUT_DAMAGED}"
        )
    return "verified"


def _push_plan(
    source: _Source,
    plan: _Plan,
    target: RegistryClient,
    repository: str,
    *,
    parallel: int,
    progress: ProgressFn | None,
) -> dict[str, str]:
    mount_from = None
    if source.registry == target.registry and source.repository != repository:
        mount_from = source.repository

    # Ask first what the registry lacks, so only those blobs are verified and sent.
    def missing(blob: Descriptor) -> str:
        size = target.blob_size(repository, str(blob.digest))
        return "exists" if size is not None else "missing"

    state = _in_parallel(missing, plan.blobs, parallel)
    needed = [b for b in plan.blobs if state[str(b.digest)] == "missing"]
    if isinstance(source, _LayoutSource):
        # Big blobs are verified as they upload; a second pass would cost as much
        # as the upload itself.
        small = [b for b in needed if b.size <= VERIFY_FIRST_MAX]
        _in_parallel(functools.partial(_verify_blob, source), small, parallel)

    def send(blob: Descriptor) -> str:
        digest = str(blob.digest)
        emit(progress, BlobEvent("start", digest, blob.size, "push"))
        action = target.upload_blob(
            repository,
            digest,
            blob.size,
            lambda: source.open_blob(blob),
            mount_from=mount_from,
            progress=progress,
            check=False,
        )
        emit(progress, BlobEvent("done", digest, blob.size, action))
        return action

    actions = {str(b.digest): "exists" for b in plan.blobs if b not in needed}
    for blob in plan.blobs:
        if blob not in needed:
            emit(progress, BlobEvent("done", str(blob.digest), blob.size, "exists"))
    actions.update(_in_parallel(send, needed, parallel))

    for descriptor, raw in plan.manifests[:-1]:
        target.put_manifest(
            repository, str(descriptor.digest), raw, descriptor.media_type
        )
    return actions


def _already_pushed(
    target: RegistryClient,
    repository: str,
    plan: _Plan,
    progress: ProgressFn | None,
) -> dict[str, str] | None:
    """Blob actions when ``repository`` holds the root already, else ``None``.

    A registry accepts a manifest only once everything it refers to is there, so an
    image it lists by digest needs no blob or child manifest sent again.
    """
    root = plan.manifests[-1][0]
    if target.head_manifest(repository, str(root.digest)) is None:
        return None
    for blob in plan.blobs:
        emit(progress, BlobEvent("done", str(blob.digest), blob.size, "exists"))
    return {str(blob.digest): "exists" for blob in plan.blobs}


def _push_image(
    source: _Source,
    root: Descriptor,
    raw: bytes,
    target: Reference,
    *,
    registries: Registries,
    tags: Iterable[str],
    progress: ProgressFn | None,
) -> CopyResult:
    """Push ``root`` and all under it from ``source``, in the module's order."""
    plan = _Plan()
    _walk(source, root, raw, plan)
    client = registries.client(target.registry)
    actions = _already_pushed(client, target.repository, plan, progress)
    if actions is None:
        actions = _push_plan(
            source,
            plan,
            client,
            target.repository,
            parallel=registries.parallel,
            progress=progress,
        )
        client.put_manifest(target.repository, str(root.digest), raw, root.media_type)
    wanted = [target.tag] if target.tag else []
    for tag in dict.fromkeys([*wanted, *tags]):
        client.put_manifest(target.repository, tag, raw, root.media_type)
    return CopyResult(root, actions)


# --- public operations -------------------------------------------------------------


def layout_root(layout: Layout, name: str | None = None) -> tuple[Descriptor, bytes]:
    """The image a layout holds (see the module docstring), with its raw bytes."""
    index = layout.index()
    entries = list(index.manifests)
    if not entries:
        raise LayoutError(f"layout {layout.path} holds no image (index.json is empty)")
    if name is not None:
        entries = [e for e in entries if e.annotations.get(ANNOTATION_REF_NAME) == name]
        if not entries:
            raise LayoutError(
                f"layout {layout.path} has no image named {name!r} (names: "
                f"{_names(index.manifests)}); pass one of those"
            )
    if len(entries) == 1:
        entry = entries[0]
        source = _LayoutSource(layout)
        return _clean(entry), source.read_manifest(entry)
    if all(mt.is_manifest(e.media_type) and e.platform for e in entries) and not any(
        e.annotations.get(ANNOTATION_REF_NAME) for e in entries
    ):
        # index.json itself is the image index of these per-platform manifests.
        return index.descriptor(), index.raw
    raise LayoutError(
        f"layout {layout.path} holds {len(entries)} images (names: "
        f"{_names(entries)}); say which one to use"
    )


def _layout_image(layout: Layout, digest: str) -> tuple[Descriptor, bytes]:
    """The image ``digest`` of a layout: an ``index.json`` entry or any manifest or
    index among its blobs."""
    wanted = Digest.parse(digest)
    entry = next((e for e in layout.index().manifests if e.digest == wanted), None)
    if entry is None:
        if not layout.has_blob(wanted):
            raise LayoutError(
                f"layout {layout.path} does not hold image {digest}; write the "
                "layout again"
            )
        raw = layout.read_blob(wanted)
        entry = Descriptor(parse_manifest(raw).media_type, wanted, len(raw))
    return _clean(entry), _LayoutSource(layout).read_manifest(entry)


def layout_platform(
    layout: Layout,
    root: Descriptor,
    raw: bytes,
    platform: Platform,
    *,
    require_platform: bool = True,
) -> tuple[Descriptor, bytes]:
    """``platform``'s manifest under ``root`` of a layout, as :func:`fetch_manifest`
    picks it."""
    return _pick_platform(
        _LayoutSource(layout), root, raw, platform, require=require_platform
    )


def _names(entries: Iterable[Descriptor]) -> str:
    names = [e.annotations.get(ANNOTATION_REF_NAME) for e in entries]
    return ", ".join(n for n in names if n) or "none"


def _clean(entry: Descriptor) -> Descriptor:
    # The layout's own annotations (the ref name) are not part of the image.
    return Descriptor(entry.media_type, entry.digest, entry.size, entry.platform)


def push_layout(
    path: Path,
    reference: Reference,
    *,
    registries: Registries,
    tags: Iterable[str] = (),
    name: str | None = None,
    digest: str | None = None,
    progress: ProgressFn | None = None,
) -> CopyResult:
    """Push the image of the layout at ``path`` to ``reference`` (plus ``tags``).

    Which image: the one ``digest`` names (an entry of ``index.json`` or any manifest
    or index blob), else as the module docstring says, ``name`` picking by ref name.
    """
    layout = Layout.open(path)
    if digest is not None:
        root, raw = _layout_image(layout, digest)
    elif name is None and reference.tag is not None:
        # A layout holding several named images: the target tag picks one.
        try:
            root, raw = layout_root(layout, reference.tag)
        except LayoutError:
            root, raw = layout_root(layout, None)
    else:
        root, raw = layout_root(layout, name)
    if reference.digest is not None and reference.digest != str(root.digest):
        raise LayoutError(
            f"layout {layout.path} holds image {root.digest}, not {reference.digest} "
            f"named by {reference}; push to a tag, or name the layout's digest"
        )
    result = _push_image(
        _LayoutSource(layout),
        root,
        raw,
        reference,
        registries=registries,
        tags=tags,
        progress=progress,
    )
    log.debug(
        "pushed %s as %s",
        reference,
        root.digest,
        extra={"reference": str(reference), "digest": str(root.digest)},
    )
    return result


def fetch_manifest(
    reference: Reference,
    *,
    registries: Registries,
    platform: Platform | None = None,
    require_platform: bool = False,
) -> tuple[Descriptor, bytes]:
    """The root manifest or index of ``reference`` (or its ``platform`` manifest).

    ``platform`` picks an index's entry; a lone manifest is returned whatever its
    platform (as registry-image and docker pull without --platform do) unless
    ``require_platform`` says the user asked for that platform explicitly.
    """
    client = registries.client(reference.registry)
    info: ManifestInfo = client.get_manifest(reference.repository, reference.identifier)
    media_type = info.media_type
    if not (mt.is_index(media_type) or mt.is_manifest(media_type)):
        # Some registries send a generic type; the document says what it is.
        media_type = parse_manifest(info.raw).media_type
    root = Descriptor(media_type, Digest.parse(info.digest), info.size)
    if platform is None:
        return root, info.raw
    return _pick_platform(
        _RegistrySource(client, reference.repository),
        root,
        info.raw,
        platform,
        require=require_platform,
    )


def copy_image(
    source: Reference,
    target: Reference,
    *,
    registries: Registries,
    platform: Platform | None = None,
    progress: ProgressFn | None = None,
    require_platform: bool = False,
) -> CopyResult:
    """Copy an image between repositories; ``platform`` picks one of an index.

    ``require_platform`` as for :func:`fetch_manifest`. A ``target`` pinned by
    digest must name the digest of what is copied.
    """
    root, raw = fetch_manifest(
        source,
        registries=registries,
        platform=platform,
        require_platform=require_platform,
    )
    if target.digest is not None and target.digest != str(root.digest):
        raise LayoutError(
            f"{source} is image {root.digest}, not {target.digest} named by "
            f"{target}; copy to a tag, or name that digest"
        )
    return _push_image(
        _RegistrySource(registries.client(source.registry), source.repository),
        root,
        raw,
        target,
        registries=registries,
        tags=(),
        progress=progress,
    )


@contextlib.contextmanager
def _staged(dest: Path) -> Iterator[Path]:
    """A directory to fill that becomes ``dest`` only if everything succeeds.

    A file system failure (no space, a file where a directory should be) is one
    ``LayoutError`` naming ``dest``; nothing is left behind.
    """
    if dest.is_dir() and any(dest.iterdir()):
        raise LayoutError(
            f"destination {dest} exists and is not empty; choose a new directory"
        )
    staging: Path | None = None
    try:
        # An existing empty directory (the current one, say) is kept and filled:
        # the staging directory goes inside it; a new one is staged beside.
        keep = dest.is_dir()
        where = dest if keep else dest.parent
        where.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=where))
        # mkdtemp makes it private; the result is for whoever reads dest's parent.
        staging.chmod(0o755)
        yield staging
        if keep:
            for child in staging.iterdir():
                child.replace(dest / child.name)
            staging.rmdir()
        else:
            staging.replace(dest)
    except OSError as exc:
        fix = "choose another destination"
        if exc.errno == errno.ENOSPC:
            fix = "free some space or " + fix
        raise LayoutError(f"cannot write {dest}: {exc.strerror or exc}; {fix}") from exc
    finally:
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _download(
    reference: Reference,
    root: Descriptor,
    raw: bytes,
    layout: Layout,
    *,
    registries: Registries,
    progress: ProgressFn | None,
) -> dict[str, str]:
    """Fetch ``root`` and all under it into ``layout``: blobs, then manifests."""
    source = _RegistrySource(
        registries.client(reference.registry), reference.repository
    )
    plan = _Plan()
    _walk(source, root, raw, plan)

    def fetch(blob: Descriptor) -> str:
        digest = str(blob.digest)
        if layout.has_blob(blob.digest):
            emit(progress, BlobEvent("done", digest, blob.size, "exists"))
            return "exists"
        emit(progress, BlobEvent("start", digest, blob.size, "pull"))
        source.client.download_blob(
            source.repository,
            digest,
            layout.blob_path(blob.digest),
            size=blob.size,
            progress=progress,
        )
        emit(progress, BlobEvent("done", digest, blob.size, "pulled"))
        return "pulled"

    actions = _in_parallel(fetch, plan.blobs, registries.parallel)
    for descriptor, document in plan.manifests:
        layout.write_blob(document, descriptor)
    return actions


def pull_to_layout(
    reference: Reference,
    dest: Path,
    *,
    registries: Registries,
    platform: Platform | None = None,
    progress: ProgressFn | None = None,
    require_platform: bool = False,
) -> CopyResult:
    """Pull ``reference`` (the whole index, or one platform) into a new layout.

    ``require_platform`` as for :func:`fetch_manifest`.
    """
    root, raw = fetch_manifest(
        reference,
        registries=registries,
        platform=platform,
        require_platform=require_platform,
    )
    with _staged(dest) as staging:
        layout = Layout.create(staging)
        actions = _download(
            reference, root, raw, layout, registries=registries, progress=progress
        )
        layout.add_ref(root, reference.tag)
    return CopyResult(root, actions)


def pull_rootfs(
    reference: Reference,
    dest: Path,
    *,
    registries: Registries,
    platform: Platform | None = None,
    progress: ProgressFn | None = None,
    require_platform: bool = False,
) -> CopyResult:
    """Unpack one platform's filesystem into ``dest/rootfs``, with ``metadata.json``.

    ``metadata.json`` holds ``env``, ``user``, ``cmd`` and ``entrypoint`` of the
    image config, as the Concourse registry-image resource writes them. Layers are
    downloaded and verified in full before the first one is unpacked, so a corrupt
    layer never reaches the filesystem; that needs room for the compressed layers
    beside ``dest`` while it runs. Without ``platform``, the host's is preferred;
    ``require_platform`` as for :func:`fetch_manifest`.
    """
    from platforge.oci.unpack import unpack_layers  # noqa: PLC0415 - optional layer

    root, raw = fetch_manifest(
        reference,
        registries=registries,
        platform=platform or platforms.host(),
        require_platform=require_platform and platform is not None,
    )
    manifest = Manifest.parse(raw, root.media_type)
    with _staged(dest) as staging:
        blobs = Layout.create(staging / ".blobs")
        actions = _download(
            reference, root, raw, blobs, registries=registries, progress=progress
        )
        config = ImageConfig.parse(blobs.read_blob(manifest.config.digest))

        def layer_files() -> Iterator[IO[bytes]]:
            # One open layer at a time, in order, lowest first.
            for layer in manifest.layers:
                if blobs.has_blob(layer.digest):
                    with blobs.blob_path(layer.digest).open("rb") as handle:
                        yield handle

        (staging / "rootfs").mkdir()
        unpack_layers(layer_files(), staging / "rootfs")
        _write_metadata(staging / "metadata.json", config)
        shutil.rmtree(staging / ".blobs")
    return CopyResult(root, actions, config)


def _write_metadata(path: Path, config: ImageConfig) -> None:
    run = config.config
    metadata: dict[str, Any] = {
        "env": run.env,
        "user": run.user or "",
    }
    if run.cmd is not None:
        metadata["cmd"] = run.cmd
    if run.entrypoint is not None:
        metadata["entrypoint"] = run.entrypoint
    write_atomic(path, json.dumps(metadata).encode())
