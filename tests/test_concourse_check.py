"""check's three modes against real tags in the test bed's registries."""

import json
import uuid

import pytest

from test_concourse_support import (
    OCI_INDEX,
    Blob,
    Image,
    answer,
    multi_image,
    push,
    resource,
    single_image,
    source_for,
)

pytestmark = pytest.mark.registry


@pytest.fixture(scope="module")
def tagged(registry_plain):
    """1.0.0, 1.0.1-rc.1, 1.1.0 (= 1.1 = latest), 1.1.0-alpine, one multi-arch 2.0.0."""
    repo = f"concourse/check-{uuid.uuid4().hex[:8]}"
    digests = {
        "1.0.0": push(
            registry_plain,
            repo,
            single_image("a", created="2024-01-01T00:00:00Z"),
            ["1.0.0"],
        ),
        "1.0.1-rc.1": push(
            registry_plain,
            repo,
            single_image("b", created="2024-03-01T00:00:00Z"),
            ["1.0.1-rc.1"],
        ),
        "1.1.0": push(
            registry_plain,
            repo,
            single_image("c", created="2024-02-01T00:00:00Z"),
            ["1.1", "1.1.0", "latest"],
        ),
        "1.1.0-alpine": push(
            registry_plain,
            repo,
            single_image("d", created="2024-04-01T00:00:00Z"),
            ["1.1.0-alpine"],
        ),
        "2.0.0": push(registry_plain, repo, multi_image("e"), ["2.0.0"]),
    }
    return registry_plain, repo, digests


def run_check(registry, repo, version=None, **source):
    request = {"source": source_for(registry, repo, **source)}
    if version is not None:
        request["version"] = version
    return answer(resource("check", request))


def tags_of(versions):
    return [v["tag"] for v in versions]


def test_tag_mode_reports_the_tags_digest(tagged):
    registry, repo, digests = tagged
    assert run_check(registry, repo, tag="latest") == [
        {"tag": "latest", "digest": digests["1.1.0"]}
    ]


def test_tag_mode_reports_the_index_digest_of_a_multi_platform_image(tagged):
    registry, repo, digests = tagged
    versions = run_check(registry, repo, tag="2.0.0")
    assert versions == [{"tag": "2.0.0", "digest": digests["2.0.0"]}]


def test_tag_mode_includes_the_previous_version_while_it_still_exists(tagged):
    registry, repo, digests = tagged
    previous = {"tag": "latest", "digest": digests["1.0.0"]}
    versions = run_check(registry, repo, version=previous, tag="latest")
    assert versions == [previous, {"tag": "latest", "digest": digests["1.1.0"]}]


def test_tag_mode_drops_a_previous_version_that_no_longer_exists(tagged):
    registry, repo, digests = tagged
    gone = {"tag": "latest", "digest": "sha256:" + "0" * 64}
    versions = run_check(registry, repo, version=gone, tag="latest")
    assert versions == [{"tag": "latest", "digest": digests["1.1.0"]}]


def test_tag_mode_on_a_missing_tag_reports_nothing(tagged):
    registry, repo, _ = tagged
    assert run_check(registry, repo, tag="nope") == []


SEMVER_TABLE = [
    ({}, ["1.0.0", "1.1.0", "2.0.0"]),
    ({"pre_releases": True}, ["1.0.0", "1.0.1-rc.1", "1.1.0", "2.0.0"]),
    ({"variant": "alpine"}, ["1.1.0-alpine"]),
    ({"semver_constraint": "~1.0"}, ["1.0.0"]),
    ({"semver_constraint": ">= 1.1, < 2 || 2.x"}, ["1.1.0", "2.0.0"]),
    (
        {"pre_releases": True, "pre_release_prefixes": ["beta"]},
        ["1.0.0", "1.1.0", "2.0.0"],
    ),
]


@pytest.mark.parametrize(("extra", "expected"), SEMVER_TABLE)
def test_semver_mode_table(tagged, extra, expected):
    registry, repo, digests = tagged
    versions = run_check(registry, repo, **extra)
    assert tags_of(versions) == expected
    for version in versions:
        key = version["tag"]
        assert version["digest"] == digests[key]


def test_semver_mode_collapses_alias_tags_onto_the_most_specific(tagged):
    registry, repo, digests = tagged
    versions = run_check(registry, repo)
    shared = [v for v in versions if v["digest"] == digests["1.1.0"]]
    assert shared == [{"tag": "1.1.0", "digest": digests["1.1.0"]}]


def test_semver_mode_starts_at_the_previous_version(tagged):
    registry, repo, digests = tagged
    previous = {"tag": "1.1.0", "digest": digests["1.1.0"]}
    assert tags_of(run_check(registry, repo, version=previous)) == ["1.1.0", "2.0.0"]


