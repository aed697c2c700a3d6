"""platforge.cli."""
