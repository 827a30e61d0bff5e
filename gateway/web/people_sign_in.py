"""Where every sign-in of a person ends: a session, or an audited refusal; and sign-out.

OIDC and SAML differ only in how they learn who signed in (an `Identity`); from there one
path records the person, refuses them when they are deactivated or no group of theirs maps
to a role, and otherwise opens a server-side session. The cookie is SameSite=Lax because
the identity provider's redirect back is a cross-site navigation; a cross-site POST still
carries no cookie, and every form that changes something also carries the session's CSRF
token. Shared-secret sign-in is the break-glass path: owners only once single sign-on is
configured, and only with `[sso] break_glass`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping

from aiohttp import web

from gateway.auth.sessions import ABSOLUTE_S, Sessions
from gateway.config.sso import SsoConfig
from gateway.model import Account, AuditEvent, Role
from gateway.runtime.client_address import client_address
from gateway.runtime.clock import Clock
from gateway.services.people import Identity, IdentityClash, InvalidUserName, People
from gateway.store.base import Conflict, Store, StoreUnavailable
from gateway.web.pages import Viewer, escape, page, read_form, same_origin, see_other

SESSION_COOKIE = "review_session"
MAX_FORM_BYTES = 4 * 1024


def as_bytes(text: str) -> bytes:
    """Any str a request carried, even one with undecodable bytes (surrogates)."""
    return text.encode("utf-8", "surrogateescape")


def csrf_token(session_token: str) -> str:
    """Derived from the session's secret token, so only its holder can know it."""
    return hmac.new(as_bytes(session_token), b"csrf", hashlib.sha256).hexdigest()[:32]


def refusal_body(problem: str) -> str:
    return (
        f'<p class="error" role="alert">{escape(problem)}</p>'
        '<p><a href="/review/login">Back to sign-in</a></p>'
    )


