"""``.dockerignore``: which files of the build context a build leaves out.

The file holds one pattern per line; blank lines and lines starting with ``#`` are
ignored. The rules are Docker's:

* Patterns are paths relative to the context root, always anchored there: ``foo``
  means ``/foo``, not any ``foo`` below. A leading ``/`` or ``./`` is cleaned away,
  as are ``..`` and doubled slashes (the pattern is a cleaned path).
* ``*`` matches within one path component, ``?`` one character of it, ``[…]`` a
  character class (``[!…]`` or ``[^…]`` negates), ``\\`` escapes the next
  character, and ``**`` any number of components (also none): ``**/*.go`` matches
  ``a.go`` and ``x/y/a.go``.
* A pattern that matches a directory excludes everything below it.
* ``!pattern`` re-includes what an earlier pattern excluded. The last pattern that
  matches a path decides, so order matters: ``*.md`` then ``!README.md`` keeps only
  the README.

``load(context_dir, dockerfile_path)`` reads ``<Dockerfile>.dockerignore`` next to
the Dockerfile when it exists (so each Dockerfile of a repository can carry its own),
else ``<context>/.dockerignore``, else nothing is excluded.

Walking a large context, ``can_prune(reldir)`` says a whole directory can be skipped
without looking inside: it is excluded and no ``!`` pattern could re-include
anything below it.

Public names::

    load(context_dir, dockerfile_path=None) -> IgnoreMatcher
    parse_patterns(lines) -> list[Pattern]
    IgnoreMatcher(patterns): .excluded(relpath, is_dir=False) -> bool,
                              .can_prune(reldir) -> bool, .source (the file read)

Written by hand: ``fnmatch`` has no ``**`` and no anchored directory semantics, and
``pathspec``'s gitignore flavour differs from Docker's (unanchored names).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from platforge.errors import DockerfileError

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["IgnoreMatcher", "Pattern", "load", "parse_patterns"]


def _glob_to_regex(glob: str) -> str:
    """Docker's translation of one pattern into a regular expression body."""
    out: list[str] = []
    i = 0
    n = len(glob)
    while i < n:
        ch = glob[i]
        i += 1
        if ch == "*":
            if i < n and glob[i] == "*":
                i += 1
                if i < n and glob[i] == "/":
                    i += 1
                # "**" at the end takes everything; elsewhere any number of dirs.
                out.append(".*" if i >= n else "(.*/)?")
            else:
                out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "\\":
            if i < n:
                out.append(re.escape(glob[i]))
                i += 1
            else:
                out.append(re.escape("\\"))
        elif ch == "[":
            end = glob.find("]", i + 1)
            if end < 0:
                out.append(re.escape(ch))
                continue
            body = glob[i:end]
            i = end + 1
            negate = body[:1] in ("!", "^")
            body = body[1:] if negate else body
            body = body.replace("\\", "\\\\").replace("[", "\\[")
            out.append(("[^" if negate else "[") + body + "]")
        else:
            out.append(re.escape(ch))
    return "".join(out)


@dataclass(frozen=True)
class Pattern:
    """One cleaned pattern; ``exclusion`` is true for a ``!`` re-include."""

    text: str
    exclusion: bool
    regex: re.Pattern[str]

    @property
    def components(self) -> list[str]:
        return self.text.split("/")

    def matches(self, path: str) -> bool:
        """True if the pattern matches ``path`` or one of its parent directories."""
        if self.regex.match(path):
            return True
        parts = path.split("/")
        return any(
            self.regex.match("/".join(parts[:depth])) for depth in range(1, len(parts))
        )


def _clean(path: str) -> str:
    cleaned = posixpath.normpath(path).lstrip("/")
    return "" if cleaned == "." else cleaned


def parse_patterns(
    lines: Iterable[str], *, source: str = ".dockerignore"
) -> list[Pattern]:
    """Turn the lines of a ``.dockerignore`` into patterns, in order."""
    patterns: list[Pattern] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exclusion = line.startswith("!")
        if exclusion:
            line = line[1:].strip()
            if not line:
                raise DockerfileError(
                    "'!' alone is not a pattern; write !PATH to re-include PATH",
                    file=source,
                    line=number,
                )
        text = _clean(line)
        if not text:
            # "." or "/" names the whole context.
            text = "**"
        try:
            regex = re.compile("^" + _glob_to_regex(text) + "$", re.DOTALL)
        except re.error as exc:
            raise DockerfileError(
                f"bad pattern {line!r}: {exc}; check its [ ] brackets",
                file=source,
                line=number,
            ) from None
        patterns.append(Pattern(text, exclusion, regex))
    return patterns


class IgnoreMatcher:
    """Decides which context paths a ``.dockerignore`` excludes."""

    def __init__(self, patterns: list[Pattern], source: Path | None = None) -> None:
        self.patterns = patterns
        self.source = source
        self._has_exclusions = any(p.exclusion for p in patterns)

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def excluded(self, relpath: str, is_dir: bool = False) -> bool:
        """True if ``relpath`` (relative to the context, ``/``-separated) is left out.

        ``is_dir`` is accepted for walkers' convenience; Docker's rules treat files
        and directories alike.
        """
        del is_dir
        path = _clean(relpath)
        if not path:
            return False
        excluded = False
        for pattern in self.patterns:
            # Only a pattern that could flip the answer needs matching.
            if pattern.exclusion == excluded and pattern.matches(path):
                excluded = not pattern.exclusion
        return excluded

    def can_prune(self, reldir: str) -> bool:
        """True if directory ``reldir`` and everything below it are excluded."""
        path = _clean(reldir)
        if not path or not self.excluded(path, is_dir=True):
            return False
        if not self._has_exclusions:
            return True
        parts = path.split("/")
        return not any(
            _could_match_below(p.components, parts)
            for p in self.patterns
            if p.exclusion
        )


def _could_match_below(pattern: list[str], parts: list[str]) -> bool:
    """Could a pattern of these components match some path strictly below ``parts``?"""
    for index, component in enumerate(pattern):
        if "**" in component:
            return True
        if index >= len(parts):
            return True
        if not re.match("^" + _glob_to_regex(component) + "$", parts[index]):
            return False
    return False


def load(
    context_dir: str | Path, dockerfile_path: str | Path | None = None
) -> IgnoreMatcher:
    """The ignore rules for a build of ``dockerfile_path`` in ``context_dir``."""
    candidates: list[Path] = []
    if dockerfile_path is not None:
        dockerfile = Path(dockerfile_path)
        candidates.append(dockerfile.with_name(dockerfile.name + ".dockerignore"))
    candidates.append(Path(context_dir) / ".dockerignore")
    for candidate in candidates:
        if candidate.is_file():
            try:
                text = candidate.read_text(encoding="utf-8", errors="replace")
            except OSError as exc:
                raise DockerfileError(
                    f"cannot read {candidate}: {exc.strerror}; check its permissions",
                    file=str(candidate),
                ) from None
            patterns = parse_patterns(text.splitlines(), source=str(candidate))
            return IgnoreMatcher(patterns, candidate)
    return IgnoreMatcher([])
