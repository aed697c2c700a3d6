"""platforge.dockerfile."""
