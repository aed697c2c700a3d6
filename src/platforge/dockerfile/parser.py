"""Parse Dockerfile text into instructions, without interpreting them.

A Dockerfile is a sequence of *instructions* (``FROM``, ``RUN``, ``COPY`` …), each
one logical line that may span several physical lines through the escape character
at a line's end. The parser keeps every instruction's raw words; word expansion and
stage resolution happen later (``platforge.dockerfile.shell`` and ``.plan``).

Public names::

    parse(text, *, filename="Dockerfile", strict=True) -> Dockerfile
    read_dockerfile(path) -> str  the file's text; unreadable or non-UTF-8 is an error
    decode(data, *, filename="Dockerfile") -> str   the same for bytes in hand
    Dockerfile(directives: dict[str, str], escape: str, instructions: list[Instruction],
               filename: str, warnings: list[str])
    Instruction(keyword, flags, args, json_form, heredocs, original, start_line,
                end_line, onbuild, ast_words)
    Heredoc(name, content, expand, chomp_tabs)
    dump(dockerfile) -> str      the reference parser's S-expression dump
    source_text(instruction) -> str   text that parses back to the instruction,
                                      here-document bodies included

What the parser understands (the rules of BuildKit's Dockerfile frontend):

* Parser directives (``# syntax=``, ``# escape=`` with ``\\`` or a backtick,
  ``# check=``), matched case-insensitively (``syntax`` is recorded, never fetched,
  and noted in ``Dockerfile.warnings``), only at the very top: the first line that
  is not a directive (a comment, a blank line, an instruction) ends them.
* Comments (``#`` first on a line, after optional whitespace) and blank lines, also in
  the middle of a continued instruction, where they are dropped.
* Line continuations: the escape character last on a line (trailing blanks allowed)
  joins the next line; an escaped escape character does not. A continuation may run
  into the end of the file.
* JSON form (``["a", "b"]``) for ``RUN CMD ENTRYPOINT SHELL COPY ADD VOLUME`` and
  ``HEALTHCHECK CMD``. Text that does not decode as a JSON array falls back to the
  shell form; an array holding anything but strings is an error.
* Flags (``--name=value`` or a bare ``--name``) before the arguments, kept in order;
  ``--`` ends them.
* Here-documents (``<<EOF``, ``<<-EOF`` stripping leading tabs, a quoted delimiter
  turning expansion off, several on one line) for ``RUN``, ``COPY`` and ``ADD``
  (also under ``ONBUILD``), not in JSON form. Their bodies follow the instruction.
* ``ONBUILD`` wrapping another instruction, parsed into ``Instruction.onbuild``.

With ``strict=True`` (the default) the parser also checks what BuildKit checks when
it turns the syntax tree into instructions: the keyword is known, flags are ones the
keyword accepts and have values where needed, argument counts, ``FROM … AS name``,
``HEALTHCHECK`` types, ``SHELL`` in JSON form. (That a stage starts with ``FROM`` is
checked by the planner, so a list of ``ONBUILD`` triggers parses too.)
``strict=False`` accepts anything the reference parser accepts (its
syntax-tree tests use made-up flags).

Line numbers are 1-based and count physical lines of the original text. Every
problem raises ``DockerfileError`` located as ``FILE:LINE``, with the instruction
named in the message.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from platforge.dockerfile.shell import Lexer, ShellExpansionError
from platforge.errors import DockerfileError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "Dockerfile",
    "Heredoc",
    "Instruction",
    "decode",
    "dump",
    "go_quote",
    "parse",
    "parse_heredoc_word",
    "read_dockerfile",
    "source_text",
]

KEYWORDS = (
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
)

# Flags each keyword accepts; True marks a flag that may repeat.
_FLAGS: dict[str, dict[str, bool]] = {
    "FROM": {"platform": False},
    "RUN": {"mount": True, "network": False, "security": False},
    "COPY": {
        "from": False,
        "chown": False,
        "chmod": False,
        "link": False,
        "parents": False,
        "exclude": True,
    },
    "ADD": {
        "chown": False,
        "chmod": False,
        "link": False,
        "checksum": False,
        "keep-git-dir": False,
        "exclude": True,
    },
    "HEALTHCHECK": {
        "interval": False,
        "timeout": False,
        "start-period": False,
        "start-interval": False,
        "retries": False,
    },
}
# Flags that may stand alone (``--link``) or take ``=true``/``=false``.
_BOOL_FLAGS = frozenset({"link", "parents", "keep-git-dir"})

_HEREDOC_KEYWORDS = frozenset({"ADD", "COPY", "RUN"})
_DIRECTIVES = frozenset({"syntax", "escape", "check"})
_RE_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_RE_WHITESPACE = re.compile(r"[\t\v\f\r ]+")
_RE_HEREDOC = re.compile(r"^(\d*)<<(-?)([^<]*)$")
_RE_LEADING_TABS = re.compile(r"^\t+", re.MULTILINE)
_RE_STAGE_NAME = re.compile(r"^[a-z][a-z0-9_.-]*$", re.IGNORECASE)


@dataclass(frozen=True)
class Heredoc:
    """A here-document attached to an instruction (``<<EOF`` … ``EOF``).

    ``name`` is the delimiter without quotes; ``content`` the lines between the
    opening line and the closing delimiter, each with its newline, and for ``<<-``
    already without leading tabs; ``expand`` is false when the delimiter was quoted
    (the body is then used literally); ``chomp_tabs`` is true for ``<<-``.
    """

    name: str
    content: str
    expand: bool = True
    chomp_tabs: bool = False


@dataclass
class Instruction:
    """One instruction as written: keyword, flags and raw (unexpanded) words.

    ``keyword`` is upper case. ``flags`` keeps ``(name, value)`` pairs in order,
    without the ``--``, ``value`` None for a bare ``--flag``. ``args`` are the raw
    words:

    * JSON form: the decoded strings (``json_form`` is true);
    * ``RUN CMD ENTRYPOINT SHELL`` in shell form, ``USER WORKDIR STOPSIGNAL
      MAINTAINER``: one string, the rest of the line;
    * ``FROM EXPOSE COPY ADD VOLUME``: the words split on blanks (quotes do not group
      words here, as in Docker);
    * ``ARG``: the words, quotes kept (``NAME`` or ``NAME=default``);
    * ``ENV LABEL``: ``key=value`` words, quotes kept; the legacy ``ENV key value``
      form becomes one ``key=value rest-of-line`` word (``legacy_form`` is true);
    * ``HEALTHCHECK``: ``["NONE"]`` or ``["CMD", …command…]``;
    * ``ONBUILD``: the wrapped instruction's text, parsed into ``onbuild``.

    ``ast_words`` are the reference parser's node values, used by ``dump``.
    """

    keyword: str
    flags: list[tuple[str, str | None]] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    json_form: bool = False
    heredocs: list[Heredoc] = field(default_factory=list)
    original: str = ""
    start_line: int = 0
    end_line: int = 0
    onbuild: Instruction | None = None
    legacy_form: bool = False
    ast_words: list[str] = field(default_factory=list)

    def flag(self, name: str) -> str | None:
        """The last value of flag ``name`` (``""`` for a bare flag), or None."""
        found: str | None = None
        for key, value in self.flags:
            if key == name:
                found = "" if value is None else value
        return found


@dataclass
class Dockerfile:
    """A parsed Dockerfile: its directives, escape character and instructions."""

    directives: dict[str, str]
    escape: str
    instructions: list[Instruction]
    filename: str = "Dockerfile"
    warnings: list[str] = field(default_factory=list)


class _Directives:
    """Parser directives, read until the first line that is not one."""

    def __init__(self) -> None:
        self.escape = "\\"
        self.values: dict[str, str] = {}
        self.done = False
        self._set_continuation()

    def _set_continuation(self) -> None:
        e = re.escape(self.escape)
        # The escape last on a line continues it, unless it is itself escaped.
        self.continuation = re.compile(rf"([^{e}]){e}[ \t]*$|^{e}[ \t]*$")

    def consider(self, line: str) -> str | None:
        """Record ``line`` if it is a directive; return an error message if bad."""
        if self.done:
            return None
        match = _RE_DIRECTIVE.match(line)
        if match is None or match.group(1).lower() not in _DIRECTIVES:
            self.done = True
            return None
        key, value = match.group(1).lower(), match.group(2)
        if key in self.values:
            return f"only one {key} parser directive can be used"
        self.values[key] = value
        if key == "escape":
            if value not in ("\\", "`"):
                return f"invalid escape character {value!r}; expected \\ or `"
            self.escape = value
            self._set_continuation()
        return None

    def trim_continuation(self, line: str) -> tuple[str, bool]:
        """Remove a trailing continuation; return the line and whether it ended."""
        if self.continuation.search(line):
            return self.continuation.sub(r"\1", line, count=1), False
        return line, True


def _trim_newline(text: str) -> str:
    return text.rstrip("\r\n")


def _is_comment(line: str) -> bool:
    return _trim_newline(line).lstrip().startswith("#")


def _physical_lines(text: str) -> list[str]:
    """Split on ``\\n`` only, keeping each line's ending (like BuildKit's scanner)."""
    parts = text.split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


class _InstructionError(Exception):
    """A problem found while parsing one instruction, located by the caller."""


class _Reader:
    """Walks the physical lines, joining continuations and collecting bodies."""

    def __init__(self, text: str, filename: str) -> None:
        self.lines = _physical_lines(text.removeprefix("\ufeff"))
        self.filename = filename
        self.directives = _Directives()
        self.index = 0  # the next physical line to read
        self.warnings: list[str] = []

    def _take(self) -> str:
        raw = self.lines[self.index]
        self.index += 1
        return raw

    def _consider(self, token: str) -> None:
        problem = self.directives.consider(token)
        if problem is not None:
            raise DockerfileError(problem, file=self.filename, line=self.index)

    def logical_line(self) -> tuple[str, int] | None:
        """The next instruction's joined text and start line; None at the end."""
        while self.index < len(self.lines):
            token = _trim_newline(self._take()).lstrip()
            self._consider(token)
            start = self.index
            line, ended = self.directives.trim_continuation(
                "" if token.startswith("#") else token
            )
            if ended and not line:
                continue
            empty_continuation = False
            while not ended and self.index < len(self.lines):
                raw = self._take()
                token = _trim_newline(raw)
                self._consider(token)
                if _is_comment(raw):
                    continue
                if not token.lstrip():
                    empty_continuation = True
                    continue
                more, ended = self.directives.trim_continuation(token)
                line += more
            if empty_continuation:
                self.warnings.append(
                    f"{self.filename}:{start}: empty continuation line; a blank line "
                    "inside a continued instruction is deprecated"
                )
            return line, start
        return None

    def heredoc_body(self, heredoc: Heredoc, keyword: str, start: int) -> Heredoc:
        """Read the body of ``heredoc`` up to its closing delimiter."""
        content: list[str] = []
        while self.index < len(self.lines):
            body_line = self._take()
            candidate = _trim_newline(body_line)
            if heredoc.chomp_tabs:
                candidate = candidate.lstrip("\t")
            if candidate == heredoc.name:
                body = "".join(content)
                if heredoc.chomp_tabs:
                    body = _RE_LEADING_TABS.sub("", body)
                return Heredoc(heredoc.name, body, heredoc.expand, heredoc.chomp_tabs)
            content.append(body_line)
        raise DockerfileError(
            f"{keyword}: here-document <<{heredoc.name} is not terminated; add a "
            f"line holding only {heredoc.name}",
            file=self.filename,
            line=start,
        )


