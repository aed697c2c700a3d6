"""The OCI distribution protocol, spoken to one registry.

A :class:`RegistryClient` holds one ``httpx.Client`` (HTTP/1.1, keep-alive, a small
connection pool shared by parallel blob transfers) and an
:class:`~platforge.registry.auth.Authenticator`. Every operation names the
repository it acts on, because bearer tokens are scoped per repository.

Connecting: the first request pings ``GET /v2/`` over HTTPS. Plain HTTP is tried
only for loopback registries and registries the user named insecure; TLS is verified
everywhere else. A server elsewhere that answers the TLS greeting with something
that is not TLS (a plain-HTTP registry) is reported at once, not retried.

Trusted CAs, all added together: the system's; a CA file or PEM strings the caller
passes (``--ca-file``, Concourse's ``ca_certs``); the file named by
``PLATFORGE_CA_FILE``, so every command that reaches a registry (build and run
included) can trust one; and the ``*.crt`` files of ``/etc/docker/certs.d/HOST/``
and ``/etc/containers/certs.d/HOST/``, docker's and podman's convention (client
certificates found there are not used). *Insecure* also accepts an unverified
certificate, as ``--tls-verify=false`` does in skopeo.

Uploading a blob (regclient's order, because chunked uploads are many times slower
on real registries):

1. ``HEAD /v2/NAME/blobs/DIGEST``: a 200 means the registry has it; done.
2. When the blob is known to be in another repository of the same registry:
   ``POST /v2/NAME/blobs/uploads/?mount=DIGEST&from=SOURCE``. A 201 means mounted;
   a 202 means the registry declined and opened an upload session instead.
3. Monolithic: ``POST`` opens a session, one ``PUT LOCATION?digest=`` sends the
   whole blob with ``Content-Length``, streamed from its source.
4. Chunked, only when the monolithic ``PUT`` is refused as too large or unsupported
   (or when asked for): ``PATCH`` chunks of at least ``OCI-Chunk-Min-Length`` bytes,
   each resumed from the ``Range`` the server reports, then ``PUT ?digest=``.

An upload is hashed as it is sent, in the same pass, and is committed only when
the bytes match the digest, so a corrupt source is never stored whether or not the
registry checks digests itself. Monolithic: the last piece of the body is held back
until the whole blob is hashed; on a mismatch the request is aborted short of its
``Content-Length``, which no registry commits. Chunked: the final ``PUT ?digest=``
is sent only after the hash matched. Either way the session is then cancelled
(``DELETE``) and :class:`~platforge.errors.DigestMismatchError` raised.
Limitation: docker-registry refuses to cancel a session whose monolithic ``PUT`` was
cut short (its upload state no longer matches the bytes it kept), so the partial
bytes stay in its upload area, never as a blob, until it purges stale uploads.

Downloads are hashed while they stream to a temp file beside the destination, which
is renamed into place only when digest and size match; a mismatch raises
:class:`~platforge.errors.DigestMismatchError` and leaves nothing behind.

Transient failures are retried (see :mod:`platforge.registry.retry`); the transport
is a seam (``wrap_transport``) so tests can count bytes or inject faults.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import ssl
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NamedTuple, Self

import httpx

from platforge.errors import (
    AuthError,
    DigestMismatchError,
    NotFoundError,
    RegistryError,
    TransportError,
)
from platforge.oci.digest import Digest, Hasher
from platforge.registry.auth import (
    Authenticator,
    Credentials,
    pull_scope,
    push_scope,
)
from platforge.registry.progress import BlobEvent, ProgressFn, emit
from platforge.registry.reference import DOCKER_HUB, DOCKER_HUB_API, is_loopback
from platforge.registry.retry import (
    RetryableStatusError,
    RetryPolicy,
    is_retryable_status,
    parse_retry_after,
    retry_call,
    without_source_position,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "MANIFEST_ACCEPT",
    "BlobOpener",
    "ManifestInfo",
    "RegistryClient",
]

log = logging.getLogger("platforge.registry.client")

CHUNK = 1 << 20
DEFAULT_CHUNK_UPLOAD = 16 << 20
MANIFEST_ACCEPT = (
    "application/vnd.oci.image.index.v1+json, "
    "application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json, "
    "application/vnd.docker.distribution.manifest.v2+json"
)
_MAX_MANIFEST = 4 << 20
# Statuses of a monolithic PUT that mean "send it in chunks instead".
_CHUNKED_FALLBACK = frozenset({405, 413, 501})
_TIMEOUT = httpx.Timeout(connect=10.0, read=60.0, write=60.0, pool=120.0)

# Directories holding per-registry CA files (HOST[:PORT]/*.crt), docker's and
# podman's convention.
CERTS_DIRS = (Path("/etc/docker/certs.d"), Path("/etc/containers/certs.d"))
CA_FILE_ENV = "PLATFORGE_CA_FILE"

# A callable opening the blob's bytes from the start, as a binary file object.
BlobOpener = Callable[[], contextlib.AbstractContextManager[IO[bytes]]]


class _Session(NamedTuple):
    """An open upload: where to send it, and the smallest chunk it accepts."""

    location: str
    min_chunk: int


def _session(response: httpx.Response) -> _Session | None:
    location = response.headers.get("location")
    if not location:
        return None
    minimum = response.headers.get("oci-chunk-min-length", "")
    return _Session(str(location), int(minimum) if minimum.isdigit() else 0)


class _Upload(NamedTuple):
    repository: str
    scopes: tuple[str, ...]
    digest: str
    size: int
    opener: BlobOpener
    progress: ProgressFn | None


@dataclass(frozen=True)
class ManifestInfo:
    """A manifest or index as the registry served it (``raw`` is hashed as is)."""

    raw: bytes
    media_type: str
    digest: str

    @property
    def size(self) -> int:
        return len(self.raw)


class RegistryClient:
    """Blobs, uploads, manifests and tags of one registry.

    ``registry`` is a registry name as in a reference (``docker.io``,
    ``127.0.0.1:5000``). ``credentials`` override docker's config; ``insecure`` allows
    plain HTTP and unverified TLS; ``ca_file``/``ca_certs`` add trusted CAs;
    ``chunk_size`` forces chunked uploads of that size. Thread-safe.
    """

    def __init__(
        self,
        registry: str,
        *,
        credentials: Credentials | None = None,
        insecure: bool = False,
        ca_file: str | os.PathLike[str] | None = None,
        ca_certs: tuple[str, ...] = (),
        retry: RetryPolicy | None = None,
        config: Path | None = None,
        wrap_transport: Callable[[httpx.BaseTransport], httpx.BaseTransport]
        | None = None,
        transport: httpx.BaseTransport | None = None,
        parallel: int = 4,
        chunk_size: int | None = None,
    ) -> None:
        self.registry = registry
        self.host = DOCKER_HUB_API if registry == DOCKER_HUB else registry
        self.insecure = insecure
        self.plain_http_allowed = insecure or is_loopback(self.host)
        self.retry = retry or RetryPolicy()
        self.chunk_size = chunk_size
        self.auth = Authenticator(registry, credentials=credentials, config=config)
        verify: ssl.SSLContext | bool = _ssl_context(self.host, ca_file, ca_certs)
        if insecure:
            verify = False
        if transport is None:
            limits = httpx.Limits(
                max_connections=parallel + 4, max_keepalive_connections=parallel + 4
            )
            transport = httpx.HTTPTransport(verify=verify, limits=limits, retries=0)
        if wrap_transport is not None:
            transport = wrap_transport(transport)
        self._http = httpx.Client(
            transport=transport,
            timeout=_TIMEOUT,
            follow_redirects=True,
            headers={"User-Agent": "platforge"},
        )
        self._base: str | None = None
        self._base_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RegistryClient(registry={self.registry!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- connecting ------------------------------------------------------------------

    def ping(self) -> str:
        """Find the registry's scheme and auth challenge; return its base URL."""
        with self._base_lock:
            if self._base is None:
                self._base = self._probe()
            return self._base

    def _probe(self) -> str:
        https = f"https://{self.host}"
        try:
            response = self._ping_once(https)
        except httpx.ConnectError as exc:
            if not self.plain_http_allowed:
                return self._ping_with_retries(https, exc)
            return self._probe_plain(exc)
        except (httpx.TransportError, RetryableStatusError) as exc:
            return self._ping_with_retries(https, exc)
        self._learn(response)
        return https

    def _probe_plain(self, tls_failure: Exception) -> str:
        # The HTTPS attempt failed on a host allowed plain HTTP: a plain server
        # answers a TLS hello with garbage, so try HTTP before giving up.
        tls_problem = _tls_problem(tls_failure)
        http = f"http://{self.host}"
        try:
            response = retry_call(
                lambda: self._ping_once(http),
                self.retry,
                f"connect to registry {self.registry}",
            )
        except RegistryError:
            if tls_problem:
                raise self._tls_error(tls_problem) from tls_failure
            raise
        if response.status_code not in {200, 401} and tls_problem:
            raise self._tls_error(tls_problem) from tls_failure
        self._learn(response)
        log.debug("registry %s speaks plain HTTP", self.registry, extra={"base": http})
        return http

    def _ping_once(self, base: str) -> httpx.Response:
        response = self._http.get(f"{base}/v2/")
        if is_retryable_status(response.status_code):
            raise RetryableStatusError(
                f"registry {self.registry} answered HTTP {response.status_code} to "
                "GET /v2/",
                status=response.status_code,
                retry_after=parse_retry_after(response.headers.get("retry-after")),
            )
        return response

    def _ping_with_retries(self, base: str, first: Exception) -> str:
        if _answered_without_tls(first):
            # Retrying cannot help: the server is up and speaks something else.
            raise self._not_https_error() from first
        problem = _tls_problem(first)
        if problem:
            raise self._tls_error(problem) from first
        response = retry_call(
            lambda: self._ping_once(base),
            self.retry,
            f"connect to registry {self.registry}",
        )
        self._learn(response)
        return base

    def check_login(self) -> None:
        """Authenticate to the registry once (as ``docker login`` does) or raise."""
        self.ping()
        if self.auth.scheme is None:
            return
        response = self._call("GET", "/v2/", (), f"log in to {self.registry}")
        if response.status_code != 200:
            raise self._error(response, "login", "")

    def _learn(self, response: httpx.Response) -> None:
        """Take the auth challenge of a ``GET /v2/`` answer; refuse non-registries."""
        if response.status_code == 401:
            self.auth.learn(response)
        elif response.status_code != 200:
            raise RegistryError(
                f"{response.url.scheme}://{self.host}/v2/ answered "
                f"{response.status_code}, so it is not an OCI registry API; check the "
                "registry's host and port",
                status=response.status_code,
            )

    def _tls_error(self, problem: str) -> RegistryError:
        # Worded for every command: not all of them have --ca-file or --insecure.
        return TransportError(
            f"TLS connection to registry {self.registry} failed: {problem}; trust "
            f"its CA with {CA_FILE_ENV}=CA.pem, /etc/docker/certs.d/{self.host}/ca.crt "
            "or the command's --ca-file, or mark the registry insecure if you trust "
            "the network"
        )

    def _not_https_error(self) -> RegistryError:
        return TransportError(
            f"registry {self.registry} does not speak HTTPS (it answered the TLS "
            "greeting with something else, likely plain HTTP); platforge uses plain "
            "HTTP only for loopback registries: pass --insecure (build: "
            f"--insecure-registry {self.registry}) if you trust the network"
        )

    # --- requests --------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return f"{self.ping()}{path}"

    def _send(
        self,
        method: str,
        url: str | httpx.URL,
        scopes: tuple[str, ...],
        *,
        headers: dict[str, str] | None = None,
        content: Callable[[], Any] | None = None,
        params: dict[str, str] | None = None,
        stream: bool = False,
    ) -> httpx.Response:
        """One request with auth (one re-authentication on 401), no retries.

        ``content`` builds the body afresh, so the re-sent request streams again.
        Retryable statuses raise :class:`RetryableStatusError`.
        """
        # Upload locations may point at other hosts (object storage behind some
        # registries); the registry's credentials are never sent there.
        own = str(url).startswith(self.ping() + "/")
        for again in (False, True):
            merged = dict(headers or {})
            if own:
                merged.update(self.auth.headers(self._http, scopes))
            request = self._http.build_request(
                method,
                url,
                headers=merged,
                params=params,
                content=content() if content is not None else None,
            )
            response = self._http.send(request, stream=stream)
            if response.status_code != 401 or again or not own:
                break
            # A 401 means no token yet, an expired one, or one with too few scopes.
            response.close()
            if not self.auth.learn(response):
                break
            self.auth.invalidate(scopes)
            if self.auth.scheme == "basic" and self.auth.credentials is None:
                break
        if is_retryable_status(response.status_code):
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            message = _registry_message(response) if not stream else ""
            response.close()
            raise RetryableStatusError(
                f"registry {self.registry} answered HTTP {response.status_code}"
                + (f" ({message})" if message else ""),
                status=response.status_code,
                retry_after=retry_after,
            )
        return response

    def _call(
        self,
        method: str,
        path: str,
        scopes: tuple[str, ...],
        describe: str,
        **kwargs: Any,
    ) -> httpx.Response:
        return retry_call(
            lambda: self._send(method, self._url(path), scopes, **kwargs),
            self.retry,
            describe,
        )

    def _error(
        self,
        response: httpx.Response,
        operation: str,
        repository: str,
        scopes: tuple[str, ...] = (),
    ) -> RegistryError:
        """The one-line error for an unexpected answer to ``operation``.

        ``scopes`` are those the request was authorized for; a push refused with a
        token granted for them is blamed on the token's scope.
        """
        status = response.status_code
        where = f"{operation} {repository}".strip()
        detail = _registry_message(response)
        detail = f" ({detail})" if detail else ""
        prefix = f"registry {self.registry} answered {status} for {where}{detail}"
        if status in {401, 403} and (lacking := self._lacks_push(repository, scopes)):
            return AuthError(f"{prefix}: {lacking}", status=status)
        if status == 401:
            why = self._why_401(response, operation)
            return AuthError(f"{prefix}: {why}", status=status)
        if status == 403:
            return AuthError(
                f"{prefix}: access denied; check that the account may access "
                f"{repository or 'this registry'}",
                status=status,
            )
        if status == 404:
            return NotFoundError(
                f"{prefix}: not found; check the repository, tag or digest",
                status=status,
            )
        return RegistryError(f"{prefix}; check the registry's logs", status=status)

    def _lacks_push(self, repository: str, scopes: tuple[str, ...]) -> str:
        """Why a push with a granted token was refused, when the scope explains it.

        The token server accepted the credentials (else it would have refused the
        token), so logging in again cannot help: the account may not push.
        """
        if push_scope(repository) not in scopes:
            return ""
        grant = self.auth.grant(scopes)
        if grant is None or grant.username is None:
            return ""
        if grant.allows(repository, "push"):
            return ""  # the token has push: something else is wrong
        return (
            f"the token granted to '{grant.username}' does not include push to "
            f"{repository}; ask for push access to {repository} or use an account "
            "that has it"
        )

    def _why_401(self, response: httpx.Response, operation: str) -> str:
        """What a 401 means and what to do, for the operation that got it."""
        challenge = response.headers.get("www-authenticate", "")
        if "insufficient_scope" in challenge:
            # The credentials were accepted; the token lacks the right (push, say).
            return "access denied; check that the account may do this"
        credentials = self.auth.credentials
        if operation == "login":
            # Advising `platforge login` to someone running it helps nobody.
            user = credentials.username if credentials else None
            return (
                f"user name or password refused for '{user or '?'}' at "
                f"{self.registry}; check them"
            )
        why = (
            "credentials refused" if credentials is not None else "no credentials found"
        )
        return (
            f"{why}; run `platforge login {self.registry}` or pass --username and "
            "--password-stdin"
        )

    # --- blobs -----------------------------------------------------------------------

    def blob_size(self, repository: str, digest: str) -> int | None:
        """``HEAD`` a blob: its size when the repository has it, else ``None``."""
        response = self._call(
            "HEAD",
            f"/v2/{repository}/blobs/{digest}",
            (pull_scope(repository),),
            f"check blob {digest} in {self.registry}/{repository}",
        )
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._error(response, f"HEAD blob {digest} in", repository)
        length = response.headers.get("content-length")
        return int(length) if length and length.isdigit() else 0

    @contextlib.contextmanager
    def open_blob(self, repository: str, digest: str) -> Iterator[IO[bytes]]:
        """Stream a blob's bytes as a file object (no digest check: callers hash)."""
        describe = f"pull blob {digest} from {self.registry}/{repository}"
        response = self._call(
            "GET",
            f"/v2/{repository}/blobs/{digest}",
            (pull_scope(repository),),
            describe,
            stream=True,
        )
        try:
            if response.status_code != 200:
                response.read()
                raise self._error(response, f"pull blob {digest} from", repository)
            yield _ResponseReader(response)  # type: ignore[misc]
        finally:
            response.close()

    def download_blob(
        self,
        repository: str,
        digest: str,
        dest: Path,
        *,
        size: int | None = None,
        progress: ProgressFn | None = None,
    ) -> None:
        """Fetch a blob into ``dest`` atomically, verifying digest (and size)."""
        describe = f"pull blob {digest} from {self.registry}/{repository}"

        def attempt() -> None:
            with self.open_blob(repository, digest) as reader:
                _write_verified(
                    reader,
                    dest,
                    digest,
                    size=size,
                    describe=describe,
                    progress=progress,
                )

        retry_call(attempt, self.retry, describe)

    def upload_blob(
        self,
        repository: str,
        digest: str,
        size: int,
        opener: BlobOpener,
        *,
        mount_from: str | None = None,
        progress: ProgressFn | None = None,
        check: bool = True,
    ) -> str:
        """Make ``repository`` hold the blob; return ``exists``/``mounted``/``pushed``.

        ``opener`` opens the blob's bytes from the start (it may be called again on a
        retry). ``mount_from`` names a repository of this registry holding the blob.
        ``check=False`` skips the ``HEAD`` when the caller just asked it. Bytes that
        do not match ``digest`` and ``size`` raise DigestMismatchError and are not
        committed (see the module docstring).
        """
        describe = f"push blob {digest} to {self.registry}/{repository}"
        if check and self.blob_size(repository, digest) is not None:
            return "exists"

        scopes = (push_scope(repository),)
        location: _Session | None = None
        if mount_from and mount_from != repository:
            mount_scopes = (push_scope(repository), pull_scope(mount_from))
            response = self._call(
                "POST",
                f"/v2/{repository}/blobs/uploads/",
                mount_scopes,
                f"mount blob {digest} from {mount_from} into {repository}",
                params={"mount": digest, "from": mount_from},
            )
            if response.status_code == 201:
                log.debug(
                    "mounted %s from %s into %s",
                    digest,
                    mount_from,
                    repository,
                    extra={"digest": digest, "from": mount_from},
                )
                return "mounted"
            if response.status_code != 202:
                raise self._error(
                    response, f"mount blob {digest} into", repository, mount_scopes
                )
            # The registry declined the mount and opened an upload session.
            location = _session(response)

        upload = _Upload(repository, scopes, digest, size, opener, progress)

        def attempt() -> str:
            nonlocal location
            start = location or self._initiate_upload(repository, scopes)
            location = None  # a failed session is not reused by the next attempt
            if self.chunk_size:
                self._upload_chunked(upload, start)
            elif self._upload_monolithic(upload, start):
                self._upload_chunked(upload, self._initiate_upload(repository, scopes))
            return "pushed"

        return retry_call(attempt, self.retry, describe)

    def _initiate_upload(self, repository: str, scopes: tuple[str, ...]) -> _Session:
        response = self._send(
            "POST", self._url(f"/v2/{repository}/blobs/uploads/"), scopes
        )
        if response.status_code != 202:
            raise self._error(response, "start blob upload to", repository, scopes)
        session = _session(response)
        if session is None:
            raise RegistryError(
                f"registry {self.registry} opened an upload to {repository} without a "
                "Location header; the registry is not OCI compliant"
            )
        return session

    def _absolute(self, location: str | httpx.URL) -> httpx.URL:
        return httpx.URL(self.ping()).join(location)

    def _upload_monolithic(self, upload: _Upload, session: _Session) -> bool:
        """``PUT`` the whole blob; return True when the registry wants chunks."""
        repository, scopes, digest, size, opener, progress = upload
        url = self._absolute(session.location).copy_merge_params({"digest": digest})
        with opener() as source, self._cancelled_on_mismatch(lambda: url, scopes):
            response = self._send(
                "PUT",
                url,
                scopes,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(size),
                },
                content=lambda: _stream(source, size, digest, progress),
            )
        if response.status_code == 201:
            return False
        if response.status_code in _CHUNKED_FALLBACK:
            log.debug(
                "monolithic upload of %s refused (%s); sending chunks",
                digest,
                response.status_code,
                extra={"digest": digest, "status": response.status_code},
            )
            return True
        raise self._error(response, f"push blob {digest} to", repository, scopes)

    def _upload_chunked(self, upload: _Upload, session: _Session) -> None:
        repository, scopes, digest, size, opener, progress = upload
        chunk = max(self.chunk_size or DEFAULT_CHUNK_UPLOAD, session.min_chunk)
        url = self._absolute(session.location)
        hasher = Hasher(Digest.parse(digest).algorithm)
        offset = 0
        # Cancel with the newest location: its upload state matches the bytes sent.
        with opener() as source, self._cancelled_on_mismatch(lambda: url, scopes):
            while offset < size:
                length = min(chunk, size - offset)
                _seek(source, offset)
                data = _read_exact(source, length)
                # A resumed chunk re-sends bytes already hashed; hash only new ones.
                # Offsets never pass what was hashed: see the Range check below.
                hasher.update(memoryview(data)[hasher.size - offset :])
                if len(data) < length:
                    _check_sent(hasher, digest, size)  # ended early: raises
                response = self._send(
                    "PATCH",
                    url,
                    scopes,
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Range": f"{offset}-{offset + length - 1}",
                        "Content-Length": str(length),
                    },
                    content=lambda data=data: data,  # type: ignore[misc]
                )
                if response.status_code != 202:
                    raise self._error(
                        response, f"push chunk of {digest} to", repository, scopes
                    )
                minimum = response.headers.get("oci-chunk-min-length", "")
                if minimum.isdigit():
                    chunk = max(chunk, int(minimum))
                url = self._absolute(response.headers.get("location") or str(url))
                # Resume from what the server says it holds, not from what we sent.
                offset = _range_end(response.headers.get("range"), offset + length)
                if offset > hasher.size:
                    raise RegistryError(
                        f"registry {self.registry} claims {offset} bytes of {digest} "
                        f"after {hasher.size} were sent to {repository}; the "
                        "registry's upload is broken"
                    )
                emit(progress, BlobEvent("bytes", digest, size, nbytes=length))
            _check_sent(hasher, digest, size, source.read(1))
        final = url.copy_merge_params({"digest": digest})
        response = self._send("PUT", final, scopes, headers={"Content-Length": "0"})
        if response.status_code != 201:
            raise self._error(
                response, f"finish upload of {digest} to", repository, scopes
            )

    @contextlib.contextmanager
    def _cancelled_on_mismatch(
        self, location: Callable[[], httpx.URL], scopes: tuple[str, ...]
    ) -> Iterator[None]:
        """Cancel the upload session at ``location()`` if the bytes prove corrupt."""
        try:
            yield
        except DigestMismatchError:
            # Best effort: an abandoned session expires on the registry anyway.
            url = location().copy_remove_param("digest")
            with contextlib.suppress(RegistryError, httpx.HTTPError):
                self._send("DELETE", url, scopes).close()
            raise

    def delete_blob(self, repository: str, digest: str) -> None:
        self._delete("blob", repository, digest)

    def _delete(self, kind: str, repository: str, digest: str) -> None:
        """``DELETE`` a blob or manifest (``kind``) by digest."""
        response = self._call(
            "DELETE",
            f"/v2/{repository}/{kind}s/{digest}",
            (f"repository:{repository}:delete",),
            f"delete {kind} {digest} from {self.registry}/{repository}",
        )
        if response.status_code not in {200, 202}:
            raise self._error(response, f"delete {kind} {digest} from", repository)

    # --- manifests -------------------------------------------------------------------

    def get_manifest(self, repository: str, reference: str) -> ManifestInfo:
        """Fetch a manifest or index by tag or digest, verifying its digest."""
        response = self._call(
            "GET",
            f"/v2/{repository}/manifests/{reference}",
            (pull_scope(repository),),
            f"pull manifest {reference} from {self.registry}/{repository}",
            headers={"Accept": MANIFEST_ACCEPT},
        )
        if response.status_code != 200:
            raise self._error(response, f"pull manifest {reference} from", repository)
        raw = response.content
        if len(raw) > _MAX_MANIFEST:
            raise RegistryError(
                f"registry {self.registry} sent a manifest of {len(raw)} bytes for "
                f"{repository}:{reference}; manifests over 4 MiB are refused"
            )
        media_type = _media_type(response)
        expected = reference if ":" in reference else None
        expected = expected or response.headers.get("docker-content-digest")
        actual = _digest_of(raw, expected)
        if expected and actual != expected:
            raise DigestMismatchError(
                f"manifest {repository}:{reference} from registry {self.registry} "
                f"hashes to {actual}, not {expected}; the registry serves corrupt data"
            )
        return ManifestInfo(raw=raw, media_type=media_type, digest=actual)

    def head_manifest(self, repository: str, reference: str) -> ManifestInfo | None:
        """``HEAD`` a manifest: media type and digest (``raw`` empty), or ``None``."""
        response = self._call(
            "HEAD",
            f"/v2/{repository}/manifests/{reference}",
            (pull_scope(repository),),
            f"check manifest {reference} in {self.registry}/{repository}",
            headers={"Accept": MANIFEST_ACCEPT},
        )
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._error(response, f"check manifest {reference} in", repository)
        digest = response.headers.get("docker-content-digest")
        if not digest:
            # Some registries omit the digest on HEAD; a GET tells for sure.
            return self.get_manifest(repository, reference)
        media_type = _media_type(response)
        return ManifestInfo(raw=b"", media_type=media_type, digest=digest)

    def put_manifest(
        self, repository: str, reference: str, raw: bytes, media_type: str
    ) -> str:
        """Store a manifest or index under a tag or its digest; return its digest."""
        response = self._call(
            "PUT",
            f"/v2/{repository}/manifests/{reference}",
            (push_scope(repository),),
            f"push manifest {reference} to {self.registry}/{repository}",
            headers={"Content-Type": media_type},
            content=lambda: raw,
        )
        if response.status_code not in {200, 201}:
            raise self._error(
                response,
                f"push manifest {reference} to",
                repository,
                (push_scope(repository),),
            )
        return str(Digest.of(raw))

    def delete_manifest(self, repository: str, digest: str) -> None:
        self._delete("manifest", repository, digest)

    def list_tags(self, repository: str, *, page_size: int | None = None) -> list[str]:
        """All tags of a repository, following ``Link`` pagination."""
        tags: list[str] = []
        path: str | None = f"/v2/{repository}/tags/list"
        params = {"n": str(page_size)} if page_size else None
        while path is not None:
            response = self._call(
                "GET",
                path,
                (pull_scope(repository),),
                f"list tags of {self.registry}/{repository}",
                params=params,
            )
            if response.status_code != 200:
                raise self._error(response, "list tags of", repository)
            try:
                page = response.json().get("tags") or []
                # Only strings are tags; a broken registry's other entries are not.
                tags.extend(tag for tag in page if isinstance(tag, str))
            except (ValueError, AttributeError, TypeError) as exc:
                raise RegistryError(
                    f"registry {self.registry} sent an unreadable tag list for "
                    f"{repository}; check the registry"
                ) from exc
            path = _next_link(response.headers.get("link"))
            params = None  # the next link carries its own query
        return tags


