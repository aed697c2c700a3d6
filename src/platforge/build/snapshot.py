"""Snapshots to layers: what a COPY writes, or what a RUN changed, as one layer blob.

The tar itself is :func:`platforge.oci.layer.write_layer`'s job (one streaming pass:
tar hashed for the diff ID, compressed, hashed again for the blob digest). This
module decides *which* entries a step's layer holds and lands the blob in the store:

* :func:`copy_entries` maps the :class:`~platforge.build.context.CopyItem` list
  of a COPY or ADD onto virtual entries read straight from their sources, with the
  destination path, owner and mode the instruction asks for, so a COPY never
  stages a tree on disk and needs no privilege. Parent directories of each
  destination are included with the mode and owner they already have in the
  image (``0755``, owned by the ``--chown`` owner, when new).
* :func:`write_upper_layer` takes a RUN's overlay upper directory (whiteouts and
  opaque directories translated by ``oci.layer.entries_from_overlay``).

Timestamps are clamped to ``SOURCE_DATE_EPOCH`` when it is given; directories
this module invents carry the epoch, or 0 without one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from platforge.build.image import LayerRef
from platforge.oci import compression as codec
from platforge.oci.layer import (
    Entry,
    EntryType,
    clean_path,
    entries_from_overlay,
    write_layer,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from pathlib import Path

    from platforge.build.chown import ModeSpec, Owner
    from platforge.build.context import CopyItem
    from platforge.build.image import ImageTree
    from platforge.build.store import Store

__all__ = ["LayerOptions", "copy_entries", "write_entries", "write_upper_layer"]


@dataclass(frozen=True)
class LayerOptions:
    """How layers are encoded: codec and the optional SOURCE_DATE_EPOCH clamp."""

    compression: codec.Compression = codec.Compression.GZIP
    epoch: int | None = None


def write_entries(
    store: Store, entries: Iterable[Entry], options: LayerOptions
) -> LayerRef:
    """Write ``entries`` as a layer blob into the store."""
    with store.blob_sink() as sink:
        info = write_layer(
            entries,
            sink.file,
            options.compression,
            source_date_epoch=options.epoch,
        )
        store.commit(sink, str(info.digest))
    return LayerRef(
        media_type=info.media_type,
        digest=str(info.digest),
        size=info.size,
        diff_id=str(info.diff_id),
    )


def copy_entries(
    items: list[CopyItem],
    *,
    tree: ImageTree | None,
    owner: Owner | None,
    chmod: ModeSpec | None,
    epoch: int | None,
) -> Iterator[Entry]:
    """The layer entries of a COPY: its items plus their parent directories."""
    uid, gid = (owner.uid, owner.gid) if owner else (0, 0)
    parent_time = epoch or 0
    by_path = {item.dest.strip("/"): item for item in items}
    parents: set[str] = set()
    for name in by_path:
        parts = PurePosixPath(name).parts
        parents.update("/".join(parts[:i]) for i in range(1, len(parts)))
    for name in sorted(parents - by_path.keys()):
        existing = tree.mode_of(name) if tree is not None else None
        mode, p_uid, p_gid = existing if existing is not None else (0o755, uid, gid)
        yield Entry.directory(name, mode=mode, uid=p_uid, gid=p_gid, mtime=parent_time)
    for name, item in by_path.items():
        if not name:
            continue  # COPY of a tree into "/": the root itself is not an entry
        mode = item.mode
        if chmod is not None and item.kind != "symlink":
            mode = chmod.apply(mode, is_dir=item.kind == "dir")
        if item.kind == "dir":
            yield Entry.directory(name, mode=mode, uid=uid, gid=gid, mtime=item.mtime)
        elif item.kind == "symlink":
            yield Entry.symlink(name, item.link, uid=uid, gid=gid, mtime=item.mtime)
        elif item.kind != "file":  # a FIFO or a device node
            yield Entry(
                clean_path(name),
                EntryType(item.kind),
                mode=mode,
                uid=uid,
                gid=gid,
                mtime=item.mtime,
                devmajor=os.major(item.rdev) if item.rdev else 0,
                devminor=os.minor(item.rdev) if item.rdev else 0,
            )
        elif item.source is not None:
            yield Entry.file(
                name, item.source, mode=mode, uid=uid, gid=gid, mtime=item.mtime
            )


def write_upper_layer(
    store: Store, upperdir: Path, *, options: LayerOptions
) -> LayerRef:
    """One layer from a RUN's overlay upper directory."""
    return write_entries(store, entries_from_overlay(upperdir), options)
