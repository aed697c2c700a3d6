"""Word expansion and splitting, the way Dockerfile instructions treat their words.

Instructions such as ``COPY``, ``ENV`` or ``FROM`` expand variables in their words
before using them; ``RUN``, ``CMD`` and ``ENTRYPOINT`` leave that to the shell inside
the image. The rules are a small subset of the POSIX shell:

* ``$NAME`` and ``${NAME}`` give the variable's value, or nothing when it is unset.
  ``$1``…, ``$@``, ``$*``, ``$#``, ``$?``, ``$-``, ``$$``, ``$!`` and ``$0`` are
  recognised as names and are never set. A ``$`` not followed by a name stays as is.
* ``${NAME:-word}`` / ``${NAME-word}``: *word* when the variable is empty or unset /
  only when unset. ``${NAME:+word}`` / ``${NAME+word}``: *word* when it is non-empty /
  set, else nothing. ``${NAME:?msg}`` / ``${NAME?msg}``: fail with *msg* when empty or
  unset / unset. *word* is itself expanded.
* ``${NAME#pat}`` ``${NAME##pat}`` remove the shortest / longest prefix matching the
  glob *pat*; ``${NAME%pat}`` ``${NAME%%pat}`` the same for a suffix;
  ``${NAME/pat/rep}`` replaces the first longest match, ``${NAME//pat/rep}`` every
  match. Globs know ``*``, ``?`` and ``[…]`` (``[!…]`` negates).
* Single quotes keep everything literally. Double quotes keep everything except
  ``$`` expansions; inside them the escape character only escapes ``"``, ``$`` and
  itself. Outside quotes the escape character makes the next character literal (at the
  end of a word it is dropped).
* The escape character is ``\\`` unless the Dockerfile's ``# escape=`` directive made
  it a backtick.

Word splitting (``expand_words``) splits on unquoted whitespace, including whitespace
that came out of an unquoted expansion; quoted text never splits. An empty quoted
word (``""``) yields no word.

Public names::

    expand(word, env, *, escape="\\\\") -> str
    expand_words(text, env, *, escape="\\\\") -> list[str]
    Lexer(env, escape=..., raw_quotes=False, raw_escapes=False, skip_unset=False)
    ShellExpansionError (a DockerfileError)

Written by hand because no Python library implements this dialect: ``shlex`` has no
variable expansion and differs on escapes inside quotes, and a real shell would run
command substitutions.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import TYPE_CHECKING

from platforge.errors import DockerfileError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["Lexer", "ShellExpansionError", "expand", "expand_words"]

_SPECIAL_PARAMS = frozenset("@*#?-$!0")


class ShellExpansionError(DockerfileError):
    """A word could not be expanded (``${X:?msg}``, a bad substitution, a quote
    left open, …)."""


def _isspace(ch: str) -> bool:
    return ch.isspace()


class _Words:
    """Collects words while the lexer runs: quoted text glues, unquoted space splits."""

    def __init__(self) -> None:
        self.word = ""
        self.words: list[str] = []
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if _isspace(ch):
            if self.in_word and self.word:
                self.words.append(self.word)
                self.word = ""
                self.in_word = False
        else:
            self.add_raw(ch)

    def add_raw(self, text: str) -> None:
        self.word += text
        self.in_word = True

    def add_expanded(self, text: str) -> None:
        for ch in text:
            self.add_char(ch)

    def result(self) -> list[str]:
        if self.word:
            self.words.append(self.word)
            self.word = ""
            self.in_word = False
        return self.words


class Lexer:
    """One expansion of one text. ``raw_quotes`` keeps quote characters in the
    result, ``raw_escapes`` keeps escape characters, ``skip_unset`` leaves references
    to unset variables as written (the parser uses these to find here-documents)."""

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        escape: str = "\\",
        raw_quotes: bool = False,
        raw_escapes: bool = False,
        skip_unset: bool = False,
    ) -> None:
        self.env = env
        self.escape = escape
        self.raw_quotes = raw_quotes
        self.raw_escapes = raw_escapes
        self.skip_unset = skip_unset
        self.text = ""
        self.pos = 0
        self.used: set[str] = set()

    # -- the scanner ------------------------------------------------------------

    def _peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def _next(self) -> str:
        if self.pos >= len(self.text):
            return ""
        ch = self.text[self.pos]
        self.pos += 1
        return ch

    def _lookup(self, name: str) -> tuple[str, bool]:
        self.used.add(name)
        value = self.env.get(name)
        return ("", False) if value is None else (value, True)

    # -- entry points -----------------------------------------------------------

    def process(self, text: str) -> tuple[str, list[str]]:
        """Expand ``text``; return the whole result and its words."""
        self.text = text
        self.pos = 0
        try:
            result, words = self._until("")
        except RecursionError:
            raise ShellExpansionError(
                f"substitutions nested too deeply in {text[:40]!r}…"
            ) from None
        return result, words

    def expand_heredoc(self, text: str) -> str:
        """Expand a here-document body: ``$`` expansions, and the escape character
        escaping ``$`` and itself; quotes are ordinary characters there."""
        self.text = text
        self.pos = 0
        out: list[str] = []
        while self.pos < len(text):
            ch = text[self.pos]
            if ch == "$":
                try:
                    out.append(self._dollar())
                except RecursionError:
                    raise ShellExpansionError(
                        "substitutions nested too deeply in a here-document"
                    ) from None
                continue
            self.pos += 1
            if ch == self.escape and self._peek() in ("$", self.escape):
                ch = self._next()
            out.append(ch)
        return "".join(out)

    # -- the grammar --------------------------------------------------------------

    def _until(self, stop: str) -> tuple[str, list[str]]:
        out: list[str] = []
        words = _Words()
        while self._peek():
            ch = self._peek()
            if stop and ch == stop:
                self._next()
                return "".join(out), words.result()
            if ch == "'":
                piece = self._single_quoted()
                out.append(piece)
                words.add_raw(piece)
            elif ch == '"':
                piece = self._double_quoted()
                out.append(piece)
                words.add_raw(piece)
            elif ch == "$":
                piece = self._dollar()
                out.append(piece)
                words.add_expanded(piece)
            else:
                ch = self._next()
                if ch == self.escape:
                    if self.raw_escapes:
                        words.add_raw(ch)
                        out.append(ch)
                    ch = self._next()
                    if not ch:
                        break
                    words.add_raw(ch)
                else:
                    words.add_char(ch)
                out.append(ch)
        if stop:
            raise self._unterminated(repr(stop))
        return "".join(out), words.result()

    def _unterminated(self, closer: str) -> ShellExpansionError:
        return ShellExpansionError(
            f"unexpected end of text while looking for a matching {closer} "
            f"in {self.text!r}"
        )

    def _single_quoted(self) -> str:
        out: list[str] = []
        quote = self._next()
        if self.raw_quotes:
            out.append(quote)
        while True:
            ch = self._next()
            if not ch:
                raise self._unterminated("single quote")
            if ch == "'":
                if self.raw_quotes:
                    out.append(ch)
                return "".join(out)
            out.append(ch)

    def _double_quoted(self) -> str:  # noqa: C901 - the escape rules of "…"
        out: list[str] = []
        quote = self._next()
        if self.raw_quotes:
            out.append(quote)
        while True:
            ch = self._peek()
            if not ch:
                raise self._unterminated("double quote")
            if ch == '"':
                self._next()
                if self.raw_quotes:
                    out.append(ch)
                return "".join(out)
            if ch == "$":
                try:
                    out.append(self._dollar())
                except RecursionError:
                    raise ShellExpansionError(
                        "substitutions nested too deeply in a here-document"
                    ) from None
                continue
            ch = self._next()
            if ch == self.escape:
                if self.raw_escapes:
                    out.append(ch)
                following = self._peek()
                if not following:
                    continue
                if following in ('"', "$", self.escape):
                    ch = self._next()
                elif self.raw_escapes:
                    # the escape was already kept; keep the next char as it comes
                    continue
            out.append(ch)

    def _name(self) -> str:
        first = self._peek()
        if first.isdigit():
            start = self.pos
            while self._peek().isdigit():
                self._next()
            return self.text[start : self.pos]
        if first and first in _SPECIAL_PARAMS:
            return self._next()
        start = self.pos
        while True:
            ch = self._peek()
            if not ch or not (ch.isalnum() or ch == "_"):
                break
            self._next()
        return self.text[start : self.pos]

    # Long and branchy on purpose: one case per ${…} modifier, as in the shell.
    def _dollar(self) -> str:  # noqa: C901, PLR0911, PLR0912, PLR0915
        self._next()  # the $
        if self._peek() != "{":
            name = self._name()
            if not name:
                return "$"
            value, is_set = self._lookup(name)
            if not is_set and self.skip_unset:
                return "$" + name
            return value

        self._next()  # the {
        ch = self._peek()
        if not ch:
            raise ShellExpansionError(f"missing '}}' in {self.text!r}")
        if ch in "{}:":
            raise ShellExpansionError(f"bad substitution in {self.text!r}")
        name = self._name()
        op = self._next()
        if not op:
            raise ShellExpansionError(f"missing '}}' in {self.text!r}")
        if op == "}":
            value, is_set = self._lookup(name)
            if not is_set and self.skip_unset:
                return "${" + name + "}"
            return value
        if not name:
            raise ShellExpansionError(f"bad substitution in {self.text!r}")

        colon = op == ":"
        if colon:
            op = self._next()
            if op not in ("-", "+", "?"):
                shown = op or "end of text"
                raise ShellExpansionError(
                    f"unsupported modifier {shown!r} in ${{{name}:…}} "
                    f"in {self.text!r}; expected :- :+ or :?"
                )
        if op in ("-", "+", "?"):
            word = self._word_until("}")
            value, is_set = self._lookup(name)
            if not is_set and self.skip_unset:
                return "${" + name + (":" if colon else "") + op + word + "}"
            present = bool(value) if colon else is_set
            if op == "-":
                return value if present else word
            if op == "+":
                return word if present else ""
            if not present:
                if not is_set:
                    default = "is not allowed to be unset"
                else:
                    default = "is not allowed to be empty"
                raise ShellExpansionError(f"{name}: {word or default}")
            return value
        if op in ("#", "%"):
            longest = self._peek() == op
            if longest:
                self._next()
            pattern = self._word_until("}")
            value, is_set = self._lookup(name)
            if not is_set and self.skip_unset:
                return "${" + name + op * (1 + longest) + pattern + "}"
            if op == "#":
                return _remove_prefix(value, pattern, longest=longest)
            return _remove_suffix(value, pattern, longest=longest)
        if op == "/":
            every = self._peek() == "/"
            if every:
                self._next()
            pattern = self._word_until("/", alt_stop="}")
            replacement = "" if self._stopped_at == "}" else self._word_until("}")
            value, is_set = self._lookup(name)
            if not is_set and self.skip_unset:
                return (
                    "${" + name + "/" * (1 + every) + pattern + "/" + replacement + "}"
                )
            return _replace(value, pattern, replacement, every=every)
        shown = op or "end of text"
        raise ShellExpansionError(
            f"unsupported modifier {shown!r} in ${{{name}…}} in {self.text!r}"
        )

    _stopped_at = ""

    def _word_until(self, stop: str, alt_stop: str = "") -> str:
        """Expand up to ``stop`` (or ``alt_stop``), consuming it."""
        out: list[str] = []
        while True:
            ch = self._peek()
            if not ch:
                raise ShellExpansionError(f"missing '}}' in {self.text!r}")
            if ch in (stop, alt_stop) and ch:
                self._next()
                self._stopped_at = ch
                return "".join(out)
            if ch == "'":
                out.append(self._single_quoted())
            elif ch == '"':
                out.append(self._double_quoted())
            elif ch == "$":
                out.append(self._dollar())
            else:
                ch = self._next()
                if ch == self.escape:
                    if self.raw_escapes:
                        out.append(ch)
                    ch = self._next()
                    if not ch:
                        raise ShellExpansionError(f"missing '}}' in {self.text!r}")
                out.append(ch)


@lru_cache(maxsize=256)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Translate a shell glob (``*``, ``?``, ``[…]``) into an anchored regex."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        i += 1
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        elif ch == "[":
            end = pattern.find("]", i + 1 if pattern[i : i + 1] in ("!", "^") else i)
            if end < 0:
                out.append(re.escape(ch))
                continue
            body = pattern[i:end]
            i = end + 1
            negate = body[:1] in ("!", "^")
            if negate:
                body = body[1:]
            body = body.replace("\\", "\\\\").replace("^", "\\^")
            out.append(("[^" if negate else "[") + body + "]")
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out), re.DOTALL)


def _remove_prefix(value: str, pattern: str, *, longest: bool) -> str:
    regex = _glob_regex(pattern)
    cuts = range(len(value), -1, -1) if longest else range(len(value) + 1)
    for cut in cuts:
        if regex.fullmatch(value[:cut]):
            return value[cut:]
    return value


def _remove_suffix(value: str, pattern: str, *, longest: bool) -> str:
    regex = _glob_regex(pattern)
    cuts = range(len(value) + 1) if longest else range(len(value), -1, -1)
    for cut in cuts:
        if regex.fullmatch(value[cut:]):
            return value[:cut]
    return value


def _replace(value: str, pattern: str, replacement: str, *, every: bool) -> str:
    if not pattern:
        return value
    regex = _glob_regex(pattern)
    out: list[str] = []
    start = 0
    pos = 0
    while pos <= len(value):
        end = next(
            (e for e in range(len(value), pos, -1) if regex.fullmatch(value, pos, e)),
            None,
        )
        if end is None:
            pos += 1
            continue
        out.append(value[start:pos])
        out.append(replacement)
        start = pos = end
        if not every:
            break
    out.append(value[start:])
    return "".join(out)


def expand(word: str, env: Mapping[str, str], *, escape: str = "\\") -> str:
    """Expand variables and remove quotes and escapes in ``word``; no splitting.

    >>> expand('"${A:-x}"-$B', {"B": "b"})
    'x-b'
    """
    result, _ = Lexer(env, escape=escape).process(word)
    return result


def expand_words(text: str, env: Mapping[str, str], *, escape: str = "\\") -> list[str]:
    """Expand ``text`` and split it into words on unquoted whitespace.

    >>> expand_words('a "b c" $X', {"X": "d  e"})
    ['a', 'b c', 'd', 'e']
    """
    _, words = Lexer(env, escape=escape).process(text)
    return words
