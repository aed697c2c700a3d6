"""``.dockerignore``: which files of the build context a build leaves out.

Public names::

    load(context_dir, dockerfile_path=None) -> IgnoreMatcher
    parse_patterns(lines) -> list[str]
    IgnoreMatcher(patterns): .excluded(relpath, is_dir=False) -> bool,
                              .can_prune(reldir) -> bool
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["IgnoreMatcher", "load", "parse_patterns"]


class IgnoreMatcher:
    def __init__(self, patterns: list[str]) -> None:
        self.patterns = patterns

    def excluded(self, relpath: str, is_dir: bool = False) -> bool:
        return False

    def can_prune(self, reldir: str) -> bool:
        return False


def parse_patterns(lines: list[str]) -> list[str]:
    return []


def load(
    context_dir: str | Path, dockerfile_path: str | Path | None = None
) -> IgnoreMatcher:
    return IgnoreMatcher([])