# --- helpers -----------------------------------------------------------------------


def _ssl_context(
    host: str, ca_file: str | os.PathLike[str] | None, ca_certs: tuple[str, ...]
) -> ssl.SSLContext:
    """The system's CAs plus every CA source of the module docstring."""
    context = ssl.create_default_context()
    files = [os.fspath(ca_file)] if ca_file else []
    if env := os.environ.get(CA_FILE_ENV):
        files.append(env)
    for directory in CERTS_DIRS:
        with contextlib.suppress(OSError):
            files.extend(str(p) for p in sorted((directory / host).glob("*.crt")))
    for name in files:
        try:
            context.load_verify_locations(cafile=name)
        except (OSError, ssl.SSLError) as exc:
            reason = without_source_position(str(exc))
            raise TransportError(
                f"cannot load CA file {name} for registry {host}: {reason}; give a "
                "readable PEM file"
            ) from exc
    for number, pem in enumerate(ca_certs, 1):
        try:
            context.load_verify_locations(cadata=pem)
        except (ssl.SSLError, ValueError) as exc:
            raise TransportError(
                f"CA certificate {number} for registry {host} is not a PEM "
                "certificate; give the whole -----BEGIN CERTIFICATE----- block"
            ) from exc
    return context


# OpenSSL's reasons for a TLS greeting answered by something that is not TLS: a
# plain-HTTP server's "HTTP/1.1 400" read as a TLS record. Which one depends on
# the OpenSSL version.
_NOT_TLS_REASONS = (
    "WRONG_VERSION_NUMBER",
    "UNKNOWN_PROTOCOL",
    "PACKET_LENGTH_TOO_LONG",
    "RECORD_LAYER_FAILURE",
    "HTTP_REQUEST",
)


