"""The Concourse resource protocol: one JSON request in, one JSON answer out.

Concourse runs ``/opt/resource/check``, ``/opt/resource/in DEST`` and
``/opt/resource/out SRC`` with a JSON object on stdin:

========  =====================================  ==================================
script    request                                answer on stdout
========  =====================================  ==================================
check     ``{source, version|null}``             ``[version, ...]`` oldest first
in        ``{source, version, params}``          ``{version, metadata}``
out       ``{source, params}``                   ``{version, metadata}``
========  =====================================  ==================================

A version here is ``{"tag": ..., "digest": "sha256:..."}``; metadata is a list of
``{"name", "value"}`` pairs shown in the web UI. Everything else a step says goes to
stderr, which Concourse shows as the step's log; a non-zero exit fails the step.

The protocol is written here rather than with the ``concoursetools`` package: that
package owns ``sys.argv``, stdin and the exit (its ``*_main`` class methods), builds
the resource by passing ``source`` as keyword arguments (so an unknown key surfaces
as a Python ``TypeError`` with a traceback, not our one-line error), and prints its
own output; ours must hang off the ``platforge`` click command and keep secrets out of
every message. What it would save is the forty lines below.
"""

from __future__ import annotations

import json
import logging
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from platforge.errors import ConcourseError, PlatforgeError

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

__all__ = [
    "ResourceVersion",
    "debug_logging",
    "read_request",
    "scrub",
    "secrets_masked",
    "version_from_json",
    "write_answer",
]

_DIGEST = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")


def debug_logging() -> None:
    """``debug: true`` / ``DEBUG``: every platforge log line, with level and logger.

    The CLI set stderr up for plain progress lines; debugging needs to see which
    part of platforge spoke, as ``--debug`` shows it.
    """
    logging.getLogger("platforge").setLevel(logging.DEBUG)
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)


@dataclass(frozen=True)
class ResourceVersion:
    """One version of the resource: a tag and the digest it pointed at."""

    tag: str
    digest: str

    def to_json(self) -> dict[str, str]:
        return {"tag": self.tag, "digest": self.digest}


def read_request(stream: IO[str]) -> dict[str, Any]:
    """Read the request object from ``stream`` (stdin)."""
    text = stream.read()
    if not text.strip():
        raise ConcourseError(
            "no request on stdin; Concourse sends a JSON object such as "
            '{"source": {"repository": "..."}}'
        )
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConcourseError(
            f"the request on stdin is not JSON ({exc.msg} at line {exc.lineno}); "
            'send an object such as {"source": {...}}'
        ) from None
    if not isinstance(data, dict):
        raise ConcourseError(
            f"the request on stdin is a JSON {type(data).__name__}, not an object"
        )
    unknown = sorted(set(data) - {"source", "version", "params"})
    if unknown:
        raise ConcourseError(
            f"the request has unknown key {unknown[0]!r}; expected source, version "
            "and params"
        )
    return data


def version_from_json(data: Any, *, required: bool) -> ResourceVersion | None:
    """Read the request's ``version`` (``tag`` may be absent: pinned by digest)."""
    if data is None:
        if required:
            raise ConcourseError(
                "the request has no version; `in` fetches the version Concourse "
                'passes, e.g. {"digest": "sha256:..."}'
            )
        return None
    if not isinstance(data, dict):
        raise ConcourseError(f"version must be an object, not {type(data).__name__}")
    unknown = sorted(set(data) - {"tag", "digest"})
    if unknown:
        raise ConcourseError(
            f"version has unknown key {unknown[0]!r}; a version is {{tag, digest}}"
        )
    digest = data.get("digest")
    tag = data.get("tag") or ""
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise ConcourseError(
            f"version.digest {digest!r} is not a digest such as sha256:<64 hex>"
        )
    if not isinstance(tag, str):
        raise ConcourseError(f"version.tag {tag!r} must be a string")
    return ResourceVersion(tag=tag, digest=digest)


def metadata(pairs: Iterable[tuple[str, str]]) -> list[dict[str, str]]:
    """Metadata pairs as Concourse shows them in the build page."""
    return [{"name": name, "value": value} for name, value in pairs if value]


def write_answer(answer: Any, stream: IO[str]) -> None:
    """Write the answer as one JSON document and a newline."""
    stream.write(json.dumps(answer) + "\n")
    stream.flush()


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret value replaced by ``***``."""
    for secret in secrets:
        if secret and len(secret) >= 3:  # masking "a" would garble every message
            text = text.replace(secret, "***")
    return text


@contextmanager
def secrets_masked(secrets: Iterable[str]) -> Iterator[None]:
    """A last line of defence: errors leave the block with ``secrets`` masked."""
    try:
        yield
    except PlatforgeError as error:
        message = str(error)
        clean = scrub(message, secrets)
        if clean != message:
            raise ConcourseError(clean) from None
        raise