REGEX_TABLE = [
    ({"tag_regex": r"^1\.\d+\.\d+$"}, ["1.0.0", "1.1.0"]),
    # Go's POSIX classes (RE2), which Python's re would read as a nested set.
    (
        {"tag_regex": r"^[[:digit:]]+\.[[:digit:]]+\.[[:digit:]]+$"},
        ["1.0.0", "1.1.0", "2.0.0"],
    ),
    ({"tag_regex": "alpine"}, ["1.1.0-alpine"]),
    ({"tag_regex": "^lat"}, ["latest"]),
    # Oldest first by the config's created time: a (Jan), c (Feb), b (Mar), d (Apr).
    (
        {"tag_regex": r"^1\.\d\.\d", "created_at_sort": True},
        ["1.0.0", "1.1.0", "1.0.1-rc.1", "1.1.0-alpine"],
    ),
]


@pytest.mark.parametrize(("extra", "expected"), REGEX_TABLE)
def test_regex_mode_table(tagged, extra, expected):
    registry, repo, _ = tagged
    assert tags_of(run_check(registry, repo, **extra)) == expected


def test_check_against_basic_and_token_auth(registry_basic, registry_token):
    for registry in (registry_basic, registry_token):
        repo = f"concourse/auth-{uuid.uuid4().hex[:8]}"
        digest = push(registry, repo, single_image("auth"), ["1.0.0"])
        versions = run_check(registry, repo)
        assert versions == [{"tag": "1.0.0", "digest": digest}]


def test_wrong_password_fails_in_one_line_without_the_password(registry_basic):
    repo = "concourse/denied"
    request = {"source": source_for(registry_basic, repo, tag="x")}
    request["source"]["password"] = "s3cret-Wrong-Pass"
    result = resource("check", request, check=False)
    assert result.returncode == 1
    assert result.stdout == ""
    assert "s3cret-Wrong-Pass" not in result.stderr
    assert registry_basic.host in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_semver_mode_ends_with_latest_when_no_version_names_its_image(registry_plain):
    repo = f"concourse/bare-{uuid.uuid4().hex[:8]}"
    old = push(registry_plain, repo, single_image("old"), ["1.0.0", "1.0"])
    edge = push(registry_plain, repo, single_image("edge"), ["latest"])
    alpine = push(registry_plain, repo, single_image("alp"), ["alpine", "1.0.0-alpine"])
    rc = push(registry_plain, repo, single_image("rc"), ["2.0", "2.0.0-rc.1"])
    assert run_check(registry_plain, repo) == [
        {"tag": "1.0.0", "digest": old},
        {"tag": "2.0", "digest": rc},
        {"tag": "latest", "digest": edge},
    ]
    # a release tag wins a shared digest over a more specific pre-release tag
    assert tags_of(run_check(registry_plain, repo, pre_releases=True)) == [
        "1.0.0",
        "2.0",
        "latest",
    ]
    # the variant's bare tag is not added when a version tag already names it
    assert run_check(registry_plain, repo, variant="alpine") == [
        {"tag": "1.0.0-alpine", "digest": alpine}
    ]
    # with a constraint, only versions
    assert tags_of(run_check(registry_plain, repo, semver_constraint="*")) == [
        "1.0.0",
        "2.0",
    ]


def _arm_index(seed, *, v6, v7):
    """An index of linux/arm/v6 and linux/arm/v7 images created at ``v6``/``v7``."""
    parts = {
        variant: single_image(f"{seed}-{variant}", arch="arm", created=created)
        for variant, created in (("v6", v6), ("v7", v7))
    }
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            part.top.descriptor(
                platform={"architecture": "arm", "os": "linux", "variant": variant}
            )
            for variant, part in parts.items()
        ],
    }
    return Image(
        top=Blob(OCI_INDEX, json.dumps(index).encode()),
        blobs=[blob for part in parts.values() for blob in part.blobs],
        manifests=[part.top for part in parts.values()],
    )


def test_created_at_sort_reads_the_source_platforms_variant(registry_plain):
    repo = f"concourse/created-{uuid.uuid4().hex[:8]}"
    early, late = "2024-01-01T00:00:00Z", "2024-05-01T00:00:00Z"
    push(registry_plain, repo, _arm_index("one", v6=late, v7=early), ["1.0.0"])
    push(registry_plain, repo, _arm_index("two", v6=early, v7=late), ["2.0.0"])
    platform = {"os": "linux", "architecture": "arm", "variant": "v7"}
    versions = run_check(
        registry_plain,
        repo,
        tag_regex=r"^\d",
        created_at_sort=True,
        platform=platform,
    )
    assert tags_of(versions) == ["1.0.0", "2.0.0"]
