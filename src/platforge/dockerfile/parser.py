"""Parse Dockerfile text into instructions, without interpreting them.

A Dockerfile is a sequence of *instructions* (``FROM``, ``RUN``, ``COPY`` …), each
one logical line that may span several physical lines through the escape character
at a line's end. The parser keeps every instruction's raw words; word expansion and
stage resolution happen later (``platforge.dockerfile.shell`` and ``.plan``).

Public names::

    parse(text, *, filename="Dockerfile") -> Dockerfile
    Dockerfile(directives: dict[str, str], escape: str, instructions: list[Instruction],
               filename: str)
    Instruction(keyword, flags, args, json_form, heredocs, original, start_line,
                end_line, onbuild)
    Heredoc(name, content, expand, chomp_tabs)

What the parser understands:

* Parser directives (``# syntax=``, ``# escape=`` with ``\\`` or a backtick,
  ``# check=``) only before the first instruction, comment or blank line.
* Comments (``#`` at the start of a line) and blank lines, also in the middle of a
  continued instruction, where they are dropped.
* Line continuations, also at the end of the file.
* JSON form (``["a", "b"]``) for ``RUN CMD ENTRYPOINT SHELL COPY ADD VOLUME`` and
  ``HEALTHCHECK CMD``; text that is not a valid JSON string array falls back to the
  shell form, as Docker does.
* Flags (``--name=value`` or bare ``--name``) before the arguments, kept in order.
* Here-documents (``<<EOF``, ``<<-EOF`` stripping leading tabs, quoted delimiters
  turning expansion off, several on one line) for ``RUN``, ``COPY`` and ``ADD``.
* ``ONBUILD`` wrapping another instruction, parsed into ``Instruction.onbuild``.

Line numbers are 1-based and count physical lines of the original text. Every
problem raises ``DockerfileError`` located as ``FILE:LINE``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from platforge.errors import DockerfileError

__all__ = ["Dockerfile", "Heredoc", "Instruction", "parse"]


@dataclass(frozen=True)
class Heredoc:
    """A here-document attached to an instruction (``<<EOF`` … ``EOF``).

    ``name`` is the delimiter without quotes, ``content`` the lines between the
    opening and closing delimiter (each ending in a newline), ``expand`` is false when
    the delimiter was quoted, ``chomp_tabs`` true for ``<<-``.
    """

    name: str
    content: str
    expand: bool = True
    chomp_tabs: bool = False


@dataclass
class Instruction:
    """One instruction as written: keyword, flags and raw (unexpanded) words.

    ``flags`` keeps ``(name, value)`` pairs in order, ``value`` None for a bare
    ``--flag``. ``args`` are the raw words: for JSON form the decoded strings, for
    shell form of ``RUN``/``CMD``/``ENTRYPOINT``/``SHELL`` one string holding the
    whole command text, for other keywords the whitespace-separated words (quotes kept,
    so ``shell.expand`` sees them). ``ENV``/``LABEL`` give ``key=value`` words, with
    the legacy ``ENV key value`` form turned into ``key=value``.
    ``onbuild`` is the wrapped instruction of an ``ONBUILD``.
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


def parse(text: str, *, filename: str = "Dockerfile") -> Dockerfile:
    """Parse Dockerfile ``text``; raise ``DockerfileError`` (``FILE:LINE: …``)."""
    raise DockerfileError("parser not implemented yet", file=filename)