def _answered_without_tls(exc: Exception) -> bool:
    """Whether a connect error means the server answered TLS with something else."""
    text = str(exc).upper().replace(" ", "_")
    return any(reason in text for reason in _NOT_TLS_REASONS)


def _tls_problem(exc: Exception) -> str:
    """A short TLS failure reason hidden in a connect error, or empty."""
    text = str(exc)
    for marker in ("CERTIFICATE_VERIFY_FAILED", "certificate verify failed"):
        if marker in text:
            return "certificate verify failed (" + text.rsplit("(", 1)[0].strip() + ")"
    if "hostname" in text.lower() and "match" in text.lower():
        return "the certificate does not name this host"
    return ""


def _registry_message(response: httpx.Response) -> str:
    """The first error code/message of a registry's JSON error body, on one line."""
    try:
        body = response.json()
        first = body["errors"][0]
        text = f"{first.get('code', '')}: {first.get('message', '')}".strip(": ")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return ""
    except httpx.ResponseNotRead:
        return ""
    return " ".join(str(text).split())[:200]


def _media_type(response: httpx.Response) -> str:
    return str(response.headers.get("content-type", "")).split(";")[0].strip()


def _digest_of(raw: bytes, expected: str | None) -> str:
    """``raw``'s digest, in the algorithm of ``expected`` when one is known."""
    algorithm = Digest.parse(expected).algorithm if expected else "sha256"
    return str(Digest.of(raw, algorithm))


