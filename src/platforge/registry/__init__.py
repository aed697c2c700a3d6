"""Registries: image references, authentication, the distribution protocol, copies.

``reference`` parses image references with Docker's rules; ``auth`` finds
credentials and answers challenges; ``client`` speaks the OCI distribution protocol
to one registry, with ``retry`` for transient failures; ``copy`` moves whole images
between OCI layouts and registries in an order that never exposes a partial image.
"""

from __future__ import annotations

from platforge.registry.auth import Credentials
from platforge.registry.client import ManifestInfo, RegistryClient
from platforge.registry.copy import (
    CopyResult,
    Registries,
    copy_image,
    fetch_manifest,
    pull_rootfs,
    pull_to_layout,
    push_layout,
)
from platforge.registry.progress import BlobEvent
from platforge.registry.reference import Reference
from platforge.registry.retry import RetryPolicy

__all__ = [
    "BlobEvent",
    "CopyResult",
    "Credentials",
    "ManifestInfo",
    "Reference",
    "Registries",
    "RegistryClient",
    "RetryPolicy",
    "copy_image",
    "fetch_manifest",
    "pull_rootfs",
    "pull_to_layout",
    "push_layout",
]
