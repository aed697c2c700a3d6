"""Commands of this area are registered on the top-level group here."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import click


def register(group: click.Group) -> None:
    """Add this area's commands to ``group``."""
    del group
