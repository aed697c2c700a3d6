"""platforge.build: every platform of a Dockerfile into one OCI image index.

``build(BuildRequest) -> BuildResult`` is the whole public surface; the request and
result types live in :mod:`platforge.build.request`.
"""

from __future__ import annotations

from platforge.build.request import (
    BuildEvent,
    BuildRequest,
    BuildResult,
    Output,
)

__all__ = ["BuildEvent", "BuildRequest", "BuildResult", "Output", "build"]


def build(request: BuildRequest) -> BuildResult:
    """Build every platform of ``request`` and write or push the result."""
    # Imported here so that reading the request types does not pull in the
    # registry client, the sandbox and the compression libraries.
    from platforge.build.builder import run_build  # noqa: PLC0415

    return run_build(request)
