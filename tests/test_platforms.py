import pytest
from hypothesis import given
from hypothesis import strategies as st

from platforge import platforms
from platforge.errors import PlatformError
from platforge.platforms import Platform

HOST = platforms.host()


def P(os, arch, variant=None, os_version=None):  # noqa: N802 - reads like a literal
    return Platform(os=os, architecture=arch, variant=variant, os_version=os_version)


PARSE_CASES = [
    ("linux/amd64", P("linux", "amd64")),
    ("linux/x86_64", P("linux", "amd64")),
    ("linux/x86-64", P("linux", "amd64")),
    ("linux/amd64/v1", P("linux", "amd64")),
    ("linux/amd64/v2", P("linux", "amd64", "v2")),
    ("linux/amd64/v3", P("linux", "amd64", "v3")),
    ("linux/AMD64/V3", P("linux", "amd64", "v3")),
    ("x86_64", P("linux", "amd64")),
    ("amd64", P("linux", "amd64")),
    ("linux/arm64", P("linux", "arm64")),
    ("linux/aarch64", P("linux", "arm64")),
    ("linux/arm64/v8", P("linux", "arm64")),
    ("linux/arm64/8", P("linux", "arm64")),
    ("linux/aarch64/v8", P("linux", "arm64")),
    ("linux/arm64/v8.2", P("linux", "arm64", "v8.2")),
    ("linux/arm64/v9", P("linux", "arm64", "v9")),
    ("arm64", P("linux", "arm64")),
    ("aarch64", P("linux", "arm64")),
    ("linux/arm", P("linux", "arm", "v7")),
    ("linux/arm/v7", P("linux", "arm", "v7")),
    ("linux/arm/7", P("linux", "arm", "v7")),
    ("linux/arm/v6", P("linux", "arm", "v6")),
    ("linux/arm/6", P("linux", "arm", "v6")),
    ("linux/arm/v5", P("linux", "arm", "v5")),
    ("linux/arm/5", P("linux", "arm", "v5")),
    ("linux/arm/8", P("linux", "arm", "v8")),
    ("linux/armhf", P("linux", "arm", "v7")),
    ("linux/armel", P("linux", "arm", "v6")),
    ("armhf", P("linux", "arm", "v7")),
    ("armel", P("linux", "arm", "v6")),
    ("arm", P("linux", "arm", "v7")),
    ("linux/armv7l", P("linux", "arm", "v7")),
    ("linux/i386", P("linux", "386")),
    ("linux/i686", P("linux", "386")),
    ("i386", P("linux", "386")),
    ("linux/386", P("linux", "386")),
    ("linux/ppc64le", P("linux", "ppc64le")),
    ("linux/s390x", P("linux", "s390x")),
    ("linux/riscv64", P("linux", "riscv64")),
    ("riscv64", P("linux", "riscv64")),
    ("linux/mips64le", P("linux", "mips64le")),
    ("Linux/amd64", P("linux", "amd64")),
    ("LINUX/ARM64", P("linux", "arm64")),
    ("windows/amd64", P("windows", "amd64")),
    ("Windows/AMD64", P("windows", "amd64")),
    ("windows(10.0.17763)/amd64", P("windows", "amd64", None, "10.0.17763")),
    ("darwin/arm64", P("darwin", "arm64")),
    ("macos/arm64", P("darwin", "arm64")),
    ("freebsd/amd64", P("freebsd", "amd64")),
    # docker reads an architecture and its variant as a Linux platform
    ("arm/v7", P("linux", "arm", "v7")),
    ("arm64/v8", P("linux", "arm64")),
    ("aarch64/v8", P("linux", "arm64")),
    (" linux/amd64 ", P("linux", "amd64")),
    (
        "linux",
        P("linux", HOST.architecture, HOST.variant),
    ),
    ("windows", P("windows", HOST.architecture, HOST.variant)),
    ("Darwin", P("darwin", HOST.architecture, HOST.variant)),
]


