"""The unsubscribe page, the RFC 8058 one-click endpoint, and the undo of a mistaken click.

GET and HEAD only show a page: link scanners and mail security gateways fetch every link,
so nothing but a POST may unsubscribe. No redirects anywhere (RFC 8058 s3.2). The page names
the sender (the `[sender] name` the message's footer gave, signed into the link; the
configured one for links issued before), says when the recipient is unsubscribed already,
and after an unsubscribe made through this link offers "I unsubscribed by mistake": a POST
to `/u/{token}/undo` that lifts that link's own opt-out and nothing else
(`services.unsubscribe`). The link is the capability, as it is for unsubscribing; the undo
form is also refused from another origin. No JavaScript (the Content-Security-Policy
forbids it), no framing.
"""

from __future__ import annotations

import base64
import hashlib
import html
import logging

from aiohttp import web

from gateway.auth.unsubscribe_tokens import TokenClaims
from gateway.runtime.logs import log_event
from gateway.services.unsubscribe import ONE_CLICK, Unsubscribe, link_id
from gateway.store.base import StoreUnavailable
from gateway.web.pages import same_origin

log = logging.getLogger("gateway.services.unsubscribe")

ONE_CLICK_FIELD = "List-Unsubscribe"
ONE_CLICK_VALUE = "One-Click"
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
        f'<button type="submit">{html.escape(label)}</button>'
        "</form>"
    )


def _undo_form(token: str) -> str:
    return (
        f'<form method="post" action="/u/{html.escape(token)}/undo">'
        '<p class="hint" id="undo-hint">Clicked by mistake? This takes back only the '
        "unsubscribe made with this link.</p>"
        '<button type="submit" class="secondary" aria-describedby="undo-hint">'
        "I unsubscribed by mistake</button>"
        "</form>"
    )


class UnsubscribeRoutes:
    def __init__(self, unsubscribe: Unsubscribe, sender_name: str = "") -> None:
        """`sender_name`: the configured `[sender] name`, shown for links that do not carry
        the name they were issued with."""
        self.unsubscribe = unsubscribe
        self.sender_name = sender_name

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
                + (_undo_form(token) if status.undoable else ""),
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
            claims = await self.unsubscribe.honor(token, source=ONE_CLICK)
        except StoreUnavailable:
            return _try_again()
        if claims is None:
            return _invalid_link()
        log_event(log, "unsubscribed", source=ONE_CLICK, recipient=claims.recipient,
                  link=link_id(token))
        return _page(
            "You are unsubscribed",
            f"<p><strong>{html.escape(claims.recipient)}</strong> will receive no further "
            f"marketing messages from {self._sender(claims)}. It can take a few minutes for "
            "messages already on their way to stop.</p>"
            + _undo_form(token),
        )

    async def undo(self, request: web.Request) -> web.Response:
        """Lifts this link's own opt-out (`Unsubscribe.undo`); a form from another origin
        changes nothing. The body is not read: the link is all the request needs."""
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
            return _page("Your unsubscribe was undone", other_request)
        return _page(
            "You are subscribed again",
            f"<p>{recipient} will receive marketing messages from {sender} again. Every "
            "message has a link to unsubscribe.</p>"
            + _unsubscribe_form(token, "Unsubscribe after all"),
        )
