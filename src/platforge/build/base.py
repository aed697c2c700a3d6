"""Base images: the image a stage starts from, fetched into the local store once.

``FROM alpine``, ``COPY --from=registry/img`` and ``--build-context
NAME=docker-image://REF`` all come here. The reference is resolved through its
registry (an index gives the manifest for the platform, with containerd's
fallbacks), and the config and layers are downloaded into the store only when
the store lacks them, so every platform and every later build shares them.
``oci-layout://DIR[:TAG]`` reads an OCI image layout on disk instead.

A reference pinned by digest whose manifest is already in the store needs no
network at all. Registry mirrors (``registry_mirrors``) are tried, in order, for
Docker Hub references before Docker Hub itself.
"""

from __future__ import annotations

import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, NoReturn

from platforge import platforms
from platforge.build.image import ImageState, LayerRef, config_platform
from platforge.errors import BuildError, NotFoundError, PlatforgeError, RegistryError
from platforge.oci import mediatypes as mt
from platforge.oci.content import Descriptor, Index, Manifest, parse_manifest
from platforge.oci.layout import Layout
from platforge.registry.reference import DOCKER_HUB, Reference

if TYPE_CHECKING:
    from platforge.build.store import Store
    from platforge.platforms import Platform
    from platforge.registry.client import RegistryClient
    from platforge.registry.copy import Registries

__all__ = ["BaseResolver"]

log = logging.getLogger("platforge.build.base")

# Layers named with Docker's media types are the same bytes under OCI's names.
_TO_OCI_LAYER = {
    mt.DOCKER_LAYER_GZIP: mt.OCI_LAYER_GZIP,
    mt.DOCKER_LAYER: mt.OCI_LAYER,
}


