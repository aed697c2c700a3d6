"""Unpacked images for the sandbox and ``platforge run``: one directory per layer.

A layer is unpacked once, into a directory of its own in overlay format (a deleted
file is a character device 0/0, a directory that replaces the one below carries the
``trusted.overlay.opaque`` xattr), and kept. The directories of an image's layers,
bottom first, are the *lower directories* an overlay mount stacks; images that
share base layers share those directories too.

The cache lives next to the local store, in ``$PLATFORGE_STORE/../rootfs`` (or
``$PLATFORGE_ROOTFS``)::

    rootfs/
      layers/sha256-<hex>/     one layer, keyed by its diff ID
      tmp/                     unpacks in progress and upper directories of runs

A layer is unpacked into a temporary directory under ``tmp/`` and renamed into
``layers/`` when complete, and only when both its blob digest and its diff ID check
out, so a crash, a concurrent unpack of the same layer or a corrupt blob never
leaves a directory under its final name.

:func:`flatten` merges the layers into one ordinary directory for the sandbox modes
that have no overlay mount.

Limitation: the cache only grows; ``rm -r`` of the ``rootfs`` directory is always
safe when nothing runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, cast

from platforge.build.sandbox import apply_overlay_dir
from platforge.errors import ContentError, LayoutError, UnpackError
from platforge.oci import compression
from platforge.oci.content import ImageConfig, Manifest
from platforge.oci.digest import HashingReader
from platforge.oci.layout import LAYOUT_DAMAGED
from platforge.oci.unpack import unpack_layers

if TYPE_CHECKING:
    from collections.abc import Sequence

    from platforge.oci.content import Descriptor
    from platforge.oci.digest import Digest
    from platforge.oci.layout import Layout

__all__ = ["Rootfs", "default_cache_dir", "flatten", "layer_dirs", "prepare"]

log = logging.getLogger("platforge.build.rootfs")


def default_cache_dir(store: Path | None = None) -> Path:
    """``$PLATFORGE_ROOTFS``, else the ``rootfs`` directory beside the store."""
    env = os.environ.get("PLATFORGE_ROOTFS")
    if env:
        return Path(env)
    if store is None:
        from platforge.build.store import default_store_path  # noqa: PLC0415

        store = default_store_path()
    return store.resolve().parent / "rootfs"


@dataclass(frozen=True)
class Rootfs:
    """An image ready to run: its layer directories (bottom first) and config."""

    lowerdirs: tuple[Path, ...]
    config: ImageConfig
    manifest: Manifest


def _key(diff_id: Digest | None, layer_digest: Digest) -> str:
    chosen = diff_id or layer_digest
    return f"{chosen.algorithm}-{chosen.encoded}"


def _unpack_one(
    layout: Layout, layer: Descriptor, diff_id: Digest | None, target: Path, tmp: Path
) -> None:
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=tmp))
    try:
        # A layer rarely has an entry for "/"; the directory must not keep the
        # temporary directory's 0700, which would lock non-root users out.
        staging.chmod(0o755)
        with layout.open_blob(layer.digest) as blob:
            # Both digests are checked as the bytes stream by: the blob's, and the
            # diff ID the directory is cached under, which other images trust.
            # (HashingReader offers the read() that the codecs and tarfile use.)
            compressed = HashingReader(blob, layer.digest.algorithm)
            try:
                with compression.open_reader(cast("IO[bytes]", compressed)) as tar:
                    uncompressed = HashingReader(
                        tar, diff_id.algorithm if diff_id else "sha256"
                    )
                    unpack_layers(
                        [cast("IO[bytes]", uncompressed)],
                        staging,
                        privileged=os.geteuid() == 0,
                        whiteout_format="overlay",
                    )
                    uncompressed.drain()
            except (ContentError, UnpackError):
                # Bytes that do not decompress or unpack are most often bytes
                # that are not the blob's: say so when the digest shows it.
                compressed.drain()
                if compressed.digest() != layer.digest:
                    raise LayoutError(
                        f"layout {layout.path}: blob {layer.digest} is corrupt (its "
                        f"content hashes to {compressed.digest()}); {LAYOUT_DAMAGED}"
                    ) from None
                raise
            compressed.drain()
        where = f"{layout.path}: layer"
        compressed.verify(layer.digest, layer.size, what=where)
        if diff_id is not None:
            uncompressed.verify(diff_id, what=f"{where} {layer.digest} uncompressed,")
        _publish(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _publish(staging: Path, target: Path) -> None:
    """Rename the finished ``staging`` tree to ``target``, or keep a winner's.

    Builds and runs sharing the cache may make the same directory at once; the
    content is the same whoever finishes first, so a loser drops its own copy.
    """
    try:
        staging.rename(target)
    except OSError:
        if not target.is_dir():
            raise
        log.debug("%s was made by another process meanwhile; using it", target)
        shutil.rmtree(staging, ignore_errors=True)


def layer_dirs(
    layout: Layout,
    manifest: Manifest,
    *,
    diff_ids: Sequence[Digest] = (),
    cache: Path | None = None,
) -> list[Path]:
    """Each layer of ``manifest`` unpacked once (bottom first), from the cache."""
    base = cache or default_cache_dir(layout.path)
    layers_dir, tmp = base / "layers", base / "tmp"
    try:
        layers_dir.mkdir(parents=True, exist_ok=True)
        tmp.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LayoutError(
            f"cannot keep unpacked layers in {base}: {exc.strerror or exc}; "
            "point PLATFORGE_ROOTFS at a writable directory"
        ) from None
    found: list[Path] = []
    for position, layer in enumerate(manifest.layers):
        diff_id = diff_ids[position] if position < len(diff_ids) else None
        target = layers_dir / _key(diff_id, layer.digest)
        if not target.is_dir():
            if not layout.has_blob(layer.digest):
                raise LayoutError(
                    f"layer {layer.digest} of image {manifest.digest} is not in "
                    f"{layout.path}; pull the image again"
                )
            log.debug("unpacking layer %s", layer.digest)
            _unpack_one(layout, layer, diff_id, target, tmp)
        found.append(target)
    return found


def prepare(layout: Layout, manifest: Manifest, *, cache: Path | None = None) -> Rootfs:
    """The config and cached layer directories of one image manifest."""
    config = ImageConfig.parse(layout.read_blob(manifest.config.digest))
    lowers = layer_dirs(layout, manifest, diff_ids=config.diff_ids, cache=cache)
    return Rootfs(tuple(lowers), config, manifest)


def flatten(lowerdirs: Sequence[Path], target: Path) -> Path:
    """Merge layer directories (bottom first) into one plain tree at ``target``.

    The tree is built beside ``target`` and renamed into place, so ``target``
    appears complete or not at all; when another process made ``target``
    meanwhile, that one is kept.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        staging.chmod(0o755)
        for lower in lowerdirs:
            apply_overlay_dir(lower, staging)
        _publish(staging, target)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(staging)
        raise
    return target
