"""The Dockerfile parser: BuildKit's parser corpus, heredocs, directives, errors."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from platforge.dockerfile.parser import (
    Heredoc,
    dump,
    go_quote,
    parse,
    parse_heredoc_word,
    read_dockerfile,
    source_text,
)
from platforge.errors import DockerfileError

CORPUS = Path(__file__).parents[1] / ".." / "shared" / "corpus" / "buildkit-dockerfile"
PARSER = CORPUS / "parser"

needs_corpus = pytest.mark.skipif(
    not PARSER.is_dir(), reason=f"BuildKit parser corpus not found at {PARSER}"
)


@needs_corpus
def test_every_corpus_dockerfile_dumps_exactly_its_result():
    cases = sorted(p for p in (PARSER / "testfiles").iterdir() if p.is_dir())
    failures = []
    for case in cases:
        text = (case / "Dockerfile").read_text(encoding="utf-8")
        expected = (case / "result").read_text(encoding="utf-8")
        got = dump(parse(text, filename=case.name, strict=False))
        if got.strip() != expected.strip():
            failures.append(case.name)
    print(f"parser corpus: {len(cases) - len(failures)}/{len(cases)}")
    assert cases
    assert failures == []


@needs_corpus
def test_every_negative_corpus_case_fails_with_a_located_error():
    cases = sorted(p for p in (PARSER / "testfiles-negative").iterdir() if p.is_dir())
    assert cases
    for case in cases:
        text = (case / "Dockerfile").read_text(encoding="utf-8")
        with pytest.raises(DockerfileError) as info:
            parse(text, filename=case.name)
        assert str(info.value).startswith(f"{case.name}:")


@needs_corpus
def test_corpus_line_numbers_match_the_reference():
    text = (PARSER / "testfile-line" / "Dockerfile").read_text(encoding="utf-8")
    dockerfile = parse(text)
    lines = [(i.keyword, i.start_line, i.end_line) for i in dockerfile.instructions]
    assert lines == [("FROM", 5, 5), ("ENV", 11, 12), ("RUN", 17, 31)]


def test_escape_directive_makes_backtick_the_continuation_character():
    dockerfile = parse("# escape=`\nFROM img\nRUN echo \\ `\n  there\n")
    assert dockerfile.escape == "`"
    assert dockerfile.directives == {"escape": "`"}
    assert dockerfile.instructions[1].args == ["echo \\   there"]


def test_directives_only_count_before_anything_else():
    dockerfile = parse("# syntax=x/y\n# check=skip=all\n\n# escape=`\nFROM a\n")
    assert dockerfile.directives == {"syntax": "x/y", "check": "skip=all"}
    assert dockerfile.escape == "\\"
    (warning,) = dockerfile.warnings
    assert warning.startswith("Dockerfile: '# syntax=x/y' is not fetched")


def test_a_repeated_directive_is_an_error():
    with pytest.raises(DockerfileError, match="only one escape"):
        parse("# escape=`\n# escape=\\\nFROM a\n", filename="D")


def test_comments_and_blank_lines_inside_a_continuation_are_dropped():
    text = "FROM a\nRUN echo a \\\n# a comment\n\n    b\n"
    dockerfile = parse(text)
    run = dockerfile.instructions[1]
    assert run.args == ["echo a     b"]
    assert (run.start_line, run.end_line) == (2, 5)
    assert dockerfile.warnings  # the blank line is deprecated


def test_an_escaped_escape_at_line_end_does_not_continue():
    dockerfile = parse("FROM a\nRUN echo \\\\\nRUN b\n")
    assert [i.args for i in dockerfile.instructions[1:]] == [["echo \\\\"], ["b"]]


def test_flags_keep_order_and_bare_flags_have_no_value():
    inst = parse("FROM a\nCOPY --link --chown=1:2 --from=b x y\n").instructions[1]
    assert inst.flags == [("link", None), ("chown", "1:2"), ("from", "b")]
    assert inst.flag("from") == "b"
    assert inst.flag("link") == ""
    assert inst.args == ["x", "y"]


def test_json_form_and_shell_form_of_run():
    a, b = parse('FROM a\nRUN ["echo", "hi"]\nRUN echo "hi"\n').instructions[1:]
    assert (a.json_form, a.args) == (True, ["echo", "hi"])
    assert (b.json_form, b.args) == (False, ['echo "hi"'])


def test_env_forms_become_key_value_words():
    env = parse('FROM a\nENV A=1 B="two words"\nENV C three words\n').instructions
    assert env[1].args == ["A=1", 'B="two words"']
    assert env[2].args == ["C=three words"]
    assert env[2].legacy_form


def test_heredoc_body_follows_the_instruction():
    text = "FROM a\nRUN <<EOF\necho hi\necho there\nEOF\nRUN b\n"
    dockerfile = parse(text)
    run = dockerfile.instructions[1]
    assert run.heredocs == [
        Heredoc("EOF", "echo hi\necho there\n", expand=True, chomp_tabs=False)
    ]
    assert (run.start_line, run.end_line) == (2, 5)
    assert dockerfile.instructions[2].start_line == 6


def test_several_heredocs_on_one_line_and_quoted_delimiters():
    text = "FROM a\nCOPY <<one <<'two' /dest/\nfirst $X\none\nsecond $X\ntwo\n"
    copy = parse(text).instructions[1]
    assert [(h.name, h.content, h.expand) for h in copy.heredocs] == [
        ("one", "first $X\n", True),
        ("two", "second $X\n", False),
    ]


def test_dash_heredoc_strips_leading_tabs_from_body_and_delimiter():
    text = "FROM a\nRUN <<-EOT\n\t\techo hi\n\tEOT\n"
    run = parse(text).instructions[1]
    assert run.heredocs == [Heredoc("EOT", "echo hi\n", expand=True, chomp_tabs=True)]


def test_heredoc_is_not_read_for_other_instructions_or_json_form():
    dockerfile = parse('FROM a\nRUN ["cat", "<<EOF"]\nLABEL x=<<EOF\n')
    assert [i.heredocs for i in dockerfile.instructions] == [[], [], []]


def test_unterminated_heredoc_is_an_error_at_its_instruction():
    with pytest.raises(DockerfileError, match=r"^D:2: RUN: here-document <<EOF"):
        parse("FROM a\nRUN <<EOF\necho\n", filename="D")


def test_onbuild_wraps_a_parsed_instruction():
    inst = parse("FROM a\nONBUILD COPY --from=x a b\n").instructions[1]
    assert inst.onbuild is not None
    assert inst.onbuild.keyword == "COPY"
    assert inst.onbuild.flags == [("from", "x")]
    assert (
        dump(parse("FROM a\nONBUILD RUN echo hi\n", strict=False)).splitlines()[1]
        == '(onbuild (run "echo hi"))'
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "FROM a\nFROB x\n",
            r"^D:2: unknown instruction 'FROB' \(did you mean FROM\?\)",
        ),
        ("FROM a\nCOPY x\n", r"^D:2: COPY: expected at least one source"),
        ("FROM a\nCOPY --from x y\n", r"^D:2: COPY: flag --from needs a value"),
        ("FROM a\nCOPY --chown=a --chown=b x y\n", r"COPY: flag --chown given twice"),
        ("FROM a b\n", r"^D:1: FROM: expected FROM \[--platform=P\] IMAGE"),
        ("FROM a AS 1x\n", r"FROM: invalid stage name '1x'"),
        ("FROM a\nSHELL /bin/sh\n", r"SHELL: expected a JSON array"),
        ("FROM a\nHEALTHCHECK x\n", r"HEALTHCHECK: expected NONE or CMD"),
        ("FROM a\nONBUILD FROM b\n", r"ONBUILD: FROM is not allowed"),
        ('FROM a\nCMD ["a", 1]\n', r"^D:2: CMD: a JSON array must hold strings only"),
        ("FROM a\nLABEL x\n", r"^D:2: LABEL: 'x' has no value"),
        ("FROM a\nENV a=b c\n", r"ENV: cannot find '=' in 'c'"),
        ("# escape=x\nFROM a\n", r"^D:1: invalid escape character"),
        ("FROM a\nCOPY x <<EOF\nEOF\n", r"^D:2: COPY: a here-document cannot be"),
        ("FROM a\nARG =x\n", r"^D:2: ARG: a name is missing"),
        ("FROM a\nENV =x\n", r"^D:2: ENV: a name is missing"),
        ('FROM a\nVOLUME [" "]\n', r"^D:2: VOLUME: a volume path cannot be empty"),
        ("FROM a\nVOLUME []\n", r"^D:2: VOLUME: expected at least one"),
    ],
)
def test_bad_dockerfiles_fail_with_file_line_and_instruction(text, message):
    with pytest.raises(DockerfileError, match=message):
        parse(text, filename="D")


def test_onbuild_triggers_without_from_parse_strictly():
    triggers = parse("RUN echo hi\nCOPY --from=x a b\n", filename="ONBUILD")
    assert [i.keyword for i in triggers.instructions] == ["RUN", "COPY"]


def test_heredoc_words_are_recognised_with_quotes_dashes_and_descriptors():
    assert parse_heredoc_word("<<EOF") == Heredoc("EOF", "")
    assert parse_heredoc_word("<<-'E O'") == Heredoc(
        "E O", "", expand=False, chomp_tabs=True
    )
    assert parse_heredoc_word('3<<"X"Y') == Heredoc("XY", "", expand=False)
    assert parse_heredoc_word("<<") is None
    assert parse_heredoc_word("a<<EOF") is None


def test_healthcheck_keeps_its_type_and_command():
    inst = parse("FROM a\nHEALTHCHECK --interval=5s CMD curl -f x\n").instructions[1]
    assert inst.args == ["CMD", "curl -f x"]
    assert inst.flags == [("interval", "5s")]


def test_crlf_line_endings_and_a_byte_order_mark_are_accepted():
    dockerfile = parse("\ufeffFROM a\r\nRUN echo \\\r\n  hi\r\n")
    assert [i.args for i in dockerfile.instructions] == [["a"], ["echo   hi"]]


def test_go_quote_matches_go_strconv_quote():
    assert go_quote('a"b\\c') == '"a\\"b\\\\c"'
    assert go_quote("\x00\x7f\t") == '"\\x00\\x7f\\t"'
    assert go_quote("\u00a0♥") == '"\\u00a0♥"'


_fragments = st.sampled_from(
    [
        "FROM ",
        "RUN ",
        "COPY ",
        "ENV ",
        "ARG ",
        "ONBUILD ",
        "HEALTHCHECK ",
        "\\",
        "`",
        "\n",
        " ",
        '"',
        "'",
        "<<",
        "<<-",
        "EOF",
        "${",
        "}",
        "$",
        "[",
        "]",
        "=",
        "--",
        "--from=",
        "# escape=`\n",
        "#",
        "a",
        "\t",
        ",",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_fragments | st.text(max_size=4), max_size=30).map("".join))
def test_parse_never_raises_anything_but_dockerfile_error(text):
    for strict in (True, False):
        with contextlib.suppress(DockerfileError):
            parse(text, strict=strict)


def test_deeply_nested_substitutions_fail_as_a_dockerfile_error():
    # The line cannot be lexed, so no here-document opens and its body is read
    # as instructions, as BuildKit does.
    text = "FROM a\nRUN " + "${A:-" * 5000 + "}" * 5000 + " <<EOF\nbody\nEOF\n"
    with pytest.raises(DockerfileError, match="unknown instruction 'body'"):
        parse(text)


def test_read_dockerfile_decodes_utf8_whatever_the_locale(tmp_path):
    path = tmp_path / "Dockerfile"
    path.write_bytes("FROM scratch\nLABEL a=été\n".encode())
    assert read_dockerfile(path) == "FROM scratch\nLABEL a=été\n"


def test_read_dockerfile_refuses_latin1_with_the_file_and_the_byte(tmp_path):
    path = tmp_path / "Dockerfile"
    path.write_bytes(b"FROM scratch\nLABEL a=\xe9t\xe9\n")
    with pytest.raises(
        DockerfileError, match=r"Dockerfile: not UTF-8 text \(byte 21\)"
    ):
        read_dockerfile(path)


def test_read_dockerfile_turns_an_os_error_into_a_dockerfile_error(tmp_path):
    with pytest.raises(
        DockerfileError, match=f"{tmp_path}: cannot read the Dockerfile"
    ):
        read_dockerfile(tmp_path)


def test_source_text_of_an_onbuild_trigger_keeps_its_here_documents():
    text = (
        "FROM scratch\n"
        "ONBUILD RUN <<EOF cat >/a && <<-'END' cat >/b\n"
        "echo $HOME\n"
        "EOF\n"
        "\tindented\n"
        "\tEND\n"
    )
    trigger = parse(text).instructions[1].onbuild
    assert trigger is not None

    again = parse(source_text(trigger), filename="ONBUILD").instructions[0]

    assert again.keyword == "RUN"
    assert again.args == trigger.args
    assert again.heredocs == trigger.heredocs
    assert [h.content for h in again.heredocs] == ["echo $HOME\n", "indented\n"]
