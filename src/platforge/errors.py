"""The one error tree of platforge.

Every failure a user can cause or meet is a ``PlatforgeError``; the CLI prints its
message as one line and exits with status 1. Anything else escaping is a bug.

::

    PlatforgeError
    ├── PlatformError          a platform string that does not parse
    ├── ContentError           OCI content that is invalid or does not match its digest
    │   ├── DigestMismatchError
    │   └── ManifestError      a manifest, index or config that does not parse
    ├── LayoutError            an OCI image layout on disk that is missing or broken
    ├── ArchiveError           a docker-archive or oci-archive tarball that is broken
    ├── UnpackError            a layer that would write outside its target
    ├── ReferenceFormatError   an image reference that does not parse
    ├── RegistryError          the registry refused or failed a request
    │   ├── AuthError          credentials missing or refused (401/403)
    │   ├── NotFoundError      manifest, blob or repository unknown (404)
    │   └── TransportError     connection failures after the last retry
    ├── CredentialsError       docker config.json or a credential helper failed
    ├── DockerfileError        a Dockerfile that does not parse or resolve (FILE:LINE)
    ├── BuildError             a build step failed
    │   ├── StepError          a RUN exited non-zero
    │   └── EmulationError     a foreign platform cannot run here
    ├── SandboxError           the OCI runtime or a fallback could not start
    └── ConcourseError         bad resource source/params or task parameters

Messages say what failed, on which input, and how to fix it. They never contain a
password or a token.
"""

from __future__ import annotations

__all__ = [
    "ArchiveError",
    "AuthError",
    "BuildError",
    "ConcourseError",
    "ContentError",
    "CredentialsError",
    "DigestMismatchError",
    "DockerfileError",
    "EmulationError",
    "LayoutError",
    "ManifestError",
    "NotFoundError",
    "PlatforgeError",
    "PlatformError",
    "ReferenceFormatError",
    "RegistryError",
    "SandboxError",
    "StepError",
    "TransportError",
    "UnpackError",
]


class PlatforgeError(Exception):
    """Base of every error platforge reports to a user."""


class PlatformError(PlatforgeError, ValueError):
    pass


class ContentError(PlatforgeError):
    pass


class DigestMismatchError(ContentError):
    pass


class ManifestError(ContentError):
    pass


class LayoutError(PlatforgeError):
    pass


class ArchiveError(PlatforgeError):
    pass


class UnpackError(PlatforgeError):
    pass


class ReferenceFormatError(PlatforgeError, ValueError):
    pass


class RegistryError(PlatforgeError):
    """A registry answered with an error, or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AuthError(RegistryError):
    pass


class NotFoundError(RegistryError):
    pass


class TransportError(RegistryError):
    pass


class CredentialsError(PlatforgeError):
    pass


class DockerfileError(PlatforgeError):
    """A Dockerfile problem, located as ``FILE:LINE``."""

    def __init__(
        self, message: str, *, file: str | None = None, line: int | None = None
    ) -> None:
        where = file or "Dockerfile"
        if line is not None:
            where = f"{where}:{line}"
        super().__init__(f"{where}: {message}")
        self.file = file
        self.line = line
        self.detail = message


class BuildError(PlatforgeError):
    pass


class StepError(BuildError):
    pass


class EmulationError(BuildError):
    pass


class SandboxError(PlatforgeError):
    pass


class ConcourseError(PlatforgeError):
    pass
