"""platforge.registry."""
