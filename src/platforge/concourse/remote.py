"""Where a ``source`` points: the registry, the repository and the credentials.

``source.repository`` follows docker's naming rules (``alpine`` is Docker Hub's
``library/alpine``). A ``registry_mirror`` is asked first by reads (check, get) of
repositories written without a registry host; when it fails, or a check finds
nothing there, the repository's own registry answers instead. Pushes always go to
the repository's own registry.
With ``aws_region`` set the repository lives on ECR: the registry host and a
short-lived password come from boto3 (``pip install platforge[ecr]``), after assuming
each of ``aws_role_arns`` in order.

Transient registry errors are retried by the registry client; when it waits (a 429
with ``Retry-After``, a 503), the resource says so on stderr, because a silent
minute-long pause in a Concourse build log looks like a hang.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

from platforge.errors import ConcourseError
from platforge.registry.auth import Credentials
from platforge.registry.copy import Registries
from platforge.registry.reference import Reference
from platforge.registry.retry import RetryPolicy

if TYPE_CHECKING:
    from platforge.concourse.source import AwsConfig, Source
    from platforge.registry.client import RegistryClient

__all__ = ["Remote", "announce_retries", "open_remote", "uses_mirror"]

log = logging.getLogger("platforge.concourse.remote")

# Concourse steps may wait a while for a throttled registry, but not forever.
RETRY_POLICY = RetryPolicy(attempts=6, base=0.5, max_delay=30.0, max_total=90.0)


@dataclass
class Remote:
    """Open clients for the source's repository; close it when done.

    ``registries`` serves the image copies (push, pull) and ``client`` the single
    requests (tags, manifest digests) alike, so a step authenticates once.
    """

    registries: Registries
    reference: Reference
    credentials: Credentials | None = None

    @property
    def client(self) -> RegistryClient:
        return self.registries.client(self.reference.registry)

    @property
    def repository(self) -> str:
        return self.reference.repository

    @property
    def name(self) -> str:
        """``REGISTRY/REPOSITORY`` as written to the ``repository`` file."""
        return self.reference.name

    def pinned(self, tag: str | None, digest: str) -> Reference:
        """This repository at ``digest`` (``tag`` kept for names and display)."""
        return Reference(self.reference.registry, self.repository, tag, digest)

    def at_tag(self, tag: str) -> Reference:
        return self.reference.with_tag(tag)

    def close(self) -> None:
        self.registries.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _parse_repository(text: str) -> Reference:
    last = text.rsplit("/", 1)[-1]
    if "@" in text or ":" in last:
        raise ConcourseError(
            f"source.repository {text!r} carries a tag or digest; give the bare "
            "repository and set source.tag instead"
        )
    return Reference.parse(text)


def _has_registry_host(text: str) -> bool:
    first = text.split("/", 1)[0]
    return "/" in text and ("." in first or ":" in first or first == "localhost")


def _ecr(aws: AwsConfig) -> tuple[str, Credentials]:
    """The ECR registry host and a token for it, through boto3."""
    try:
        import boto3  # noqa: PLC0415 - optional dependency, only for ECR
    except ImportError as exc:
        raise ConcourseError(
            "source.aws_region asks for ECR, but boto3 is not installed; "
            "install it with `pip install 'platforge[ecr]'`"
        ) from exc
    session = boto3.Session(
        aws_access_key_id=aws.access_key_id,
        aws_secret_access_key=aws.secret_access_key,
        aws_session_token=aws.session_token,
        region_name=aws.region,
    )
    for arn in aws.role_arns:
        assumed = session.client("sts").assume_role(
            RoleArn=arn, RoleSessionName="platforge-concourse"
        )["Credentials"]
        session = boto3.Session(
            aws_access_key_id=assumed["AccessKeyId"],
            aws_secret_access_key=assumed["SecretAccessKey"],
            aws_session_token=assumed["SessionToken"],
            region_name=aws.region,
        )
    kwargs: dict[str, Any] = {}
    if aws.account_id:
        kwargs["registryIds"] = [aws.account_id]
    data = session.client("ecr").get_authorization_token(**kwargs)
    entry = data["authorizationData"][0]
    user, _, password = (
        base64.b64decode(entry["authorizationToken"]).decode().partition(":")
    )
    host = str(entry["proxyEndpoint"]).removeprefix("https://").rstrip("/")
    return host, Credentials(username=user, password=password)


def uses_mirror(source: Source) -> bool:
    """Whether reads of ``source`` go to its ``registry_mirror`` first."""
    return (
        source.registry_mirror is not None
        and source.aws is None
        and not _has_registry_host(source.repository)
    )


def open_remote(source: Source, *, mirror: bool = True) -> Remote:
    """A client for ``source``'s repository: its mirror when ``mirror`` and the
    source has one that applies, else the repository's own registry (or ECR)."""
    reference = _parse_repository(source.repository)
    credentials = None
    if source.username is not None or source.password is not None:
        credentials = Credentials(username=source.username, password=source.password)

    if source.aws is not None:
        host, credentials = _ecr(source.aws)
        reference = Reference(host, source.repository.strip("/"), reference.tag)
    elif mirror and uses_mirror(source):
        assert source.registry_mirror is not None  # noqa: S101 - uses_mirror says so
        chosen = source.registry_mirror
        reference = Reference(chosen.host, reference.repository, reference.tag)
        credentials = None
        if chosen.username is not None or chosen.password is not None:
            credentials = Credentials(
                username=chosen.username, password=chosen.password
            )

    registry = reference.registry
    registries = Registries(
        insecure=frozenset({registry}) if source.insecure else frozenset(),
        ca_certs=source.ca_certs,
        credentials={registry: credentials} if credentials else {},
        retry=RETRY_POLICY,
    )
    return Remote(registries=registries, reference=reference, credentials=credentials)


class _RetryAnnouncer(logging.Handler):
    """Turns the registry client's retry records into one plain stderr line each."""

    def emit(self, record: logging.LogRecord) -> None:
        # The fields are the retry loop's documented contract (registry.retry's
        # docstring); its message wording is free to change.
        if not hasattr(record, "delay"):
            return
        operation = getattr(record, "operation", "a registry request")
        reason = getattr(record, "reason", "a transient error")
        delay = float(getattr(record, "delay", 0.0))
        self.stream_line(
            f"platforge: {operation}: {reason}; waiting {delay:.1f}s and retrying"
        )

    def stream_line(self, line: str) -> None:
        import sys  # noqa: PLC0415 - only the resource entry points install this

        sys.stderr.write(line + "\n")
        sys.stderr.flush()


def announce_retries() -> None:
    """Say on stderr whenever the registry client waits before a retry."""
    logger = logging.getLogger("platforge.registry.retry")
    if not any(isinstance(h, _RetryAnnouncer) for h in logger.handlers):
        logger.addHandler(_RetryAnnouncer(level=logging.DEBUG))
    if logger.getEffectiveLevel() > logging.DEBUG:
        logger.setLevel(logging.DEBUG)
        # Only our handler should see these DEBUG records, not the root's.
        logger.propagate = False
