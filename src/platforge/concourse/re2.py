"""``tag_regex`` in Go's dialect (RE2), compiled with Python's ``re``.

The ``registry-image`` resource compiles ``tag_regex`` with Go's ``regexp``, whose
syntax is RE2's. Python's ``re`` reads most of it the same way, but not all:

* POSIX classes inside brackets (``[[:digit:]]``, ``[[:^space:]]``) are RE2 syntax;
  Python reads ``[[:digit:]]`` as a set of ``[:digt`` followed by ``]`` and matches
  the wrong tags, so they are rewritten as the ASCII ranges they stand for;
* ``\\z`` (end of text), ``(?<name>…)`` and ``\\Q…\\E`` (literal text) are
  rewritten to Python's spelling;
* ``\\d``, ``\\w``, ``\\s`` and ``\\b`` are ASCII-only in Go, so the pattern is
  compiled with ``re.ASCII``;
* syntax Python accepts but RE2 refuses (look-around, back-references, ``\\Z``,
  atomic groups, possessive quantifiers, conditionals, comments, the ``x``/``a``/
  ``L`` flags) is refused with an error naming it, so a pipeline that checks here
  also checks upstream;
* RE2 syntax with no Python equivalent (Unicode classes ``\\pL``, ``\\x{…}``, the
  ``U`` flag, ``\\C``) is refused likewise.

Why by hand: the ``google-re2`` binding would be exact, but it is a compiled
extension that both resource images (amd64 and arm64) would have to carry; this
translation needs nothing, and tags are short ASCII strings where the two engines
agree once the syntax is the same.
"""

from __future__ import annotations

import re

from platforge.errors import ConcourseError

__all__ = ["compile_re2"]

_POSIX = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7f",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}
_MAX_REPEAT = 1000  # RE2's limit on {n,m}
_REPEAT_RE = re.compile(r"\{(\d+)(?:,(\d*))?\}")
_POSIX_RE = re.compile(r"\[:(\^?)([a-z]+):\]")
_FLAGS_RE = re.compile(r"\(\?([a-zA-Z-]*)([:)])")
_NAME_RE = re.compile(r"\(\?P?<([A-Za-z_][A-Za-z0-9_]*)>")


class _RefusedError(Exception):
    """Syntax that is not RE2's (``re2=False``), or RE2's but not expressible here."""

    def __init__(self, what: str, *, re2: bool = False) -> None:
        super().__init__(what)
        self.re2 = re2


def compile_re2(pattern: str, key: str = "source.tag_regex") -> re.Pattern[str]:
    """Compile ``pattern`` (RE2 syntax) so it matches what Go's ``regexp`` would."""
    try:
        translated = _translate(pattern)
        return re.compile(translated, re.ASCII)
    except _RefusedError as exc:
        why = (
            "which is RE2 syntax platforge cannot match as Go does; write it "
            "another way"
            if exc.re2
            else "which Go's regexp (RE2) refuses; rewrite it in RE2 syntax"
        )
        raise ConcourseError(f"{key} {pattern!r} uses {exc}, {why}") from None
    except re.error as exc:
        raise ConcourseError(
            f"{key} {pattern!r} is not a valid regular expression: {exc}; "
            "write it in RE2 syntax"
        ) from None


def _translate(pattern: str) -> str:  # noqa: C901 - one scanner, one place
    out: list[str] = []
    i = 0
    n = len(pattern)
    while i < n:
        char = pattern[i]
        if char == "\\":
            text, i = _escape(pattern, i, in_class=False)
            out.append(text)
            continue
        if char == "[":
            text, i = _bracket(pattern, i)
            out.append(text)
            continue
        if char == "(" and pattern.startswith("(?", i):
            text, i = _group(pattern, i)
            out.append(text)
            continue
        if char in "*+?}":
            if char == "}" and not _closes_repeat(pattern, i):
                out.append(char)
                i += 1
                continue
            out.append(char)
            i += 1
            if i < n and pattern[i] == "+":
                msg = f"the possessive quantifier {char}+"
                raise _RefusedError(msg)
            continue
        if char == "{" and (match := _REPEAT_RE.match(pattern, i)):
            for number in match.groups():
                if number and int(number) > _MAX_REPEAT:
                    msg = f"the repeat count {match.group(0)} (RE2 allows up to 1000)"
                    raise _RefusedError(msg)
        out.append(char)
        i += 1
    return "".join(out)


