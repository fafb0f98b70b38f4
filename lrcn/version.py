"""The package version, read by setup.py without importing lrcn."""

__version__ = "0.2.0"
