"""What a build is asked to do, and what it hands back.

A :class:`BuildRequest` is the whole input of :func:`platforge.build.build`: the
context directory, the Dockerfile, the platforms to build, where the result goes
(OCI layout, OCI archive, docker archive, a registry) and the knobs users know from
``docker buildx build``. A :class:`BuildResult` names what was produced: the
top-level descriptor (the image index when several platforms were built, the image
manifest for one), its digest, one manifest descriptor per platform, and the OCI
layout the image was written to, if any.

Progress is reported through an optional callback receiving :class:`BuildEvent`
values; the library never prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from platforge.oci.content import Descriptor
    from platforge.oci.digest import Digest
    from platforge.platforms import Platform
    from platforge.registry.progress import BlobEvent

__all__ = [
    "BuildEvent",
    "BuildRequest",
    "BuildResult",
    "CompressionName",
    "EventKind",
    "Output",
    "OutputType",
]

OutputType = Literal["oci", "oci-tar", "docker", "registry"]
CompressionName = Literal["gzip", "zstd"]
EventKind = Literal["start", "cached", "done", "log", "info"]


@dataclass
class Output:
    """One destination of the built image.

    ``oci`` writes an OCI image layout directory at ``dest``; ``oci-tar`` an OCI
    archive tarball; ``docker`` a docker-archive tarball (one platform only) that
    ``docker load`` accepts; ``registry`` pushes to every tag of the request
    (``dest`` is unused).
    """

    type: OutputType
    dest: Path | None = None


@dataclass
class BuildEvent:
    """A progress report: a step started, was served from the cache, or finished.

    ``platform`` is ``None`` for work shared by every platform (a stage whose key
    is the same on all of them, pulling a base image, writing the output).
    """

    kind: EventKind
    message: str
    platform: str | None = None
    stage: str | None = None
    step: int | None = None
    seconds: float | None = None


@dataclass
class BuildRequest:
    """Everything a build needs; defaults mirror ``docker buildx build``."""

    context: Path
    dockerfile: Path | None = None
    platforms: list[Platform] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    build_args: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    build_contexts: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    outputs: list[Output] = field(default_factory=list)
    push: bool = False
    no_cache: bool = False
    secrets: dict[str, Path] = field(default_factory=dict)
    extra_hosts: list[tuple[str, str]] = field(default_factory=list)
    compression: CompressionName = "gzip"
    store: Path | None = None
    insecure_registries: list[str] = field(default_factory=list)
    registry_mirrors: list[str] = field(default_factory=list)
    progress: Callable[[BuildEvent], None] | None = None
    # Transfer of each blob while pushing (start, bytes, done), for upload bars.
    blob_progress: Callable[[BlobEvent], None] | None = None
    # A PEM file of CA certificates trusted for every registry's TLS (besides
    # PLATFORGE_CA_FILE and certs.d, which every client reads).
    ca_file: Path | None = None
    # How messages name the Dockerfile when its path means nothing to the user
    # (``<stdin>`` for ``build -f -``); default: its path.
    dockerfile_name: str | None = None


@dataclass
class BuildResult:
    """What a build produced.

    ``descriptor`` is the image index when several platforms were built and the
    image manifest when one was; ``manifests`` maps each platform string
    (``linux/arm64``) to its manifest descriptor; ``layout`` is the OCI layout
    directory written (the first ``oci`` output), or ``None``.
    """

    descriptor: Descriptor
    digest: Digest
    manifests: dict[str, Descriptor]
    layout: Path | None = None
