"""Outbound compliance gateway: decide, rewrite, forward and record every outbound message."""

__version__ = "0.1.0"
