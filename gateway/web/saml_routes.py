"""`/auth/saml/{name}/metadata`, `/login` and `/acs`: sign-in at a SAML 2.0 identity provider.

- `GET metadata`: our SP metadata (`application/samlmetadata+xml`) to give the IdP.
- `GET login`: a 303 to the IdP with an AuthnRequest (HTTP-Redirect binding), and the
  browser's nonce cookie the ACS will want (`gateway.auth.saml` explains the binding). An
  IdP whose metadata cannot be had gives a 503 page, logged, not audited (anyone may ask).
- `POST acs`: a post without a nonce cookie the gateway made is refused (400) before its
  body is read, and not audited: nothing identifies anyone yet, and anyone may send one (as
  an OIDC callback not started in the browser). Otherwise the IdP's Response (HTTP-POST
  binding) is checked by `SamlSignIn.finish`, and the person ends where every sign-in ends
  (`PeopleSignIn.complete`). Every bad Response is an audited refusal page (400 malformed,
  403 not to be trusted, 503 when the IdP's metadata or the store cannot be had), never a
  500, never a session. The audit entry holds the problem and a reason, both fixed phrases
  of the gateway's (`SamlRefused`); what the library or the document said goes to the log.

Metadata from a URL is fetched here, over aiohttp, without following redirects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from urllib.parse import parse_qs

import aiohttp
from aiohttp import web

from gateway.auth.saml import (
    METADATA_MAX_BYTES,
    METADATA_TIMEOUT_S,
    NOT_STARTED_HERE,
    REQUEST_LIFETIME_S,
    MetadataError,
    SamlRefused,
    SamlSignIn,
    SamlStore,
)
from gateway.config.settings import Config
from gateway.runtime.clock import Clock
from gateway.runtime.logs import log_event
from gateway.services.people import Identity
from gateway.store.base import StoreUnavailable
from gateway.web.pages import HEADERS, page
from gateway.web.people_sign_in import PeopleSignIn, refusal_body

log = logging.getLogger("gateway.web.saml")

METADATA_CONTENT_TYPE = "application/samlmetadata+xml"
# The ACS form: a SAMLResponse (at most auth.saml.MAX_RESPONSE_CHARS) and a RelayState.
MAX_ACS_BODY_BYTES = 640 * 1024
MAX_ACS_FIELDS = 8
FORM_TYPE = "application/x-www-form-urlencoded"


class MetadataFetcher:
    """GETs IdP metadata: 200 only, no redirects, at most METADATA_MAX_BYTES."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def fetch(self, url: str) -> bytes:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                trust_env=True, timeout=aiohttp.ClientTimeout(total=METADATA_TIMEOUT_S))
        async with self._session.get(url, allow_redirects=False) as response:
            if response.status != 200:
                where = response.headers.get("Location")
                raise MetadataError(
                    f"answered HTTP {response.status}"
                    + (f" (redirected to {where}: configure that URL)" if where else ""))
            body = bytearray()
            async for chunk in response.content.iter_chunked(64 * 1024):
                body += chunk
                if len(body) > METADATA_MAX_BYTES:
                    raise MetadataError(f"larger than {METADATA_MAX_BYTES} bytes")
            return bytes(body)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class SamlRoutes:
    """Made with the gateway (`from_config`), registered with its HTTP app and the one end
    of every sign-in (`register`)."""

    def __init__(self, providers: Sequence[SamlSignIn], fetcher: MetadataFetcher, *,
                 scim: bool = False) -> None:
        """`scim`: SCIM provisions people (`[scim] token`), so an assertion without the
        groups attribute leaves the groups SCIM gave; without SCIM it is no groups, or a
        person taken out of every group at an IdP that then leaves the attribute out
        (Okta's group filter, Entra ID) would keep the role of their last sign-in."""
        self.providers = {p.name: p for p in providers}
        self.fetcher = fetcher
        self.scim = scim
        self.sign_in: PeopleSignIn | None = None
        self._loading: list[asyncio.Task[bool]] = []

    @classmethod
    def from_config(cls, config: Config, store: SamlStore, clock: Clock) -> SamlRoutes:
        """One SamlSignIn per `[[sso.saml]]`. IdP metadata from a file is parsed now, so a
        file that is not usable metadata stops start-up before anything listens (ConfigError
        naming `sso.saml[i].idp_metadata`); metadata URLs are fetched when the app starts."""
        fetcher = MetadataFetcher()
        return cls(tuple(
            SamlSignIn(provider, config.public_url, store, fetcher.fetch, index=index,
                       clock=lambda: clock.now().timestamp())
            for index, provider in enumerate(config.sso.saml)
        ), fetcher, scim=bool(config.sso.scim.token))

    def register(self, app: web.Application, sign_in: PeopleSignIn) -> None:
        if not self.providers:
            return
        self.sign_in = sign_in
        app.router.add_get("/auth/saml/{name}/metadata", self.metadata)
        app.router.add_get("/auth/saml/{name}/login", self.login)
        app.router.add_post("/auth/saml/{name}/acs", self.acs)
        app.on_startup.append(self._load_metadata)
        app.on_cleanup.append(self._close)

    async def _load_metadata(self, _app: web.Application) -> None:
        """Metadata URLs are fetched as the gateway starts, without holding it up: sign-in
        waits for a fetch still under way; one that fails is logged and tried again later."""
        self._loading = [asyncio.create_task(p.idp.load()) for p in self.providers.values()
                         if p.provider.idp_metadata_url]

    async def _close(self, _app: web.Application) -> None:
        for task in self._loading:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.fetcher.close()

    def _provider(self, request: web.Request) -> SamlSignIn | None:
        return self.providers.get(request.match_info["name"])

    async def metadata(self, request: web.Request) -> web.Response:
        provider = self._provider(request)
        if provider is None:
            return _no_such_provider()
        return web.Response(
            text=provider.sp_metadata(), content_type=METADATA_CONTENT_TYPE,
            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
        )

    async def login(self, request: web.Request) -> web.Response:
        provider = self._provider(request)
        if provider is None:
            return _no_such_provider()
        try:
            return await self._login(request, provider)
        except StoreUnavailable:
            return _try_again()

    async def _login(self, request: web.Request, provider: SamlSignIn) -> web.Response:
        try:
            started = await provider.start(request.cookies.get(provider.cookie_name, ""))
        except SamlRefused as refused:
            # Not audited: no one is identified, and anyone may ask (the log says why).
            log_event(log, "saml-login-unavailable", logging.WARNING, provider=provider.name,
                      status=refused.status, reason=refused.reason,
                      detail=refused.detail[:500])
            response = page("Sign-in unavailable",
                            refusal_body(f"Sign-in failed: {refused.problem}."),
                            status=refused.status)
            if refused.status == 503:
                response.headers["Retry-After"] = "60"
            return response
        response = web.Response(
            status=303, headers={**HEADERS, "Location": started.redirect_url})
        # SameSite=None: the IdP's POST to the ACS is cross-site and must carry it; Secure,
        # which SameSite=None needs (browsers keep it on http://127.0.0.1 and localhost);
        # Path=/ and no Domain, which the `__Host-` name on https requires.
        response.set_cookie(
            provider.cookie_name, started.nonce, max_age=REQUEST_LIFETIME_S,
            path=provider.cookie_path, httponly=True, secure=True, samesite="None",
        )
        return response

    async def acs(self, request: web.Request) -> web.Response:
        provider = self._provider(request)
        if provider is None:
            return _no_such_provider()
        try:
            return await self._acs(request, provider)
        except StoreUnavailable:
            return _try_again()

    async def _acs(self, request: web.Request, provider: SamlSignIn) -> web.Response:
        nonce = request.cookies.get(provider.cookie_name, "")
        if not await provider.issued(nonce):
            # Before the body is read, and not audited: nothing identifies anyone yet, and
            # anyone may send this (the page says only what our code says).
            return page("Sign-in failed", refusal_body(f"Sign-in failed: {NOT_STARTED_HERE}."),
                        status=400)
        try:
            saml_response = await _posted_saml_response(request)
            person = await provider.finish(saml_response, nonce)
        except SamlRefused as refused:
            return await self._refused(request, provider, refused)
        except StoreUnavailable:
            raise
        except Exception as exc:  # a response no check foresaw: refused, and logged
            log.exception("saml-acs-failed")
            return await self._refused(request, provider, SamlRefused(
                "the sign-in response could not be processed", 400,
                f"{type(exc).__name__}: {exc}", reason="not processable"))
        groups = person.groups
        if groups is None and not self.scim:
            groups = ()  # nothing else speaks for this person's groups
        log_event(log, "saml-signed-in", provider=provider.name,
                  groups="not sent" if person.groups is None else len(person.groups))
        identity = Identity(email=person.email, external_id=None,
                            display_name=person.display_name, groups=groups)
        assert self.sign_in is not None  # registered
        response = await self.sign_in.complete(request, identity, provider.provider.roles,
                                               provider.method)
        response.del_cookie(provider.cookie_name, path=provider.cookie_path, httponly=True,
                            secure=True, samesite="None")
        return response

    async def _refused(self, request: web.Request, provider: SamlSignIn,
                       refused: SamlRefused) -> web.Response:
        log_event(log, "saml-signin-refused", logging.WARNING, provider=provider.name,
                  status=refused.status, reason=refused.reason, problem=refused.problem,
                  detail=refused.detail[:500])
        assert self.sign_in is not None  # registered
        # The audit entry: our own fixed words only (the detail may quote the request).
        response = await self.sign_in.refused(
            request, provider.method, refused.problem, status=refused.status,
            details={"reason": refused.reason},
        )
        if refused.status == 503:
            response.headers["Retry-After"] = "60"
        return response


