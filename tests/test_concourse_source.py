"""source and params validation, and the JSON protocol, without a registry."""

import importlib.util
import io
import sys
from pathlib import Path

import pytest

from platforge.concourse.protocol import (
    read_request,
    scrub,
    secrets_masked,
    version_from_json,
)
from platforge.concourse.remote import open_remote
from platforge.concourse.source import (
    described,
    parse_get_params,
    parse_put_params,
    parse_source,
    secrets_of,
)
from platforge.errors import ConcourseError, RegistryError

FULL = {
    "repository": "127.0.0.1:5000/app",
    "username": "ci",
    "password": "hunter2-secret",
    "insecure": True,
    "ca_certs": ["-----BEGIN CERTIFICATE-----\n..."],
    "platform": {"os": "linux", "architecture": "aarch64"},
    "variant": "alpine",
    "semver_constraint": ">= 1.2, < 3",
    "pre_releases": "true",
    "pre_release_prefixes": ["dev"],
    "registry_mirror": {"host": "127.0.0.1:5001", "username": "m", "password": "p4ss"},
    "debug": False,
}


def test_every_upstream_key_is_read(some_ca):
    source = parse_source({**FULL, "ca_certs": [some_ca]})
    assert source.mode == "semver"
    assert source.platform is not None
    assert str(source.platform) == "linux/arm64"  # normalised
    assert source.pre_releases is True
    assert source.pre_release_prefixes == ("dev",)
    assert source.registry_mirror.host == "127.0.0.1:5001"
    assert source.semver_constraint.text == ">= 1.2, < 3"
    assert "hunter2-secret" not in repr(source)
    assert "p4ss" not in repr(source)
    assert set(source.secrets) == {"hunter2-secret", "p4ss"}


@pytest.mark.parametrize(
    ("source", "named"),
    [
        ({}, "source.repository is required"),
        ({"repository": "r", "tagg": "x"}, "'tagg'"),
        ({"repository": "r", "insecure": "maybe"}, "source.insecure"),
        ({"repository": "r", "tag": ["x"]}, "source.tag"),
        ({"repository": "r", "tag_regex": "("}, "source.tag_regex"),
        ({"repository": "r", "tag": "a", "tag_regex": "b"}, "both tag and tag_regex"),
        ({"repository": "r", "semver_constraint": ">>1"}, "semver_constraint"),
        ({"repository": "r", "platform": {"arch": "x"}}, "source.platform"),
        ({"repository": "r", "registry_mirror": {"user": "u"}}, "registry_mirror"),
        ({"repository": "r", "content_trust": {"server": "x"}}, "content_trust"),
        ({"repository": "r", "aws_access_key_id": "AKIA"}, "aws_region"),
        (
            {
                "repository": "r",
                "aws_region": "x",
                "aws_role_arn": "a",
                "aws_role_arns": ["b"],
            },
            "aws_role_arns",
        ),
        ({"repository": "r", "ca_certs": "PEM"}, "source.ca_certs"),
        ("not an object", "source must be a JSON object"),
    ],
)
def test_bad_sources_fail_naming_the_key(source, named):
    with pytest.raises(ConcourseError, match=named.replace("(", r"\(")) as caught:
        parse_source(source)
    assert "\n" not in str(caught.value)


def test_a_wrong_type_password_is_not_echoed():
    with pytest.raises(ConcourseError) as caught:
        parse_source({"repository": "r", "password": ["p@ss-in-a-list"]})
    assert "p@ss-in-a-list" not in str(caught.value)
    assert "a secret" in str(caught.value)


def test_get_and_put_params():
    source = parse_source({"repository": "r", "username": "a", "password": "b"})
    got = parse_get_params(
        {"format": "oci-layout", "skip_download": True, "password": "c"}, source
    )
    assert got.format == "oci-layout"
    assert got.skip_download
    assert got.source.password == "c"  # short-lived credentials override the source
    assert got.source.username == "a"
    put = parse_put_params({"image": "image/image", "version": "1.0.0"}, source)
    assert put.image == "image/image"
    assert put.version == "1.0.0"
    for bad, named in [
        ({"format": "tarball"}, "params.format"),
        ({"formt": "oci"}, "'formt'"),
    ]:
        with pytest.raises(ConcourseError, match=named):
            parse_get_params(bad, source)
    for bad, named in [
        ({}, "params.image is required"),
        ({"image": "i", "bump_aliases": True}, "bump_aliases needs params.version"),
        ({"image": "i", "additional_tag": "f"}, "'additional_tag'"),
    ]:
        with pytest.raises(ConcourseError, match=named):
            parse_put_params(bad, source)


