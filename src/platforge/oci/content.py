"""Content: descriptors, manifests, indexes and image configs.

An image is a tree of content-addressed JSON documents and blobs::

    index  ──descriptor──▶ manifest (one per platform) ──▶ config + layers

A *descriptor* points at content by media type, digest and size. A *manifest*
lists an image's config and layers; an *index* lists manifests, usually one per
platform. Both exist in OCI and Docker v2 schema 2 spelling (the Docker *manifest
list* is an index) and are read the same way here.

A digest names exact bytes, so every parsed document keeps ``raw``, the bytes it
was read from, and its digest is computed over those bytes only; fields platforge
does not know stay in ``raw`` (and in ``json``) untouched. Documents platforge
writes are serialised one way: compact JSON, keys in a fixed order, UTF-8.

``ImageConfig`` wraps the config JSON with typed accessors for the fields a build
reads and writes (``config.Env``, ``rootfs.diff_ids``, ``history`` …) and keeps any
other field as it was.

Docker v2 schema 1 manifests are refused: they carry no config and no digests of
uncompressed layers, and registries have converted them on push for years.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from platforge import platforms
from platforge.errors import ContentError, ManifestError, PlatformError
from platforge.oci import mediatypes as mt
from platforge.oci.digest import Digest

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from platforge.platforms import Platform

__all__ = [
    "ANNOTATION_REF_NAME",
    "ContainerConfig",
    "Descriptor",
    "History",
    "ImageConfig",
    "Index",
    "Manifest",
    "canonical_json",
    "parse_manifest",
]

ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_CREATED = "org.opencontainers.image.created"


def canonical_json(document: Any) -> bytes:
    """How platforge serialises what it writes: compact, key order as given, UTF-8."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def _load_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        document = json.loads(raw)
    except RecursionError:
        raise ManifestError(
            f"{what} ({len(raw)} bytes) nests JSON too deeply to be a manifest, "
            "index or config"
        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(
            f"{what} ({len(raw)} bytes, starting {raw[:24]!r}) is not JSON: {exc}; "
            "the content is not a manifest, index or config"
        ) from None
    if not isinstance(document, dict):
        raise ManifestError(
            f"{what} is JSON {type(document).__name__}, not an object; "
            "the content is not a manifest, index or config"
        )
    return document


def _string_map(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ManifestError(f"{where}: annotations must map strings to strings")
    return dict(value)


def _optional_str(document: Mapping[str, Any], key: str, where: str) -> str | None:
    value = document.get(key)
    if value is not None and not isinstance(value, str):
        raise ManifestError(f"{where}: {key!r} must be a string, got {value!r}")
    return value


def _digest_field(document: Mapping[str, Any], where: str) -> Digest:
    text = document.get("digest")
    if not isinstance(text, str):
        raise ManifestError(
            f"{where}: 'digest' is missing or not a string; expected sha256:<hex>"
        )
    try:
        return Digest.parse(text)
    except ContentError as exc:
        raise ManifestError(f"{where}: {exc}") from None


_DESCRIPTOR_KEYS = frozenset(
    {
        "mediaType",
        "digest",
        "size",
        "urls",
        "annotations",
        "data",
        "platform",
        "artifactType",
    }
)


@dataclass(frozen=True)
class Descriptor:
    """A pointer to content: media type, digest and size, plus optional details.

    ``extra`` holds fields this version does not know, so that a descriptor read
    from a document is written back with them.
    """

    media_type: str
    digest: Digest
    size: int
    platform: Platform | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    urls: tuple[str, ...] = ()
    artifact_type: str | None = None
    data: bytes | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __hash__(self) -> int:
        return hash((self.media_type, self.digest, self.size))

    @classmethod
    def of(
        cls,
        content: bytes,
        media_type: str,
        *,
        platform: Platform | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> Descriptor:
        """The descriptor of ``content`` held in memory (documents, not layers)."""
        return cls(
            media_type=media_type,
            digest=Digest.of(content),
            size=len(content),
            platform=platform,
            annotations=dict(annotations or {}),
        )

    @property
    def ref_name(self) -> str | None:
        """The ``org.opencontainers.image.ref.name`` annotation (a layout's tag)."""
        return self.annotations.get(ANNOTATION_REF_NAME)

    def with_annotations(self, annotations: Mapping[str, str]) -> Descriptor:
        """A copy with ``annotations`` added to (and overriding) the existing ones."""
        return replace(self, annotations={**self.annotations, **annotations})

    def to_json(self) -> dict[str, Any]:
        """The descriptor object, keys in the image spec's order."""
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": str(self.digest),
            "size": self.size,
        }
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.data is not None:
            out["data"] = base64.b64encode(self.data).decode()
        if self.platform is not None:
            out["platform"] = platforms.to_json(self.platform)
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        out.update(self.extra)
        return out

    @classmethod
    def from_json(cls, document: Any, where: str = "descriptor") -> Descriptor:
        """Read a descriptor object, refusing missing or mistyped required fields."""
        if not isinstance(document, dict):
            raise ManifestError(
                f"{where}: expected a descriptor object, got {document!r}"
            )
        media_type = document.get("mediaType")
        size = document.get("size")
        if not isinstance(media_type, str) or not media_type:
            raise ManifestError(f"{where}: 'mediaType' is missing or not a string")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ManifestError(f"{where}: 'size' must be a non-negative integer")
        digest = _digest_field(document, where)
        urls = document.get("urls") or []
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise ManifestError(f"{where}: 'urls' must be a list of strings")
        platform = None
        if document.get("platform") is not None:
            try:
                platform = platforms.from_json(document["platform"])
            except PlatformError as exc:
                raise ManifestError(f"{where}: {exc}") from None
        data = None
        if document.get("data") is not None:
            try:
                data = base64.b64decode(document["data"], validate=True)
            except (binascii.Error, TypeError, ValueError):
                raise ManifestError(f"{where}: 'data' is not base64") from None
        return cls(
            media_type=media_type,
            digest=digest,
            size=size,
            platform=platform,
            annotations=_string_map(document.get("annotations"), where),
            urls=tuple(urls),
            artifact_type=_optional_str(document, "artifactType", where),
            data=data,
            extra={k: v for k, v in document.items() if k not in _DESCRIPTOR_KEYS},
        )


def _schema1_error(where: str) -> ManifestError:
    return ManifestError(
        f"{where} is a Docker v2 schema 1 manifest, which is unsupported; push the "
        "image again with a current docker or convert it with "
        "`skopeo copy --format v2s2`"
    )


def _descriptors(document: Mapping[str, Any], key: str, where: str) -> list[Descriptor]:
    value = document.get(key)
    if not isinstance(value, list):
        raise ManifestError(f"{where}: {key!r} is missing or not a list")
    return [
        Descriptor.from_json(item, f"{where} {key}[{n}]")
        for n, item in enumerate(value)
    ]


def _document_kind(
    document: Mapping[str, Any], media_type: str | None, where: str
) -> str:
    """Decide manifest or index from the document's own and the given media type."""
    declared = document.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise ManifestError(f"{where}: 'mediaType' must be a string")
    if mt.is_schema1(declared) or mt.is_schema1(media_type):
        raise _schema1_error(where)
    version = document.get("schemaVersion")
    if version == 1:
        raise _schema1_error(where)
    if version != 2 or isinstance(version, bool):
        raise ManifestError(
            f"{where}: schemaVersion {version!r} is not supported; expected 2"
        )
    known = mt.is_manifest(media_type) or mt.is_index(media_type)
    if declared and known and declared != media_type:
        # a document's own media type must agree with what it was served as
        raise ManifestError(
            f"{where} declares mediaType {declared!r} but was given as "
            f"{media_type!r}; the content does not match its descriptor"
        )
    kind = declared or (media_type if known else None)
    if kind is None:
        # OCI documents may omit mediaType; their fields tell them apart
        if "manifests" in document:
            return mt.OCI_INDEX
        if "config" in document:
            return mt.OCI_MANIFEST
        raise ManifestError(
            f"{where} has no mediaType and neither 'manifests' nor 'config'; "
            "it is not a manifest or an index"
        )
    if not (mt.is_manifest(kind) or mt.is_index(kind)):
        raise ManifestError(
            f"{where}: media type {kind!r} is not an image manifest or index; "
            f"expected one of {sorted(mt.MANIFEST_TYPES | mt.INDEX_TYPES)}"
        )
    return kind


class _Document:
    """What manifests and indexes share: exact bytes, and a digest and size of them."""

    raw: bytes
    digest: Digest

    def __post_init__(self) -> None:
        object.__setattr__(self, "digest", Digest.of(self.raw))

    @property
    def size(self) -> int:
        return len(self.raw)


def _serialise(
    media_type: str,
    artifact_type: str | None,
    body: Mapping[str, Any],
    subject: Descriptor | None,
    annotations: Mapping[str, str] | None,
) -> bytes:
    """A manifest or index the one way platforge writes them (the spec's key order)."""
    document: dict[str, Any] = {"schemaVersion": 2, "mediaType": media_type}
    if artifact_type:
        document["artifactType"] = artifact_type
    document.update(body)
    if subject is not None:
        document["subject"] = subject.to_json()
    if annotations:
        document["annotations"] = dict(annotations)
    return canonical_json(document)


@dataclass(frozen=True)
class Manifest(_Document):
    """An image manifest (OCI, or Docker v2 schema 2): config plus layers."""

    raw: bytes = field(repr=False)
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: Mapping[str, str] = field(default_factory=dict)
    subject: Descriptor | None = None
    artifact_type: str | None = None
    json: Mapping[str, Any] = field(default_factory=dict, repr=False)
    digest: Digest = field(init=False)

    def __hash__(self) -> int:
        return hash(self.digest)

    def descriptor(
        self,
        platform: Platform | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> Descriptor:
        """The descriptor an index or a layout uses to point at this manifest."""
        return Descriptor(
            media_type=self.media_type,
            digest=self.digest,
            size=self.size,
            platform=platform,
            annotations=dict(annotations or {}),
            artifact_type=self.artifact_type,
        )

    @classmethod
    def parse(cls, raw: bytes, media_type: str | None = None) -> Manifest:
        parsed = parse_manifest(raw, media_type)
        if not isinstance(parsed, Manifest):
            raise ManifestError(
                f"document {parsed.digest} is an index, not an image manifest; "
                "pick a platform from it first"
            )
        return parsed

    @classmethod
    def _from_document(
        cls, raw: bytes, document: dict[str, Any], kind: str, where: str
    ) -> Manifest:
        config = Descriptor.from_json(document.get("config"), f"{where} config")
        subject = document.get("subject")
        return cls(
            raw=raw,
            media_type=kind,
            config=config,
            layers=tuple(_descriptors(document, "layers", where)),
            annotations=_string_map(document.get("annotations"), where),
            subject=None if subject is None else Descriptor.from_json(subject, where),
            artifact_type=_optional_str(document, "artifactType", where),
            json=document,
        )

    @classmethod
    def build(
        cls,
        config: Descriptor,
        layers: Iterable[Descriptor],
        annotations: Mapping[str, str] | None = None,
        *,
        media_type: str = mt.OCI_MANIFEST,
        subject: Descriptor | None = None,
        artifact_type: str | None = None,
    ) -> Manifest:
        """Serialise a manifest the one way platforge writes manifests."""
        if not mt.is_manifest(media_type):
            raise ManifestError(f"cannot build a manifest of media type {media_type!r}")
        if media_type == mt.DOCKER_MANIFEST and (subject or artifact_type):
            raise ManifestError(
                "a Docker v2 schema 2 manifest has no subject or artifactType; "
                "build an OCI manifest instead"
            )
        body = {
            "config": config.to_json(),
            "layers": [layer.to_json() for layer in layers],
        }
        raw = _serialise(media_type, artifact_type, body, subject, annotations)
        return cls.parse(raw, media_type)


@dataclass(frozen=True)
class Index(_Document):
    """An image index (OCI) or manifest list (Docker): manifests by platform."""

    raw: bytes = field(repr=False)
    media_type: str
    manifests: tuple[Descriptor, ...]
    annotations: Mapping[str, str] = field(default_factory=dict)
    subject: Descriptor | None = None
    artifact_type: str | None = None
    json: Mapping[str, Any] = field(default_factory=dict, repr=False)
    digest: Digest = field(init=False)

    def __hash__(self) -> int:
        return hash(self.digest)

    def descriptor(self, annotations: Mapping[str, str] | None = None) -> Descriptor:
        return Descriptor(
            media_type=self.media_type,
            digest=self.digest,
            size=self.size,
            annotations=dict(annotations or {}),
            artifact_type=self.artifact_type,
        )

    def platforms(self) -> list[Platform | None]:
        """The platform of each entry, None where an entry names none."""
        return [d.platform for d in self.manifests]

    def find(self, wanted: Platform) -> Descriptor | None:
        """The manifest to run on ``wanted``, with containerd's fallbacks."""
        candidates = [
            d.platform if mt.is_manifest(d.media_type) else None for d in self.manifests
        ]
        position = platforms.best_match(wanted, candidates)
        return None if position is None else self.manifests[position]

    @classmethod
    def parse(cls, raw: bytes, media_type: str | None = None) -> Index:
        parsed = parse_manifest(raw, media_type)
        if not isinstance(parsed, Index):
            raise ManifestError(
                f"document {parsed.digest} is an image manifest, not an index"
            )
        return parsed

    @classmethod
    def _from_document(
        cls, raw: bytes, document: dict[str, Any], kind: str, where: str
    ) -> Index:
        subject = document.get("subject")
        return cls(
            raw=raw,
            media_type=kind,
            manifests=tuple(_descriptors(document, "manifests", where)),
            annotations=_string_map(document.get("annotations"), where),
            subject=None if subject is None else Descriptor.from_json(subject, where),
            artifact_type=_optional_str(document, "artifactType", where),
            json=document,
        )

    @classmethod
    def build(
        cls,
        manifests: Iterable[Descriptor],
        annotations: Mapping[str, str] | None = None,
        *,
        media_type: str = mt.OCI_INDEX,
        subject: Descriptor | None = None,
        artifact_type: str | None = None,
    ) -> Index:
        """Serialise an index the one way platforge writes indexes."""
        if not mt.is_index(media_type):
            raise ManifestError(f"cannot build an index of media type {media_type!r}")
        body = {"manifests": [d.to_json() for d in manifests]}
        raw = _serialise(media_type, artifact_type, body, subject, annotations)
        return cls.parse(raw, media_type)


def parse_manifest(raw: bytes, media_type: str | None = None) -> Manifest | Index:
    """Parse a manifest or an index from its exact bytes.

    ``media_type`` is what the bytes were served or described as (a registry's
    Content-Type, a descriptor's mediaType); when both it and the document name a
    manifest type they must agree. Schema 1 is refused with a ManifestError.
    """
    where = f"manifest {Digest.of(raw)}"
    document = _load_object(raw, where)
    kind = _document_kind(document, media_type, where)
    if mt.is_index(kind):
        return Index._from_document(raw, document, kind, where)  # noqa: SLF001
    return Manifest._from_document(raw, document, kind, where)  # noqa: SLF001


# ---------------------------------------------------------------------------
# image configuration

# the order in which platform writes the fields it knows; unknown fields follow
_CONFIG_ORDER = (
    "created",
    "author",
    "architecture",
    "os",
    "os.version",
    "os.features",
    "variant",
    "config",
    "rootfs",
    "history",
)
_RUN_CONFIG_ORDER = (
    "User",
    "ExposedPorts",
    "Env",
    "Entrypoint",
    "Cmd",
    "Volumes",
    "WorkingDir",
    "Labels",
    "StopSignal",
    "ArgsEscaped",
    "Healthcheck",
    "OnBuild",
    "Shell",
)
_HISTORY_ORDER = ("created", "created_by", "author", "comment", "empty_layer")


def _ordered(document: Mapping[str, Any], order: tuple[str, ...]) -> dict[str, Any]:
    out = {key: document[key] for key in order if key in document}
    out.update((k, v) for k, v in document.items() if k not in out)
    return out


def _string_list(value: Any, where: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise ManifestError(f"{where} must be a list of strings, got {value!r}")
    return list(value)


class ContainerConfig:
    """The ``config`` object of an image config: how a container starts.

    Reads and writes go straight to the underlying JSON object, so fields this
    class does not name (``Hostname``, ``StopTimeout`` …) survive untouched.
    Setting a field to None removes it.
    """

    def __init__(self, document: dict[str, Any]) -> None:
        self.json = document

    def _get_list(self, key: str) -> list[str] | None:
        return _string_list(self.json.get(key), f"image config field config.{key}")

    def _set(self, key: str, value: Any) -> None:
        if value is None:
            self.json.pop(key, None)
        else:
            self.json[key] = value

    @property
    def env(self) -> list[str]:
        return self._get_list("Env") or []

    @env.setter
    def env(self, value: list[str] | None) -> None:
        self._set("Env", None if value is None else list(value))

    def env_dict(self) -> dict[str, str]:
        """``Env`` as a mapping; a later entry of the same name wins, as in docker."""
        out: dict[str, str] = {}
        for item in self.env:
            key, _, value = item.partition("=")
            out[key] = value
        return out

    def set_env(self, key: str, value: str) -> None:
        """Set one variable, replacing it in place or appending it."""
        entries = self.env
        for position, item in enumerate(entries):
            if item.partition("=")[0] == key:
                entries[position] = f"{key}={value}"
                break
        else:
            entries.append(f"{key}={value}")
        self.env = entries

    @property
    def cmd(self) -> list[str] | None:
        return self._get_list("Cmd")

    @cmd.setter
    def cmd(self, value: list[str] | None) -> None:
        self._set("Cmd", None if value is None else list(value))

    @property
    def entrypoint(self) -> list[str] | None:
        return self._get_list("Entrypoint")

    @entrypoint.setter
    def entrypoint(self, value: list[str] | None) -> None:
        self._set("Entrypoint", None if value is None else list(value))

    @property
    def shell(self) -> list[str] | None:
        return self._get_list("Shell")

    @shell.setter
    def shell(self, value: list[str] | None) -> None:
        self._set("Shell", None if value is None else list(value))

    @property
    def on_build(self) -> list[str]:
        return self._get_list("OnBuild") or []

    @on_build.setter
    def on_build(self, value: list[str] | None) -> None:
        self._set("OnBuild", list(value) if value else None)

    def _get_str(self, key: str) -> str | None:
        value = self.json.get(key)
        if value is not None and not isinstance(value, str):
            raise ManifestError(f"image config field config.{key} must be a string")
        return value or None

    @property
    def user(self) -> str | None:
        return self._get_str("User")

    @user.setter
    def user(self, value: str | None) -> None:
        self._set("User", value)

    @property
    def working_dir(self) -> str | None:
        return self._get_str("WorkingDir")

    @working_dir.setter
    def working_dir(self, value: str | None) -> None:
        self._set("WorkingDir", value)

    @property
    def stop_signal(self) -> str | None:
        return self._get_str("StopSignal")

    @stop_signal.setter
    def stop_signal(self, value: str | None) -> None:
        self._set("StopSignal", value)

    @property
    def labels(self) -> dict[str, str]:
        return _string_map(self.json.get("Labels"), "image config field config.Labels")

    @labels.setter
    def labels(self, value: Mapping[str, str] | None) -> None:
        self._set("Labels", dict(value) if value else None)

    def _get_set(self, key: str) -> list[str]:
        value = self.json.get(key) or {}
        if not isinstance(value, dict):
            raise ManifestError(f"image config field config.{key} must be an object")
        return list(value)

    @property
    def exposed_ports(self) -> list[str]:
        """Ports as ``"80/tcp"``; stored as an object with empty values."""
        return self._get_set("ExposedPorts")

    @exposed_ports.setter
    def exposed_ports(self, value: Iterable[str] | None) -> None:
        self._set("ExposedPorts", {p: {} for p in value} if value else None)

    @property
    def volumes(self) -> list[str]:
        return self._get_set("Volumes")

    @volumes.setter
    def volumes(self, value: Iterable[str] | None) -> None:
        self._set("Volumes", {v: {} for v in value} if value else None)

    @property
    def healthcheck(self) -> dict[str, Any] | None:
        value = self.json.get("Healthcheck")
        if value is not None and not isinstance(value, dict):
            raise ManifestError(
                "image config field config.Healthcheck must be an object"
            )
        return value

    @healthcheck.setter
    def healthcheck(self, value: Mapping[str, Any] | None) -> None:
        self._set("Healthcheck", None if value is None else dict(value))

    @property
    def args_escaped(self) -> bool:
        return bool(self.json.get("ArgsEscaped", False))

    @args_escaped.setter
    def args_escaped(self, value: bool | None) -> None:
        self._set("ArgsEscaped", value or None)


@dataclass
class History:
    """One entry of an image's history: the step that made a layer (or none)."""

    created: str | None = None
    created_by: str | None = None
    author: str | None = None
    comment: str | None = None
    empty_layer: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in ("created", "created_by", "author", "comment"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.empty_layer:
            out["empty_layer"] = True
        out.update(self.extra)
        return out

    @classmethod
    def from_json(cls, document: Any, where: str) -> History:
        if not isinstance(document, dict):
            raise ManifestError(f"{where} must be an object")
        values = {
            key: _optional_str(document, key, where)
            for key in ("created", "created_by", "author", "comment")
        }
        empty = document.get("empty_layer", False)
        if not isinstance(empty, bool):
            raise ManifestError(f"{where}: 'empty_layer' must be true or false")
        return cls(
            **values,
            empty_layer=empty,
            extra={k: v for k, v in document.items() if k not in _HISTORY_ORDER},
        )


class ImageConfig:
    """An image configuration: platform, run config, diff IDs and history.

    A typed view over the JSON object; every property reads or writes that object,
    and ``to_bytes()`` serialises it with platforge's fixed key order. ``raw`` is
    the bytes it was parsed from (None when built here); ``content()`` is what to
    store.
    """

    def __init__(self, document: dict[str, Any], raw: bytes | None = None) -> None:
        self.json = document
        self.raw = raw
        self._validate()

    def _validate(self) -> None:
        for key in ("architecture", "os"):
            if not isinstance(self.json.get(key), str):
                raise ManifestError(
                    f"image config lacks a string {key!r}; the image spec requires "
                    "'architecture' and 'os'"
                )
        config = self.json.get("config")
        if config is not None and not isinstance(config, dict):
            raise ManifestError("image config field 'config' must be an object")
        rootfs = self.json.get("rootfs")
        if rootfs is not None and not isinstance(rootfs, dict):
            raise ManifestError("image config field 'rootfs' must be an object")
        history = self.json.get("history")
        if history is not None and not isinstance(history, list):
            raise ManifestError("image config field 'history' must be a list")
        _ = self.diff_ids, self.history

    @classmethod
    def parse(cls, raw: bytes) -> ImageConfig:
        return cls(_load_object(raw, f"image config {Digest.of(raw)}"), raw)

    @classmethod
    def new(cls, platform: Platform, *, created: str | None = None) -> ImageConfig:
        """An empty config for ``platform`` (a ``FROM scratch`` image)."""
        document: dict[str, Any] = {}
        if created is not None:
            document["created"] = created
        document.update(platforms.to_json(platform))
        document["config"] = {}
        document["rootfs"] = {"type": "layers", "diff_ids": []}
        document["history"] = []
        return cls(document)

    def copy(self) -> ImageConfig:
        """A deep copy to change (the parent image's config stays as it was)."""
        return ImageConfig(json.loads(canonical_json(self.json)))

    def to_bytes(self) -> bytes:
        """The config as platforge writes it: fixed key order, compact JSON."""
        document = _ordered(self.json, _CONFIG_ORDER)
        if isinstance(document.get("config"), dict):
            document["config"] = _ordered(document["config"], _RUN_CONFIG_ORDER)
        if isinstance(document.get("history"), list):
            document["history"] = [
                _ordered(h, _HISTORY_ORDER) if isinstance(h, dict) else h
                for h in document["history"]
            ]
        return canonical_json(document)

    def content(self) -> bytes:
        """The bytes to store: ``raw`` while the JSON is as parsed, else ``to_bytes()``.

        A config read from elsewhere keeps its bytes, and so its digest, until a
        field is changed; then it is written the way platforge writes configs.
        """
        if self.raw is not None and json.loads(self.raw) == self.json:
            return self.raw
        return self.to_bytes()

    def descriptor(self, media_type: str = mt.OCI_CONFIG) -> Descriptor:
        """The descriptor of ``content()``, for a manifest's ``config``."""
        return Descriptor.of(self.content(), media_type)

    @property
    def digest(self) -> Digest:
        """The digest of ``content()``."""
        return Digest.of(self.content())

    @property
    def architecture(self) -> str:
        return str(self.json["architecture"])

    @property
    def os(self) -> str:
        return str(self.json["os"])

    @property
    def variant(self) -> str | None:
        return _optional_str(self.json, "variant", "image config") or None

    @property
    def platform(self) -> Platform:
        try:
            return platforms.from_json(self.json)
        except PlatformError as exc:
            raise ManifestError(f"image config: {exc}") from None

    @platform.setter
    def platform(self, value: Platform) -> None:
        for key in ("architecture", "os", "os.version", "os.features", "variant"):
            self.json.pop(key, None)
        self.json.update(platforms.to_json(value))

    @property
    def created(self) -> str | None:
        return _optional_str(self.json, "created", "image config")

    @created.setter
    def created(self, value: str | None) -> None:
        if value is None:
            self.json.pop("created", None)
        else:
            self.json["created"] = value

    @property
    def author(self) -> str | None:
        return _optional_str(self.json, "author", "image config")

    @property
    def config(self) -> ContainerConfig:
        return ContainerConfig(self.json.setdefault("config", {}))

    @property
    def diff_ids(self) -> list[Digest]:
        rootfs = self.json.get("rootfs") or {}
        values = rootfs.get("diff_ids") or []
        if not isinstance(values, list):
            raise ManifestError("image config field rootfs.diff_ids must be a list")
        try:
            return [Digest.parse(v) for v in values]
        except ContentError as exc:
            raise ManifestError(f"image config rootfs.diff_ids: {exc}") from None

    @diff_ids.setter
    def diff_ids(self, value: Iterable[Digest]) -> None:
        rootfs = self.json.setdefault("rootfs", {})
        rootfs["type"] = "layers"
        rootfs["diff_ids"] = [str(d) for d in value]

    @property
    def history(self) -> list[History]:
        entries = self.json.get("history") or []
        return [
            History.from_json(h, f"image config history[{n}]")
            for n, h in enumerate(entries)
        ]

    @history.setter
    def history(self, value: Iterable[History]) -> None:
        self.json["history"] = [h.to_json() for h in value]

    def add_layer(self, diff_id: Digest, history: History) -> None:
        """Append a layer's diff ID and the history entry that made it."""
        self.diff_ids = [*self.diff_ids, diff_id]
        history.empty_layer = False
        self.history = [*self.history, history]

    def add_history(self, history: History) -> None:
        """Append a history entry of a step that made no layer (ENV, CMD …)."""
        history.empty_layer = True
        self.history = [*self.history, history]
