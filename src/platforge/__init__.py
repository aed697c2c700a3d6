"""platforge: every platform of a Dockerfile into one OCI image index, no daemon."""

__version__ = "0.1.0"