def test_debug_description_masks_secrets():
    text = repr(described({"source": FULL}))
    assert "hunter2-secret" not in text
    assert "p4ss" not in text
    assert "BEGIN CERTIFICATE" not in text


@pytest.mark.parametrize(
    ("stdin", "named"),
    [
        ("", "no request on stdin"),
        ("{", "not JSON"),
        ("[]", "JSON list, not an object"),
        ('{"source": {}, "extra": 1}', "'extra'"),
    ],
)
def test_bad_requests(stdin, named):
    with pytest.raises(ConcourseError, match=named):
        read_request(io.StringIO(stdin))


def test_versions():
    digest = "sha256:" + "a" * 64
    assert version_from_json(None, required=False) is None
    assert version_from_json({"digest": digest}, required=True).tag == ""
    with pytest.raises(ConcourseError, match="no version"):
        version_from_json(None, required=True)
    with pytest.raises(ConcourseError, match=r"version\.digest"):
        version_from_json({"tag": "x", "digest": "nope"}, required=True)
    with pytest.raises(ConcourseError, match="'ref'"):
        version_from_json({"digest": digest, "ref": "x"}, required=True)


@pytest.fixture
def some_ca():
    """A real CA certificate from the system's bundle, as a pipeline pastes one."""
    bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    if not bundle.is_file():
        pytest.skip(f"no CA bundle at {bundle} to take a real certificate from")
    body = bundle.read_text().split("-----BEGIN CERTIFICATE-----")[1]
    return (
        "-----BEGIN CERTIFICATE-----"
        + body.split("-----END")[0]
        + ("-----END CERTIFICATE-----\n")
    )


def test_scrub_masks_every_secret():
    assert (
        scrub("user ci pass hunter2 at host", ["hunter2"]) == "user ci pass *** at host"
    )


def test_an_error_leaving_a_step_has_every_secret_of_the_request_masked():
    request = {
        "source": {
            "repository": "r",
            "password": "hunter2",
            "registry_mirror": {"host": "m", "password": "mirror-pw"},
        },
        "params": {"aws_secret_access_key": "aws-key"},
    }
    assert sorted(secrets_of(request)) == ["aws-key", "hunter2", "mirror-pw"]
    with (
        pytest.raises(ConcourseError) as info,
        secrets_masked(secrets_of(request)),
    ):
        raise RegistryError("refused hunter2 and mirror-pw and aws-key")
    assert str(info.value) == "refused *** and *** and ***"
    with pytest.raises(RegistryError), secrets_masked(secrets_of(request)):
        raise RegistryError("nothing secret here")


@pytest.mark.parametrize("pem", ["not a cert", "", "-----BEGIN CERTIFICATE-----\nMII"])
def test_a_ca_cert_that_is_no_pem_is_one_line_naming_the_key(pem, some_ca):
    assert parse_source({"repository": "r", "ca_certs": [some_ca]}).ca_certs
    with pytest.raises(ConcourseError, match=r"source\.ca_certs\[1\]"):
        parse_source({"repository": "r", "ca_certs": [some_ca, pem]})


def test_ecr_without_boto3_says_how_to_install_it():
    if importlib.util.find_spec("boto3") is not None:
        pytest.skip("boto3 is installed; the missing-boto3 message cannot show")
    source = parse_source({"repository": "app", "aws_region": "eu-west-1"})
    with pytest.raises(ConcourseError, match=r"platforge\[ecr\]"):
        open_remote(source)


def test_repository_with_a_tag_is_refused():
    with pytest.raises(ConcourseError, match=r"set source\.tag"):
        open_remote(parse_source({"repository": "127.0.0.1:5000/app:1.0"}))


