"""Word expansion and splitting: BuildKit's shell corpus and the pattern forms."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from platforge.dockerfile.shell import (
    Lexer,
    ShellExpansionError,
    expand,
    expand_words,
)
from platforge.errors import DockerfileError

SHELL = Path(__file__).parents[1] / ".." / "shared" / "corpus" / "buildkit-dockerfile"
SHELL = SHELL / "shell"
needs_corpus = pytest.mark.skipif(
    not SHELL.is_dir(), reason=f"BuildKit shell corpus not found at {SHELL}"
)

CORPUS_ENV = {"PWD": "/home", "SHELL": "bash", "KOREAN": "한국어", "NULL": ""}


def _env_var_cases() -> list[tuple[str, str]]:
    cases = []
    for line in (SHELL / "envVarTest").read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        kind, source, expected = (part.strip() for part in line.split("|"))
        if kind in ("A", "U"):  # W cases are for Windows' case-insensitive env
            cases.append((source, expected))
    return cases


@needs_corpus
def test_every_unix_env_var_case_of_the_corpus_expands_as_expected():
    cases = _env_var_cases()
    failures = []
    for source, expected in cases:
        try:
            got = expand(source, CORPUS_ENV)
        except ShellExpansionError:
            got = "error"
        if got != expected:
            failures.append((source, expected, got))
    print(f"envVarTest: {len(cases) - len(failures)}/{len(cases)}")
    assert len(cases) > 200
    assert failures == []


@needs_corpus
def test_every_words_case_of_the_corpus_splits_as_expected():
    env: dict[str, str] = {}
    total, failures = 0, []
    for line in (SHELL / "wordsTest").read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("ENV "):
            key, _, value = line[4:].lstrip(" ").partition("=")
            env[key] = value
            continue
        source, _, expected = line.partition("|")
        total += 1
        try:
            got = expand_words(source.strip(), env)
        except ShellExpansionError:
            got = ["error"]
        if got != expected.lstrip(" ").split(","):
            failures.append((source, expected, got))
    print(f"wordsTest: {total - len(failures)}/{total}")
    assert total > 20
    assert failures == []


ENV = {"V": "/usr/local/lib/file.tar.gz", "E": "", "W": "a b"}


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("${V#*/}", "usr/local/lib/file.tar.gz"),
        ("${V##*/}", "file.tar.gz"),
        ("${V%.*}", "/usr/local/lib/file.tar"),
        ("${V%%.*}", "/usr/local/lib/file"),
        ("${V/l/L}", "/usr/Local/lib/file.tar.gz"),
        ("${V//l/L}", "/usr/LocaL/Lib/fiLe.tar.gz"),
        ("${V/lo*/X}", "/usr/X"),
        ("${V#nomatch}", "/usr/local/lib/file.tar.gz"),
        ("${V%[.]gz}", "/usr/local/lib/file.tar"),
        ("${U-unset}", "unset"),
        ("${E-unset}", ""),
        ("${E:-empty}", "empty"),
        ("${E+set}", "set"),
        ("${E:+set}", ""),
        ("${U+set}", ""),
        ("${E?}", ""),
        ('"$W"', "a b"),
        ("'$W'", "$W"),
        ("${U:-$V}", "/usr/local/lib/file.tar.gz"),
    ],
)
def test_parameter_expansion_forms(word, expected):
    assert expand(word, ENV) == expected


@pytest.mark.parametrize(
    ("word", "message"),
    [
        ("${U:?must be set}", "U: must be set"),
        ("${U?}", "U: is not allowed to be unset"),
        ("${E:?}", "E: is not allowed to be empty"),
        ("${V:=x}", "unsupported modifier '='"),
        ("${V", "missing '}'"),
        ('"open', "double quote"),
    ],
)
def test_failed_expansions_raise_a_dockerfile_error_with_the_reason(word, message):
    with pytest.raises(DockerfileError, match=message):
        expand(word, ENV)


def test_backtick_escape_token_escapes_instead_of_backslash():
    assert expand("a`$V\\b", ENV, escape="`") == "a$V\\b"
    assert expand_words("a` b c", {}, escape="`") == ["a b", "c"]


def test_unquoted_expansion_splits_but_quoted_expansion_does_not():
    assert expand_words("x $W y", ENV) == ["x", "a", "b", "y"]
    assert expand_words('x "$W" y', ENV) == ["x", "a b", "y"]
    assert expand_words('""', ENV) == []


def test_heredoc_bodies_expand_variables_but_keep_quotes():
    body = Lexer(ENV).expand_heredoc("x='$W' \\$V \"${E:-e}\"\n")
    assert body == "x='a b' $V \"e\"\n"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab $\\{}:-+?#%/'\"`*[]!\t\n", max_size=24))
def test_expansion_never_raises_anything_but_shell_expansion_error(text):
    for escape in ("\\", "`"):
        try:
            expand(text, ENV, escape=escape)
            expand_words(text, ENV, escape=escape)
        except ShellExpansionError:
            pass


def test_absurdly_deep_nesting_is_a_shell_expansion_error():
    word = "${A:-" * 5000 + "x" + "}" * 5000
    with pytest.raises(ShellExpansionError, match="nested too deeply"):
        expand(word, {})
