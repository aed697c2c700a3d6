"""Filesystems of images being built: layer directories for RUN, a flat tree for
``COPY --from``.

Both come from :mod:`platforge.build.rootfs`, which unpacks each layer once
(keyed by its diff ID) beside the store. A RUN stacks those directories as the
lower directories of its overlay; ``COPY --from`` needs one plain tree to pick
files from, which :func:`flat_tree` merges once per layer chain and keeps in the
same cache.

Several builds may share the cache at once (CI runs many against one store): the
tree is merged in a private directory and renamed into place, and when another
process renamed its tree first, that one is used and ours is dropped.
"""

from __future__ import annotations

import hashlib
import threading
from typing import TYPE_CHECKING

from platforge.build import rootfs
from platforge.oci import mediatypes as mt
from platforge.oci.content import Descriptor, Manifest
from platforge.oci.digest import Digest
from platforge.oci.layout import Layout

if TYPE_CHECKING:
    from pathlib import Path

    from platforge.build.image import LayerRef
    from platforge.build.store import Store

__all__ = ["flat_tree", "lowerdirs"]

_lock = threading.Lock()
_EMPTY_CONFIG = b"{}"


def lowerdirs(store: Store, layers: list[LayerRef]) -> list[Path]:
    """Each layer unpacked once, bottom first (empty for ``FROM scratch``)."""
    if not layers:
        return []
    manifest = Manifest.build(
        Descriptor.of(_EMPTY_CONFIG, mt.OCI_CONFIG),
        [Descriptor(x.media_type, Digest.parse(x.digest), x.size) for x in layers],
    )
    # rootfs makes each directory 0755 ("/" of every image), not the 0700 of
    # the temporary directory it was unpacked in.
    return rootfs.layer_dirs(
        Layout.open(store.path),
        manifest,
        diff_ids=[Digest.parse(x.diff_id) for x in layers],
        cache=rootfs.default_cache_dir(store.path),
    )


def flat_tree(store: Store, layers: list[LayerRef]) -> Path:
    """The merged filesystem of ``layers`` as one plain directory (cached)."""
    chain = hashlib.sha256("\n".join(x.diff_id for x in layers).encode()).hexdigest()
    target = rootfs.default_cache_dir(store.path) / "flat" / chain
    if target.is_dir():
        return target
    lowers = lowerdirs(store, layers)
    with _lock:
        if not target.is_dir():
            try:
                rootfs.flatten(lowers, target)
            except OSError:
                # Another process published the same tree first (flatten drops
                # its own copy on failure); identical content, so use theirs.
                if not target.is_dir():
                    raise
    return target