def test_mirror_serves_reads_of_hub_repositories_only():
    source = parse_source(
        {"repository": "library/alpine", "registry_mirror": {"host": "127.0.0.1:5999"}}
    )
    with open_remote(source) as remote:
        assert remote.reference.registry == "127.0.0.1:5999"
        assert remote.repository == "library/alpine"
    with open_remote(source, mirror=False) as remote:
        assert remote.reference.registry == "docker.io"
    explicit = parse_source(
        {
            "repository": "127.0.0.1:5000/app",
            "registry_mirror": {"host": "127.0.0.1:5999"},
        }
    )
    with open_remote(explicit) as remote:
        assert remote.reference.registry == "127.0.0.1:5000"


@pytest.mark.parametrize(
    ("source", "params", "tags"),
    [
        ({"tag": "dev"}, {"version": "v1.2"}, ["dev", "1.2.0"]),
        ({"variant": "alpine"}, {"version": "1.2.3-rc.1"}, ["1.2.3-rc.1-alpine"]),
        ({}, {"version": "2", "tag_prefix": "app-"}, ["app-2.0.0"]),
        ({}, {}, ["latest"]),
        ({"tag": "x"}, {"additional_tags": "tags"}, ["x", "a", "b"]),
    ],
)
def test_put_tags_follow_upstream(tmp_path, source, params, tags):
    from platforge.concourse.put import image_tags  # noqa: PLC0415

    (tmp_path / "tags").write_text("a\nb a\n")
    parsed = parse_put_params(
        {"image": "i", **params}, parse_source({"repository": "r", **source})
    )
    assert image_tags(tmp_path, parsed, None) == tags


def test_put_refuses_a_version_that_is_not_semver(tmp_path):
    from platforge.concourse.put import image_tags  # noqa: PLC0415

    for bad in ("release-7", "1.2.3+build.5"):
        parsed = parse_put_params(
            {"image": "i", "version": bad}, parse_source({"repository": "r"})
        )
        with pytest.raises(ConcourseError, match=r"params\.version"):
            image_tags(tmp_path, parsed, None)


def test_ecr_credentials_come_from_boto3_after_assuming_each_role(monkeypatch):
    """boto3 is replaced by a fake here: no real ECR can run on this machine."""
    import base64  # noqa: PLC0415
    import types  # noqa: PLC0415

    calls = []

    class Client:
        def __init__(self, service, session):
            self.service, self.session = service, session

        def assume_role(self, RoleArn, RoleSessionName):  # noqa: N803 - boto3's names
            assert RoleSessionName
            calls.append(("assume", RoleArn, self.session["aws_access_key_id"]))
            number = len([c for c in calls if c[0] == "assume"])
            return {
                "Credentials": {
                    "AccessKeyId": f"role-key-{number}",
                    "SecretAccessKey": "role-secret",
                    "SessionToken": "role-token",
                }
            }

        def get_authorization_token(self, **kwargs):
            calls.append(("token", kwargs, self.session["aws_access_key_id"]))
            token = base64.b64encode(b"AWS:ecr-password").decode()
            return {
                "authorizationData": [
                    {
                        "authorizationToken": token,
                        "proxyEndpoint": "https://127.0.0.1:5999",
                    }
                ]
            }

    class Session:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

        def client(self, service):
            return Client(service, self.kwargs)

    monkeypatch.setitem(sys.modules, "boto3", types.SimpleNamespace(Session=Session))
    source = parse_source(
        {
            "repository": "team/app",
            "aws_region": "eu-west-1",
            "aws_access_key_id": "base-key",
            "aws_secret_access_key": "base-secret",
            "aws_role_arns": ["arn:one", "arn:two"],
            "aws_account_id": "123456789012",
        }
    )
    with open_remote(source) as remote:
        assert remote.reference.registry == "127.0.0.1:5999"
        assert remote.repository == "team/app"
        assert remote.credentials.username == "AWS"
        assert remote.credentials.password == "ecr-password"
    assert calls == [
        ("assume", "arn:one", "base-key"),
        ("assume", "arn:two", "role-key-1"),
        ("token", {"registryIds": ["123456789012"]}, "role-key-2"),
    ]
