"""Unsubscribe links: issuing them for each recipient, and honoring them, whichever way
they arrive (the web page, the RFC 8058 one-click POST, the mailto address); each ends in
`Suppressions.add`. The page also says whether the recipient is unsubscribed already, and
lets them undo an unsubscribe made by mistake.

The undo lifts only what this link's page or one-click POST recorded. So that an entry is
known to be that, a one-click opt-out is stored under a source that names its link,
`one-click:<link id>` (the link id is a digest of the token: it names the link without being
it), one entry per link: two links' opt-outs are two entries, and undoing one leaves the
other in force, as it leaves a STOP text, a bounce, a spam complaint, an operator's or an
import's suppression, a mailto opt-out, an opt-out taken before link ids existed (source
`one-click`) and every other spelling of the mailbox. Holding the link is the capability
(it is what unsubscribed); an agent's credentials give no way to undo anything.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from gateway.addresses import InvalidAddress, suppression_key
from gateway.auth.unsubscribe_tokens import TOKEN_SHAPE, TokenClaims, UnsubscribeTokens
from gateway.model import Channel, Suppression
from gateway.rewrite.footer import mailto_link
from gateway.runtime.clock import Clock
from gateway.services.suppressions import Suppressions

RELOAD_KEYS_EVERY_S = 10.0
ONE_CLICK = "one-click"
"""How the page's button and the RFC 8058 POST arrive (`honor`'s source, the metric label)."""
UNDO_ACTOR = "recipient via /u"
LINK_ID_HEX = 16
UNDO_WINDOW = timedelta(minutes=15)
"""How long after unsubscribing on the page its browser may undo it."""
UNDO_PASS_SKEW = timedelta(seconds=60)
"""A pass stamped this far ahead of this replica's clock (another replica's) still counts."""
_UNDO_PASS_LABEL = b"gateway unsubscribe undo pass v1"


def link_id(token: str) -> str:
    """Names a link in the entry it made, in logs and the audit log, without being the link
    (which unsubscribes and undoes): 64 bits of its SHA-256."""
    return hashlib.sha256(token.encode()).hexdigest()[:LINK_ID_HEX]


def one_click_source(token: str) -> str:
    """The source of the entry this link's page or one-click POST records."""
    return f"{ONE_CLICK}:{link_id(token)}"


@dataclass(frozen=True)
class LinkStatus:
    """What the page shows for a link: `suppressed`, the recipient is on the list (from any
    source, under any key of their mailbox); `undoable`, this link's own opt-out is among
    the entries, so "I unsubscribed by mistake" can lift it."""

    claims: TokenClaims
    suppressed: bool
    undoable: bool


@dataclass(frozen=True)
class Undone:
    """`lifted`: the entry removed (None: this link's opt-out was not in force, nothing
    changed); `still_suppressed`: another entry keeps the recipient on the list."""

    claims: TokenClaims
    lifted: Suppression | None
    still_suppressed: bool


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

    def links(
        self, recipient: str, sender: str, channel: Channel, sender_name: str = ""
    ) -> UnsubscribeLinks:
        """`sender_name`: the name the message's footer gives (its `[sender] name`), which
        the unsubscribe page shows."""
        token = self.tokens.issue(recipient, sender, channel, self.clock.now(), sender_name)
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
        """Suppress the token's recipient; None (and nothing changed) for a bad token. A
        ONE_CLICK opt-out (the page's button, the RFC 8058 POST) is stored under its link's
        own source (`one_click_source`), which the undo looks for."""
        honored = await self.honor_counted(token, source=source)
        return honored[0] if honored is not None else None

    async def honor_counted(
        self, token: str, *, source: str
    ) -> tuple[TokenClaims, bool] | None:
        """As `honor`, with whether this request recorded the entry (False: it was there
        already, so this request may not be handed an undo pass for it)."""
        claims = await self._claims_with_key(token)
        if claims is None:
            return None
        entry_source = one_click_source(token) if source == ONE_CLICK else source
        key = suppression_key(claims.recipient)
        existed = any(
            entry.address == key and entry.source == entry_source
            for entry in await self.suppressions.store.suppression_entries([key])
        )
        await self.suppressions.add(
            [claims.recipient],
            source=entry_source,
            reason=f"unsubscribed (link for sender {claims.sender})",
            actor="recipient",
            metric_source=source,
        )
        return claims, not existed

    def _undo_mac(self, key: bytes, token: str, stamp: str, nonce: str) -> str:
        derived = hmac.new(key, _UNDO_PASS_LABEL, hashlib.sha256).digest()
        message = f"{link_id(token)}.{stamp}.{nonce}".encode()
        return hmac.new(derived, message, hashlib.sha256).hexdigest()

    def undo_pass(self, token: str) -> str:
        """A pass for the browser that just unsubscribed with this link: a random nonce,
        the time, and an HMAC binding both to the link under the active token key."""
        key_id = self.tokens.active_key_id
        key = self.tokens.keys[key_id][0]
        stamp = str(int(self.clock.now().timestamp()))
        nonce = secrets.token_urlsafe(16)
        return f"{key_id}.{stamp}.{nonce}.{self._undo_mac(key, token, stamp, nonce)}"

    def undo_pass_valid(self, token: str, value: str | None) -> bool:
        """Is `value` a pass issued for this link within UNDO_WINDOW?"""
        if not value:
            return False
        parts = value.split(".")
        if len(parts) != 4 or not parts[1].isdigit():
            return False
        key_id, stamp, nonce, mac = parts
        if not any(
            hmac.compare_digest(self._undo_mac(key, token, stamp, nonce), mac)
            for key in self.tokens.keys.get(key_id, ())
        ):
            return False
        age = self.clock.now().timestamp() - int(stamp)
        return -UNDO_PASS_SKEW.total_seconds() <= age <= UNDO_WINDOW.total_seconds()

    async def status(self, token: str) -> LinkStatus | None:
        """Whether the link's recipient is unsubscribed already, and whether by this link's
        page or one-click POST; None for a bad token."""
        claims = await self._claims_with_key(token)
        if claims is None:
            return None
        store = self.suppressions.store
        key = suppression_key(claims.recipient)
        suppressed = bool(await store.suppressed(self.suppressions.lookup_keys([key])))
        source = one_click_source(token)
        undoable = suppressed and any(
            entry.address == key and entry.source == source
            for entry in await store.suppression_entries([key])
        )
        return LinkStatus(claims, suppressed, undoable)

    async def undo(self, token: str) -> Undone | None:
        """"I unsubscribed by mistake": lift this link's own one-click entry and nothing
        else, audited (actor UNDO_ACTOR, the entry named); None for a bad token."""
        claims = await self._claims_with_key(token)
        if claims is None:
            return None
        key = suppression_key(claims.recipient)
        lifted = await self.suppressions.lift_entry(
            key,
            one_click_source(token),
            actor=UNDO_ACTOR,
            details={
                "why": "the recipient unsubscribed by mistake (undo on the unsubscribe page)",
                "link": link_id(token),
                "sender": claims.sender,
                "link_issued_at": claims.issued_at.isoformat(),
            },
        )
        store = self.suppressions.store
        still = bool(await store.suppressed(self.suppressions.lookup_keys([key])))
        return Undone(claims, lifted, still)

    async def _claims_with_key(self, token: str) -> TokenClaims | None:
        """The claims of an authentic token whose recipient has a suppression key."""
        claims = await self.claims(token)
        if claims is None:
            return None
        try:
            suppression_key(claims.recipient)
        except InvalidAddress:
            return None
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