def _next_link(header: str | None) -> str | None:
    # Link: </v2/x/tags/list?last=a&n=2>; rel="next"
    if not header:
        return None
    for part in header.split(","):
        url, _, rest = part.partition(";")
        if 'rel="next"' in rest.replace(" ", "") or "rel=next" in rest.replace(" ", ""):
            target = url.strip().strip("<>")
            return httpx.URL(target).raw_path.decode("ascii")
    return None


def _range_end(header: str | None, fallback: int) -> int:
    # Range: 0-1023 means bytes 0..1023 are stored; the next byte is 1024.
    if not header:
        return fallback
    _, _, end = header.partition("-")
    return int(end) + 1 if end.strip().isdigit() else fallback


def _seek(source: IO[bytes], offset: int) -> None:
    if source.seekable():
        source.seek(offset)
        return
    # A stream (a blob copied between registries) can only move forwards.
    position = source.tell()
    if offset < position:
        raise TransportError(
            "cannot rewind a streamed blob to resume a chunked upload; retry the copy"
        )
    while position < offset:
        data = source.read(min(CHUNK, offset - position))
        if not data:
            break
        position += len(data)


def _read_exact(source: IO[bytes], length: int) -> bytes:
    parts: list[bytes] = []
    remaining = length
    while remaining:
        data = source.read(min(remaining, CHUNK))
        if not data:
            break
        parts.append(data)
        remaining -= len(data)
    return b"".join(parts)