def decode(data: bytes, *, filename: str = "Dockerfile") -> str:
    """Dockerfile bytes as text. A Dockerfile is UTF-8 whatever the locale says."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DockerfileError(
            f"not UTF-8 text (byte {exc.start}); save the Dockerfile as UTF-8",
            file=filename,
        ) from None


def read_dockerfile(path: str | Path) -> str:
    """The text of the Dockerfile at ``path``, as ``decode`` reads it."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DockerfileError(
            f"cannot read the Dockerfile: {exc.strerror or exc}; "
            "check the path and its permissions",
            file=str(path),
        ) from None
    return decode(data, filename=str(path))


def parse(
    text: str, *, filename: str = "Dockerfile", strict: bool = True
) -> Dockerfile:
    """Parse Dockerfile ``text``; raise ``DockerfileError`` (``FILE:LINE: …``)."""
    reader = _Reader(text, filename)
    instructions: list[Instruction] = []
    while (found := reader.logical_line()) is not None:
        line, start = found
        try:
            instruction = _instruction_from_line(line, reader.directives.escape)
        except _InstructionError as exc:
            raise DockerfileError(str(exc), file=filename, line=start) from None
        target = instruction.onbuild or instruction
        if target.keyword in _HEREDOC_KEYWORDS and not target.json_form:
            target.heredocs = [
                reader.heredoc_body(heredoc, target.keyword, start)
                for heredoc in _heredocs_in(line)
            ]
        for each in (instruction, instruction.onbuild):
            if each is not None:
                each.start_line, each.end_line = start, reader.index
        instructions.append(instruction)

    if not instructions:
        raise DockerfileError(
            "the file has no instructions; a Dockerfile needs at least a FROM",
            file=filename,
            line=max(reader.index, 1),
        )
    if "syntax" in reader.directives.values:
        reader.warnings.append(
            f"{filename}: '# syntax={reader.directives.values['syntax']}' is not "
            "fetched; platforge's own frontend reads this Dockerfile"
        )
    result = Dockerfile(
        directives=dict(reader.directives.values),
        escape=reader.directives.escape,
        instructions=instructions,
        filename=filename,
        warnings=reader.warnings,
    )
    if strict:
        _check(result)
    return result


