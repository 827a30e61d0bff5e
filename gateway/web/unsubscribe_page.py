"""The unsubscribe page, the RFC 8058 one-click endpoint, and the undo of a mistaken click.

GET and HEAD only show a page: link scanners and mail security gateways fetch every link,
so nothing but a POST may unsubscribe. No redirects anywhere (RFC 8058 s3.2). The page names
the sender (the `[sender] name` the message's footer gave, signed into the link; the
configured one for links issued before), says when the recipient is unsubscribed already,
and after an unsubscribe made with this page's own form offers "I unsubscribed by mistake":
a POST to `/u/{token}/undo` that lifts that link's own opt-out and nothing else
(`services.unsubscribe`). The link alone does not undo: it is in every message's footer, so
anyone a reply quoted it to holds it. The undo needs the pass the unsubscribe's response put
in an HttpOnly, SameSite=Strict cookie scoped to `/u/`, within UNDO_WINDOW; without it the
answer is 403 and the opt-out stands. An RFC 8058 one-click POST (a mail client, no browser)
gets no pass and cannot be undone here. The undo form is also refused from another origin.
No JavaScript (the Content-Security-Policy forbids it), no framing. The views are
templates/unsubscribe.html's, in the bare shell.html that the console's base.html extends
(a recipient gets no console navigation), with the console pages' security headers for the
page's own style.
"""

from __future__ import annotations

import logging

from aiohttp import web
from markupsafe import Markup

from gateway.auth.unsubscribe_tokens import TokenClaims
from gateway.runtime.logs import log_event
from gateway.services.unsubscribe import ONE_CLICK, UNDO_WINDOW, Unsubscribe, link_id
from gateway.store.base import StoreUnavailable
from gateway.web.pages import read_form, same_origin, security_headers
from gateway.web.templating import render

log = logging.getLogger("gateway.services.unsubscribe")

ONE_CLICK_FIELD = "List-Unsubscribe"
ONE_CLICK_VALUE = "One-Click"
VIA_FIELD = "via"
VIA_PAGE = "page"
"""Marks the page's own form: only its unsubscribe (a browser) is handed an undo pass."""
UNDO_COOKIE_PREFIX = "undo-"
UNDO_COOKIE_PATH = "/u/"
MAX_FORM_BYTES = 16 * 1024

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 32rem; margin: 3rem auto; padding: 0 1rem;
       line-height: 1.5; color: #1a1a1a; background: #fff; }