async def _posted_saml_response(request: web.Request) -> str:
    """The form's one SAMLResponse, read within MAX_ACS_BODY_BYTES; SamlRefused (400)
    for anything else."""
    if request.content_type != FORM_TYPE:
        raise SamlRefused("the sign-in response was not posted as a form", 400,
                          f"Content-Type {request.content_type[:100]!r}", reason="not a form")
    length = request.content_length
    if length is not None and length > MAX_ACS_BODY_BYTES:
        raise SamlRefused("the sign-in response is too large", 400,
                          f"Content-Length {length}", reason="too large")
    body = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > MAX_ACS_BODY_BYTES:
            raise SamlRefused("the sign-in response is too large", 400,
                              f"more than {MAX_ACS_BODY_BYTES} bytes", reason="too large")
    try:
        fields = parse_qs(body.decode("ascii"), max_num_fields=MAX_ACS_FIELDS,
                          strict_parsing=False)
    except (UnicodeDecodeError, ValueError) as exc:
        raise SamlRefused("the sign-in response is not readable (not a form)", 400,
                          str(exc)[:200], reason="not a form") from None
    values = fields.get("SAMLResponse", [])
    if len(values) != 1 or not values[0]:
        raise SamlRefused("the sign-in form carried no SAML response", 400,
                          f"{len(values)} SAMLResponse fields", reason="no SAMLResponse")
    return values[0]


def _no_such_provider() -> web.Response:
    return page("Sign in", refusal_body("There is no such identity provider."), status=404)


def _try_again() -> web.Response:
    response = page("Please try again", refusal_body(
        "The sign-in could not be recorded just now; please try again in a minute."),
        status=503)
    response.headers["Retry-After"] = "60"
    return response