class PeopleSignIn:
    def __init__(
        self,
        store: Store,
        people: People,
        sessions: Sessions,
        clock: Clock,
        accounts: Callable[[], tuple[Account, ...]],
        sso: Callable[[], SsoConfig],
        secure_cookies: bool,
    ) -> None:
        self.store = store
        self.people = people
        self.sessions = sessions
        self.clock = clock
        self.accounts = accounts
        self.sso = sso
        self.secure_cookies = secure_cookies

    def register(self, app: web.Application) -> None:
        app.router.add_post("/auth/logout", self.logout)
        app.router.add_post("/review/logout", self.logout)

    def secret_sign_in_open_to(self, account: Account) -> bool:
        """Without single sign-on, managers and up sign in with their account's secret;
        with it, only owners, and only when `[sso] break_glass` keeps that door open."""
        sso = self.sso()
        if sso.configured:
            return sso.break_glass and account.role >= Role.OWNER
        return account.role >= Role.MANAGER

    def provider_configured(self, method: str) -> bool:
        """A person's session lasts only while the provider that opened it is configured."""
        kind, _, name = method.partition(":")
        sso = self.sso()
        providers = {"oidc": sso.oidc, "saml": sso.saml}.get(kind, ())
        return any(provider.name == name for provider in providers)

    @property
    def secret_sign_in_offered(self) -> bool:
        sso = self.sso()
        return not sso.configured or sso.break_glass

    async def viewer(self, request: web.Request) -> Viewer | None:
        """Who the request's live session belongs to, as things stand now: a person who is
        still active with the role the session was opened with, or an account that still
        exists and may still sign in with its secret."""
        token = request.cookies.get(SESSION_COOKIE, "")
        session = await self.sessions.current(token)
        if session is None:
            return None
        csrf = csrf_token(token)
        if session.person_id is not None:
            person = await self.store.person(session.person_id)
            if (person is None or not person.active or person.role != session.role
                    or not self.provider_configured(session.method)):
                await self.sessions.end(token)
                return None
            return Viewer(
                person.display_name or person.user_name, person.user_name,
                Role[session.role.upper()], session.method, csrf, person_id=person.person_id,
            )
        account = next((a for a in self.accounts() if a.name == session.account), None)
        if account is None or not self.secret_sign_in_open_to(account):
            return None
        return Viewer(account.name, account.name, account.role, session.method, csrf,
                      account=account.name)

    async def complete(
        self, request: web.Request, identity: Identity, roles: Mapping[str, Role], method: str
    ) -> web.Response:
        """The identity provider vouched for `identity`: a session, or a refusal."""
        try:
            person, before = await self.people.signed_in(identity, roles)
        except IdentityClash as clash:
            return await self.refused(
                request, method, "this email address belongs to a person who signs in with "
                "another identity", status=403, details={"person_id": str(clash)},
            )
        except InvalidUserName:
            return await self.refused(
                request, method, "this email address has characters that could stand for "
                "another address (compatibility characters), or an invalid domain", status=403,
            )
        except Conflict:
            return await self.refused(
                request, method, "this email address is another person's here", status=409,
            )
        details = {"method": method, "person_id": person.person_id}
        if before is not None and before.role != person.role:
            await self.audit(request, "person.role_changed", person.user_name,
                             {**details, "from": before.role, "to": person.role})
        # The active flag as stored now, after the sign-in was recorded (which never writes
        # it): a deactivation that got in first, or meanwhile, refuses this sign-in.
        stored = await self.store.person(person.person_id)
        if stored is None or not stored.active:
            return await self.refused(request, method, "this person is deactivated",
                                      status=403, actor=person.user_name, details=details)
        if person.role is None:
            return await self.refused(
                request, method, "none of this person's groups is given a role here",
                status=403, actor=person.user_name, details={**details, "groups": person.groups},
            )
        # Recorded before the session exists: no session without its audit entry.
        await self.audit(request, "review.signin", person.user_name,
                         {**details, "role": person.role})
        token = await self.sessions.open(role=person.role, method=method,
                                         person_id=person.person_id)
        return self.with_session(see_other("/review"), token)

    async def open_account_session(
        self, request: web.Request, account: Account, method: str
    ) -> web.Response:
        await self.audit(request, "review.signin", account.name, {"method": method})
        token = await self.sessions.open(
            role=account.role.name.lower(), method=method, account=account.name
        )
        return self.with_session(see_other("/review"), token)

    async def refused(
        self, request: web.Request, method: str, problem: str, *, status: int = 400,
        actor: str = "", details: Mapping[str, object] | None = None,
    ) -> web.Response:
        """An audited refusal, shown as a page that says what went wrong."""
        await self.audit(request, "review.signin_failed", actor,
                         {"method": method, "problem": problem, **(details or {})})
        return page("Sign-in failed", refusal_body(f"Sign-in failed: {problem}."),
                    status=status)

    def with_session(self, response: web.Response, token: str) -> web.Response:
        response.set_cookie(
            SESSION_COOKIE, token, max_age=ABSOLUTE_S, path="/", httponly=True,
            samesite="Lax", secure=self.secure_cookies,
        )
        return response

    async def logout(self, request: web.Request) -> web.Response:
        """Ends the session for a same-origin form that carries its CSRF token."""
        token = request.cookies.get(SESSION_COOKIE, "")
        if not same_origin(request) or (request.content_length or 0) > MAX_FORM_BYTES:
            return page("Sign out", refusal_body("This sign-out came from another site."),
                        status=403)
        try:
            form = await read_form(request, MAX_FORM_BYTES)
        except web.HTTPRequestEntityTooLarge:
            return page("Sign out", refusal_body("The sign-out form was too large."),
                        status=413)
        except ValueError:
            form = {}  # type: ignore[assignment]
        given = form.get("csrf")
        if token and not (isinstance(given, str)
                          and hmac.compare_digest(as_bytes(given), csrf_token(token).encode())):
            return page("Sign out", refusal_body("This sign-out form has expired; "
                        "sign out from a page of this site."), status=403)
        try:
            viewer = await self.viewer(request) if token else None
            await self.sessions.end(token)
            if viewer is not None:
                await self.audit(request, "review.signout", viewer.actor, {
                    "method": viewer.method,
                    **({"person_id": viewer.person_id} if viewer.person_id else {}),
                })
        except StoreUnavailable:
            response = page("Please try again", refusal_body(
                "The sign-out could not be recorded just now; please try again in a minute."),
                status=503)
            response.headers["Retry-After"] = "60"
            return response
        response = see_other("/review/login")
        response.del_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="Lax",
                            secure=self.secure_cookies)
        return response

    async def audit(
        self, request: web.Request, action: str, actor: str, details: Mapping[str, object],
        *, subject: str = "",
    ) -> None:
        """An entry naming the client's address; every sign-in and console change writes
        through here."""
        await self.store.append_audit(AuditEvent(
            time=self.clock.now(), actor=actor or "unknown", action=action, subject=subject,
            details={"remote": client_address(request), **details},
        ))
