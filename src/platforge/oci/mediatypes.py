"""Media types: what kind of document or blob a descriptor points at.

Two families are in use. The OCI image spec's (``application/vnd.oci.…``) is what
platforge writes. Docker's image manifest v2 schema 2 and manifest list
(``application/vnd.docker.…``) are what many registries still serve, and they map
one to one onto the OCI types, so platforge reads both. Docker's schema 1
(``…manifest.v1+json`` and ``…+prettyjws``) has no config blob and no digests of
uncompressed layers; it is recognised only to be refused.
"""

from __future__ import annotations

__all__ = [
    "DOCKER_CONFIG",
    "DOCKER_FOREIGN_LAYER",
    "DOCKER_FOREIGN_LAYER_TAR",
    "DOCKER_LAYER",
    "DOCKER_LAYER_GZIP",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "DOCKER_SCHEMA1_MANIFEST",
    "DOCKER_SCHEMA1_SIGNED",
    "INDEX_TYPES",
    "MANIFEST_TYPES",
    "OCI_CONFIG",
    "OCI_EMPTY",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_LAYER_GZIP",
    "OCI_LAYER_NONDIST",
    "OCI_LAYER_NONDIST_GZIP",
    "OCI_LAYER_NONDIST_ZSTD",
    "OCI_LAYER_ZSTD",
    "OCI_LAYOUT_VERSION",
    "OCI_MANIFEST",
    "SCHEMA1_TYPES",
    "is_config",
    "is_docker",
    "is_index",
    "is_layer",
    "is_manifest",
    "is_nondistributable",
    "is_schema1",
    "layer_compression",
    "to_docker",
    "to_oci",
]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
# deprecated by image-spec 1.1 but still found in images and accepted by pullers
OCI_LAYER_NONDIST = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_LAYER_NONDIST_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
OCI_LAYOUT_VERSION = "1.0.0"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_FOREIGN_LAYER_TAR = "application/vnd.docker.image.rootfs.foreign.diff.tar"
DOCKER_SCHEMA1_MANIFEST = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
SCHEMA1_TYPES = frozenset({DOCKER_SCHEMA1_MANIFEST, DOCKER_SCHEMA1_SIGNED})

# layer media type -> compression name ("none", "gzip", "zstd")
_LAYER_COMPRESSION = {
    OCI_LAYER: "none",
    OCI_LAYER_GZIP: "gzip",
    OCI_LAYER_ZSTD: "zstd",
    OCI_LAYER_NONDIST: "none",
    OCI_LAYER_NONDIST_GZIP: "gzip",
    OCI_LAYER_NONDIST_ZSTD: "zstd",
    DOCKER_LAYER: "none",
    DOCKER_LAYER_GZIP: "gzip",
    DOCKER_FOREIGN_LAYER: "gzip",
    DOCKER_FOREIGN_LAYER_TAR: "none",
    # some registries and old docker versions label zstd layers this way
    "application/vnd.docker.image.rootfs.diff.tar.zstd": "zstd",
}
_NONDISTRIBUTABLE = frozenset(
    {
        OCI_LAYER_NONDIST,
        OCI_LAYER_NONDIST_GZIP,
        OCI_LAYER_NONDIST_ZSTD,
        DOCKER_FOREIGN_LAYER,
        DOCKER_FOREIGN_LAYER_TAR,
    }
)
_TO_DOCKER = {
    OCI_MANIFEST: DOCKER_MANIFEST,
    OCI_INDEX: DOCKER_MANIFEST_LIST,
    OCI_CONFIG: DOCKER_CONFIG,
    OCI_LAYER: DOCKER_LAYER,
    OCI_LAYER_GZIP: DOCKER_LAYER_GZIP,
    OCI_LAYER_NONDIST_GZIP: DOCKER_FOREIGN_LAYER,
    OCI_LAYER_NONDIST: DOCKER_FOREIGN_LAYER_TAR,
}
_TO_OCI = {docker: oci for oci, docker in _TO_DOCKER.items()}


def _base(media_type: str | None) -> str:
    # parameters (";charset=utf-8") are not part of the type
    return (media_type or "").split(";", 1)[0].strip().lower()


def is_index(media_type: str | None) -> bool:
    """An OCI image index or a Docker manifest list."""
    return _base(media_type) in INDEX_TYPES


def is_manifest(media_type: str | None) -> bool:
    """An OCI image manifest or a Docker v2 schema 2 manifest (not an index)."""
    return _base(media_type) in MANIFEST_TYPES


def is_schema1(media_type: str | None) -> bool:
    """A Docker v2 schema 1 manifest, which platforge refuses."""
    return _base(media_type) in SCHEMA1_TYPES


def is_config(media_type: str | None) -> bool:
    """An image configuration (OCI or Docker)."""
    return _base(media_type) in {OCI_CONFIG, DOCKER_CONFIG}


def is_layer(media_type: str | None) -> bool:
    """A filesystem layer tar of a known compression."""
    return _base(media_type) in _LAYER_COMPRESSION


def is_docker(media_type: str | None) -> bool:
    return _base(media_type).startswith("application/vnd.docker.")


def is_nondistributable(media_type: str | None) -> bool:
    """A layer that registries are not expected to store (fetched from ``urls``)."""
    return _base(media_type) in _NONDISTRIBUTABLE


def layer_compression(media_type: str | None) -> str | None:
    """``"none"``, ``"gzip"`` or ``"zstd"`` for a layer type; None when unknown."""
    return _LAYER_COMPRESSION.get(_base(media_type))


def to_docker(media_type: str) -> str:
    """The Docker equivalent of an OCI type (``docker save`` manifests)."""
    return _TO_DOCKER.get(media_type, media_type)


def to_oci(media_type: str) -> str:
    """The OCI equivalent of a Docker type."""
    return _TO_OCI.get(media_type, media_type)
