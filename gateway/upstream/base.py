"""What every email upstream promises the pipeline.

An upstream either accepts the message (returns its id for the message) or raises one of
the two errors below; the pipeline never reports success without an accepted send.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable


class UpstreamTemporaryError(Exception):
    """Try again later: outage, timeout, 4xx from the provider. The agent gets a 4xx/503.

    `maybe_delivered` marks a failure after the message was handed over (a timeout waiting
    for the final reply): the provider may have accepted it, so a retry must not resend it
    right away.
    """

    def __init__(self, text: str, *, maybe_delivered: bool = False) -> None:
        super().__init__(text)
        self.maybe_delivered = maybe_delivered


class UpstreamPermanentError(Exception):
    """The provider refused for good; its code and text go back to the agent.

    `recipient_inactive` says the provider refused because the recipient opted out or is
    suppressed on its side (Twilio 21610, Postmark 406): the gateway suppresses too.
    """

    def __init__(self, code: int, text: str, *, recipient_inactive: bool = False) -> None:
        super().__init__(f"{code} {text}")
        self.code = code
        self.text = text
        self.recipient_inactive = recipient_inactive


class EmailUpstream(Protocol):
    name: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def send_email(self, envelope_from: str, recipient: str, message: bytes) -> str:
        """Deliver one rewritten message to one recipient; returns the provider's id."""

    async def send_template(self, recipient: str, request: Mapping[str, Any]) -> str:
        """Deliver a provider-rendered template send (Postmark's /email/withTemplate body).

        Upstreams that cannot render templates raise UpstreamPermanentError; the Postmark
        ingress refuses template sends up front for them.
        """


@runtime_checkable
class PostmarkApi(Protocol):
    """An upstream that takes Postmark's `/email` request itself: an email given as fields
    goes to it as fields, never through MIME."""

    async def send_api_email(self, request: dict[str, Any]) -> str: ...
