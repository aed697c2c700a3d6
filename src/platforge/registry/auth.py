"""Authenticating to registries: credentials, challenges and bearer tokens.

A registry says how it wants to be authenticated in the ``WWW-Authenticate`` header
of a 401 answer (to ``GET /v2/`` or to any request):

- ``Basic realm="…"``: every request carries ``Authorization: Basic`` with the
  user's name and password.
- ``Bearer realm="URL",service="S",scope="repository:NAME:pull"``: the client asks the
  token server at ``URL`` for a token covering the scopes it needs
  (``repository:NAME:pull`` or ``repository:NAME:pull,push``; a cross-repository mount
  also needs ``repository:SOURCE:pull``), authenticating there with basic credentials,
  with an identity token (OAuth2 refresh-token grant), or anonymously. Tokens are
  cached per set of scopes until they expire; a 401 with a cached token drops it and
  fetches a new one once. A token server may grant fewer actions than asked (a
  pull-only account asking for push): what it granted is read from the ``access``
  list of its answer, else from the token's own ``access`` claim (the token itself
  is never logged), and kept, so a refused push can be blamed on the scope rather
  than on the password.

Credentials come, in order, from what the caller passes explicitly, then from docker's
``config.json`` (``$DOCKER_CONFIG/config.json``, default ``~/.docker/config.json``):
a ``credHelpers`` entry for the registry, else ``auths`` (``auth`` is base64 of
``user:password``; ``identitytoken`` is an OAuth2 refresh token), else the
``credsStore`` helper. Helpers are the ``docker-credential-NAME`` programs: ``get``
reads the server URL on stdin and prints ``{"Username", "Secret"}`` as JSON;
``store`` reads ``{"ServerURL", "Username", "Secret"}``; ``erase`` reads the server
URL.

``platforge login`` saves as ``docker login`` does: when a helper serves the
registry (its ``credHelpers`` entry, else ``credsStore``) the secret goes to the
helper's ``store`` and ``auths`` only gets an empty entry for the host; a helper that
cannot be run is an error, never a reason to write the secret into the file.
Without a helper, ``auths[host].auth`` holds base64 of ``user:password``.
``logout`` runs the helper's ``erase`` and drops the ``auths`` entry.

Secrets never appear in logs, error messages or reprs.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from platforge.errors import AuthError, CredentialsError
from platforge.registry.reference import DOCKER_HUB

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    import httpx

__all__ = [
    "Authenticator",
    "Challenge",
    "Credentials",
    "Grant",
    "config_path",
    "credentials_for",
    "parse_challenges",
    "pull_scope",
    "push_scope",
    "remove_login",
    "store_login",
]

log = logging.getLogger("platforge.registry.auth")

# Docker stores Docker Hub's credentials under this legacy key.
_HUB_CONFIG_KEY = "https://index.docker.io/v1/"
_HELPER_TIMEOUT = 30.0
# Tokens are dropped this many seconds before they expire, so a request never
# starts with a token that runs out on the way.
_EXPIRY_MARGIN = 10.0
_DEFAULT_TOKEN_LIFETIME = 60.0


@dataclass(frozen=True)
class Credentials:
    """A user name and password, or an identity (refresh) token.

    The repr masks the secrets, so credentials can be logged by mistake safely.
    """

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    identity_token: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        secret = "***" if self.password or self.identity_token else None
        return f"Credentials(username={self.username!r}, secret={secret!r})"

    @property
    def has_basic(self) -> bool:
        return self.username is not None and self.password is not None

    def basic_header(self) -> str:
        pair = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")


@dataclass(frozen=True)
class Challenge:
    """One challenge of a ``WWW-Authenticate`` header; param names are lowercase."""

    scheme: str
    params: Mapping[str, str]


def pull_scope(repository: str) -> str:
    return f"repository:{repository}:pull"


def push_scope(repository: str) -> str:
    return f"repository:{repository}:pull,push"


# --- WWW-Authenticate ----------------------------------------------------------------


def parse_challenges(header: str) -> list[Challenge]:
    """Parse a ``WWW-Authenticate`` value into its challenges.

    Handles several challenges in one header, any number of ``key=value`` params,
    quoted values containing commas, spaces or escaped quotes, and scheme names in any
    case (the scheme is returned lowercase).
    """
    parser = _ChallengeParser(header)
    return parser.parse()


class _ChallengeParser:
    # RFC 9110's grammar is ambiguous on commas (they separate params and
    # challenges alike), so this scans tokens and decides by what follows a token:
    # '=' makes it a param name, anything else starts a new challenge.

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def parse(self) -> list[Challenge]:
        challenges: list[Challenge] = []
        scheme: str | None = None
        params: dict[str, str] = {}
        while True:
            self._skip(" \t,")
            if self.pos >= len(self.text):
                break
            token = self._token()
            if not token:
                self.pos += 1  # stray character: skip it rather than fail
                continue
            self._skip(" \t")
            if self._peek() == "=" and scheme is not None:
                self.pos += 1
                self._skip(" \t")
                params[token.lower()] = self._value()
                continue
            if scheme is not None:
                challenges.append(Challenge(scheme, params))
            scheme, params = token.lower(), {}
            # token68 form (``Basic abc==``) is a lone value, not a param.
        if scheme is not None:
            challenges.append(Challenge(scheme, params))
        return challenges

    def _peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def _skip(self, chars: str) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in chars:
            self.pos += 1

    def _token(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in ' \t,="':
            self.pos += 1
        return self.text[start : self.pos]

    def _value(self) -> str:
        if self._peek() != '"':
            return self._token()
        self.pos += 1
        out: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            self.pos += 1
            if char == "\\" and self.pos < len(self.text):
                out.append(self.text[self.pos])
                self.pos += 1
            elif char == '"':
                break
            else:
                out.append(char)
        return "".join(out)


# --- docker config.json --------------------------------------------------------------


def config_path() -> Path:
    """Where docker's ``config.json`` is: ``$DOCKER_CONFIG`` or ``~/.docker``."""
    directory = os.environ.get("DOCKER_CONFIG")
    base = Path(directory) if directory else Path.home() / ".docker"
    return base / "config.json"