# -- one instruction --------------------------------------------------------------


def _split_command(line: str) -> tuple[str, list[tuple[str, str | None]], str]:
    parts = _RE_WHITESPACE.split(line.strip(), maxsplit=1)
    flags: list[str] = []
    rest = ""
    if len(parts) == 2:
        rest, flags = _extract_flags(parts[1])
    pairs: list[tuple[str, str | None]] = []
    for text in flags:
        name, sep, value = text[2:].partition("=")
        pairs.append((name, value if sep else None))
    return parts[0], pairs, rest.strip()


def _extract_flags(  # noqa: C901, PLR0912, PLR0915 - a character state machine
    line: str,
) -> tuple[str, list[str]]:
    """Take the leading ``--flag`` words off ``line``; quotes group, ``\\`` escapes."""
    words: list[str] = []
    word = ""
    phase = "spaces"
    quote = ""
    blank_ok = False
    pos = 0
    n = len(line)
    while pos <= n:
        ch = line[pos] if pos < n else ""
        if phase == "spaces":
            if pos == n:
                break
            if ch.isspace():
                pos += 1
                continue
            if ch != "-" or pos + 1 == n or line[pos + 1] != "-":
                return line[pos:], words
            phase = "word"
        if pos == n:
            if word != "--" and (blank_ok or word):
                words.append(word)
            break
        if phase == "word":
            if ch.isspace():
                phase = "spaces"
                if word == "--":
                    return line[pos:], words
                if blank_ok or word:
                    words.append(word)
                word = ""
                blank_ok = False
            elif ch in ("'", '"'):
                quote = ch
                blank_ok = True
                phase = "quote"
            elif ch == "\\":
                if pos + 1 < n:
                    pos += 1
                    word += line[pos]
            else:
                word += ch
        elif ch == quote:
            phase = "word"
        elif ch == "\\":
            if pos + 1 == n:
                phase = "word"
            else:
                pos += 1
                word += line[pos]
        else:
            word += ch
        pos += 1
    return "", words


