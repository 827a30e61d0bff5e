"""`/auth/saml/{name}/metadata`, `/login` and `/acs`: sign-in at a SAML 2.0 identity provider.

- `GET metadata`: our SP metadata (`application/samlmetadata+xml`) to give the IdP.
- `GET login`: a 303 to the IdP with an AuthnRequest (HTTP-Redirect binding), and the
  browser's nonce cookie the ACS will want (`gateway.auth.saml` explains the binding).
- `POST acs`: the IdP's Response (HTTP-POST binding), checked by `SamlSignIn.finish`; the
  person then ends where every sign-in ends (`PeopleSignIn.complete`). Every bad Response
  is an audited refusal page (400 malformed, 403 not to be trusted, 503 when the IdP's
  metadata or the store cannot be had), never a 500, never a session.

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
    BINDING_COOKIE,
    METADATA_MAX_BYTES,
    METADATA_TIMEOUT_S,
    REQUEST_LIFETIME_S,
    MetadataError,
    SamlRefused,
    SamlSignIn,
)
from gateway.config.settings import Config
from gateway.runtime.clock import Clock
from gateway.runtime.logs import log_event
from gateway.services.people import Identity
from gateway.store.base import OneTimeMarks, StoreUnavailable
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

    def __init__(self, providers: Sequence[SamlSignIn], fetcher: MetadataFetcher) -> None:
        self.providers = {p.name: p for p in providers}
        self.fetcher = fetcher
        self.sign_in: PeopleSignIn | None = None
        self._loading: list[asyncio.Task[bool]] = []

    @classmethod
    def from_config(cls, config: Config, marks: OneTimeMarks, clock: Clock) -> SamlRoutes:
        """One SamlSignIn per `[[sso.saml]]`. IdP metadata from a file is parsed now, so a
        file that is not usable metadata stops start-up before anything listens (ConfigError
        naming `sso.saml[i].idp_metadata`); metadata URLs are fetched when the app starts."""
        fetcher = MetadataFetcher()
        return cls(tuple(
            SamlSignIn(provider, config.public_url, marks, fetcher.fetch, index=index,
                       clock=lambda: clock.now().timestamp())
            for index, provider in enumerate(config.sso.saml)
        ), fetcher)

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
            started = await provider.start(request.cookies.get(BINDING_COOKIE, ""))
        except SamlRefused as refused:
            return await self._refused(request, provider, refused)
        response = web.Response(
            status=303, headers={**HEADERS, "Location": started.redirect_url})
        # SameSite=None: the IdP's POST to the ACS is cross-site and must carry it; Secure,
        # which SameSite=None needs (browsers keep it on http://127.0.0.1 and localhost).
        response.set_cookie(
            BINDING_COOKIE, started.nonce, max_age=REQUEST_LIFETIME_S,
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
        try:
            saml_response = await _posted_saml_response(request)
            person = await provider.finish(saml_response,
                                           request.cookies.get(BINDING_COOKIE, ""))
        except SamlRefused as refused:
            return await self._refused(request, provider, refused)
        except StoreUnavailable:
            raise
        except Exception as exc:  # a response no check foresaw: refused, and logged
            log.exception("saml-acs-failed")
            return await self._refused(request, provider, SamlRefused(
                "the sign-in response could not be processed", 400,
                f"{type(exc).__name__}: {exc}"))
        log_event(log, "saml-signed-in", provider=provider.name, groups=len(person.groups))
        identity = Identity(email=person.email, external_id=None,
                            display_name=person.display_name, groups=person.groups)
        assert self.sign_in is not None  # registered
        response = await self.sign_in.complete(request, identity, provider.provider.roles,
                                               provider.method)
        response.del_cookie(BINDING_COOKIE, path=provider.cookie_path, httponly=True,
                            secure=True, samesite="None")
        return response

    async def _refused(self, request: web.Request, provider: SamlSignIn,
                       refused: SamlRefused) -> web.Response:
        log_event(log, "saml-signin-refused", logging.WARNING, provider=provider.name,
                  status=refused.status, problem=refused.problem, detail=refused.detail[:500])
        assert self.sign_in is not None  # registered
        response = await self.sign_in.refused(
            request, provider.method, refused.problem, status=refused.status,
            details={"detail": refused.detail[:500]},
        )
        if refused.status == 503:
            response.headers["Retry-After"] = "60"
        return response


async def _posted_saml_response(request: web.Request) -> str:
    """The form's one SAMLResponse, read within MAX_ACS_BODY_BYTES; SamlRefused (400)
    for anything else."""
    if request.content_type != FORM_TYPE:
        raise SamlRefused("the sign-in response was not posted as a form", 400,
                          f"Content-Type {request.content_type!r}")
    length = request.content_length
    if length is not None and length > MAX_ACS_BODY_BYTES:
        raise SamlRefused("the sign-in response is too large", 400,
                          f"Content-Length {length}")
    body = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > MAX_ACS_BODY_BYTES:
            raise SamlRefused("the sign-in response is too large", 400,
                              f"more than {MAX_ACS_BODY_BYTES} bytes")
    try:
        fields = parse_qs(body.decode("ascii"), max_num_fields=MAX_ACS_FIELDS,
                          strict_parsing=False)
    except (UnicodeDecodeError, ValueError) as exc:
        raise SamlRefused("the sign-in response is not readable (not a form)", 400,
                          str(exc)) from None
    values = fields.get("SAMLResponse", [])
    if len(values) != 1 or not values[0]:
        raise SamlRefused("the sign-in form carried no SAML response", 400,
                          f"{len(values)} SAMLResponse fields")
    return values[0]


def _no_such_provider() -> web.Response:
    return page("Sign in", refusal_body("There is no such identity provider."), status=404)


def _try_again() -> web.Response:
    response = page("Please try again", refusal_body(
        "The sign-in could not be recorded just now; please try again in a minute."),
        status=503)
    response.headers["Retry-After"] = "60"
    return response
