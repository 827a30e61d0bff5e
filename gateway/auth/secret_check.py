"""The account an HTTP request's secret opens, or the answer for a client that must wait.

Every HTTP surface that takes a secret (Postmark's server token, Twilio's Basic auth, the
admin API's bearer token, the /review sign-in) goes through here, so each counts its
failures with SMTP AUTH's and refuses the same way, differing only in its error's shape.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from gateway.auth.authenticate import Authenticator
from gateway.auth.login_limits import LockedOut
from gateway.model import Account
from gateway.runtime.client_address import client_address
from gateway.store.base import StoreUnavailable

# How long a client is asked to wait when the sign-in counts cannot be read.
STORE_RETRY_AFTER_S = 30
CREDENTIALS_UNCHECKED = (
    "STORE_UNAVAILABLE: credentials cannot be checked just now; nothing was sent; retry"
)


async def account_or_refusal(
    authenticator: Authenticator,
    request: web.Request,
    ingress: str,
    refuse: Callable[[int, str], web.Response],
    secret: str | bytes,
    *,
    login: str | None = None,
    name_ok: Callable[[Account], bool] | None = None,
    keys_accepted: bool = True,
) -> Account | web.Response | None:
    """The account (None: wrong secret, counted); otherwise `refuse`'s answer (given a status
    and the reason) with Retry-After: 429 during a lockout, 503 when the store that keeps
    the counts and keys cannot be read (nothing was checked; fail closed)."""
    try:
        return await authenticator.account(
            client_address(request), ingress, secret,
            login=login, name_ok=name_ok, keys_accepted=keys_accepted,
        )
    except LockedOut as locked:
        response = refuse(429, str(locked))
        response.headers["Retry-After"] = str(locked.retry_after_s)
    except StoreUnavailable:
        response = refuse(503, CREDENTIALS_UNCHECKED)
        response.headers["Retry-After"] = str(STORE_RETRY_AFTER_S)
    return response
