"""platforge.concourse."""
