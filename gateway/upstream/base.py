"""What every email upstream promises the pipeline.

An upstream either accepts the message (returns its id for the message) or raises one of
the two errors below; the pipeline never reports success without an accepted send.
"""

from __future__ import annotations

from typing import Protocol


class UpstreamTemporaryError(Exception):
    """Try again later: outage, timeout, 4xx from the provider. The agent gets a 4xx/503."""


class UpstreamPermanentError(Exception):
    """The provider refused for good; its code and text go back to the agent."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code} {text}")
        self.code = code
        self.text = text


class EmailUpstream(Protocol):
    name: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def send_email(self, envelope_from: str, recipient: str, message: bytes) -> str:
        """Deliver one rewritten message to one recipient; returns the provider's id."""
