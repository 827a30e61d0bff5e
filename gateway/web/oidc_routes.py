"""`/auth/oidc/{name}/login` and `/callback`: sign-in at an OpenID Provider.

The browser's sign-in is tied to it by a cookie scoped to the provider's path, holding the
`state`, the PKCE verifier and the nonce: a callback is accepted only with the `state` its
cookie holds (no login CSRF), once (a replayed callback URL is refused on every replica),
and within `PENDING_S`. An identity provider that is down gives a page that says so;
nothing else is affected (sending never depends on it).
"""

from __future__ import annotations

import hashlib
import hmac

import aiohttp
from aiohttp import web

from gateway.auth.oidc import OidcClient, PendingSignIn, ProviderUnreachable, SignInFailed
from gateway.config.sso import OidcProvider
from gateway.runtime.clock import Clock
from gateway.services.people import Identity
from gateway.store.base import OneTimeMarks, StoreUnavailable
from gateway.web.pages import page, see_other
from gateway.web.people_sign_in import PeopleSignIn, as_bytes, refusal_body

PENDING_S = 600
MAX_CALLBACK_FIELD = 4096


def pending_cookie(name: str) -> str:
    return f"oidc_{name}"


class OidcRoutes:
    def __init__(
        self, providers: tuple[OidcProvider, ...], public_url: str, sign_in: PeopleSignIn,
        marks: OneTimeMarks, clock: Clock, secure_cookies: bool,
    ) -> None:
        self.sign_in = sign_in
        self.sso = sign_in.sso
        self.marks = marks
        self.clock = clock
        self.secure_cookies = secure_cookies
        self._session: aiohttp.ClientSession | None = None
        self.clients = {
            p.name: OidcClient(
                p, f"{public_url}/auth/oidc/{p.name}/callback", self._http,
                lambda: self.clock.now().timestamp(),
            )
            for p in providers
        }

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(trust_env=True)
        return self._session

    async def close(self, _app: web.Application | None = None) -> None:
        if self._session is not None:
            await self._session.close()

    def register(self, app: web.Application) -> None:
        app.router.add_get("/auth/oidc/{name}/login", self.login)
        app.router.add_get("/auth/oidc/{name}/callback", self.callback)
        app.on_cleanup.append(self.close)

    def _cookie_path(self, name: str) -> str:
        return f"/auth/oidc/{name}/"

    async def login(self, request: web.Request) -> web.Response:
        client = self.clients.get(request.match_info["name"])
        if client is None:
            return page("Sign in", refusal_body("There is no such identity provider."),
                        status=404)
        pending = PendingSignIn.new()
        try:
            location = await client.authorization_url(pending)
        except (ProviderUnreachable, SignInFailed) as exc:
            return _unreachable(client.provider.name, str(exc))
        response = see_other(location)
        response.set_cookie(
            pending_cookie(client.provider.name), pending.cookie_value(), max_age=PENDING_S,
            path=self._cookie_path(client.provider.name), httponly=True, samesite="Lax",
            secure=self.secure_cookies,
        )
        return response

    async def callback(self, request: web.Request) -> web.Response:
        client = self.clients.get(request.match_info["name"])
        if client is None:
            return page("Sign in", refusal_body("There is no such identity provider."),
                        status=404)
        name = client.provider.name
        method = f"oidc:{name}"
        try:
            response = await self._finish(request, client, method)
        except StoreUnavailable:
            response = page("Please try again", refusal_body(
                "The sign-in could not be recorded just now; please try again in a minute."),
                status=503)
            response.headers["Retry-After"] = "60"
        response.del_cookie(pending_cookie(name), path=self._cookie_path(name),
                            httponly=True, samesite="Lax", secure=self.secure_cookies)
        return response

    async def _finish(
        self, request: web.Request, client: OidcClient, method: str
    ) -> web.Response:
        query = request.query
        pending = PendingSignIn.from_cookie(
            request.cookies.get(pending_cookie(client.provider.name), "")
        )
        state, code = query.get("state", ""), query.get("code", "")
        if (pending is None or any(len(v) > MAX_CALLBACK_FIELD for v in query.values())
                or not hmac.compare_digest(as_bytes(state), pending.state.encode())):
            # Not audited: nothing identifies anyone yet, and anyone may send this.
            return page("Sign-in failed", refusal_body(
                "Sign-in failed: this sign-in was not started in this browser or took longer "
                "than 10 minutes; please start again."), status=400)
        error = query.get("error")
        if error:
            # Only the RFC 6749 error code, cut short: the description is the provider's
            # free text, and this page must not carry anyone's words.
            shown = "".join(c for c in error[:64] if c.isascii() and c.isprintable())
            return await self.sign_in.refused(
                request, method, f"the identity provider answered {shown!r}", status=403
            )
        if not code:
            return await self.sign_in.refused(request, method, "the answer carried no code")
        now = self.clock.now().timestamp()
        mark = "oidc-state:" + hashlib.sha256(pending.state.encode()).hexdigest()
        if not await self.marks.use_once(mark, now, now + PENDING_S):
            return await self.sign_in.refused(request, method, "this sign-in was already used")
        try:
            signed_in = await client.finish(code, pending)
        except ProviderUnreachable as exc:
            await self.sign_in.audit(request, "review.signin_failed", "", {
                "method": method, "problem": f"identity provider unreachable: {exc}"})
            return _unreachable(client.provider.name, str(exc))
        except SignInFailed as exc:
            return await self.sign_in.refused(request, method, str(exc), status=403)
        identity = Identity(
            email=signed_in.email,
            external_id=self.sso().external_id(client.provider.name, signed_in.subject),
            display_name=signed_in.name, groups=signed_in.groups,
        )
        return await self.sign_in.complete(request, identity, client.provider.roles, method)


def _unreachable(name: str, why: str) -> web.Response:
    response = page("Sign-in unavailable", refusal_body(
        f"The identity provider {name!r} cannot be used just now: {why}. Sending is not "
        "affected; please try again in a few minutes."), status=503)
    response.headers["Retry-After"] = "60"
    return response
