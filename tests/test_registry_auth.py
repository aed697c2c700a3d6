"""Challenges parse robustly; credentials come from docker's config and helpers."""

import base64
import json
import logging
import stat
import time

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from platforge.errors import AuthError, CredentialsError
from platforge.registry.auth import (
    Authenticator,
    Credentials,
    config_path,
    credentials_for,
    parse_challenges,
    remove_login,
    store_login,
)


def _b64(text):
    return base64.b64encode(text.encode()).decode()


CHALLENGES = [
    (
        (
            'Bearer realm="https://auth.example/token",service="registry.example",'
            'scope="repository:a/b:pull,push"'
        ),
        [
            (
                "bearer",
                {
                    "realm": "https://auth.example/token",
                    "service": "registry.example",
                    "scope": "repository:a/b:pull,push",
                },
            )
        ],
    ),
    ('Basic realm="Registry Realm"', [("basic", {"realm": "Registry Realm"})]),
    ("basic realm=unquoted", [("basic", {"realm": "unquoted"})]),
    (
        'Bearer realm="http://x/t", service="s" , Basic realm="r"',
        [
            ("bearer", {"realm": "http://x/t", "service": "s"}),
            ("basic", {"realm": "r"}),
        ],
    ),
    (
        r'Bearer realm="a\"b,c", error="insufficient_scope"',
        [("bearer", {"realm": 'a"b,c', "error": "insufficient_scope"})],
    ),
    ("Negotiate", [("negotiate", {})]),
    ("", []),
    ('BEARER Realm="x"', [("bearer", {"realm": "x"})]),
]


@pytest.mark.parametrize(("header", "expected"), CHALLENGES)
def test_parse_challenges_handles_several_params_and_quoted_commas(header, expected):
    got = [(c.scheme, dict(c.params)) for c in parse_challenges(header)]
    assert got == expected


@pytest.fixture
def docker_config(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "dockercfg"))
    path = tmp_path / "dockercfg" / "config.json"
    path.parent.mkdir()
    return path


def test_docker_config_env_var_is_honoured(docker_config):
    assert config_path() == docker_config


def test_credentials_from_auth_base64(docker_config):
    docker_config.write_text(
        json.dumps({"auths": {"127.0.0.1:5000": {"auth": _b64("bob:s3:cret")}}})
    )
    creds = credentials_for("127.0.0.1:5000")
    assert creds == Credentials("bob", "s3:cret")


def test_credentials_from_url_keyed_entry_and_username_password(docker_config):
    docker_config.write_text(
        json.dumps(
            {"auths": {"https://reg.example/v1/": {"username": "u", "password": "p"}}}
        )
    )
    assert credentials_for("reg.example") == Credentials("u", "p")
    assert credentials_for("other.example") is None


def test_docker_hub_uses_the_legacy_index_key(docker_config):
    docker_config.write_text(
        json.dumps({"auths": {"https://index.docker.io/v1/": {"auth": _b64("h:p")}}})
    )
    assert credentials_for("docker.io") == Credentials("h", "p")


def test_identity_token_is_kept_as_refresh_token(docker_config):
    docker_config.write_text(
        json.dumps({"auths": {"r.example": {"identitytoken": "refresh-me"}}})
    )
    creds = credentials_for("r.example")
    assert creds is not None
    assert creds.identity_token == "refresh-me"


def test_broken_config_is_a_one_line_error(docker_config):
    docker_config.write_text("{not json")
    with pytest.raises(CredentialsError, match="not valid JSON"):
        credentials_for("x.example")


def _helper(tmp_path, monkeypatch, body):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "docker-credential-fake"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{__import__('os').environ['PATH']}")


def test_cred_helper_is_run_with_the_server_on_stdin(
    docker_config, tmp_path, monkeypatch
):
    _helper(
        tmp_path,
        monkeypatch,
        'read server\necho "{\\"Username\\":\\"hu\\",\\"Secret\\":\\"$server-pw\\"}"\n',
    )
    docker_config.write_text(json.dumps({"credHelpers": {"r.example": "fake"}}))
    assert credentials_for("r.example") == Credentials("hu", "r.example-pw")