def _parse_words(  # noqa: C901, PLR0912, PLR0915 - a character state machine
    rest: str,
    escape: str,
) -> list[str]:
    """Split on blanks keeping quotes and escapes in the words (ARG, ENV, LABEL)."""
    words: list[str] = []
    word = ""
    phase = "spaces"
    quote = ""
    blank_ok = False
    pos = 0
    n = len(rest)
    while pos <= n:
        ch = rest[pos] if pos < n else ""
        if phase == "spaces":
            if pos == n:
                break
            if ch.isspace():
                pos += 1
                continue
            phase = "word"
        if pos == n:
            if blank_ok or word:
                words.append(word)
            break
        if phase == "word":
            if ch.isspace():
                phase = "spaces"
                if blank_ok or word:
                    words.append(word)
                word = ""
                blank_ok = False
                pos += 1
                continue
            if ch in ("'", '"'):
                quote = ch
                blank_ok = True
                phase = "quote"
            if ch == escape:
                if pos + 1 == n:
                    pos += 1
                    continue
                word += ch
                pos += 1
                ch = rest[pos]
            word += ch
        else:
            if ch == quote:
                phase = "word"
            if ch == escape and quote != "'":
                if pos + 1 == n:
                    phase = "word"
                    pos += 1
                    continue
                word += ch
                pos += 1
                ch = rest[pos]
            word += ch
        pos += 1
    return words


