"""What every email upstream promises the pipeline.

An upstream either accepts the message (returns its id for the message) or raises one of
the two upstream errors of `gateway.model`; the pipeline never reports success without an
accepted send.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable


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