def test_creds_store_answers_when_no_auths_entry(docker_config, tmp_path, monkeypatch):
    _helper(tmp_path, monkeypatch, 'echo \'{"Username":"<token>","Secret":"idt"}\'\n')
    docker_config.write_text(json.dumps({"credsStore": "fake"}))
    creds = credentials_for("r.example")
    assert creds is not None
    assert creds.identity_token == "idt"


def test_cred_helper_not_found_means_no_credentials(
    docker_config, tmp_path, monkeypatch
):
    _helper(
        tmp_path,
        monkeypatch,
        "echo 'credentials not found in native keychain'\nexit 1\n",
    )
    docker_config.write_text(json.dumps({"credsStore": "fake"}))
    assert credentials_for("r.example") is None


def test_missing_cred_helper_is_a_clear_error(docker_config):
    docker_config.write_text(json.dumps({"credHelpers": {"r.example": "absent-xyz"}}))
    with pytest.raises(CredentialsError, match="docker-credential-absent-xyz"):
        credentials_for("r.example")


def test_store_login_writes_auth_base64_0600_and_logout_removes_it(docker_config):
    docker_config.write_text(json.dumps({"auths": {"keep.example": {"auth": "eA=="}}}))
    store_login("127.0.0.1:5000", "alice", "pw")
    data = json.loads(docker_config.read_text())
    assert data["auths"]["127.0.0.1:5000"] == {"auth": _b64("alice:pw")}
    assert data["auths"]["keep.example"] == {"auth": "eA=="}
    assert stat.S_IMODE(docker_config.stat().st_mode) == 0o600
    assert remove_login("127.0.0.1:5000") is True
    assert "127.0.0.1:5000" not in json.loads(docker_config.read_text())["auths"]
    assert remove_login("127.0.0.1:5000") is False


def test_credentials_repr_hides_secrets():
    text = repr(Credentials("u", "hunter2", None)) + repr(
        Credentials(None, None, "t0k")
    )
    assert "hunter2" not in text
    assert "t0k" not in text
    assert "u" in text


def test_bearer_tokens_are_cached_per_scope_and_refetched_after_invalidate():
    """Offline: a MockTransport plays the token server (no registry is involved)."""
    issued = []

    def token_server(request):
        issued.append(request.url.params.get_list("scope"))
        return httpx.Response(200, json={"token": f"t{len(issued)}", "expires_in": 300})

    client = httpx.Client(transport=httpx.MockTransport(token_server))
    auth = Authenticator("r.example", credentials=Credentials("u", "p"))
    challenge = httpx.Response(
        401,
        headers={
            "WWW-Authenticate": 'Bearer realm="http://t.example/token",service="r"'
        },
    )
    assert auth.learn(challenge)
    push = ("repository:a:pull,push", "repository:b:pull")
    assert auth.headers(client, push) == {"Authorization": "Bearer t1"}
    assert auth.headers(client, reversed(push)) == {"Authorization": "Bearer t1"}
    assert auth.headers(client, ("repository:a:pull",)) == {
        "Authorization": "Bearer t2"
    }
    auth.invalidate(push)
    assert auth.headers(client, push) == {"Authorization": "Bearer t3"}
    assert issued[0] == sorted(push)


def _jwt(claims):
    """An unsigned token shaped as a JWT: only its payload is read here."""

    def part(document):
        raw = json.dumps(document).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part(claims)}.sig"


