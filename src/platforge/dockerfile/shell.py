"""Shell-like word expansion, the way Dockerfile instructions expand their words.

Public names::

    expand(word, env, *, escape="\\\\") -> str
    expand_words(text, env, *, escape="\\\\") -> list[str]
    ShellExpansionError (a DockerfileError)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from platforge.errors import DockerfileError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["ShellExpansionError", "expand", "expand_words"]


class ShellExpansionError(DockerfileError):
    """A word could not be expanded (``${X:?msg}``, bad substitution, …)."""


def expand(word: str, env: Mapping[str, str], *, escape: str = "\\") -> str:
    """Expand variables and remove quotes in ``word``; no word splitting."""
    raise ShellExpansionError("not implemented yet")


def expand_words(text: str, env: Mapping[str, str], *, escape: str = "\\") -> list[str]:
    """Expand ``text`` and split it into words (quotes keep words together)."""
    raise ShellExpansionError("not implemented yet")
