"""What every page of the /review console shares: who may see it, how a change is posted,
and what a store outage looks like.

A page is a handler `(request, viewer)`; `Console.page(role, handler)` signs the request
in (each request re-reads the session, so sign-out, deactivation and role changes act at
once), refuses a role too low with a 403 page naming the role needed, and turns a store
that cannot be read into a 503 that asks for a retry. `Console.form` accepts a change only
from a same-origin form carrying the session's CSRF token: the session cookie is
SameSite=Lax, and the token is what keeps another site from posting on a signed-in
person's behalf.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from gateway.model import Role
from gateway.runtime.logs import log_event
from gateway.store.base import StoreUnavailable
from gateway.web.pages import Handler, Viewer, read_form, render_page, same_origin, see_other
from gateway.web.people_sign_in import MAX_FORM_BYTES, PeopleSignIn, as_bytes

ConsoleHandler = Callable[[web.Request, Viewer], Awaitable[web.StreamResponse]]
Form = MultiDictProxy[Any]


class Console:
    def __init__(self, sign_in: PeopleSignIn) -> None:
        self.sign_in = sign_in
        self.store = sign_in.store
        self.clock = sign_in.clock

    def page(self, needed: Role, handler: ConsoleHandler) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                viewer = await self.sign_in.viewer(request)
                if viewer is None:
                    return see_other("/review/login")
                if viewer.role < needed:
                    return render_page(
                        "console/refused.html", "Not open to your role", status=403,
                        viewer=viewer, needed=needed.name.lower(),
                    )
                return await handler(request, viewer)
            except StoreUnavailable:
                return unavailable(viewer=None)

        return handle  # type: ignore[return-value]

    async def form(
        self, request: web.Request, viewer: Viewer, max_bytes: int = MAX_FORM_BYTES
    ) -> Form | web.Response:
        """The posted form, or the page refusing it (another site, too large, unreadable,
        or without this session's CSRF token)."""
        if not same_origin(request):
            return refused(viewer, "This change came from another site.", 403)
        try:
            form = await read_form(request, max_bytes)
        except web.HTTPRequestEntityTooLarge:
            return refused(viewer, "The form was too large.", 413)
        except ValueError:
            return refused(viewer, "The form could not be read.", 400)
        given = form.get("csrf")
        if not (isinstance(given, str) and hmac.compare_digest(as_bytes(given),
                                                               viewer.csrf.encode())):
            return refused(viewer, "This form has expired; open the page again and resend.",
                           403)
        return form

    async def audit(
        self, request: web.Request, viewer: Viewer, action: str, details: dict[str, object],
        *, subject: str = "",
    ) -> None:
        """A console change in the audit log, naming the person (or account) who made it;
        `subject` names the addresses it concerns, so a privacy export finds the entry."""
        await self.sign_in.audit(request, action, viewer.actor, {
            "method": viewer.method,
            **({"person_id": viewer.person_id} if viewer.person_id else {}),
            **details,
        }, subject=subject)


CONSOLE_PREFIX = "/review"
ROUTING_PROBLEMS = {
    404: "There is no such page in the console.",
    405: "This address does not take that kind of request.",
}
log = logging.getLogger("gateway.web.console")


@web.middleware
async def console_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A console address the router refuses (404, 405) or a handler that fails is a
    console page too: aiohttp's own plain-text answers carried none of HEADERS (no
    Cache-Control, CSP or frame refusal), and a failure showed "500 Internal Server Error"
    instead of a page. A redirect (HTTPFound and friends) passes through."""
    if not (request.path == CONSOLE_PREFIX or request.path.startswith(CONSOLE_PREFIX + "/")):
        return await handler(request)
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = refused(None, ROUTING_PROBLEMS.get(exc.status, exc.reason), exc.status)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except (asyncio.CancelledError, ConnectionError):
        raise
    except Exception as exc:
        log_event(log, "console-page-failed", logging.ERROR, path=request.path,
                  error=f"{type(exc).__name__}: {exc}")
        return render_page("console/problem.html", "Something went wrong", status=500,
                           problem="This page failed; nothing more was changed. The "
                           "gateway's log has the details.")


def refused(viewer: Viewer | None, problem: str, status: int) -> web.Response:
    return render_page("console/problem.html", "Not done", status=status, viewer=viewer,
                       problem=problem)


def unavailable(viewer: Viewer | None) -> web.Response:
    response = render_page(
        "console/problem.html", "Please try again", status=503, viewer=viewer,
        problem="The store could not be read or written just now. Nothing was changed; "
        "please try again in a minute.",
    )
    response.headers["Retry-After"] = "60"
    return response
