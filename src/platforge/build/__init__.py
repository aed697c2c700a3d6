"""platforge.build."""