class _NotStringArrayError(Exception):
    pass


def _reject_constant(name: str) -> object:
    raise ValueError(name)


def _parse_json(rest: str) -> list[str] | None:
    """The strings of a JSON array, None if ``rest`` is not a JSON array."""
    rest = rest.lstrip()
    if not rest.startswith("["):
        return None
    try:
        decoded = json.loads(rest, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return None
    if not isinstance(decoded, list):
        return None
    if not all(isinstance(item, str) for item in decoded):
        raise _NotStringArrayError
    # Lone surrogates from \ud800-style escapes cannot be encoded; Go makes them U+FFFD.
    return [re.sub("[\ud800-\udfff]", "\ufffd", item) for item in decoded]


def _maybe_json(instruction: Instruction, rest: str, *, to_list: bool) -> None:
    try:
        decoded = _parse_json(rest)
    except _NotStringArrayError:
        raise _InstructionError(
            f"{instruction.keyword}: a JSON array must hold strings only; "
            "use the shell form or quote every element"
        ) from None
    if decoded is not None:
        instruction.json_form = True
        instruction.args = decoded
    elif to_list:
        instruction.args = _RE_WHITESPACE.split(rest) if rest else []
    else:
        instruction.args = [rest] if rest else []
    instruction.ast_words = list(instruction.args)


def _name_value(instruction: Instruction, rest: str, escape: str) -> None:
    keyword = instruction.keyword
    words = _parse_words(rest, escape)
    if not words:
        raise _InstructionError(
            f"{keyword}: expected at least one NAME=VALUE (or {keyword} NAME VALUE)"
        )
    if "=" not in words[0]:
        parts = _RE_WHITESPACE.split(rest, maxsplit=1)
        if len(parts) < 2:
            raise _InstructionError(
                f"{keyword}: {parts[0]!r} has no value; expected {keyword} "
                f"{parts[0]}=VALUE or {keyword} {parts[0]} VALUE"
            )
        instruction.legacy_form = True
        instruction.args = [f"{parts[0]}={parts[1]}"]
        instruction.ast_words = [parts[0], parts[1], ""]
        return
    for word in words:
        key, sep, value = word.partition("=")
        if not sep:
            raise _InstructionError(
                f"{keyword}: cannot find '=' in {word!r}; expected NAME=VALUE"
            )
        instruction.args.append(word)
        instruction.ast_words += [key, value, "="]


def _healthcheck(instruction: Instruction, rest: str) -> None:
    parts = rest.split(None, 1)
    if not parts:
        return
    kind = parts[0]
    command = Instruction(keyword="CMD")
    _maybe_json(command, parts[1] if len(parts) > 1 else "", to_list=False)
    instruction.json_form = command.json_form
    instruction.args = [kind, *command.args]
    instruction.ast_words = list(instruction.args)


def _instruction_from_line(line: str, escape: str) -> Instruction:
    keyword, flags, rest = _split_command(line)
    if not keyword:
        raise _InstructionError(
            "expected an instruction, found only a line continuation"
        )
    instruction = Instruction(keyword=keyword.upper(), flags=flags, original=line)
    handlers: dict[str, Callable[[], None]] = {
        "ADD": lambda: _maybe_json(instruction, rest, to_list=True),
        "COPY": lambda: _maybe_json(instruction, rest, to_list=True),
        "VOLUME": lambda: _maybe_json(instruction, rest, to_list=True),
        "RUN": lambda: _maybe_json(instruction, rest, to_list=False),
        "CMD": lambda: _maybe_json(instruction, rest, to_list=False),
        "ENTRYPOINT": lambda: _maybe_json(instruction, rest, to_list=False),
        "SHELL": lambda: _maybe_json(instruction, rest, to_list=False),
        "ENV": lambda: _name_value(instruction, rest, escape),
        "LABEL": lambda: _name_value(instruction, rest, escape),
        "HEALTHCHECK": lambda: _healthcheck(instruction, rest),
    }
    handler = handlers.get(instruction.keyword)
    if handler is not None:
        handler()
    elif instruction.keyword in ("FROM", "EXPOSE"):
        instruction.args = _RE_WHITESPACE.split(rest) if rest else []
    elif instruction.keyword == "ARG":
        instruction.args = _parse_words(rest, escape)
    elif instruction.keyword == "ONBUILD":
        if rest:
            instruction.args = [rest]
            instruction.onbuild = _instruction_from_line(rest, escape)
    else:
        instruction.args = [rest] if rest else []
    if not instruction.ast_words:
        instruction.ast_words = list(instruction.args)
    return instruction


def source_text(instruction: Instruction) -> str:
    """Dockerfile text that parses back to ``instruction``, bodies included.

    ``original`` is the instruction's line alone; its here-documents follow it in
    a Dockerfile, each body closed by its delimiter. This is the form to store an
    ``ONBUILD`` trigger in, so that the child image re-parses the same bodies
    (tabs a ``<<-`` body lost stay lost; re-reading it strips nothing more).
    """
    bodies = "".join(f"{h.content}{h.name}\n" for h in instruction.heredocs)
    return f"{instruction.original}\n{bodies}"


def parse_heredoc_word(word: str) -> Heredoc | None:
    """The here-document a word such as ``<<EOF``, ``<<-'EOF'`` or ``3<<EOF``
    opens (with empty content), or None if the word opens none."""
    match = _RE_HEREDOC.match(word)
    if match is None or not match.group(3):
        return None
    rest = match.group(3)
    try:
        _, plain = Lexer({}, skip_unset=True).process(rest)
        _, quoted = Lexer({}, raw_quotes=True, skip_unset=True).process(rest)
    except ShellExpansionError:
        return None
    if len(plain) != 1 or len(quoted) != 1:
        return None

    def quotes(text: str) -> int:
        return text.count("'") + text.count('"')

    return Heredoc(
        name=plain[0],
        content="",
        expand=quotes(plain[0]) == quotes(quoted[0]),
        chomp_tabs=match.group(2) == "-",
    )


def _heredocs_in(line: str) -> list[Heredoc]:
    """The here-documents an instruction line opens, in order."""
    if "<<" not in line:
        return []  # the common case, without lexing the whole line
    try:
        _, words = Lexer(
            {}, raw_quotes=True, raw_escapes=True, skip_unset=True
        ).process(line)
    except ShellExpansionError:
        return []
    found = [parse_heredoc_word(word) for word in words]
    return [heredoc for heredoc in found if heredoc is not None]


# -- strict checks ----------------------------------------------------------------


def _check(dockerfile: Dockerfile) -> None:
    # Where FROM must come is the planner's rule, so that ONBUILD triggers (which
    # have no FROM) parse strictly too.
    for instruction in dockerfile.instructions:
        try:
            _check_instruction(instruction, nested=False)
        except _InstructionError as exc:
            raise DockerfileError(
                str(exc), file=dockerfile.filename, line=instruction.start_line
            ) from None


def _suggest(word: str) -> str:
    import difflib  # noqa: PLC0415 - only needed on this error path

    close = difflib.get_close_matches(word.upper(), KEYWORDS, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _check_instruction(  # noqa: C901, PLR0912 - one rule per keyword
    instruction: Instruction,
    *,
    nested: bool,
) -> None:
    keyword = instruction.keyword
    if keyword not in KEYWORDS:
        raise _InstructionError(
            f"unknown instruction {instruction.original.split()[0]!r}"
            f"{_suggest(keyword)}"
        )
    _check_flags(instruction)
    args = instruction.args
    if keyword == "ONBUILD":
        sub = instruction.onbuild
        if sub is None:
            raise _InstructionError("ONBUILD: expected an instruction to run later")
        if sub.keyword in ("ONBUILD", "FROM", "MAINTAINER"):
            raise _InstructionError(
                f"ONBUILD: {sub.keyword} is not allowed under ONBUILD"
            )
        _check_instruction(sub, nested=True)
    elif keyword == "FROM":
        if not (len(args) == 1 or (len(args) == 3 and args[1].lower() == "as")):
            raise _InstructionError(
                "FROM: expected FROM [--platform=P] IMAGE [AS NAME]"
            )
        if len(args) == 3 and not _RE_STAGE_NAME.match(args[2]):
            raise _InstructionError(
                f"FROM: invalid stage name {args[2]!r}; use a letter, then "
                "letters, digits, '-', '_' or '.'"
            )
    elif keyword in ("COPY", "ADD"):
        if len(args) < 2:
            raise _InstructionError(
                f"{keyword}: expected at least one source and a destination"
            )
        if not instruction.json_form and parse_heredoc_word(args[-1]) is not None:
            raise _InstructionError(
                f"{keyword}: a here-document cannot be the destination; put the "
                "destination path last"
            )
    elif keyword in ("ENV", "LABEL", "ARG") and any(
        word.startswith("=") for word in args
    ):
        raise _InstructionError(f"{keyword}: a name is missing before '='")
    elif keyword in ("RUN", "USER", "WORKDIR", "STOPSIGNAL", "MAINTAINER"):
        if not args and not instruction.json_form:
            raise _InstructionError(f"{keyword}: expected an argument")
    elif keyword in ("ARG", "EXPOSE", "VOLUME"):
        if not args:
            raise _InstructionError(f"{keyword}: expected at least one argument")
        if keyword == "VOLUME" and not all(word.strip() for word in args):
            raise _InstructionError("VOLUME: a volume path cannot be empty")
    elif keyword == "SHELL":
        if not instruction.json_form or not args:
            raise _InstructionError(
                'SHELL: expected a JSON array, e.g. SHELL ["/bin/sh", "-c"]'
            )
    elif keyword == "HEALTHCHECK":
        kind = args[0].upper() if args else ""
        if kind == "NONE":
            if len(args) > 1 or instruction.flags:
                raise _InstructionError("HEALTHCHECK: NONE takes no arguments or flags")
        elif kind == "CMD":
            if len(args) < 2:
                raise _InstructionError("HEALTHCHECK: expected a command after CMD")
        else:
            raise _InstructionError("HEALTHCHECK: expected NONE or CMD COMMAND")
    del nested


def _check_flags(instruction: Instruction) -> None:
    keyword = instruction.keyword
    allowed = _FLAGS.get(keyword, {})
    seen: set[str] = set()
    for name, value in instruction.flags:
        if name not in allowed:
            expected = ", ".join(f"--{flag}" for flag in allowed) or "no flags"
            raise _InstructionError(
                f"{keyword}: unknown flag --{name}; expected {expected}"
            )
        if name in seen and not allowed[name]:
            raise _InstructionError(f"{keyword}: flag --{name} given twice")
        seen.add(name)
        if name in _BOOL_FLAGS:
            if value is not None and value.lower() not in ("true", "false", ""):
                raise _InstructionError(
                    f"{keyword}: --{name} expects true or false, got {value!r}"
                )
        elif not value:
            raise _InstructionError(
                f"{keyword}: flag --{name} needs a value (--{name}=…)"
            )


# -- the reference dump -----------------------------------------------------------

_GO_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    "\\": "\\\\",
    '"': '\\"',
}


def go_quote(text: str) -> str:
    """Quote ``text`` as Go's ``strconv.Quote`` does."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif ch.isprintable() and not 0xD800 <= code <= 0xDFFF:
            out.append(ch)
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def _dump_instruction(instruction: Instruction) -> str:
    parts = [instruction.keyword.lower()]
    if instruction.flags:
        quoted = (
            go_quote(f"--{name}" if value is None else f"--{name}={value}")
            for name, value in instruction.flags
        )
        parts.append("[" + " ".join(quoted) + "]")
    if instruction.onbuild is not None:
        parts.append("(" + _dump_instruction(instruction.onbuild) + ")")
    else:
        parts.extend(go_quote(word) for word in instruction.ast_words)
    return " ".join(parts)


def dump(dockerfile: Dockerfile) -> str:
    """The S-expression dump of BuildKit's parser, one instruction per line."""
    return "".join(
        f"({_dump_instruction(instruction)})\n"
        for instruction in dockerfile.instructions
    )
