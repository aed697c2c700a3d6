"""Image references parse with docker.io rules and refuse malformed input."""

import pytest

from platforge.errors import ReferenceFormatError
from platforge.registry.reference import Reference, is_loopback

D = "sha256:" + "a" * 64

PARSE_CASES = [
    # text, registry, repository, tag, digest
    ("alpine", "docker.io", "library/alpine", "latest", None),
    ("alpine:3.19", "docker.io", "library/alpine", "3.19", None),
    ("user/app", "docker.io", "user/app", "latest", None),
    ("docker.io/alpine", "docker.io", "library/alpine", "latest", None),
    ("index.docker.io/library/alpine:1", "docker.io", "library/alpine", "1", None),
    ("registry-1.docker.io/x/y", "docker.io", "x/y", "latest", None),
    ("localhost/x", "localhost", "x", "latest", None),
    ("localhost:5000/x", "localhost:5000", "x", "latest", None),
    ("127.0.0.1:5000/a/b:t", "127.0.0.1:5000", "a/b", "t", None),
    ("ghcr.io/o/r/deep/path:v1.2.3", "ghcr.io", "o/r/deep/path", "v1.2.3", None),
    (f"alpine@{D}", "docker.io", "library/alpine", None, D),
    (f"alpine:3@{D}", "docker.io", "library/alpine", "3", D),
    (f"127.0.0.1:5000/app@{D}", "127.0.0.1:5000", "app", None, D),
    ("[::1]:5000/app:x", "[::1]:5000", "app", "x", None),
    ("a.b-c/d__e", "a.b-c", "d__e", "latest", None),
    ("example.com/a--b/c_d:TAG_1", "example.com", "a--b/c_d", "TAG_1", None),
    ("Example.COM/x", "Example.COM", "x", "latest", None),
]


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"), PARSE_CASES
)
def test_parse_applies_docker_rules(text, registry, repository, tag, digest):
    ref = Reference.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (
        registry,
        repository,
        tag,
        digest,
    )


BAD = [
    "",
    " alpine",
    "Alpine",
    "user/App",
    "alpine:",
    "alpine:-x",
    "alpine:" + "t" * 129,
    "alpine@sha256:abc",
    "alpine@sha256:" + "A" * 64,
    "alpine@md5:" + "a" * 32 + "!",
    "a//b",
    "/a",
    "a/",
    "host:port/x",
    "example.com/-x",
    "a_/b",
    "a.b_c/d",
    "localhost:5000/" + "x" * 250,
]


@pytest.mark.parametrize("text", BAD)
def test_parse_refuses_malformed_references_quoting_them(text):
    with pytest.raises(ReferenceFormatError) as info:
        Reference.parse(text)
    message = str(info.value)
    assert (
        repr(text) in message
        or repr(text.split("@")[-1]) in message
        or text in (message)
    )
    assert "\n" not in message


def test_str_gives_the_fully_qualified_form():
    assert str(Reference.parse("alpine")) == "docker.io/library/alpine:latest"
    assert str(Reference.parse(f"x:1@{D}")) == f"docker.io/library/x:1@{D}"
    assert str(Reference.parse("127.0.0.1:5/a")) == "127.0.0.1:5/a:latest"


def test_api_host_of_docker_hub_is_registry_1():
    assert Reference.parse("alpine").api_host == "registry-1.docker.io"
    assert Reference.parse("localhost:5000/x").api_host == "localhost:5000"


def test_identifier_prefers_the_digest():
    assert Reference.parse(f"x:1@{D}").identifier == D
    assert Reference.parse("x:1").identifier == "1"


def test_with_tag_and_with_digest():
    ref = Reference.parse("127.0.0.1:5000/a:old")
    assert str(ref.with_tag("new")) == "127.0.0.1:5000/a:new"
    assert ref.with_digest(D).digest == D
    with pytest.raises(ReferenceFormatError):
        ref.with_tag(".bad")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1:5000", True),
        ("127.1.2.3", True),
        ("localhost:1", True),
        ("[::1]:5000", True),
        ("::1", True),
        ("example.com:5000", False),
        ("docker.io", False),
        ("10.0.0.1:5000", False),
    ],
)
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback
