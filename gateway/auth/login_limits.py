"""Slowing password guessing down on every use of an account secret: SMTP AUTH, /review
sign-in, and the secret-bearing HTTP APIs (Postmark's server token, Twilio's Basic auth, the
admin API's bearer token). One secret opens all of them, so they share one count: a lockout
earned on one holds on all, and none is an unlimited oracle for the others.

After `max_failed_logins` failures within `failed_login_window_s`, from one client address
or against one account name, further attempts from that address or for that account are
refused with a temporary error for `login_lockout_s`, without looking at the password, so
a guess made during a lockout teaches nothing. Every lockout is audited and counted.

Only names of existing accounts are tracked by name, and the table of addresses is bounded,
so a flood of made-up names or addresses cannot grow memory without limit. Locking by name
lets someone lock a rep out for a while: a temporary refusal is the price of nobody being
able to guess that rep's secret from many addresses.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TypeVar

from gateway.config.settings import LoginLimitsConfig
from gateway.model import AuditEvent
from gateway.runtime.background import BackgroundWrites
from gateway.runtime.clock import Clock
from gateway.runtime.logs import log_event
from gateway.runtime.metrics import Metrics
from gateway.store.base import StoreUnavailable

log = logging.getLogger("gateway.auth.login_limits")

MAX_TRACKED_KEYS = 100_000
LOCKED_OUT_TEXT = "too many failed logins, try later"

_Found = TypeVar("_Found")


class LockedOut(Exception):
    """Attempts from this client address wait `retry_after_s` more seconds."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"{LOCKED_OUT_TEXT} (in {retry_after_s} s)")
        self.retry_after_s = retry_after_s


class LoginLimiter:
    def __init__(
        self,
        settings: LoginLimitsConfig,
        clock: Clock,
        metrics: Metrics,
        audit: Callable[[AuditEvent], Awaitable[object]],
        max_tracked: int = MAX_TRACKED_KEYS,
    ) -> None:
        self.max_failures = settings.max_failed_logins
        self.window_s = settings.failed_login_window_s
        self.lockout_s = settings.login_lockout_s
        self.clock = clock
        self.metrics = metrics
        self.audit = audit
        self.max_tracked = max_tracked
        self._failures: dict[str, deque[float]] = {}
        self._locked_until: dict[str, float] = {}
        self._audits = BackgroundWrites()

    @staticmethod
    def _keys(peer: str, account: str | None) -> list[str]:
        return [f"address {peer}"] + ([f"account {account}"] if account else [])

    def _now(self) -> float:
        return self.clock.now().timestamp()

    def locked(self, peer: str, account: str | None) -> bool:
        """Whether attempts from `peer`, or for the existing account `account`, wait."""
        return self._seconds_locked(peer, account) > 0

    def _seconds_locked(self, peer: str, account: str | None) -> float:
        now = self._now()
        return max(self._locked_until.get(key, now) - now for key in self._keys(peer, account))

    def account_for_secret(
        self, peer: str, ingress: str, find: Callable[[], _Found | None]
    ) -> _Found | None:
        """`find()` (the account the presented secret opens) unless `peer` is locked out,
        which raises LockedOut without looking at the secret; a miss counts as a failure."""
        seconds_locked = self._seconds_locked(peer, None)
        if seconds_locked > 0:
            raise LockedOut(math.ceil(seconds_locked))
        found = find()
        if found is None:
            self.failed(peer, None, ingress)
        return found

    def failed(self, peer: str, account: str | None, ingress: str) -> None:
        """Count one wrong password; lock whatever just reached the limit."""
        now = self._now()
        self.metrics.login_failures.labels(ingress).inc()
        self._forget_old(now)
        for key in self._keys(peer, account):
            recent = self._failures.setdefault(key, deque())
            recent.append(now)
            while recent and recent[0] <= now - self.window_s:
                recent.popleft()
            if len(recent) >= self.max_failures:
                del self._failures[key]
                self._lock(key, now, ingress, peer)

    def _lock(self, key: str, now: float, ingress: str, peer: str) -> None:
        self._locked_until[key] = now + self.lockout_s
        scope, _, subject = key.partition(" ")
        self.metrics.login_lockouts.labels(ingress, scope).inc()
        log_event(log, "login-locked-out", logging.WARNING, ingress=ingress, scope=scope,
                  subject=subject, peer=peer, seconds=self.lockout_s)
        event = AuditEvent(
            time=self.clock.now(), actor="gateway", action="login.locked_out", subject=key,
            details={"ingress": ingress, "peer": peer, "failures": self.max_failures,
                     "window_s": self.window_s, "lockout_s": self.lockout_s},
        )
        self._audits.start(self._write_audit(event))

    async def _write_audit(self, event: AuditEvent) -> None:
        """The lockout holds whether or not its audit entry could be written."""
        try:
            await self.audit(event)
        except StoreUnavailable as exc:
            log_event(log, "audit-write-failed", logging.ERROR, action=event.action,
                      error=str(exc))

    async def flush(self) -> None:
        """Wait for audit entries still being written (before the store closes)."""
        await self._audits.flush()

    def _forget_old(self, now: float) -> None:
        """Drop what no longer matters once the tables are full; then the oldest."""
        if len(self._failures) + len(self._locked_until) < self.max_tracked:
            return
        self._locked_until = {k: t for k, t in self._locked_until.items() if t > now}
        self._failures = {
            k: times for k, times in self._failures.items() if times[-1] > now - self.window_s
        }
        for key in list(self._failures)[: max(0, len(self._failures) - self.max_tracked // 2)]:
            del self._failures[key]
