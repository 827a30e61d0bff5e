"""Agent keys: generated secrets an agent presents instead of its account's shared secret.

A key is `cgk_<id>_<secret>`: the id finds its row without a scan, the 256-bit secret makes
guessing hopeless, which is why a valid key is never refused for others' failed guesses
(see `login_limits`). The store keeps only HMAC-SHA256(pepper, key), so a copy of the
database does not open anything; several keys per account let an agent rotate without a gap.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from datetime import datetime

from gateway.model import AGENT_KEY_PREFIX
from gateway.runtime.clock import Clock
from gateway.store.base import AgentKeyRegistry, AgentKeyRow

KEY_SHAPE = re.compile(r"^cgk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
# Writing a key's last use on every request would make each request a write; once a
# minute per key and process is as fresh as `keys list` needs.
LAST_USED_EVERY_S = 60.0


def looks_like_key(presented: str | bytes) -> bool:
    """Whether a presented secret is meant as an agent key (account secrets may not start
    with the key prefix; the configuration refuses that)."""
    text = presented.decode("utf-8", "replace") if isinstance(presented, bytes) else presented
    return text.startswith(AGENT_KEY_PREFIX)


def key_id_of(presented: str) -> str | None:
    match = KEY_SHAPE.match(presented)
    return match.group(1) if match else None


class AgentKeys:
    def __init__(self, store: AgentKeyRegistry, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self._pepper = b""
        self._written_use: dict[str, float] = {}

    def use_pepper(self, pepper: bytes) -> None:
        """Set once the shared keys are read (`Services.open`): every replica must digest
        with the same pepper."""
        self._pepper = pepper

    def digest(self, key: str) -> str:
        if not self._pepper:
            raise RuntimeError("no key pepper: call use_pepper first")
        return hmac.new(self._pepper, key.encode(), hashlib.sha256).hexdigest()

    async def create(self, account: str, expires_at: datetime | None) -> tuple[AgentKeyRow, str]:
        """A new key for `account`; the key itself is returned once and kept nowhere."""
        key_id = secrets.token_hex(8)
        key = f"{AGENT_KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        row = AgentKeyRow(key_id, account, self.digest(key), self.clock.now(), expires_at)
        await self.store.add_agent_key(row)
        return row, key

    async def account_for(self, presented: str | bytes) -> str | None:
        """The account a valid (known, unrevoked, unexpired) key belongs to, else None."""
        text = presented.decode("utf-8", "replace") if isinstance(presented, bytes) else presented
        key_id = key_id_of(text)
        if key_id is None:
            return None
        digest = self.digest(text)  # before the lookup: the time taken tells no id exists
        row = await self.store.agent_key(key_id)
        if row is None or not hmac.compare_digest(row.digest, digest):
            return None
        now = self.clock.now()
        if row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
            return None
        await self._note_use(key_id, now)
        return row.account

    async def _note_use(self, key_id: str, now: datetime) -> None:
        moment = time.monotonic()
        if moment - self._written_use.get(key_id, -LAST_USED_EVERY_S) < LAST_USED_EVERY_S:
            return
        self._written_use[key_id] = moment
        await self.store.agent_key_used(key_id, now)

    async def revoke(self, key_or_id: str) -> AgentKeyRow | None:
        """Revoke by id or by the key itself (what an operator holding a leaked key has);
        the key as it was, or None when there was no such key not yet revoked."""
        key_id = key_id_of(key_or_id) or key_or_id
        row = await self.store.agent_key(key_id)
        if row is None or not await self.store.revoke_agent_key(key_id, self.clock.now()):
            return None
        return row
