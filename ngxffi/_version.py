"""The version, kept apart so that setuptools can read it without building _ngx."""

__version__ = "0.1.0"
