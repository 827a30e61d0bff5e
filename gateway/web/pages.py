"""The HTML every people-facing page shares: one stylesheet, strict headers, the header
naming who is signed in with a sign-out form.

No JavaScript anywhere (the Content-Security-Policy forbids it): the pages work with the
browser's own keyboard handling and screen readers, and injected markup cannot run.
"""

from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from markupsafe import Markup
from multidict import MultiDictProxy

from gateway.model import Role
from gateway.web.templating import render

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 1.5rem auto; padding: 0 1rem;
       line-height: 1.5; color: #1a1a1a; background: #fff; }
a { color: #0b4f9e; }
a:focus, button:focus, input:focus, select:focus { outline: 3px solid #b35c00;
       outline-offset: 2px; }
header { display: flex; justify-content: space-between; align-items: center; gap: 1rem;
       flex-wrap: wrap; border-bottom: 1px solid #595959; }
ul.nav { display: flex; gap: 1.2rem; list-style: none; padding: 0; margin: 0; }
ul.nav a[aria-current="page"] { font-weight: 700; text-decoration: none; }
button { font-size: 1rem; padding: .4rem 1rem; border: 2px solid #1a1a1a; border-radius: 6px;
       background: #1a1a1a; color: #fff; cursor: pointer; }
label { display: block; font-weight: 600; }
input, select { font-size: 1rem; padding: .3rem; border: 1px solid #595959; border-radius: 4px; }
fieldset { display: flex; flex-wrap: wrap; gap: .8rem 1.2rem; border: 1px solid #595959; }
.hint { font-size: .9rem; color: #404040; margin: 0; }
.error { color: #a00000; font-weight: 600; }
table { border-collapse: collapse; width: 100%; margin: 1rem 0; }
caption { text-align: left; font-weight: 600; padding: .3rem 0; }
th, td { border: 1px solid #8c8c8c; padding: .3rem .5rem; text-align: left; vertical-align: top; }
th { background: #eef0f3; }
td.num { text-align: right; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; }
dt { font-weight: 600; }
dd { margin: 0; overflow-wrap: anywhere; }
svg { max-width: 100%; height: auto; }
"""


def security_headers(style: str) -> dict[str, str]:
    """The headers of every HTML page the gateway serves, for a page whose only style is
    `style` (the CSP allows that stylesheet by its hash, and nothing else)."""
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    return {
        "Cache-Control": "no-store",
        "Content-Security-Policy": (
            f"default-src 'none'; script-src 'none'; style-src 'sha256-{digest}'; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        ),
        # Not no-referrer: under it Chromium sends "Origin: null" with same-site form
        # posts, which the Origin checks must refuse. same-origin still keeps a page's
        # address (an unsubscribe link's token) from any other site.
        "Referrer-Policy": "same-origin",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
    }


HEADERS = security_headers(STYLE)

SECTIONS = (
    ("/review", "Activity", "activity", Role.MANAGER),
    ("/review/suppressions", "Suppressions", "suppressions", Role.MANAGER),
    ("/review/consents", "Consents", "consents", Role.MANAGER),
    ("/review/audit", "Audit log", "audit", Role.ADMIN),
)
"""The console's sections: (link, label, name, lowest role that sees it)."""

Handler = Callable[[web.Request], Awaitable[web.Response]]


@dataclass(frozen=True)
class Viewer:
    """Who a page is shown to: a person signed in with single sign-on, or an account with
    its secret (break-glass). `name` is shown; `actor` names them in the audit log (a
    person's user name, an account's name). `csrf` goes in every form that changes
    something."""

    name: str
    actor: str
    role: Role
    method: str
    csrf: str
    person_id: str | None = None
    account: str | None = None


def escape(value: object) -> str:
    return html.escape(str(value), quote=True)


def render_page(
    template: str,
    title: str,
    *,
    status: int = 200,
    viewer: Viewer | None = None,
    section: str = "",
    **context: Any,
) -> web.Response:
    """A template that extends base.html, in the shared shell: the style its CSP hash
    allows, the strict headers, the console's navigation for `viewer`."""
    text = render(
        template, title=title, viewer=viewer, section=section, sections=SECTIONS,
        style=Markup(STYLE), **context,
    )
    return web.Response(text=text, status=status, content_type="text/html", headers=HEADERS)


def page(
    title: str, body: str, *, status: int = 200, viewer: Viewer | None = None
) -> web.Response:
    """A page whose body the caller built, every value in it escaped with `escape`."""
    return render_page("page.html", title, status=status, viewer=viewer, body=Markup(body))


async def read_form(request: web.Request, max_bytes: int) -> MultiDictProxy[Any]:
    """The posted form, read no further than `max_bytes`: HTTPRequestEntityTooLarge past
    them, or at once when the Content-Length says so (nothing is read). A Content-Length
    check alone let a chunked body (no Content-Length) through to the application's 64 MiB
    limit, unauthenticated on the sign-in, sign-out and unsubscribe forms."""
    if (request.content_length or 0) > max_bytes:
        raise web.HTTPRequestEntityTooLarge(max_bytes, request.content_length or 0)
    return await request.clone(client_max_size=max_bytes + 1).post()


def see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={**HEADERS, "Location": location})


def same_origin(request: web.Request) -> bool:
    """A cross-site form post carries a foreign Origin. Only scheme-less host:port is
    compared: TLS may end at a proxy."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == request.host.lower()
