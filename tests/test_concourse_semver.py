"""Tags read as versions, constraints and alias tags, as pipelines write them."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from platforge.concourse.semver import (
    alias_tags,
    parse_constraint,
    parse_version,
    tag_version,
)
from platforge.errors import ConcourseError


@pytest.mark.parametrize(
    ("text", "numbers", "pre", "segments"),
    [
        ("1", (1, 0, 0), (), 1),
        ("1.2", (1, 2, 0), (), 2),
        ("1.2.3", (1, 2, 3), (), 3),
        ("v1.2.3", (1, 2, 3), (), 3),
        ("1.2.3-rc.1", (1, 2, 3), ("rc", "1"), 3),
        ("1.2.3-php7.3-apache", (1, 2, 3), ("php7", "3-apache"), 3),
        ("1.2.3+build.5", (1, 2, 3), (), 3),
    ],
)
def test_tags_read_as_versions(text, numbers, pre, segments):
    version = parse_version(text)
    assert version is not None
    assert (version.major, version.minor, version.patch) == numbers
    assert version.prerelease == pre
    assert version.segments == segments
    assert str(version) == text


@pytest.mark.parametrize("text", ["latest", "", "1.2.3.4", "01.2", "alpine", "1.x"])
def test_non_versions_are_not_read(text):
    assert parse_version(text) is None


def test_precedence_puts_prereleases_before_their_release():
    ordered = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "1.0.1",
        "1.10.0",
    ]
    versions = [parse_version(t) for t in ordered]
    assert sorted(versions, key=lambda v: v.key()) == versions


@pytest.mark.parametrize(
    ("tag", "variant", "expected"),
    [
        ("1.2.3", None, "1.2.3"),
        ("1.2.3-alpine", None, None),  # a variant, not ours
        ("1.2.3-rc.1", None, "1.2.3-rc.1"),  # a pre-release
        ("1.2.3-alpine", "alpine", "1.2.3"),
        ("1.2.3-rc.1-alpine", "alpine", "1.2.3-rc.1"),
        ("1.2.3-rc.1-alpine", None, None),  # a pre-release of a variant
        ("1.2.3-php7.3-apache", "apache", None),  # two variants
        ("1.2.3-php7.3-apache", "php7.3-apache", "1.2.3"),
        ("alpine", "alpine", None),
        ("1.2.3", "alpine", None),
        ("latest", None, None),
    ],
)
def test_variant_suffix_rules(tag, variant, expected):
    found = tag_version(tag, variant=variant)
    if expected is None:
        assert found is None
    else:
        assert found is not None
        assert found.tag == tag
        assert found.version.same(parse_version(expected))


def test_custom_pre_release_prefixes_turn_a_suffix_into_a_pre_release():
    assert tag_version("2.0.0-dev.3") is None
    found = tag_version("2.0.0-dev.3", pre_release_prefixes=("dev",))
    assert found is not None
    assert found.is_prerelease


CONSTRAINT_TABLE = [
    ("1.2.3", ["1.2.3"], ["1.2.4", "1.2.2"]),
    ("=1.2", ["1.2.0", "1.2.9"], ["1.3.0", "1.1.9"]),
    ("1.2.x", ["1.2.0", "1.2.9"], ["1.3.0"]),
    ("!=1.2.3", ["1.2.4", "1.2.2"], ["1.2.3"]),
    (">1.2", ["1.3.0", "2.0.0"], ["1.2.9", "1.2.0"]),
    (">1.2.3", ["1.2.4"], ["1.2.3"]),
    (">= 1.2", ["1.2.0", "9.0.0"], ["1.1.9"]),
    ("<1.2", ["1.1.9"], ["1.2.0"]),
    ("<=1.2", ["1.2.9"], ["1.3.0"]),
    ("=< 1.2.3", ["1.2.3"], ["1.2.4"]),
    ("~1.2.3", ["1.2.3", "1.2.9"], ["1.3.0", "1.2.2"]),
    ("~>1.2", ["1.2.0", "1.2.5"], ["1.3.0"]),
    ("~1", ["1.0.0", "1.9.9"], ["2.0.0"]),
    ("^1.2.3", ["1.2.3", "1.9.0"], ["2.0.0", "1.2.2"]),
    ("^0.2.3", ["0.2.3", "0.2.9"], ["0.3.0"]),
    ("^0.0.3", ["0.0.3"], ["0.0.4"]),
    ("1.2 - 1.4.5", ["1.2.0", "1.4.5"], ["1.4.6", "1.1.0"]),
    ("1.2.3 - 2.3", ["2.3.9"], ["2.4.0"]),
    ("*", ["0.0.1", "9.9.9"], []),
    (">= 1.2, < 3.0.0 || >= 4.2.3", ["1.2.0", "2.9.9", "4.2.3"], ["3.0.0", "4.2.2"]),
    (">= 1.2 < 3", ["2.0.0"], ["3.0.0"]),
    (">=1.0", ["1.1.0"], ["1.1.0-rc.1"]),  # pre-releases need a pre-release term
    (">=1.1.0-rc.0", ["1.1.0-rc.1", "1.1.0"], ["1.0.0"]),
]


@pytest.mark.parametrize(("text", "allowed", "refused"), CONSTRAINT_TABLE)
def test_constraints_select_versions(text, allowed, refused):
    constraint = parse_constraint(text)
    for version in allowed:
        assert constraint.allows(parse_version(version)), (text, version)
    for version in refused:
        assert not constraint.allows(parse_version(version)), (text, version)


@pytest.mark.parametrize("text", ["", "  ", "abc", ">= 1.2 ||", "1.2.3.4", "~>foo"])
def test_bad_constraints_are_refused_quoting_the_input(text):
    with pytest.raises(ConcourseError, match="semver_constraint"):
        parse_constraint(text)


@given(st.integers(0, 50), st.integers(0, 50), st.integers(0, 50))
def test_caret_range_holds_its_own_floor(major, minor, patch):
    version = parse_version(f"{major}.{minor}.{patch}")
    assert parse_constraint(f"^{major}.{minor}.{patch}").allows(version)
    assert parse_constraint(f"~{major}.{minor}.{patch}").allows(version)
    assert not parse_constraint(f">{major}.{minor}.{patch}").allows(version)


@pytest.mark.parametrize(
    ("version", "existing", "variant", "expected"),
    [
        ("1.2.3", ["1.2.2", "1.1.0"], None, ["1.2", "1", "latest"]),
        ("1.2.3", ["1.2.4"], None, []),
        ("1.2.3", ["1.3.0"], None, ["1.2"]),
        ("1.2.3", ["2.0.0", "1.2.0"], None, ["1.2", "1"]),
        ("1.2.3", ["1.2.2-foo", "3.0.0"], "foo", ["1.2-foo", "1-foo", "foo"]),
        ("1.2.3", ["2.0.0-rc.1"], None, ["1.2", "1", "latest"]),
        ("1.2.3-rc.1", [], None, []),
        ("1.2", ["1.1.0"], None, ["1", "latest"]),
        ("not-a-version", [], None, []),
    ],
)
def test_bump_aliases_move_only_when_newest(version, existing, variant, expected):
    assert alias_tags(version, existing, variant=variant) == expected
