"""The resource's configuration: ``source``, and the ``params`` of get and put.

Pipelines written for the ``registry-image`` resource configure this one unchanged,
so the keys are upstream's::

    source:
      repository: 127.0.0.1:5000/app     # required; docker.io rules for short names
      tag: latest                        # tag mode: follow one tag's digest
      tag_regex: '^v\\d+$'               # regex mode (created_at_sort: true to order
                                         #   by the image config's creation time)
      variant: alpine                    # semver mode: only 1.2.3-alpine style tags
      semver_constraint: '>= 1.2, < 3'   # semver mode: only these versions
      pre_releases: false                # semver mode: also 1.2.3-rc.1
      pre_release_prefixes: [alpha, beta, rc]
      username: ...  password: ...
      insecure: false                    # plain HTTP / unverified TLS
      ca_certs: ["-----BEGIN CERTIFICATE-----..."]
      platform: {os: linux, architecture: arm64, variant: v8}  # missing: the worker's
      registry_mirror: {host: mirror:5000, username: ..., password: ...}
      aws_access_key_id / aws_secret_access_key / aws_session_token / aws_region /
      aws_role_arn / aws_role_arns / aws_account_id     # ECR, through boto3
      aws_ecr_registry_id                # the older name of aws_account_id
      debug: false

With neither ``tag`` nor ``tag_regex``, ``check`` runs in semver mode; ``in`` and
``out`` then use ``latest`` where they need a tag. ``content_trust`` (Notary v1
signing) is not supported and is refused with a message saying so.

Every key is checked: an unknown one, a wrong type or a bad regex or constraint is a
``ConcourseError`` naming the key. Secrets are never part of a message or a repr.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from platforge import platforms
from platforge.concourse.re2 import compile_re2
from platforge.concourse.semver import (
    DEFAULT_PRE_RELEASE_PREFIXES,
    Constraint,
    parse_constraint,
)
from platforge.errors import ConcourseError, PlatformError
from platforge.platforms import Platform, normalize

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "AwsConfig",
    "GetParams",
    "PutParams",
    "RegistryMirror",
    "Source",
    "parse_get_params",
    "parse_put_params",
    "parse_source",
    "secrets_of",
]

CheckMode = Literal["tag", "semver", "regex"]
GetFormat = Literal["rootfs", "oci", "oci-layout"]

# The distribution spec's tag grammar (upstream parses repository:tag with it too).
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
# A registry mirror is HOST[:PORT]: no scheme, path or spaces.
_MIRROR_HOST = re.compile(
    r"[A-Za-z0-9.-]+(?::[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](?::[0-9]{1,5})?"
)
_SECRET_KEYS = frozenset(
    {"password", "aws_secret_access_key", "aws_session_token", "aws_access_key_id"}
)
_AWS_KEYS = (
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
    "aws_region",
    "aws_role_arn",
    "aws_role_arns",
    "aws_account_id",
    "aws_ecr_registry_id",
)


class _Reader:
    """Typed access to one JSON object, remembering which keys were read."""

    def __init__(self, data: Any, where: str) -> None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConcourseError(
                f"{where} must be a JSON object of keys, not {type(data).__name__}"
            )
        self.data: dict[str, Any] = data
        self.where = where
        self.seen: set[str] = set()

    def _get(self, key: str) -> Any:
        self.seen.add(key)
        return self.data.get(key)

    def _type_error(self, key: str, expected: str) -> ConcourseError:
        value = self.data.get(key)
        shown = "a secret" if key in _SECRET_KEYS else repr(value)
        return ConcourseError(
            f"{self.where}.{key} must be {expected}, got {shown} "
            f"({type(value).__name__}); fix the pipeline's {self.where}"
        )

    def string(self, key: str, *, required: bool = False) -> str | None:
        value = self._get(key)
        if value is None or value == "":
            if required:
                raise ConcourseError(
                    f"{self.where}.{key} is required; set it in the pipeline"
                )
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self._type_error(key, "a string")
        return str(value)

    def boolean(self, key: str) -> bool:
        value = self._get(key)
        if value is None:
            return False
        if isinstance(value, bool):
            return value
        # Task params and some credential managers hand booleans over as strings.
        if isinstance(value, str) and value.lower() in {"true", "false"}:
            return value.lower() == "true"
        raise self._type_error(key, "true or false")

    def strings(self, key: str) -> tuple[str, ...] | None:
        value = self._get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._type_error(key, "a list of strings")
        return tuple(value)

    def mapping(self, key: str) -> _Reader | None:
        value = self._get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self._type_error(key, "an object")
        return _Reader(value, f"{self.where}.{key}")

    def refuse_unknown(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise ConcourseError(
                f"{self.where} has unknown key {unknown[0]!r}"
                + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
                + "; check its spelling against the registry-image documentation"
            )


@dataclass(frozen=True)
class RegistryMirror:
    """A mirror used for repositories given without a registry host."""

    host: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class AwsConfig:
    """ECR settings; credentials are resolved through boto3 when used."""

    region: str
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    role_arns: tuple[str, ...] = ()
    account_id: str | None = None


@dataclass(frozen=True)
class Source:
    """A validated ``source``; its repr never shows a secret."""

    repository: str
    tag: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    insecure: bool = False
    ca_certs: tuple[str, ...] = field(default=(), repr=False)
    platform: Platform | None = None
    variant: str | None = None
    semver_constraint: Constraint | None = None
    pre_releases: bool = False
    pre_release_prefixes: tuple[str, ...] = DEFAULT_PRE_RELEASE_PREFIXES
    tag_regex: re.Pattern[str] | None = None
    created_at_sort: bool = False
    registry_mirror: RegistryMirror | None = None
    aws: AwsConfig | None = None
    debug: bool = False

    @property
    def mode(self) -> CheckMode:
        """How ``check`` finds versions: one tag, semver tags, or a regex."""
        if self.tag is not None:
            return "tag"
        if self.tag_regex is not None:
            return "regex"
        return "semver"

    @property
    def tag_or_latest(self) -> str:
        return self.tag or "latest"

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every secret value, so output can be checked never to contain one."""
        values = [self.password]
        if self.registry_mirror is not None:
            values.append(self.registry_mirror.password)
        if self.aws is not None:
            values += [
                self.aws.access_key_id,
                self.aws.secret_access_key,
                self.aws.session_token,
            ]
        return tuple(v for v in values if v)