def _check_sent(hasher: Hasher, digest: str, size: int, more: bytes = b"") -> None:
    """Raise unless exactly the blob passed ``hasher`` (``more``: bytes past it)."""
    if more:
        raise DigestMismatchError(
            f"blob {digest}: the source holds more than {size} bytes; it is corrupt "
            "and the upload was not committed"
        )
    try:
        hasher.verify(Digest.parse(digest), size)
    except DigestMismatchError as exc:
        raise DigestMismatchError(f"{exc}; the upload was not committed") from None


def _stream(
    source: IO[bytes], size: int, digest: str, progress: ProgressFn | None
) -> Iterator[bytes]:
    """Yield the blob in 1 MiB pieces from the start, checking size and digest.

    The last piece is held back until the whole blob is hashed, so a corrupt source
    never reaches the registry whole (the request declares ``Content-Length``).
    """
    if source.seekable():
        source.seek(0)
    hasher = Hasher(Digest.parse(digest).algorithm)
    held = b""
    while data := source.read(CHUNK):
        if held:
            if hasher.size >= size:
                _check_sent(hasher, digest, size, data)  # too long: raises
            emit(progress, BlobEvent("bytes", digest, size, nbytes=len(held)))
            yield held
        hasher.update(data)
        held = data
    _check_sent(hasher, digest, size)
    if held:
        emit(progress, BlobEvent("bytes", digest, size, nbytes=len(held)))
        yield held


