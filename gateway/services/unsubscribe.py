"""Opt-outs: issuing unsubscribe links and honoring them, whichever way they arrive.

The web page, the RFC 8058 one-click POST, the mailto address and the CLI all end in
`Suppressions.add`, which writes the suppression and its audit entry.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.addresses import InvalidAddress, suppression_key
from gateway.auth.unsubscribe_tokens import TokenClaims, UnsubscribeTokens
from gateway.model import AuditEvent, Channel, Suppression
from gateway.rewrite.footer import mailto_link
from gateway.runtime.clock import Clock
from gateway.runtime.metrics import Metrics
from gateway.store.base import Store


class Suppressions:
    def __init__(self, store: Store, clock: Clock, metrics: Metrics) -> None:
        self.store = store
        self.clock = clock
        self.metrics = metrics

    async def add(self, addresses: list[str], *, source: str, reason: str, actor: str) -> int:
        now = self.clock.now()
        keys = [suppression_key(a) for a in addresses]
        added = await self.store.add_suppressions(
            [Suppression(k, source, reason, now, actor) for k in keys]
        )
        await self.store.append_audit(
            AuditEvent(
                time=now,
                actor=actor,
                action="suppression.add",
                subject=",".join(keys),
                details={"source": source, "reason": reason, "count": len(keys), "new": added},
            )
        )
        self.metrics.unsubscribes.labels(source).inc(len(keys))
        return added

    async def remove(self, addresses: list[str], *, actor: str) -> int:
        """Every source's entry goes. The audit entry is written first: a lifted opt-out must
        never be without its record, even if the store fails in between."""
        keys = [suppression_key(a) for a in addresses]
        await self._audit_removal(keys, actor, {"count": len(keys)})
        return await self.store.remove_suppressions(keys)

    async def remove_from_source(self, addresses: list[str], source: str, *, actor: str) -> int:
        """Only `source`'s entries (START lifts a STOP); others stay in force."""
        keys = [suppression_key(a) for a in addresses]
        await self._audit_removal(keys, actor, {"source": source})
        return await self.store.remove_suppressions_from_source(keys, source)

    async def remove_with_source_prefix(
        self, addresses: list[str], prefix: str, *, actor: str
    ) -> int:
        """Only entries a provider caused (source `prefix…`)."""
        keys = [suppression_key(a) for a in addresses]
        await self._audit_removal(keys, actor, {"source_prefix": prefix})
        return await self.store.remove_suppressions_with_source_prefix(keys, prefix)

    async def _audit_removal(
        self, keys: list[str], actor: str, details: dict[str, object]
    ) -> None:
        await self.store.append_audit(
            AuditEvent(
                time=self.clock.now(),
                actor=actor,
                action="suppression.remove",
                subject=",".join(keys),
                details=details,
            )
        )


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
    ) -> None:
        self.tokens = tokens
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

    async def honor(self, token: str, *, source: str) -> TokenClaims | None:
        """Suppress the token's recipient; None (and nothing changed) for a bad token."""
        claims = self.tokens.verify(token)
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
