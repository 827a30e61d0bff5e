"""The unsubscribe page and the RFC 8058 one-click endpoint.

GET and HEAD only show a page: link scanners and mail security gateways fetch every link,
so nothing but a POST may unsubscribe. No redirects anywhere (RFC 8058 s3.2).
"""

from __future__ import annotations

import html
import logging

from aiohttp import web

from gateway.runtime.logs import log_event
from gateway.services.unsubscribe import Unsubscribe
from gateway.store.base import StoreUnavailable

log = logging.getLogger("gateway.services.unsubscribe")

ONE_CLICK_FIELD = "List-Unsubscribe"
ONE_CLICK_VALUE = "One-Click"
MAX_FORM_BYTES = 16 * 1024

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 32rem; margin: 3rem auto; padding: 0 1rem;
       line-height: 1.5; color: #1a1a1a; }}
button {{ font-size: 1.1rem; padding: .6rem 1.4rem; border: 2px solid #1a1a1a; border-radius: 6px;
         background: #1a1a1a; color: #fff; cursor: pointer; }}
button:focus {{ outline: 3px solid #ffbf47; outline-offset: 2px; }}
</style>
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
        text=PAGE.format(title=html.escape(title), body=body),
        status=status,
        content_type="text/html",
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
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


class UnsubscribeRoutes:
    def __init__(self, unsubscribe: Unsubscribe) -> None:
        self.unsubscribe = unsubscribe

    def register(self, app: web.Application) -> None:
        app.router.add_get("/u/{token}", self.show, allow_head=True)
        app.router.add_post("/u/{token}", self.confirm)

    async def show(self, request: web.Request) -> web.Response:
        try:
            claims = await self.unsubscribe.claims(request.match_info["token"])
        except StoreUnavailable:
            return _try_again()
        if claims is None:
            return _invalid_link()
        recipient = html.escape(claims.recipient)
        return _page(
            "Unsubscribe",
            f"<p>Stop all further marketing messages to <strong>{recipient}</strong>?</p>"
            '<form method="post">'
            f'<input type="hidden" name="{ONE_CLICK_FIELD}" value="{ONE_CLICK_VALUE}">'
            "<button type=\"submit\">Unsubscribe</button>"
            "</form>",
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
        try:
            claims = await self.unsubscribe.honor(request.match_info["token"], source="one-click")
        except StoreUnavailable:
            return _try_again()
        if claims is None:
            return _invalid_link()
        log_event(log, "unsubscribed", source="one-click", recipient=claims.recipient)
        return _page(
            "You are unsubscribed",
            f"<p><strong>{html.escape(claims.recipient)}</strong> will receive no further "
            "marketing messages from us. It can take a few minutes for messages already on "
            "their way to stop.</p>",
        )
