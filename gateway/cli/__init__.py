"""The command line, `compliance-gateway`: the entry point is `gateway.cli.main.main`."""

from gateway.cli.main import main

__all__ = ["main"]