@pytest.mark.parametrize(("text", "expected"), PARSE_CASES)
def test_parse_normalises_like_containerd(text, expected):
    assert platforms.parse(text) == expected


def test_parse_table_has_at_least_39_cases():
    assert len(PARSE_CASES) >= 39


BAD_CASES = [
    ("", "empty"),
    ("   ", "empty"),
    ("linux/*", "wildcards"),
    ("linux/amd64/v2/extra", "too many"),
    ("linux//amd64", "invalid component"),
    ("linux/amd64/", "invalid component"),
    ("/amd64", "invalid operating system"),
    ("linux/am d64", "invalid component"),
    ("linux/amd64!", "invalid component"),
    ("notanos", "unknown operating system or architecture"),
    ("commodore64", "unknown operating system or architecture"),
    ("foo(1.0)", "unknown operating system"),
    ("win dows/amd64", "invalid operating system"),
    # containerd accepts these; a build would push an entry no machine runs
    ("linux/unknownarch", "unknown architecture 'unknownarch'"),
    ("linux/amd46", "unknown architecture 'amd46'"),
    ("linx/amd64", "unknown operating system 'linx'"),
    ("linx/amd64/v2", "unknown operating system 'linx'"),
]


@pytest.mark.parametrize(("text", "why"), BAD_CASES)
def test_parse_rejects_bad_specifiers_quoting_input_and_grammar(text, why):
    with pytest.raises(PlatformError) as caught:
        platforms.parse(text)
    message = str(caught.value)
    assert repr(text) in message
    assert why in message
    assert "expected os[/arch[/variant]]" in message
    assert "\n" not in message


FORMAT_CASES = [
    (P("linux", "amd64"), "linux/amd64"),
    (P("linux", "arm", "v7"), "linux/arm/v7"),
    (P("linux", "arm64", "v8.2"), "linux/arm64/v8.2"),
    (P("windows", "amd64", None, "10.0.17763.1"), "windows/amd64"),
]


@pytest.mark.parametrize(("platform", "text"), FORMAT_CASES)
def test_format_and_str_give_os_arch_variant(platform, text):
    assert platforms.format(platform) == text
    assert str(platform) == text


def test_format_all_includes_os_version_and_parses_back():
    p = P("windows", "amd64", None, "10.0.17763")
    text = platforms.format_all(p)
    assert text == "windows(10.0.17763)/amd64"
    assert platforms.parse(text) == p


@pytest.mark.parametrize(("text", "_expected"), PARSE_CASES)
def test_format_of_parse_is_a_fixed_point(text, _expected):
    once = platforms.parse(text)
    assert platforms.parse(platforms.format_all(once)) == once


def test_normalize_fixes_spellings_found_in_documents():
    raw = P("Linux", "aarch64", "V8")
    assert platforms.normalize(raw) == P("linux", "arm64")
    assert platforms.normalize(P("linux", "arm")) == P("linux", "arm", "v7")
    assert platforms.normalize(P("linux", "amd64", "")) == P("linux", "amd64")


def test_host_is_a_normalised_known_platform():
    here = platforms.host()
    assert here.os == "linux"
    assert platforms.normalize(here) == here
    assert platforms.only(here).match(here)


def test_parse_list_splits_commas_and_drops_duplicates():
    got = platforms.parse_list("linux/amd64,linux/arm64, linux/x86_64,linux/arm")
    assert got == [P("linux", "amd64"), P("linux", "arm64"), P("linux", "arm", "v7")]
    with pytest.raises(PlatformError, match="empty entry"):
        platforms.parse_list("linux/amd64,,linux/arm64")