def _load_config(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise CredentialsError(
            f"cannot read docker config {path}: {exc.strerror}; fix its permissions "
            "or set DOCKER_CONFIG to another directory"
        ) from exc
    try:
        data = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise CredentialsError(
            f"docker config {path} is not valid JSON (line {exc.lineno}); fix or "
            "remove it"
        ) from exc
    if not isinstance(data, dict):
        raise CredentialsError(f"docker config {path} is not a JSON object; fix it")
    return data


def _config_keys(registry: str) -> list[str]:
    # Docker writes entries as bare hosts or as URLs, so accept both spellings.
    keys = [registry, f"https://{registry}", f"http://{registry}"]
    if registry == DOCKER_HUB:
        keys = [_HUB_CONFIG_KEY, "index.docker.io", "registry-1.docker.io", *keys]
    return keys


def _find_entry(mapping: Mapping[str, Any], registry: str) -> Any:
    for key in _config_keys(registry):
        if key in mapping:
            return mapping[key]
    for key, value in mapping.items():
        # Entries such as "https://host/v1/" or "host/v2/" still name the host.
        host = key.split("://", 1)[-1].split("/", 1)[0]
        if host == registry:
            return value
    return None


def credentials_for(registry: str, path: Path | None = None) -> Credentials | None:
    """Find credentials for ``registry`` in docker's config, or ``None``."""
    path = path or config_path()
    config = _load_config(path)

    helper = _cred_helper(config, registry)
    if helper is not None:
        return _from_helper(helper, registry)

    auths = config.get("auths") or {}
    entry = _find_entry(auths, registry) if isinstance(auths, dict) else None
    if isinstance(entry, dict):
        found = _from_auth_entry(entry, registry, path)
        if found is not None:
            return found

    store = _helper_for(config, registry)
    return _from_helper(store, registry) if store is not None else None


def _cred_helper(config: Mapping[str, Any], registry: str) -> str | None:
    """The registry's own helper (``credHelpers``), if any."""
    helpers = config.get("credHelpers") or {}
    helper = _find_entry(helpers, registry) if isinstance(helpers, dict) else None
    return helper if isinstance(helper, str) and helper else None


def _helper_for(config: Mapping[str, Any], registry: str) -> str | None:
    """The helper ``login``/``logout`` use: ``credHelpers``, else ``credsStore``."""
    store = config.get("credsStore")
    default = store if isinstance(store, str) and store else None
    return _cred_helper(config, registry) or default


def _from_auth_entry(
    entry: Mapping[str, Any], registry: str, path: Path
) -> Credentials | None:
    token = entry.get("identitytoken") or None
    username = entry.get("username") or None
    password = entry.get("password") or None
    encoded = entry.get("auth")
    if encoded:
        try:
            decoded = base64.b64decode(encoded, validate=False).decode("utf-8")
        except (ValueError, UnicodeDecodeError) as exc:
            raise CredentialsError(
                f"the auth entry for {registry} in {path} is not base64 of "
                "USER:PASSWORD; run `platforge login` again"
            ) from exc
        username, sep, password = decoded.partition(":")
        if not sep:
            raise CredentialsError(
                f"the auth entry for {registry} in {path} has no ':' between user "
                "and password; run `platforge login` again"
            )
    if token:
        return Credentials(username=username, identity_token=token)
    if username is not None and password is not None:
        return Credentials(username=username, password=password)
    return None


def _helper_server(registry: str) -> str:
    return _HUB_CONFIG_KEY if registry == DOCKER_HUB else registry


def _run_helper(helper: str, action: str, registry: str, stdin: str) -> str | None:
    """Run ``docker-credential-HELPER ACTION``; return its stdout.

    ``None`` means the helper holds no credentials for the server (helpers say
    "credentials not found" with status 1); any other failure raises.
    """
    program = f"docker-credential-{helper}"
    try:
        done = subprocess.run(
            [program, action],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=_HELPER_TIMEOUT,
            check=False,
        )
    except FileNotFoundError as exc:
        raise CredentialsError(
            f"credential helper {program} for {registry} is not on PATH; install it "
            "or remove it from the docker config"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise CredentialsError(
            f"credential helper {program} did not answer `{action}` for {registry} "
            f"within {_HELPER_TIMEOUT:.0f} s; check that it works with "
            f"`{program} list`"
        ) from exc
    if done.returncode != 0:
        if "not found" in (done.stdout + done.stderr).lower():
            return None
        raise CredentialsError(
            f"credential helper {program} failed `{action}` for {registry} with "
            f"status {done.returncode}; check that it works with `{program} list`"
        )
    return done.stdout


def _from_helper(helper: str, registry: str) -> Credentials | None:
    program = f"docker-credential-{helper}"
    stdout = _run_helper(helper, "get", registry, _helper_server(registry))
    if stdout is None:
        return None
    try:
        answer = json.loads(stdout)
        username, secret = answer["Username"], answer["Secret"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CredentialsError(
            f"credential helper {program} printed no Username/Secret JSON for "
            f"{registry}; check that it works with `{program} list`"
        ) from exc
    if username == "<token>":
        return Credentials(identity_token=secret)
    return Credentials(username=username, password=secret)


def store_login(
    registry: str, username: str, password: str, path: Path | None = None
) -> str:
    """Save credentials for ``registry`` as docker does; return where they went.

    The answer is the helper program (``docker-credential-NAME``) or the config
    file's path.
    """
    path = path or config_path()
    config = _load_config(path)
    auths = config.setdefault("auths", {})
    server = _helper_server(registry)
    helper = _helper_for(config, registry)
    if helper is not None:
        request = {"ServerURL": server, "Username": username, "Secret": password}
        if _run_helper(helper, "store", registry, json.dumps(request)) is None:
            raise CredentialsError(
                f"credential helper docker-credential-{helper} could not store "
                f"credentials for {registry}; check that it works with "
                f"`docker-credential-{helper} list`"
            )
        # docker keeps an empty entry, so `docker info`-style listings show the host.
        auths[server] = {}
        where = f"docker-credential-{helper}"
    else:
        pair = f"{username}:{password}".encode()
        auths[server] = {"auth": base64.b64encode(pair).decode("ascii")}
        where = str(path)
    _write_config(path, config)
    return where


def remove_login(registry: str, path: Path | None = None) -> bool:
    """Forget credentials for ``registry``; tell whether there were any."""
    path = path or config_path()
    config = _load_config(path)
    removed = False
    helper = _helper_for(config, registry)
    if helper is not None:
        erased = _run_helper(helper, "erase", registry, _helper_server(registry))
        removed = erased is not None
    auths = config.get("auths")
    if isinstance(auths, dict):
        for key in _config_keys(registry):
            if key in auths:
                del auths[key]
                removed = True
    if removed:
        _write_config(path, config)
    return removed


def _write_config(path: Path, config: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, temp = tempfile.mkstemp(prefix=".config.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            os.fchmod(out.fileno(), 0o600)
            json.dump(config, out, indent="\t")
            out.write("\n")
        Path(temp).replace(path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


# --- the authenticator ---------------------------------------------------------------


@dataclass
class _Token:
    value: str
    expires: float


@dataclass(frozen=True)
class Grant:
    """A token the token server issued: to whom, and the scopes it granted.

    ``scopes`` is ``None`` when the server did not say what it granted.
    """

    username: str | None
    scopes: tuple[str, ...] | None

    def allows(self, repository: str, action: str) -> bool | None:
        """Whether the grant covers ``action`` on ``repository``; ``None``: unknown."""
        if self.scopes is None:
            return None
        for scope in self.scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            allowed = actions.split(",")
            if (
                kind == "repository"
                and name == repository
                and (action in allowed or "*" in allowed)
            ):
                return True
        return False


class Authenticator:
    """Adds the right ``Authorization`` header to requests to one registry.

    ``credentials`` given explicitly win; otherwise they are looked up in docker's
    config the first time they are needed. Thread-safe: blobs upload in parallel.
    """

    def __init__(
        self,
        registry: str,
        *,
        credentials: Credentials | None = None,
        config: Path | None = None,
    ) -> None:
        self.registry = registry
        self._explicit = credentials
        self._config = config
        self._looked_up = credentials is not None
        self._credentials = credentials
        self._challenge: Challenge | None = None
        self._tokens: dict[tuple[str, ...], _Token] = {}
        # Kept past invalidate(): a refusal after a fresh token is explained by it.
        self._grants: dict[tuple[str, ...], Grant] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Authenticator(registry={self.registry!r})"

    @property
    def credentials(self) -> Credentials | None:
        with self._lock:
            if not self._looked_up:
                self._credentials = credentials_for(self.registry, self._config)
                self._looked_up = True
                log.debug(
                    "credentials for %s: %s",
                    self.registry,
                    "found" if self._credentials else "none",
                    extra={"registry": self.registry, "found": bool(self._credentials)},
                )
            return self._credentials

    @property
    def scheme(self) -> str | None:
        return self._challenge.scheme if self._challenge else None

    def learn(self, response: httpx.Response) -> bool:
        """Record the challenge of a 401 answer; tell whether one was understood."""
        header = response.headers.get("www-authenticate", "")
        for challenge in parse_challenges(header):
            if challenge.scheme in {"bearer", "basic"}:
                with self._lock:
                    self._challenge = challenge
                return True
        return False

    def headers(self, client: httpx.Client, scopes: Iterable[str]) -> dict[str, str]:
        """The ``Authorization`` header for a request needing ``scopes``."""
        challenge = self._challenge
        if challenge is None:
            return {}
        if challenge.scheme == "basic":
            creds = self.credentials
            if creds is None or not creds.has_basic:
                return {}
            return {"Authorization": creds.basic_header()}
        key = tuple(sorted(set(scopes)))
        with self._lock:
            token = self._tokens.get(key)
        if token is None or token.expires <= time.monotonic():
            token = self._fetch_token(client, challenge, key)
            with self._lock:
                self._tokens[key] = token
        return {"Authorization": f"Bearer {token.value}"}

    def grant(self, scopes: Iterable[str]) -> Grant | None:
        """What the last token issued for ``scopes`` granted, if one was issued."""
        with self._lock:
            return self._grants.get(tuple(sorted(set(scopes))))

    def invalidate(self, scopes: Iterable[str]) -> None:
        """Drop the cached token for ``scopes`` after the registry refused it."""
        with self._lock:
            self._tokens.pop(tuple(sorted(set(scopes))), None)

    def _refused(
        self, status: int, creds: Credentials | None, scopes: tuple[str, ...]
    ) -> AuthError:
        """The token server refused the credentials (or anonymous access)."""
        who = "anonymous access" if creds is None else "the credentials"
        what = f"{' '.join(scopes) or 'login'} (HTTP {status})"
        if not scopes and creds is not None:
            # `platforge login` itself asks: advising it would help nobody.
            user = creds.username or "the identity token"
            why = (
                f": user name or password refused for '{user}' at {self.registry}; "
                "check them"
            )
        else:
            why = (
                f"; run `platforge login {self.registry}` or pass --username and "
                "--password-stdin"
            )
        return AuthError(
            f"token server of registry {self.registry} refused {who} for {what}{why}",
            status=status,
        )

    def _fetch_token(
        self, client: httpx.Client, challenge: Challenge, scopes: tuple[str, ...]
    ) -> _Token:
        realm = challenge.params.get("realm")
        if not realm:
            raise AuthError(
                f"registry {self.registry} sent a Bearer challenge without a realm; "
                "it is misconfigured"
            )
        service = challenge.params.get("service")
        creds = self.credentials
        started = time.monotonic()
        if creds is not None and creds.identity_token:
            form = {
                "grant_type": "refresh_token",
                "refresh_token": creds.identity_token,
                "client_id": "platforge",
                "scope": " ".join(scopes),
            }
            if service:
                form["service"] = service
            response = client.post(realm, data=form)
        else:
            params: list[tuple[str, str | int | float | bool | None]] = []
            if service:
                params.append(("service", service))
            params.extend(("scope", scope) for scope in scopes)
            headers = {}
            if creds is not None and creds.has_basic:
                headers["Authorization"] = creds.basic_header()
            response = client.get(realm, params=params, headers=headers)

        if response.status_code in {401, 403}:
            raise self._refused(response.status_code, creds, scopes)
        if response.status_code != 200:
            raise AuthError(
                f"token server of registry {self.registry} answered HTTP "
                f"{response.status_code} for {' '.join(scopes) or 'login'}; check "
                "the registry's auth service",
                status=response.status_code,
            )
        try:
            answer = response.json()
            value = answer.get("token") or answer.get("access_token")
            lifetime = float(answer.get("expires_in") or _DEFAULT_TOKEN_LIFETIME)
        except (ValueError, AttributeError) as exc:
            raise AuthError(
                f"token server of registry {self.registry} sent no JSON token; "
                "check the registry's auth service"
            ) from exc
        if not isinstance(value, str) or not value:
            raise AuthError(
                f"token server of registry {self.registry} sent no token; check the "
                "registry's auth service"
            )
        granted = _granted_scopes(answer, value)
        log.debug(
            "token for %s: requested %s, granted %s, valid %.0f s",
            self.registry,
            " ".join(scopes) or "(none)",
            "(not listed by the token server)"
            if granted is None
            else " ".join(granted) or "(nothing)",
            lifetime,
            extra={"registry": self.registry, "scopes": scopes, "granted": granted},
        )
        owner = creds.username if creds is not None else None
        with self._lock:
            self._grants[scopes] = Grant(username=owner, scopes=granted)
        expires = started + max(0.0, lifetime - _EXPIRY_MARGIN)
        return _Token(value=value, expires=expires)


def _granted_scopes(answer: Mapping[str, Any], token: str) -> tuple[str, ...] | None:
    """The scopes a token server granted, as ``type:name:actions`` strings.

    From the answer's ``access`` list, else from the ``access`` claim of a JWT
    token (read, not verified: this only explains refusals, it grants nothing).
    ``None`` when neither says.
    """
    access = answer.get("access")
    if not isinstance(access, list):
        access = _jwt_claim(token, "access")
    if not isinstance(access, list):
        return None
    scopes = []
    for entry in access:
        if isinstance(entry, dict):
            actions = entry.get("actions") or []
            if isinstance(actions, list):
                joined = ",".join(str(action) for action in actions)
                scopes.append(
                    f"{entry.get('type', '')}:{entry.get('name', '')}:{joined}"
                )
    return tuple(scopes)


def _jwt_claim(token: str, claim: str) -> Any:
    parts = token.split(".")
    if len(parts) != 3:  # a JWT is header.payload.signature
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        document = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, UnicodeDecodeError):
        return None
    return document.get(claim) if isinstance(document, dict) else None
