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
No JavaScript (the Content-Security-Policy forbids it), no framing.
"""

from __future__ import annotations

import base64
import hashlib
import html
import logging

from aiohttp import web

from gateway.auth.unsubscribe_tokens import TokenClaims
from gateway.runtime.logs import log_event
from gateway.services.unsubscribe import ONE_CLICK, UNDO_WINDOW, Unsubscribe, link_id
from gateway.store.base import StoreUnavailable
from gateway.web.pages import same_origin

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
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'none'; "
    f"style-src 'sha256-{base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()}'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    # Not no-referrer: under it Chromium sends "Origin: null" with the page's own form
    # posts, which the undo's Origin check must refuse. The page loads nothing and links
    # nowhere, so the link (in the Referer) goes to this origin only.
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
<main>
<h1>{title}</h1>
{body}
</main>
</body>
</html>
"""


def _page(title: str, body: str, status: int = 200) -> web.Response:
    return web.Response(
        text=PAGE.format(title=html.escape(title), style=STYLE, body=body),
        status=status,
        content_type="text/html",
        headers=HEADERS,
    )


def _invalid_link() -> web.Response:
    return _page(
        "This link is not valid",
        "<p>This unsubscribe link is incomplete or has been altered, so nothing was changed. "
        "Please use the link exactly as it appears in the message, or reply to the sender.</p>",
        status=404,
    )


def _try_again() -> web.Response:
    response = _page(
        "Please try again",
        "<p>We could not record your request just now, so nothing was changed. "
        "Please try again in a few minutes.</p>",
        status=503,
    )
    response.headers["Retry-After"] = "60"
    return response


def _unsubscribe_form(token: str, label: str = "Unsubscribe") -> str:
    return (
        f'<form method="post" action="/u/{html.escape(token)}">'
        f'<input type="hidden" name="{ONE_CLICK_FIELD}" value="{ONE_CLICK_VALUE}">'
        f'<input type="hidden" name="{VIA_FIELD}" value="{VIA_PAGE}">'
        f'<button type="submit">{html.escape(label)}</button>'
        "</form>"
    )


def _undo_form(token: str) -> str:
    return (
        f'<form method="post" action="/u/{html.escape(token)}/undo">'
        '<p class="hint" id="undo-hint">Clicked by mistake? This takes back only the '
        "unsubscribe made with this link, in this browser, for the next "
        f"{int(UNDO_WINDOW.total_seconds() // 60)} minutes.</p>"
        '<button type="submit" class="secondary" aria-describedby="undo-hint">'
        "I unsubscribed by mistake</button>"
        "</form>"
    )


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
        """Who the recipient heard from, as HTML: the name the link was issued with, else
        the configured one, else the sending address."""
        name = claims.sender_name or self.sender_name or claims.sender or "the sender"
        return f"<strong>{html.escape(name)}</strong>"

    @staticmethod
    def _sent_by(claims: TokenClaims) -> str:
        if not claims.sender:
            return ""
        return (
            '<p class="hint">This link came in a message sent by '
            f"{html.escape(claims.sender)}.</p>"
        )

    async def show(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        try:
            status = await self.unsubscribe.status(token)
        except StoreUnavailable:
            return _try_again()
        if status is None:
            return _invalid_link()
        claims = status.claims
        recipient = html.escape(claims.recipient)
        if status.suppressed:
            return _page(
                "You are already unsubscribed",
                f"<p><strong>{recipient}</strong> is already unsubscribed from marketing "
                f"messages from {self._sender(claims)}. There is nothing more to do.</p>"
                + self._sent_by(claims)
                + (_undo_form(token) if status.undoable and self._may_undo(request, token)
                   else ""),
            )
        return _page(
            "Unsubscribe",
            f"<p>Stop all further marketing messages from {self._sender(claims)} to "
            f"<strong>{recipient}</strong>?</p>"
            + self._sent_by(claims)
            + _unsubscribe_form(token),
        )

    async def confirm(self, request: web.Request) -> web.Response:
        if (request.content_length or 0) > MAX_FORM_BYTES:
            return _page("Request too large", "<p>Nothing was changed.</p>", status=413)
        try:
            form = await request.post()
        except ValueError:
            return _page("Bad request", "<p>The form could not be read.</p>", status=400)
        if form.get(ONE_CLICK_FIELD) != ONE_CLICK_VALUE:
            return _page(
                "Bad request",
                "<p>An unsubscribe request must carry List-Unsubscribe=One-Click.</p>",
                status=400,
            )
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
            "You are unsubscribed",
            f"<p><strong>{html.escape(claims.recipient)}</strong> will receive no further "
            f"marketing messages from {self._sender(claims)}. It can take a few minutes for "
            "messages already on their way to stop.</p>"
            + (_undo_form(token) if undoable else ""),
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
            return _page("Request too large", "<p>Nothing was changed.</p>", status=413)
        if not same_origin(request):
            return _page(
                "Request refused",
                "<p>This request did not come from the unsubscribe page, so nothing was "
                "changed. Please use the button on the page the link in the message opens.</p>",
                status=403,
            )
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
        recipient = f"<strong>{html.escape(claims.recipient)}</strong>"
        sender = self._sender(claims)
        other_request = (
            f"<p>{recipient} stays unsubscribed because of another request (for example an "
            "earlier unsubscribe, a reply asking us to stop, or a complaint), which this page "
            f"cannot undo. To hear from {sender} again, please contact them.</p>"
        )
        if undone.lifted is None:
            return _page(
                "Nothing to undo",
                "<p>The unsubscribe made with this link is not in force, so nothing was "
                "changed.</p>"
                + (other_request if undone.still_suppressed
                   else f"<p>{recipient} is not unsubscribed.</p>" + _unsubscribe_form(token)),
                status=409,
            )
        log_event(log, "unsubscribe-undone", recipient=claims.recipient, link=link_id(token),
                  still_suppressed=undone.still_suppressed)
        if undone.still_suppressed:
            response = _page("Your unsubscribe was undone", other_request)
        else:
            response = self._subscribed_again(token, recipient, sender)
        response.del_cookie(undo_cookie_name(token), path=UNDO_COOKIE_PATH,
                            secure=self.secure_cookies, httponly=True, samesite="Strict")
        return response

    async def _undo_refused(self, token: str) -> web.Response:
        try:
            claims = await self.unsubscribe.claims(token)
        except StoreUnavailable:
            claims = None
        sender = self._sender(claims) if claims is not None else "the sender"
        minutes = int(UNDO_WINDOW.total_seconds() // 60)
        return _page(
            "Your unsubscribe stands",
            "<p>Nothing was changed: you remain unsubscribed. An unsubscribe can be undone "
            f"here only in the browser it was made in, within {minutes} minutes, using the "
            "button on the page that confirmed it. An unsubscribe made from your mail "
            "program's unsubscribe button cannot be undone here.</p>"
            f"<p>To receive messages again, please contact {sender} and ask them to "
            "re-subscribe you.</p>",
            status=403,
        )

    @staticmethod
    def _subscribed_again(token: str, recipient: str, sender: str) -> web.Response:
        return _page(
            "You are subscribed again",
            f"<p>{recipient} will receive marketing messages from {sender} again. Every "
            "message has a link to unsubscribe.</p>"
            + _unsubscribe_form(token, "Unsubscribe after all"),
        )