# wanted -> platforms it also runs, best first (containerd's Only)
FALLBACK_ORDER = [
    ("linux/amd64", ["linux/amd64", "linux/386"]),
    ("linux/amd64/v2", ["linux/amd64/v2", "linux/amd64", "linux/386"]),
    (
        "linux/amd64/v4",
        [
            "linux/amd64/v4",
            "linux/amd64/v3",
            "linux/amd64/v2",
            "linux/amd64",
            "linux/386",
        ],
    ),
    (
        "linux/arm64",
        ["linux/arm64", "linux/arm/v8", "linux/arm/v7", "linux/arm/v6", "linux/arm/v5"],
    ),
    (
        "linux/arm64/v8.2",
        [
            "linux/arm64/v8.2",
            "linux/arm64/v8.1",
            "linux/arm64",
            "linux/arm/v8",
            "linux/arm/v7",
            "linux/arm/v6",
            "linux/arm/v5",
        ],
    ),
    (
        "linux/arm64/v9.1",
        [
            "linux/arm64/v9.1",
            "linux/arm64/v9",
            "linux/arm64/v8.6",
            "linux/arm64/v8.5",
            "linux/arm64/v8.4",
            "linux/arm64/v8.3",
            "linux/arm64/v8.2",
            "linux/arm64/v8.1",
            "linux/arm64",
            "linux/arm/v8",
            "linux/arm/v7",
            "linux/arm/v6",
            "linux/arm/v5",
        ],
    ),
    ("linux/arm/v8", ["linux/arm/v8", "linux/arm/v7", "linux/arm/v6", "linux/arm/v5"]),
    ("linux/arm", ["linux/arm/v7", "linux/arm/v6", "linux/arm/v5"]),
    ("linux/arm/v6", ["linux/arm/v6", "linux/arm/v5"]),
    ("linux/arm/v5", ["linux/arm/v5"]),
    ("linux/386", ["linux/386"]),
    ("linux/ppc64le", ["linux/ppc64le"]),
    ("linux/s390x", ["linux/s390x"]),
    ("windows/amd64", ["windows/amd64", "windows/386"]),
]


@pytest.mark.parametrize(("wanted", "order"), FALLBACK_ORDER)
def test_only_matches_fallbacks_in_containerds_order(wanted, order):
    matcher = platforms.only(platforms.parse(wanted))
    assert [platforms.format(p) for p in matcher.order] == order
    for rank, text in enumerate(order):
        assert matcher.rank(platforms.parse(text)) == rank


NOT_MATCHED = [
    ("linux/amd64", "linux/arm64"),
    ("linux/amd64", "linux/amd64/v2"),
    ("linux/amd64", "windows/amd64"),
    ("linux/386", "linux/amd64"),
    ("linux/arm/v7", "linux/arm64"),
    ("linux/arm/v7", "linux/arm/v8"),
    ("linux/arm/v6", "linux/arm/v7"),
    ("linux/arm64", "linux/arm64/v8.1"),
    ("linux/arm64", "linux/amd64"),
    ("linux/arm64", "unknown/unknown"),
    ("windows(10.0.17763)/amd64", "windows(10.0.20348)/amd64"),
]


@pytest.mark.parametrize(("wanted", "candidate"), NOT_MATCHED)
def test_only_refuses_what_the_cpu_cannot_run(wanted, candidate):
    if candidate == "unknown/unknown":
        cand = P("unknown", "unknown")
    else:
        cand = platforms.parse(candidate)
    assert not platforms.only(platforms.parse(wanted)).match(cand)


def test_matcher_normalises_candidates_from_documents():
    matcher = platforms.only(platforms.parse("linux/arm64"))
    assert matcher.match(P("linux", "aarch64", "v8"))
    assert matcher.match(P("Linux", "arm", None))  # arm without variant is v7
    assert matcher.match(P("linux", "armhf"))


def test_windows_os_version_compares_major_minor_build():
    wanted = platforms.parse("windows(10.0.17763.1)/amd64")
    assert platforms.only(wanted).match(P("windows", "amd64", None, "10.0.17763.2237"))
    assert platforms.only(wanted).match(P("windows", "amd64"))
    assert not platforms.only(wanted).match(P("windows", "amd64", None, "10.0.20348"))


def test_only_strict_has_no_fallbacks():
    matcher = platforms.only_strict(platforms.parse("linux/amd64"))
    assert matcher.match(P("linux", "x86_64"))
    assert not matcher.match(P("linux", "386"))