def _platform(reader: _Reader | None) -> Platform | None:
    """A ``platform`` object; as upstream, a missing field is the worker's own."""
    if reader is None:
        return None
    worker = platforms.host()
    os_name = reader.string("os") or worker.os
    arch = reader.string("architecture")
    variant = reader.string("variant")
    reader.refuse_unknown()
    if arch is None:
        arch, variant = worker.architecture, variant or worker.variant
    try:
        return normalize(Platform(os=os_name, architecture=arch, variant=variant))
    except PlatformError as exc:
        raise ConcourseError(f"{reader.where}: {exc}") from exc


def _aws(reader: _Reader, *, base: AwsConfig | None = None) -> AwsConfig | None:
    role = reader.string("aws_role_arn")
    roles = reader.strings("aws_role_arns")
    if role and roles:
        raise ConcourseError(
            f"{reader.where} sets both aws_role_arn and aws_role_arns; "
            "keep only aws_role_arns"
        )
    values = {
        "access_key_id": reader.string("aws_access_key_id"),
        "secret_access_key": reader.string("aws_secret_access_key"),
        "session_token": reader.string("aws_session_token"),
        # aws_ecr_registry_id is upstream's older name for the same registry ID.
        "account_id": reader.string("aws_account_id")
        or reader.string("aws_ecr_registry_id"),
    }
    region = reader.string("aws_region")
    given: dict[str, Any] = {k: v for k, v in values.items() if v is not None}
    if role or roles:
        given["role_arns"] = (role,) if role else roles
    if base is not None:
        if region:
            given["region"] = region
        return replace(base, **given)
    if region is None:
        if given:
            raise ConcourseError(
                f"{reader.where} has AWS credentials but no aws_region; "
                "set aws_region to use ECR"
            )
        return None
    return AwsConfig(region=region, **given)


def parse_source(data: Any) -> Source:
    """Validate a ``source`` object (see the module docstring for its keys)."""
    reader = _Reader(data, "source")
    if reader.data.get("content_trust") is not None:
        raise ConcourseError(
            "source.content_trust is not supported by platforge (Notary v1 signing); "
            "remove it, or sign images with a separate step"
        )
    reader.seen.add("content_trust")
    repository = reader.string("repository", required=True)
    assert repository is not None  # noqa: S101 - required=True guarantees it

    tag_regex = None
    if (pattern := reader.string("tag_regex")) is not None:
        tag_regex = compile_re2(pattern)  # Go's dialect, as upstream
    tag = reader.string("tag")
    if tag is not None and not _TAG.fullmatch(tag):
        raise ConcourseError(
            f"source.tag {tag!r} is not a valid tag: 1-128 of A-Z a-z 0-9 _ . -, "
            "not starting with '.' or '-'; fix the pipeline's source"
        )
    if tag is not None and tag_regex is not None:
        raise ConcourseError(
            "source sets both tag and tag_regex; keep one (tag follows one tag, "
            "tag_regex finds every matching tag)"
        )
    constraint = None
    if (text := reader.string("semver_constraint")) is not None:
        constraint = parse_constraint(text)

    mirror = None
    if (mirror_reader := reader.mapping("registry_mirror")) is not None:
        host = mirror_reader.string("host", required=True)
        assert host is not None  # noqa: S101 - required=True guarantees it
        if not _MIRROR_HOST.fullmatch(host):
            raise ConcourseError(
                f"source.registry_mirror.host {host!r} is not HOST[:PORT]; drop any "
                "scheme (http://) or path"
            )
        mirror = RegistryMirror(
            host=host,
            username=mirror_reader.string("username"),
            password=mirror_reader.string("password"),
        )
        mirror_reader.refuse_unknown()

    source = Source(
        repository=repository,
        tag=tag,
        username=reader.string("username"),
        password=reader.string("password"),
        insecure=reader.boolean("insecure"),
        ca_certs=_ca_certs(reader.strings("ca_certs") or ()),
        platform=_platform(reader.mapping("platform")),
        variant=reader.string("variant"),
        semver_constraint=constraint,
        pre_releases=reader.boolean("pre_releases"),
        pre_release_prefixes=reader.strings("pre_release_prefixes")
        or DEFAULT_PRE_RELEASE_PREFIXES,
        tag_regex=tag_regex,
        created_at_sort=reader.boolean("created_at_sort"),
        registry_mirror=mirror,
        aws=_aws(reader),
        debug=reader.boolean("debug"),
    )
    reader.refuse_unknown()
    return source