@pytest.mark.parametrize(
    "answer",
    [
        {
            "token": "opaque",
            "access": [{"type": "repository", "name": "a", "actions": ["pull"]}],
        },
        {
            "token": _jwt(
                {"access": [{"type": "repository", "name": "a", "actions": ["pull"]}]}
            )
        },
    ],
    ids=["answer-access-list", "jwt-access-claim"],
)
def test_the_granted_scopes_are_kept_and_logged_not_only_the_requested(answer, caplog):
    """Offline: a MockTransport token server granting pull where push was asked."""
    client = httpx.Client(
        transport=httpx.MockTransport(lambda _request: httpx.Response(200, json=answer))
    )
    auth = Authenticator("r.example", credentials=Credentials("reader", "pw"))
    auth.learn(
        httpx.Response(401, headers={"WWW-Authenticate": 'Bearer realm="http://t/x"'})
    )
    caplog.set_level(logging.DEBUG, logger="platforge.registry.auth")
    auth.headers(client, ("repository:a:pull,push",))
    grant = auth.grant(("repository:a:pull,push",))
    assert grant is not None
    assert grant.username == "reader"
    assert grant.scopes == ("repository:a:pull",)
    assert grant.allows("a", "pull")
    assert not grant.allows("a", "push")
    assert "requested repository:a:pull,push, granted repository:a:pull," in caplog.text
    assert answer["token"] not in caplog.text


def test_a_token_server_that_lists_no_grant_says_so_in_the_log(caplog):
    client = httpx.Client(
        transport=httpx.MockTransport(
            lambda _request: httpx.Response(200, json={"token": "opaque"})
        )
    )
    auth = Authenticator("r.example", credentials=Credentials("u", "pw"))
    auth.learn(
        httpx.Response(401, headers={"WWW-Authenticate": 'Bearer realm="http://t/x"'})
    )
    caplog.set_level(logging.DEBUG, logger="platforge.registry.auth")
    auth.headers(client, ("repository:a:pull",))
    assert auth.grant(("repository:a:pull",)).allows("a", "push") is None
    assert "granted (not listed by the token server)" in caplog.text


def test_a_refused_token_login_names_the_user_and_says_to_check_them():
    client = httpx.Client(
        transport=httpx.MockTransport(lambda _request: httpx.Response(401))
    )
    auth = Authenticator("r.example", credentials=Credentials("ann", "wrong"))
    auth.learn(
        httpx.Response(401, headers={"WWW-Authenticate": 'Bearer realm="http://t/x"'})
    )
    with pytest.raises(AuthError) as info:
        auth.headers(client, ())
    assert str(info.value).endswith(
        ": user name or password refused for 'ann' at r.example; check them"
    )


def test_token_refusal_names_the_registry_and_hides_the_password(caplog):
    """Offline: a MockTransport token server refusing everything."""
    client = httpx.Client(
        transport=httpx.MockTransport(lambda _request: httpx.Response(401))
    )
    auth = Authenticator("r.example", credentials=Credentials("u", "sup3rsecret"))
    auth.learn(
        httpx.Response(401, headers={"WWW-Authenticate": 'Bearer realm="http://t/x"'})
    )
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AuthError) as info:
        auth.headers(client, ("repository:a:pull",))
    message = str(info.value)
    assert "r.example" in message
    assert message.endswith(
        "; run `platforge login r.example` or pass --username and --password-stdin"
    )
    assert "sup3rsecret" not in message
    assert "sup3rsecret" not in caplog.text


@given(st.text(max_size=200))
def test_parse_challenges_never_fails_on_any_header(header):
    for challenge in parse_challenges(header):
        assert challenge.scheme == challenge.scheme.lower()


_NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
_VALUES = st.text(
    alphabet=st.characters(codec="ascii", exclude_characters="\x00\r\n"), max_size=30
)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["Bearer", "Basic"]),
            st.dictionaries(_NAMES, _VALUES, max_size=4),
        ),
        min_size=1,
        max_size=3,
    )
)
def test_quoted_params_round_trip_through_the_parser(challenges):
    def quote(value):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    header = ", ".join(
        scheme + " " + ", ".join(f"{k}={quote(v)}" for k, v in params.items())
        for scheme, params in challenges
    )
    parsed = parse_challenges(header)
    assert [(c.scheme, dict(c.params)) for c in parsed] == [
        (scheme.lower(), params) for scheme, params in challenges
    ]


