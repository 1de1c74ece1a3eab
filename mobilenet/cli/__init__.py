"""The ``mobilenet`` command line: one module per group of subcommands, each a thin layer over the library."""

from .main import main

__all__ = ["main"]
