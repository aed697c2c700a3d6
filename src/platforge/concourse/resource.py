"""The three resource scripts: read the request, do the step, write the answer.

``run_check``, ``run_in`` and ``run_out`` are what ``platforge resource check|in|out``
and the image's ``/opt/resource/*`` scripts call. Each reads the request from
``stdin``, validates ``source`` and ``params`` before touching the network, and writes
exactly one JSON document to ``stdout``. Errors propagate as ``PlatforgeError`` (the
CLI prints one line and exits 1), with any secret from the request masked.
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any

from platforge.concourse.protocol import (
    debug_logging,
    read_request,
    secrets_masked,
    version_from_json,
    write_answer,
)
from platforge.concourse.remote import announce_retries, open_remote, uses_mirror
from platforge.concourse.source import (
    Source,
    described,
    parse_get_params,
    parse_put_params,
    parse_source,
    secrets_of,
)
from platforge.errors import ConcourseError, PlatforgeError, RegistryError

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

__all__ = ["run_check", "run_in", "run_out"]

log = logging.getLogger("platforge.concourse")


# Hints the registry layer words for the platforge CLI, and what a pipeline sets
# instead: the error keeps what failed and gets the pipeline's fix.
_PIPELINE_HINTS = (
    (
        "; run `platforge login",
        (
            "; check source.username and source.password (a get or put may override "
            "them in params)"
        ),
    ),
    (
        "; trust its CA with",
        (
            "; give its CA in source.ca_certs, or set source.insecure: true if you "
            "trust the network"
        ),
    ),
    (
        "; pick one of those with --platform",
        "; pick one of those with source.platform or the get step's params.platform",
    ),
)


@contextmanager
def _pipeline_hints() -> Iterator[None]:
    """Errors leave the block telling how to fix the pipeline, not a command line."""
    try:
        yield
    except PlatforgeError as error:
        message = str(error)
        for marker, hint in _PIPELINE_HINTS:
            if (cut := message.find(marker)) >= 0:
                raise ConcourseError(message[:cut] + hint) from error
        raise


def _start(request: dict[str, Any]) -> Source:
    source = parse_source(request.get("source"))
    if source.debug:
        debug_logging()
    announce_retries()
    log.debug("request: %s", json.dumps(described(request)))
    return source


def run_check(stdin: IO[str], stdout: IO[str]) -> None:
    """``check``: print the versions, oldest first."""
    from platforge.concourse.check import check  # noqa: PLC0415 - keeps start-up fast

    request = read_request(stdin)
    with secrets_masked(secrets_of(request)), _pipeline_hints():
        source = _start(request)
        previous = version_from_json(request.get("version"), required=False)
        versions = []
        if uses_mirror(source):
            try:
                with open_remote(source) as remote:
                    versions = check(source, previous, remote)
            except RegistryError as exc:
                log.warning("checking the mirror failed, asking the origin: %s", exc)
            if not versions:
                log.info("the mirror has no versions; asking the origin registry")
        if not versions:
            with open_remote(source, mirror=False) as remote:
                versions = check(source, previous, remote)
        write_answer([v.to_json() for v in versions], stdout)


def run_in(dest: Path, stdin: IO[str], stdout: IO[str]) -> None:
    """``in``: fetch the version into ``dest`` and print it with metadata."""
    from platforge.concourse.get import get  # noqa: PLC0415 - keeps start-up fast

    request = read_request(stdin)
    with secrets_masked(secrets_of(request)), _pipeline_hints():
        source = _start(request)
        version = version_from_json(request.get("version"), required=True)
        assert version is not None  # noqa: S101 - required=True guarantees it
        params = parse_get_params(request.get("params"), source)
        write_answer(get(dest, version, params), stdout)


def run_out(src: Path, stdin: IO[str], stdout: IO[str]) -> None:
    """``out``: push the image found under ``src`` and print the new version."""
    from platforge.concourse.put import put  # noqa: PLC0415 - keeps start-up fast

    request = read_request(stdin)
    with secrets_masked(secrets_of(request)), _pipeline_hints():
        source = _start(request)
        params = parse_put_params(request.get("params"), source)
        write_answer(put(src, params), stdout)
