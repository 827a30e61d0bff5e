"""Unsubscribe links: issuing them for each recipient, and honoring them, whichever way
they arrive (the web page, the RFC 8058 one-click POST, the mailto address); each ends in
`Suppressions.add`."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.addresses import InvalidAddress, suppression_key
from gateway.auth.unsubscribe_tokens import TOKEN_SHAPE, TokenClaims, UnsubscribeTokens
from gateway.model import Channel
from gateway.rewrite.footer import mailto_link
from gateway.runtime.clock import Clock
from gateway.services.suppressions import Suppressions

RELOAD_KEYS_EVERY_S = 10.0


@dataclass(frozen=True)
class UnsubscribeLinks:
    token: str
    url: str
    mailto: str | None


class Unsubscribe:
    def __init__(
        self,
        tokens: UnsubscribeTokens,
        suppressions: Suppressions,
        clock: Clock,
        public_url: str,
        mailbox: str,
        reload_keys: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.tokens = tokens
        self.reload_keys = reload_keys
        self._reloaded_at = -RELOAD_KEYS_EVERY_S
        self.suppressions = suppressions
        self.clock = clock
        self.url_prefix = f"{public_url}/u/"
        self.mailbox = mailbox

    def links(self, recipient: str, sender: str, channel: Channel) -> UnsubscribeLinks:
        token = self.tokens.issue(recipient, sender, channel, self.clock.now())
        return UnsubscribeLinks(
            token=token,
            url=self.url_prefix + token,
            mailto=mailto_link(self.mailbox, token) if self.mailbox else None,
        )

    def token_names(self, recipient: str) -> TokenMatcher:
        return TokenMatcher(self.tokens, recipient)

    async def claims(self, token: str) -> TokenClaims | None:
        """The claims of an authentic token. A well-formed token that no key verifies may
        come from a replica that shared its older key after this one read the keys: they
        are read again (at most every RELOAD_KEYS_EVERY_S) before the token is refused."""
        claims = self.tokens.verify(token)
        now = time.monotonic()
        if (
            claims is None and self.reload_keys is not None and TOKEN_SHAPE.match(token)
            and now - self._reloaded_at >= RELOAD_KEYS_EVERY_S
        ):
            self._reloaded_at = now
            await self.reload_keys()
            claims = self.tokens.verify(token)
        return claims

    async def honor(self, token: str, *, source: str) -> TokenClaims | None:
        """Suppress the token's recipient; None (and nothing changed) for a bad token."""
        claims = await self.claims(token)
        if claims is None:
            return None
        try:
            suppression_key(claims.recipient)
        except InvalidAddress:
            return None
        await self.suppressions.add(
            [claims.recipient],
            source=source,
            reason=f"unsubscribed (link for sender {claims.sender})",
            actor="recipient",
        )
        return claims


class TokenMatcher:
    """Callable: does this token belong to the recipient? Used to spot our own footers."""

    def __init__(self, tokens: UnsubscribeTokens, recipient: str) -> None:
        self.tokens = tokens
        self.recipient_key = suppression_key(recipient)

    def __call__(self, token: str) -> bool:
        claims = self.tokens.verify(token)
        if claims is None:
            return False
        try:
            return suppression_key(claims.recipient) == self.recipient_key
        except InvalidAddress:
            return False
