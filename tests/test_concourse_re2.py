"""tag_regex is read in Go's dialect (RE2): translated where Python spells it
differently, refused where the dialects disagree."""

import pytest

from platforge.concourse.re2 import compile_re2
from platforge.concourse.source import parse_source
from platforge.errors import ConcourseError


@pytest.mark.parametrize(
    ("pattern", "tags", "found"),
    [
        (r"^[[:digit:]]+\.[[:digit:]]+$", ["1.2", "1.x", "12.30"], ["1.2", "12.30"]),
        (r"^[[:alpha:]_]+$", ["latest", "a_b", "v1"], ["latest", "a_b"]),
        (r"^[^[:space:][:upper:]]+$", ["ok", "Bad", "a b"], ["ok"]),
        (r"^v\d+\z", ["v1", "v12", "v1x"], ["v1", "v12"]),
        (r"^(?<major>\d+)-[[:xdigit:]]{7}$", ["1-abc1234", "1-xyz1234"], ["1-abc1234"]),
        (r"^\Qv1.0\E", ["v1.0-rc", "v100"], ["v1.0-rc"]),
        (r"(?i)^RC[[]", ["rc[1", "RC1"], ["rc[1"]),
        # Go's \d is ASCII only.
        (r"^\d+$", ["12", "١٢"], ["12"]),
    ],
)
def test_re2_syntax_matches_as_go_does(pattern, tags, found):
    regex = compile_re2(pattern)
    assert [t for t in tags if regex.search(t)] == found


@pytest.mark.parametrize(
    ("pattern", "named"),
    [
        (r"^v\d+\Z", r"\Z"),
        (r"(?<=v)\d+", "look-behind"),
        (r"(?!rc)\w+", "look-ahead"),
        (r"^(\d)\1$", r"\1"),
        (r"(?>a+)", "atomic"),
        (r"a++", "possessive"),
        (r"(?x) a", "(?x)"),
        (r"(?P<a>x)(?P=a)", "back-reference"),
        (r"\pL+", "Unicode class"),
        (r"a{1001}", "1000"),
        (r"[[:nope:]]", "[:nope:]"),
    ],
)
def test_syntax_go_and_python_read_differently_is_refused_naming_it(pattern, named):
    with pytest.raises(ConcourseError) as caught:
        parse_source({"repository": "127.0.0.1:5000/app", "tag_regex": pattern})
    message = str(caught.value)
    assert "source.tag_regex" in message
    assert named in message
    assert "\n" not in message


def test_posix_classes_compile_without_a_python_warning(recwarn):
    compile_re2(r"^[[:digit:]]+[[a]$")
    assert not [w for w in recwarn if issubclass(w.category, FutureWarning)]
