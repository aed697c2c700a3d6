"""platforge.oci."""
