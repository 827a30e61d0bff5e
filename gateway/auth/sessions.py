"""Server-side sessions for people at /review and the console.

The cookie carries 256 random bits; the store keeps their SHA-256, so a copy of the
database opens no session, and ending one is deleting its row, which every replica sees at
once (sign-out, a role change, a deactivated person, a changed or removed account). A
session lives at most `ABSOLUTE_S` and ends after `IDLE_S` without a request.
"""

from __future__ import annotations

import hashlib
import secrets

from gateway.runtime.clock import Clock
from gateway.store.base import SessionRow, SessionStore

ABSOLUTE_S = 8 * 3600
IDLE_S = 30 * 60
# A request refreshes the session's last use at most this often (a write per request
# would make every page view a write).
TOUCH_EVERY_S = 60


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


class Sessions:
    def __init__(self, store: SessionStore, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    async def open(
        self, *, role: str, method: str, person_id: str | None = None, account: str | None = None
    ) -> str:
        """A new session; returns the token for the cookie (kept nowhere else)."""
        token = secrets.token_urlsafe(32)
        now = self.clock.now().timestamp()
        await self.store.add_session(SessionRow(
            token_hash(token), method, role, now, now, now + ABSOLUTE_S,
            person_id=person_id, account=account,
        ))
        return token

    async def current(self, token: str) -> SessionRow | None:
        """The live session the cookie names: not expired, not idle too long (an idle one
        is ended), its last use refreshed."""
        if not token:
            return None
        hashed = token_hash(token)
        now = self.clock.now().timestamp()
        session = await self.store.session(hashed, now)
        if session is None:
            return None
        if now - session.last_seen_at >= IDLE_S:
            await self.store.end_sessions(session_hash=hashed)
            return None
        if now - session.last_seen_at >= TOUCH_EVERY_S:
            await self.store.touch_session(hashed, now)
        return session

    async def end(self, token: str) -> None:
        if token:
            await self.store.end_sessions(session_hash=token_hash(token))

    async def end_account_sessions(self, account: str) -> int:
        return await self.store.end_sessions(account=account)

    async def end_person_sessions(self, person_id: str) -> int:
        return await self.store.end_sessions(person_id=person_id)