def _ca_certs(pems: tuple[str, ...]) -> tuple[str, ...]:
    """``ca_certs``, each checked to be a PEM certificate before any step runs."""
    for number, pem in enumerate(pems):
        try:
            ssl.create_default_context().load_verify_locations(cadata=pem)
        except (ssl.SSLError, ValueError):
            raise ConcourseError(
                f"source.ca_certs[{number}] is not a PEM certificate; give the whole "
                "-----BEGIN CERTIFICATE----- block, line breaks included"
            ) from None
    return pems


def _overrides(reader: _Reader, source: Source) -> Source:
    """get and put may override the credentials (for short-lived ones)."""
    username = reader.string("username")
    password = reader.string("password")
    aws = _aws(reader, base=source.aws)
    return replace(
        source,
        username=username if username is not None else source.username,
        password=password if password is not None else source.password,
        aws=aws,
    )


@dataclass(frozen=True)
class GetParams:
    """``params`` of a get step, with the source they apply to."""

    source: Source
    format: GetFormat = "rootfs"
    skip_download: bool = False
    platform: Platform | None = None


def parse_get_params(data: Any, source: Source) -> GetParams:
    """Validate get ``params``: format, skip_download, platform, credentials."""
    reader = _Reader(data, "params")
    fmt = reader.string("format") or "rootfs"
    if fmt not in {"rootfs", "oci", "oci-layout"}:
        raise ConcourseError(
            f"params.format {fmt!r} is not one of rootfs, oci, oci-layout"
        )
    params = GetParams(
        source=_overrides(reader, source),
        format=fmt,  # type: ignore[arg-type] # checked against the literal above
        skip_download=reader.boolean("skip_download"),
        platform=_platform(reader.mapping("platform")),
    )
    reader.refuse_unknown()
    return params


@dataclass(frozen=True)
class PutParams:
    """``params`` of a put step, with the source they apply to."""

    source: Source
    image: str
    additional_tags: str | None = None
    version: str | None = None
    bump_aliases: bool = False
    tag_prefix: str | None = None


def parse_put_params(data: Any, source: Source) -> PutParams:
    """Validate put ``params``: image, additional_tags, version, bump_aliases."""
    reader = _Reader(data, "params")
    image = reader.string("image", required=True)
    assert image is not None  # noqa: S101 - required=True guarantees it
    params = PutParams(
        source=_overrides(reader, source),
        image=image,
        additional_tags=reader.string("additional_tags"),
        version=_version_text(reader),
        bump_aliases=reader.boolean("bump_aliases"),
        tag_prefix=reader.string("tag_prefix"),
    )
    reader.refuse_unknown()
    if params.bump_aliases and params.version is None:
        raise ConcourseError(
            "params.bump_aliases needs params.version (the version whose aliases "
            "move); set version or drop bump_aliases"
        )
    return params


def _version_text(reader: _Reader) -> str | None:
    """``params.version`` as written: a YAML number (1.10) would lose digits."""
    value = reader.data.get("version")
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ConcourseError(
            f"params.version must be a string, got the number {value!r}; quote it "
            'in the pipeline (version: "1.10") so no digit is lost'
        )
    return reader.string("version")


def secrets_of(data: Mapping[str, Any]) -> list[str]:
    """Every secret value in ``data`` (passwords, AWS keys), at any depth."""
    found: list[str] = []
    for key, value in data.items():
        if key in _SECRET_KEYS and isinstance(value, str):
            found.append(value)
        elif isinstance(value, dict):
            found.extend(secrets_of(value))
    return found


def described(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` with every secret value masked, for debug logs."""
    masked: dict[str, Any] = {}
    for key, value in data.items():
        if key in _SECRET_KEYS and value:
            masked[key] = "***"
        elif isinstance(value, dict):
            masked[key] = described(value)
        elif key == "ca_certs":
            masked[key] = f"<{len(value) if isinstance(value, list) else 0} certs>"
        else:
            masked[key] = value
    return masked