button { font-size: 1.1rem; padding: .6rem 1.4rem; border: 2px solid #1a1a1a; border-radius: 6px;
         background: #1a1a1a; color: #fff; cursor: pointer; }
button.secondary { background: #fff; color: #1a1a1a; }
button:focus { outline: 3px solid #b35c00; outline-offset: 2px; }
form { margin: 1.5rem 0; }
.hint { color: #404040; }
"""
HEADERS = security_headers(STYLE)
UNDO_MINUTES = int(UNDO_WINDOW.total_seconds() // 60)


def _page(title: str, view: str, status: int = 200, **context: object) -> web.Response:
    """One of unsubscribe.html's views in the page's own shell: a recipient's page, with
    no console navigation and a narrower style of its own."""
    text = render("unsubscribe.html", title=title, view=view, style=Markup(STYLE),
                  minutes=UNDO_MINUTES, **context)
    return web.Response(text=text, status=status, content_type="text/html", headers=HEADERS)


def _invalid_link() -> web.Response:
    return _page("This link is not valid", "invalid_link", status=404)


def _try_again() -> web.Response:
    response = _page("Please try again", "try_again", status=503)
    response.headers["Retry-After"] = "60"
    return response


def undo_cookie_name(token: str) -> str:
    """One cookie per link, so two links unsubscribed in one browser keep both passes."""
    return UNDO_COOKIE_PREFIX + link_id(token)


class UnsubscribeRoutes:
    def __init__(self, unsubscribe: Unsubscribe, sender_name: str = "") -> None:
        """`sender_name`: the configured `[sender] name`, shown for links that do not carry
        the name they were issued with."""
        self.unsubscribe = unsubscribe
        self.sender_name = sender_name
        self.secure_cookies = unsubscribe.url_prefix.startswith("https://")

    def _may_undo(self, request: web.Request, token: str) -> bool:
        """This browser unsubscribed with this link's page within UNDO_WINDOW."""
        return self.unsubscribe.undo_pass_valid(
            token, request.cookies.get(undo_cookie_name(token))
        )

    def register(self, app: web.Application) -> None:
        app.router.add_get("/u/{token}", self.show, allow_head=True)
        app.router.add_post("/u/{token}", self.confirm)
        app.router.add_post("/u/{token}/undo", self.undo)

    def _sender(self, claims: TokenClaims) -> str:
        """Who the recipient heard from: the name the link was issued with, else the
        configured one, else the sending address."""
        return claims.sender_name or self.sender_name or claims.sender or "the sender"

    async def show(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        try:
            status = await self.unsubscribe.status(token)
        except StoreUnavailable:
            return _try_again()
        if status is None:
            return _invalid_link()
        claims = status.claims
        about = {"token": token, "recipient": claims.recipient, "sender": self._sender(claims),
                 "address": claims.sender}
        if status.suppressed:
            return _page(
                "You are already unsubscribed", "already",
                undoable=status.undoable and self._may_undo(request, token), **about,
            )
        return _page("Unsubscribe", "confirm", **about)

    async def confirm(self, request: web.Request) -> web.Response:
        try:
            form = await read_form(request, MAX_FORM_BYTES)
        except web.HTTPRequestEntityTooLarge:
            return _page("Request too large", "too_large", status=413)
        except ValueError:
            return _page("Bad request", "unreadable", status=400)
        if form.get(ONE_CLICK_FIELD) != ONE_CLICK_VALUE:
            return _page("Bad request", "not_one_click", status=400)
        token = request.match_info["token"]
        try:
            honored = await self.unsubscribe.honor_counted(token, source=ONE_CLICK)
        except StoreUnavailable:
            return _try_again()
        if honored is None:
            return _invalid_link()
        claims, recorded = honored
        log_event(log, "unsubscribed", source=ONE_CLICK, recipient=claims.recipient,
                  link=link_id(token))
        # Only the page's own form, in a browser, and only when this request recorded the
        # opt-out: whoever posts again over an opt-out in force gets no pass to lift it.
        undoable = recorded and form.get(VIA_FIELD) == VIA_PAGE
        response = _page(
            "You are unsubscribed", "unsubscribed", token=token, recipient=claims.recipient,
            sender=self._sender(claims), undoable=undoable,
        )
        if undoable:
            response.set_cookie(
                undo_cookie_name(token), self.unsubscribe.undo_pass(token),
                max_age=int(UNDO_WINDOW.total_seconds()), path=UNDO_COOKIE_PATH,
                httponly=True, samesite="Strict", secure=self.secure_cookies,
            )
        return response

    async def undo(self, request: web.Request) -> web.Response:
        """Lifts this link's own opt-out (`Unsubscribe.undo`) for the browser holding the
        undo pass of this link's page unsubscribe, within UNDO_WINDOW; without it, or from
        another origin, nothing changes (403). The body is not read."""
        if (request.content_length or 0) > MAX_FORM_BYTES:
            return _page("Request too large", "too_large", status=413)
        if not same_origin(request):
            return _page("Request refused", "cross_site", status=403)
        token = request.match_info["token"]
        if not self._may_undo(request, token):
            return await self._undo_refused(token)
        try:
            undone = await self.unsubscribe.undo(token)
        except StoreUnavailable:
            return _try_again()
        if undone is None:
            return _invalid_link()
        claims = undone.claims
        about = {"token": token, "recipient": claims.recipient, "sender": self._sender(claims),
                 "still_suppressed": undone.still_suppressed}
        if undone.lifted is None:
            return _page("Nothing to undo", "nothing_to_undo", status=409, **about)
        log_event(log, "unsubscribe-undone", recipient=claims.recipient, link=link_id(token),
                  still_suppressed=undone.still_suppressed)
        if undone.still_suppressed:
            response = _page("Your unsubscribe was undone", "undone_still_suppressed", **about)
        else:
            response = _page("You are subscribed again", "subscribed_again", **about)
        response.del_cookie(undo_cookie_name(token), path=UNDO_COOKIE_PATH,
                            secure=self.secure_cookies, httponly=True, samesite="Strict")
        return response

    async def _undo_refused(self, token: str) -> web.Response:
        try:
            claims = await self.unsubscribe.claims(token)
        except StoreUnavailable:
            claims = None
        return _page(
            "Your unsubscribe stands", "undo_refused", status=403,
            sender=None if claims is None else self._sender(claims),
        )
