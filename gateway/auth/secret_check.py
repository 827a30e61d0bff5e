"""The account a request's secret opens, or the answer for a client that is locked out.

Every HTTP surface that takes an account secret (Postmark's server token, Twilio's Basic
auth, the admin API's bearer token, the /review sign-in) goes through here, so each counts
its failures in the same table as SMTP AUTH and refuses a locked-out client the same way,
differing only in the shape of its error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from aiohttp import web

from gateway.auth.login_limits import LockedOut, LoginLimiter
from gateway.runtime.client_address import client_address

_Found = TypeVar("_Found")


def account_or_lockout(
    limits: LoginLimiter,
    request: web.Request,
    ingress: str,
    find: Callable[[], _Found | None],
    locked_out: Callable[[str], web.Response],
) -> _Found | web.Response | None:
    """`find()`'s account or None (a failure, counted); during a lockout, `locked_out`'s
    answer (given the reason) with Retry-After, the secret not looked at."""
    try:
        return limits.account_for_secret(client_address(request), ingress, find)
    except LockedOut as locked:
        response = locked_out(str(locked))
        response.headers["Retry-After"] = str(locked.retry_after_s)
        return response
