"""Progress of blob transfers, reported as events a front end can render.

Copying an image moves blobs in parallel; each blob reports ``start`` (with its size
and what is done with it: ``push``, ``pull``, ``mount``, ``copy``), ``bytes`` (how many
more bytes went through) and ``done`` (with the outcome: ``pushed``, ``pulled``,
``exists``, ``mounted``). Callbacks run on the worker threads, so a renderer that
keeps state must lock it. The library itself never prints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = ["BlobEvent", "ProgressFn", "emit"]


@dataclass(frozen=True)
class BlobEvent:
    """One step of one blob's transfer."""

    kind: Literal["start", "bytes", "done"]
    digest: str
    size: int
    action: str = ""
    nbytes: int = 0


ProgressFn = Callable[[BlobEvent], None]


def emit(progress: ProgressFn | None, event: BlobEvent) -> None:
    if progress is not None:
        progress(event)
