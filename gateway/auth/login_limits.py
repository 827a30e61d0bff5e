"""Slowing guessing down, by what is being guessed.

Account secrets (`[[accounts]] secret`, and the /review sign-in with one) are passwords a
person chose. One secret opens SMTP AUTH, the HTTP APIs and /review, so all of them share
one count: after `max_failed_logins` failures within `failed_login_window_s` against one
account name, or from one source prefix (an IPv4 /24 or an IPv6 /64: one attacker commonly
holds a whole one), further attempts for that account or from that prefix are refused for
`login_lockout_s` without looking at the secret, so a guess made during a lockout teaches
nothing.

Agent keys are 256-bit random: guessing one is hopeless, so a valid key is always accepted,
whatever others did from its network. Failed key attempts are counted per source prefix;
once a prefix has used `max_failed_keys_per_prefix` within the window, its failed attempts
are answered "too many" (HTTP 429) until the lockout ends.

The counts live in the store, so that replicas share them; when the store cannot be read,
no secret is checked (StoreUnavailable: the caller answers with a temporary failure).
Every lockout is audited once and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable

from gateway.config.settings import LoginLimitsConfig
from gateway.model import AuditEvent
from gateway.runtime.background import BackgroundWrites
from gateway.runtime.clock import Clock
from gateway.runtime.logs import log_event
from gateway.runtime.metrics import Metrics
from gateway.runtime.networks import network_of
from gateway.store.base import LoginCounters, StoreUnavailable

log = logging.getLogger("gateway.auth.login_limits")

LOCKED_OUT_TEXT = "too many failed logins, try later"
IPV4_PREFIX = 24


class LockedOut(Exception):
    """Attempts from this source (or for this account) wait `retry_after_s` more seconds."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"{LOCKED_OUT_TEXT} (in {retry_after_s} s)")
        self.retry_after_s = retry_after_s


def source_prefix(client: str) -> str:
    """The network a client address counts against: its /24 (IPv4, also when IPv4-mapped)
    or its /64 (IPv6); anything else (a Unix socket) as it is."""
    return network_of(client, IPV4_PREFIX)


class ScopeLocks:
    """One attempt at a time per scope in this process, from reading the lockout to counting
    the failure: parallel guesses cannot all pass the check before the first is counted.
    (Replicas each hold their own, so a burst spread over R replicas may overshoot the
    limit by at most R - 1 guesses.)"""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def held(self, scopes: list[str]) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            for scope in sorted(scopes):  # one order everywhere: no deadlock
                lock, users = self._locks.get(scope) or (asyncio.Lock(), 0)
                self._locks[scope] = (lock, users + 1)
                stack.callback(self._release_user, scope)
                await stack.enter_async_context(lock)
            yield

    def _release_user(self, scope: str) -> None:
        lock, users = self._locks[scope]
        if users == 1:
            del self._locks[scope]
        else:
            self._locks[scope] = (lock, users - 1)


class PasswordAttempt:
    """An attempt inside `LoginLimiter.password_attempt`: say `failed` for a wrong secret."""

    def __init__(self, limiter: LoginLimiter, scopes: list[str], client: str) -> None:
        self._limiter, self._scopes, self._client = limiter, scopes, client

    async def failed(self, ingress: str) -> None:
        await self._limiter.count(
            self._scopes, ingress, self._client, self._limiter.settings.max_failed_logins
        )


class LoginLimiter:
    def __init__(
        self,
        settings: LoginLimitsConfig,
        clock: Clock,
        metrics: Metrics,
        store: LoginCounters,
        audit: Callable[[AuditEvent], Awaitable[object]],
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.metrics = metrics
        self.store = store
        self.audit = audit
        self._audits = BackgroundWrites()
        self._in_flight = ScopeLocks()
        # Scopes whose failure could not be recorded (the store read but did not write):
        # locked here until then, so that a wrong guess answered "try later" and a right
        # one accepted do not make an unlimited oracle.
        self._uncounted: dict[str, float] = {}

    @staticmethod
    def _password_scopes(client: str, account: str | None) -> list[str]:
        return [f"prefix {source_prefix(client)}"] + ([f"account {account}"] if account else [])

    def _now(self) -> float:
        return self.clock.now().timestamp()

    @contextlib.asynccontextmanager
    async def password_attempt(
        self, client: str, account: str | None
    ) -> AsyncIterator[PasswordAttempt]:
        """Raise LockedOut while `client`'s prefix, or the existing account `account`, is
        locked out; otherwise the attempt, one at a time per scope, for the caller to
        compare the password in and report a failure through."""
        scopes = self._password_scopes(client, account)
        async with self._in_flight.held(scopes):
            await self._raise_if_locked(scopes)
            yield PasswordAttempt(self, scopes, client)

    async def account_locked(self, account: str) -> bool:
        """Whether the account is locked out (a lockout holds on every ingress, also on
        those whose secret names no account)."""
        now = self._now()
        scope = f"account {account}"
        return max(self._uncounted.get(scope, 0.0),
                   await self.store.login_locked_until([scope], now)) > now

    async def key_failed(self, client: str, ingress: str) -> None:
        """Count one wrong agent key against `client`'s prefix; raise LockedOut when the
        prefix has used up its budget (this failure included). A prefix already locked
        is told so without another write."""
        scope = f"keys {source_prefix(client)}"
        async with self._in_flight.held([scope]):
            await self._raise_if_locked([scope])
            await self.count([scope], ingress, client, self.settings.max_failed_keys_per_prefix)
            await self._raise_if_locked([scope])

    async def _raise_if_locked(self, scopes: list[str]) -> None:
        now = self._now()
        until = max(
            [self._uncounted.get(scope, 0.0) for scope in scopes]
            + [await self.store.login_locked_until(scopes, now)]
        )
        if until > now:
            raise LockedOut(math.ceil(until - now))

    async def count(self, scopes: list[str], ingress: str, client: str, limit: int) -> None:
        settings = self.settings
        now = self._now()
        self.metrics.login_failures.labels(ingress).inc()
        try:
            locked = await self.store.count_login_failure(
                scopes, now, settings.failed_login_window_s, limit, settings.login_lockout_s
            )
        except StoreUnavailable:
            self._uncounted = {k: t for k, t in self._uncounted.items() if t > now}
            for scope in scopes:
                self._uncounted[scope] = now + settings.login_lockout_s
            raise
        for scope in locked:
            self._locked(scope, ingress, client, limit)

    def _locked(self, key: str, ingress: str, client: str, limit: int) -> None:
        settings = self.settings
        scope, _, subject = key.partition(" ")
        self.metrics.login_lockouts.labels(ingress, scope).inc()
        log_event(log, "login-locked-out", logging.WARNING, ingress=ingress, scope=scope,
                  subject=subject, peer=client, seconds=settings.login_lockout_s)
        event = AuditEvent(
            time=self.clock.now(), actor="gateway", action="login.locked_out", subject=key,
            details={"ingress": ingress, "peer": client, "failures": limit,
                     "window_s": settings.failed_login_window_s,
                     "lockout_s": settings.login_lockout_s},
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