def _write_verified(
    reader: IO[bytes],
    dest: Path,
    digest: str,
    *,
    size: int | None,
    describe: str,
    progress: ProgressFn | None,
) -> None:
    hasher = Hasher(Digest.parse(digest).algorithm)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=".partial-", dir=dest.parent)
    received = 0
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), 0o644)  # mkstemp's 0600 would hide the blob
            while True:
                data = reader.read(CHUNK)
                if not data:
                    break
                hasher.update(data)
                out.write(data)
                received += len(data)
                emit(progress, BlobEvent("bytes", digest, size or 0, nbytes=len(data)))
                if size is not None and received > size:
                    break
        _check_received(hasher, received, digest, size, describe)
        Path(temp).replace(dest)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _check_received(
    hasher: Hasher, received: int, digest: str, size: int | None, describe: str
) -> None:
    actual = hasher.digest()
    if str(actual) != digest or (size is not None and received != size):
        expected = f"{digest} ({size} bytes)" if size is not None else digest
        raise DigestMismatchError(
            f"{describe}: received {received} bytes hashing to {actual}, expected "
            f"{expected}; the registry serves corrupt data, nothing was written"
        )


class _ResponseReader(io.RawIOBase):
    """A streaming httpx response read as a binary file object."""

    def __init__(self, response: httpx.Response) -> None:
        self._chunks = response.iter_bytes(CHUNK)
        self._buffer = b""
        self.position = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if not self._buffer:
            self._buffer = next(self._chunks, b"")
        count = min(len(view), len(self._buffer))
        view[:count] = self._buffer[:count]
        self._buffer = self._buffer[count:]
        self.position += count
        return count

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        if not self._buffer:
            self._buffer = next(self._chunks, b"")
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        self.position += len(data)
        return data

    def tell(self) -> int:
        return self.position
