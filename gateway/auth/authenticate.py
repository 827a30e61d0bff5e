"""Which account a presented secret opens: one path for SMTP AUTH, Postmark's server token,
Twilio's Basic auth, the admin API's bearer token and the /review sign-in.

An agent key (`cgk_…`) is checked first and, when valid, accepted whatever others did from
its network; a wrong one counts against the source prefix's key budget. Anything else is an
account secret, a password: a lockout of the account or the prefix is looked up before the
secret is, and a wrong one counts against both (see `login_limits`). Where the secret alone
is presented (a Postmark token, a bearer token, the /review form), no account is named, so
failures count against the prefix only; a locked account is still opened by none of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from gateway.auth.agent_keys import AgentKeys, key_id_of, looks_like_key
from gateway.auth.credentials import account_with_secret
from gateway.auth.login_limits import LoginLimiter
from gateway.model import Account


class Authenticator:
    def __init__(
        self, accounts: Callable[[], tuple[Account, ...]], keys: AgentKeys, limits: LoginLimiter
    ) -> None:
        self.accounts = accounts
        self.keys = keys
        self.limits = limits

    async def account(
        self,
        client: str,
        ingress: str,
        secret: str | bytes,
        *,
        login: str | None = None,
        name_ok: Callable[[Account], bool] | None = None,
        keys_accepted: bool = True,
    ) -> Account | None:
        """The account `secret` opens (None: wrong, counted), given by `client` on `ingress`
        with user name `login` where the protocol has one; `name_ok` says which accounts
        that user name may open. An agent key opens its account with `key_id` set to the
        key's id (the decision log records which key sent what). Raises LockedOut (the
        secret unread for a password) and StoreUnavailable (nothing checked)."""
        if not secret:
            return None  # nothing presented, nothing guessed
        if keys_accepted and looks_like_key(secret):
            account = await self._key_account(secret, name_ok)
            if account is None:
                await self.limits.key_failed(client, ingress)
            return account
        accounts = self.accounts()
        known = login if login and any(a.name == login for a in accounts) else None
        async with self.limits.password_attempt(client, known) as attempt:
            match = account_with_secret(accounts, secret, name_ok)
            if match is not None and known is None and await self.limits.account_locked(
                match.name
            ):
                # A secret that names no account opens no locked account either, and is
                # answered as a wrong one: a different answer would tell it was right.
                match = None
            if match is None:
                await attempt.failed(ingress)
        return match

    async def _key_account(
        self, key: str | bytes, name_ok: Callable[[Account], bool] | None
    ) -> Account | None:
        name = await self.keys.account_for(key)
        if name is None:
            return None
        account = next((a for a in self.accounts() if a.name == name), None)
        if account is None or (name_ok is not None and not name_ok(account)):
            return None
        text = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
        return replace(account, key_id=key_id_of(text))
