"""udpchat: a terminal chat over UDP for a LAN, in three comparable concurrency models."""

__version__ = "0.1.0"
"""The one place the version is written: pyproject.toml reads it from here."""