def test_a_token_is_reused_until_it_expires(tmp_path):
    """Offline: a MockTransport token server issuing short-lived tokens."""
    issued = []

    def token_server(request):
        issued.append(request)
        # Ten seconds are kept as a margin, so this token lives 0.3 s here.
        return httpx.Response(
            200, json={"token": f"t{len(issued)}", "expires_in": 10.3}
        )

    client = httpx.Client(transport=httpx.MockTransport(token_server))
    auth = Authenticator("r.example", config=tmp_path / "absent.json")
    auth.learn(
        httpx.Response(401, headers={"WWW-Authenticate": 'Bearer realm="http://t/x"'})
    )
    scope = ("repository:a:pull",)
    assert auth.headers(client, scope) == {"Authorization": "Bearer t1"}
    assert auth.headers(client, scope) == {"Authorization": "Bearer t1"}
    time.sleep(0.4)
    assert auth.headers(client, scope) == {"Authorization": "Bearer t2"}
    assert "authorization" not in issued[0].headers


# A helper that records its calls and keeps one secret in a file, as the
# docker-credential-* programs do in a keychain.
RECORDING_HELPER = """\
echo "$1" >> "$(dirname "$0")/calls"
store="$(dirname "$0")/stored"
case "$1" in
  store) cat > "$store" ;;
  get) cat > /dev/null
       if [ -f "$store" ]; then
         sed 's/"ServerURL":"[^"]*",//' "$store"
       else echo "credentials not found in native keychain"; exit 1; fi ;;
  erase) cat > /dev/null
         if [ -f "$store" ]; then rm "$store"
         else echo "credentials not found in native keychain"; exit 1; fi ;;
esac
"""


@pytest.mark.parametrize(
    "config",
    [{"credsStore": "fake"}, {"credHelpers": {"127.0.0.1:5000": "fake"}}],
    ids=["credsStore", "credHelpers"],
)
def test_login_with_a_helper_stores_the_secret_there_and_logout_erases_it(
    docker_config, tmp_path, monkeypatch, config
):
    _helper(tmp_path, monkeypatch, RECORDING_HELPER)
    docker_config.write_text(
        json.dumps({**config, "auths": {"127.0.0.1:5000": {"auth": _b64("old:pw")}}})
    )
    where = store_login("127.0.0.1:5000", "alice", "s3cret-pw")

    assert where == "docker-credential-fake"
    text = docker_config.read_text()
    assert "s3cret-pw" not in text
    assert _b64("alice:s3cret-pw") not in text
    assert json.loads(text)["auths"]["127.0.0.1:5000"] == {}
    stored = json.loads((tmp_path / "bin" / "stored").read_text())
    assert stored == {
        "ServerURL": "127.0.0.1:5000",
        "Username": "alice",
        "Secret": "s3cret-pw",
    }
    assert credentials_for("127.0.0.1:5000") == Credentials("alice", "s3cret-pw")

    assert remove_login("127.0.0.1:5000") is True
    assert not (tmp_path / "bin" / "stored").exists()
    assert "127.0.0.1:5000" not in json.loads(docker_config.read_text())["auths"]
    calls = (tmp_path / "bin" / "calls").read_text().split()
    assert calls == ["store", "get", "erase"]


def test_login_with_a_missing_helper_fails_and_writes_no_secret(docker_config):
    docker_config.write_text(json.dumps({"credsStore": "absent-xyz"}))
    with pytest.raises(CredentialsError, match="docker-credential-absent-xyz"):
        store_login("127.0.0.1:5000", "alice", "s3cret-pw")
    assert json.loads(docker_config.read_text()) == {"credsStore": "absent-xyz"}


def test_login_when_the_helper_fails_writes_no_secret(
    docker_config, tmp_path, monkeypatch
):
    _helper(tmp_path, monkeypatch, "cat > /dev/null\necho 'keychain locked'\nexit 3\n")
    docker_config.write_text(json.dumps({"credsStore": "fake"}))
    with pytest.raises(CredentialsError, match="failed `store`") as info:
        store_login("127.0.0.1:5000", "alice", "s3cret-pw")
    assert "s3cret-pw" not in str(info.value)
    assert "s3cret-pw" not in docker_config.read_text()