def _closes_repeat(pattern: str, end: int) -> bool:
    start = pattern.rfind("{", 0, end)
    return start >= 0 and _REPEAT_RE.fullmatch(pattern, start, end + 1) is not None


def _escape(pattern: str, i: int, *, in_class: bool) -> tuple[str, int]:
    """The backslash escape at ``i``: its Python spelling and the next index."""
    if i + 1 >= len(pattern):
        msg = "a trailing backslash"
        raise _RefusedError(msg)
    char = pattern[i + 1]
    if char.isdigit():
        msg = f"\\{char} (back-references and octal escapes)"
        raise _RefusedError(msg)
    if char == "z" and not in_class:
        return "\\Z", i + 2
    if char == "Q" and not in_class:
        end = pattern.find("\\E", i + 2)
        literal = pattern[i + 2 :] if end < 0 else pattern[i + 2 : end]
        return re.escape(literal), len(pattern) if end < 0 else end + 2
    if char == "x" and pattern.startswith("{", i + 2):
        msg = "\\x{…}"
        raise _RefusedError(msg, re2=True)
    refused = {
        "Z": "\\Z (RE2 spells the end of text \\z)",
        "p": "a Unicode class \\p",
        "P": "a Unicode class \\P",
        "C": "\\C (any byte)",
        "u": "\\u",
        "U": "\\U",
        "N": "\\N",
        "E": "a \\E without \\Q",
        "G": "\\G",
    }
    if char in refused:
        raise _RefusedError(refused[char], re2=char in "pPC")
    return pattern[i : i + 2], i + 2


def _bracket(pattern: str, i: int) -> tuple[str, int]:
    """A bracket expression starting at ``i``, POSIX classes rewritten."""
    out = ["["]
    j = i + 1
    if pattern.startswith("^", j):
        out.append("^")
        j += 1
    first = True
    while j < len(pattern):
        char = pattern[j]
        if char == "]" and not first:
            out.append("]")
            return "".join(out), j + 1
        first = False
        if char == "[" and (match := _POSIX_RE.match(pattern, j)):
            negated, name = match.groups()
            if name not in _POSIX:
                msg = f"the unknown class [:{name}:]"
                raise _RefusedError(msg)
            if negated:
                msg = f"the negated class [:^{name}:] inside brackets"
                raise _RefusedError(msg, re2=True)
            out.append(_POSIX[name])
            j = match.end()
            continue
        if char == "\\":
            text, j = _escape(pattern, j, in_class=True)
            out.append(text)
            continue
        # Literal in RE2; escaped so Python reads no nested set or set operation.
        out.append("\\" + char if char in "[&~|" else char)
        j += 1
    msg = "an unclosed bracket ["
    raise _RefusedError(msg)


def _group(pattern: str, i: int) -> tuple[str, int]:
    """A ``(?…`` group opening at ``i``: named groups and flags RE2 knows."""
    if match := _NAME_RE.match(pattern, i):
        return f"(?P<{match.group(1)}>", match.end()
    if match := _FLAGS_RE.match(pattern, i):
        flags = match.group(1)
        known = set(flags) <= set("ims-") and not flags.endswith("-")
        if known and (flags or match.group(2) == ":"):
            return match.group(0), match.end()
        if "U" in flags:
            msg = "the ungreedy flag U"
            raise _RefusedError(msg, re2=True)
    kinds = {
        "(?=": "a look-ahead (?=",
        "(?!": "a negative look-ahead (?!",
        "(?<=": "a look-behind (?<=",
        "(?<!": "a negative look-behind (?<!",
        "(?P=": "a named back-reference (?P=",
        "(?#": "a comment (?#",
        "(?>": "an atomic group (?>",
        "(?(": "a conditional group (?(",
    }
    for opening, name in kinds.items():
        if pattern.startswith(opening, i):
            raise _RefusedError(name)
    msg = f"the group {pattern[i : i + 4]!r}…"
    raise _RefusedError(msg)
