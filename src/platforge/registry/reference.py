"""Image references: where an image lives and which version of it is meant.

A reference names a *repository* on a *registry*, plus a *tag* and/or a *digest*::

    [REGISTRY/]PATH[:TAG][@DIGEST]

    alpine                          docker.io/library/alpine:latest
    user/app:1.2                    docker.io/user/app:1.2
    localhost:5000/x                localhost:5000/x:latest
    127.0.0.1:5000/a/b:t            127.0.0.1:5000/a/b:t
    ghcr.io/o/r@sha256:<64 hex>     pinned by digest, no tag implied
    name:tag@sha256:<64 hex>        the digest wins; the tag is kept for display

Docker's rules decide where the registry part ends: the first path component is a
registry only when it contains a ``.`` or a ``:``, or is ``localhost``; otherwise the
whole path is a repository on Docker Hub (``docker.io``), where one-component names
live under ``library/``. Docker Hub's API is served from ``registry-1.docker.io``,
which :attr:`Reference.api_host` gives. When neither tag nor digest is given, the tag
is ``latest``.

Repository path components are lowercase letters and digits joined by ``.``, ``_``,
``__`` or runs of ``-``; a tag is up to 128 characters of ``[A-Za-z0-9_.-]`` not
starting with ``.`` or ``-``; the whole name is at most 255 characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from platforge.errors import ReferenceFormatError

__all__ = [
    "DOCKER_HUB",
    "DOCKER_HUB_API",
    "Reference",
    "is_loopback",
]

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"

# Names users write for Docker Hub that all mean the same registry.
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})

_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_DOMAIN = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"|\[[0-9A-Fa-f:.]+\])"
    r"(?::[0-9]+)?"
)
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[A-Za-z0-9=_-]{32,}")
_DIGEST_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}
_MAX_NAME = 255

_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def is_loopback(registry: str) -> bool:
    """Tell whether ``registry`` (``host[:port]``) is on this machine's loopback."""
    host = registry
    if host.startswith("["):
        host = host[: host.find("]") + 1]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host in _LOOPBACK_HOSTS or host.startswith("127.")


@dataclass(frozen=True)
class Reference:
    """A parsed image reference; ``str()`` gives its fully qualified form."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        """Parse ``text`` with Docker's rules (see the module docstring)."""
        if not text or text != text.strip():
            raise ReferenceFormatError(
                f"invalid image reference {text!r}: expected "
                "[REGISTRY/]REPOSITORY[:TAG][@DIGEST] with no surrounding spaces"
            )
        rest = text
        digest: str | None = None
        if "@" in rest:
            rest, digest = rest.split("@", 1)
            _check_digest(text, digest)

        registry, path = _split_registry(rest)
        tag: str | None = None
        # A ':' after the last '/' separates the tag; one before it was a port.
        colon = path.rfind(":")
        if colon != -1 and "/" not in path[colon:]:
            path, tag = path[:colon], path[colon + 1 :]
            _check_tag(tag, f"in image reference {text!r}")
        _check_path(text, path)

        if registry is None or registry in _HUB_ALIASES:
            registry = DOCKER_HUB
        if registry == DOCKER_HUB and "/" not in path:
            path = f"library/{path}"
        if len(registry) + 1 + len(path) > _MAX_NAME:
            raise ReferenceFormatError(
                f"invalid image reference {text!r}: the name is longer than "
                f"{_MAX_NAME} characters"
            )
        if tag is None and digest is None:
            tag = "latest"
        return cls(registry=registry, repository=path, tag=tag, digest=digest)

    @property
    def api_host(self) -> str:
        """The host serving the registry API (Docker Hub's differs from its name)."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def name(self) -> str:
        """``REGISTRY/REPOSITORY``, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def identifier(self) -> str:
        """What to ask the registry for: the digest when pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def with_tag(self, tag: str) -> Reference:
        """The same repository at ``tag`` (and no digest)."""
        _check_tag(tag, f"for {self.name}")
        return Reference(self.registry, self.repository, tag, None)

    def with_digest(self, digest: str) -> Reference:
        """The same repository pinned at ``digest`` (the tag kept for display)."""
        _check_digest(digest, digest)
        return Reference(self.registry, self.repository, self.tag, digest)

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def _split_registry(text: str) -> tuple[str | None, str]:
    first, sep, rest = text.partition("/")
    if not sep:
        return None, text
    if "." in first or ":" in first or first == "localhost" or first.startswith("["):
        if not _DOMAIN.fullmatch(first):
            raise ReferenceFormatError(
                f"invalid registry {first!r} in image reference {text!r}: "
                "expected HOST[:PORT]"
            )
        return first, rest
    return None, text


def _check_tag(tag: str, where: str) -> None:
    if not _TAG.fullmatch(tag):
        raise ReferenceFormatError(
            f"invalid tag {tag!r} {where}: a tag is 1-128 of [A-Za-z0-9_.-], not "
            "starting with '.' or '-'"
        )


def _check_path(text: str, path: str) -> None:
    for component in path.split("/"):
        if not _COMPONENT.fullmatch(component):
            hint = ""
            if component.lower() != component:
                hint = " (repository names are lowercase)"
            raise ReferenceFormatError(
                f"invalid repository path component {component!r} in image "
                f"reference {text!r}: expected lowercase letters and digits joined "
                f"by '.', '_', '__' or '-'{hint}"
            )


def _check_digest(text: str, digest: str) -> None:
    algorithm, _, encoded = digest.partition(":")
    expected = _DIGEST_LENGTHS.get(algorithm)
    valid = _DIGEST.fullmatch(digest) is not None
    if expected is not None:
        valid = valid and re.fullmatch(f"[a-f0-9]{{{expected}}}", encoded) is not None
    if not valid:
        raise ReferenceFormatError(
            f"invalid digest {digest!r} in image reference {text!r}: expected "
            "ALGORITHM:HEX such as sha256:<64 lowercase hex digits>"
        )