class BaseResolver:
    """Resolves and fetches base images; one per build, shared by its threads."""

    def __init__(
        self,
        store: Store,
        registries: Registries,
        *,
        registry_mirrors: list[str] | None = None,
    ) -> None:
        self.store = store
        self.registries = registries
        self.mirrors = list(registry_mirrors or [])
        self._lock = threading.Lock()
        self._memo: dict[tuple[str, str], ImageState] = {}
        self._blob_locks: dict[str, threading.Lock] = {}

    def client(self, registry: str) -> RegistryClient:
        return self.registries.client(registry)

    def image(self, text: str, platform: Platform) -> ImageState:
        """The image state of ``text`` (a reference) for ``platform``."""
        key = (text, platforms.format(platform))
        with self._lock:
            known = self._memo.get(key)
        if known is not None:
            return known.clone()
        if text.startswith("oci-layout://"):
            state = self._from_layout(text.removeprefix("oci-layout://"), platform)
        else:
            state = self._from_registry(text.removeprefix("docker-image://"), platform)
        with self._lock:
            self._memo[key] = state
        return state.clone()

    # -- registries ----------------------------------------------------------

    def _manifest_bytes(self, ref: Reference, identifier: str) -> tuple[bytes, str]:
        if identifier.startswith("sha256:") and self.store.has_blob(identifier):
            raw = self.store.read_blob(identifier)
            return raw, str(json.loads(raw).get("mediaType", ""))
        info = self.client(ref.registry).get_manifest(ref.repository, identifier)
        self.store.put_bytes(info.raw)
        return info.raw, info.media_type

    def _mirrored(
        self, ref: Reference, text: str, platform: Platform
    ) -> ImageState | None:
        # Mirrors serve Docker Hub's repositories under the same names; the first
        # that has the image wins, and Docker Hub itself is the fallback.
        for mirror in self.mirrors:
            host = mirror.removeprefix("https://").removeprefix("http://").rstrip("/")
            candidate = Reference(host, ref.repository, ref.tag, ref.digest)
            try:
                return self._from_registry(str(candidate), platform, mirrored=True)
            except (BuildError, RegistryError) as exc:
                log.info("mirror %s cannot serve %s: %s", host, text, exc)
        return None

    def _from_registry(
        self, text: str, platform: Platform, *, mirrored: bool = False
    ) -> ImageState:
        ref = Reference.parse(text)
        if not mirrored and ref.registry == DOCKER_HUB and self.mirrors:
            found = self._mirrored(ref, text, platform)
            if found is not None:
                return found
        try:
            raw, media_type = self._manifest_bytes(ref, ref.identifier)
        except NotFoundError:
            raise BuildError(
                f"base image {text}: not found in registry {ref.registry}; check the "
                "name and tag, or push the base image first"
            ) from None
        document = parse_manifest(raw, media_type or None)
        lone = not isinstance(document, Index)
        if isinstance(document, Index):
            chosen = document.find(platform)
            if chosen is None:
                offered = ", ".join(
                    platforms.format(p) for p in document.platforms() if p is not None
                )
                raise BuildError(
                    f"base image {text} has no manifest for "
                    f"{platforms.format(platform)} (it offers {offered or 'none'}); "
                    "pick another base or platform"
                )
            raw, media_type = self._manifest_bytes(ref, str(chosen.digest))
            document = Manifest.parse(raw, media_type or None)
        manifest = document
        wanted = [manifest.config, *manifest.layers]
        missing = [d for d in wanted if not self.store.has_blob(str(d.digest))]
        if missing:
            client = self.client(ref.registry)
            log.info("pulling %d blobs of %s", len(missing), text)
            with ThreadPoolExecutor(max_workers=4) as pool:
                for future in [
                    pool.submit(
                        self._fetch, client, ref.repository, str(d.digest), d.size
                    )
                    for d in missing
                ]:
                    future.result()
        return self._state(manifest, text, platform if lone else None)

    def _fetch(
        self, client: RegistryClient, repository: str, digest: str, size: int
    ) -> None:
        with self._lock:
            lock = self._blob_locks.setdefault(digest, threading.Lock())
        with lock:
            if not self.store.has_blob(digest):
                client.download_blob(
                    repository, digest, self.store.blob_path(digest), size=size
                )

    def _state(
        self, manifest: Manifest, text: str, platform: Platform | None = None
    ) -> ImageState:
        """The state of a base image; ``platform`` is checked for a lone manifest.

        An index picks the manifest for the platform; a lone manifest is for
        whatever its config says, which must run as ``platform`` (BuildKit
        refuses it otherwise) lest an index entry say one platform and hold
        another's files.
        """
        config: dict[str, Any] = json.loads(
            self.store.read_blob(str(manifest.config.digest))
        )
        actual = config_platform(config)
        if (
            platform is not None
            and actual is not None
            and not platforms.only(platform).match(actual)
        ):
            raise BuildError(
                f"base image {text} is for {platforms.format(actual)}, not "
                f"{platforms.format(platform)}; use an image index that has "
                "that platform, or build only for the image's platform"
            )
        diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
        if len(diff_ids) != len(manifest.layers):
            raise BuildError(
                f"base image {text}: its config lists {len(diff_ids)} diff IDs for "
                f"{len(manifest.layers)} layers; the image is broken, rebuild it"
            )
        layers = [
            LayerRef(
                _TO_OCI_LAYER.get(d.media_type, d.media_type),
                str(d.digest),
                d.size,
                diff_id,
            )
            for d, diff_id in zip(manifest.layers, diff_ids, strict=True)
        ]
        # What the classic builder recorded about the base's own last build
        # container describes that build, not the image being made (BuildKit
        # drops these fields too).
        for key in ("container", "container_config", "docker_version"):
            config.pop(key, None)
        return ImageState(config, layers)

    # -- OCI layouts ---------------------------------------------------------

    def _from_layout(self, text: str, platform: Platform) -> ImageState:
        """``DIR``, ``DIR:TAG`` or ``DIR@DIGEST`` (buildx's spellings)."""
        try:
            source, descriptor = _layout_entry(text)
            document = source.read_manifest(descriptor)
            lone = not isinstance(document, Index)
            if isinstance(document, Index):
                chosen = document.find(platform)
                if chosen is None:
                    _no_platform(text, platform)
                document = source.read_manifest(chosen)
            if not isinstance(document, Manifest):
                _no_platform(text, platform)
            for blob in [document.config, *document.layers]:
                if not self.store.has_blob(str(blob.digest)):
                    # write_blob checks the digest and size as the bytes go by.
                    with source.open_blob(blob.digest) as stream:
                        self.store.layout.write_blob(stream, blob)
        except BuildError:
            raise
        except PlatforgeError as exc:
            raise BuildError(
                f"oci-layout://{text}: {exc}; write the layout again"
            ) from None
        self.store.put_bytes(document.raw)
        return self._state(document, f"oci-layout://{text}", platform if lone else None)


def _layout_entry(text: str) -> tuple[Layout, Descriptor]:
    """The layout ``DIR[:TAG|@DIGEST]`` names and the index entry it picks."""
    directory, at, pinned = text.partition("@")
    tag = ""
    if not at:
        directory, _, tag = text.partition(":")
    source = Layout.open(directory)
    entries = list(source.index().manifests)
    if pinned:
        entries = [d for d in entries if str(d.digest) == pinned]
    elif tag:
        entries = [d for d in entries if d.ref_name == tag]
    if not entries:
        raise BuildError(
            f"oci-layout://{text}: no image {'with digest' if at else 'tagged'} "
            f"{(pinned or tag)!r}; use DIR:TAG or DIR@DIGEST from its index.json"
        )
    return source, entries[0]


def _no_platform(text: str, platform: Platform) -> NoReturn:
    raise BuildError(
        f"oci-layout://{text} has no manifest for {platforms.format(platform)}; "
        "build it for that platform"
    )