def test_less_prefers_earlier_fallbacks():
    matcher = platforms.only(platforms.parse("linux/arm64"))
    v7, v6 = platforms.parse("linux/arm/v7"), platforms.parse("linux/arm/v6")
    assert matcher.less(v7, v6)
    assert not matcher.less(v6, v7)
    assert matcher.less(v6, P("linux", "amd64"))
    assert not matcher.less(P("linux", "amd64"), v6)


BEST_MATCH_CASES = [
    ("linux/arm64", ["linux/amd64", "linux/arm/v7", "linux/arm64"], 2),
    ("linux/arm64", ["linux/amd64", "linux/arm/v6", "linux/arm/v7"], 2),
    ("linux/arm64", ["linux/amd64", "linux/s390x"], None),
    ("linux/amd64", ["linux/386", "linux/amd64"], 1),
    ("linux/amd64", ["linux/arm64", "linux/386"], 1),
    ("linux/amd64/v3", ["linux/amd64", "linux/amd64/v2", "linux/amd64/v4"], 1),
    ("linux/arm/v7", ["linux/arm/v5", "linux/arm/v6", "linux/arm64"], 1),
    ("linux/arm", ["linux/arm/v7", "linux/arm/v7"], 0),
    ("linux/amd64", [], None),
]


@pytest.mark.parametrize(("wanted", "candidates", "expected"), BEST_MATCH_CASES)
def test_best_match_picks_earliest_fallback_then_first_listed(
    wanted, candidates, expected
):
    parsed = [platforms.parse(c) for c in candidates]
    assert platforms.best_match(platforms.parse(wanted), parsed) == expected


def test_best_match_skips_entries_without_platform():
    wanted = platforms.parse("linux/amd64")
    candidates = [None, P("unknown", "unknown"), P("linux", "amd64")]
    assert platforms.best_match(wanted, candidates) == 2
    assert platforms.best_match(platforms.only(wanted), candidates) == 2


def test_to_json_uses_spec_field_names_and_round_trips():
    p = Platform(
        os="windows",
        architecture="amd64",
        variant=None,
        os_version="10.0.17763.1",
        os_features=("win32k",),
    )
    data = platforms.to_json(p)
    assert data == {
        "architecture": "amd64",
        "os": "windows",
        "os.version": "10.0.17763.1",
        "os.features": ["win32k"],
    }
    assert platforms.from_json(data) == p
    arm = platforms.parse("linux/arm/v6")
    assert platforms.to_json(arm) == {
        "architecture": "arm",
        "os": "linux",
        "variant": "v6",
    }
    assert platforms.from_json(platforms.to_json(arm)) == arm


@pytest.mark.parametrize(
    "data",
    [
        "linux/amd64",
        {"os": "linux"},
        {"architecture": "amd64"},
        {"os": "linux", "architecture": 5},
        {"os": "linux", "architecture": "arm", "variant": 7},
        {"os": "linux", "architecture": "amd64", "os.features": "x"},
    ],
)
def test_from_json_rejects_malformed_platform_objects(data):
    with pytest.raises(PlatformError, match="platform object"):
        platforms.from_json(data)


@given(st.text(alphabet="linuxarm64/v7()._-AMDwindows ,*", max_size=30))
def test_any_text_parses_or_fails_with_platform_error(text):
    platform, error = None, ""
    try:
        platform = platforms.parse(text)
    except PlatformError as exc:
        error = str(exc)
    if platform is None:
        assert repr(text) in error
    else:
        assert platforms.parse(platforms.format_all(platform)) == platform


def test_platforms_sort_by_os_arch_variant():
    texts = [
        "linux/arm/v7",
        "linux/amd64",
        "linux/arm/v6",
        "darwin/arm64",
        "linux/arm64",
    ]
    ordered = sorted(platforms.parse(t) for t in texts)
    assert [str(p) for p in ordered] == [
        "darwin/arm64",
        "linux/amd64",
        "linux/arm/v6",
        "linux/arm/v7",
        "linux/arm64",
    ]
