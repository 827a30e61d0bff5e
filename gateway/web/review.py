"""Managers' review of the block log: server-rendered pages under /review.

No JavaScript anywhere (the Content-Security-Policy forbids it): the pages work with the
browser's own keyboard handling and screen readers, and injected markup cannot run. Sign-in
takes the account secret once and answers with a short-lived HMAC-signed cookie, so the
secret never stays in the browser; every request re-checks that the account still exists
with a manager role or higher, so removing or demoting an account ends its sessions.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import html
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlencode, urlsplit

from aiohttp import web

from gateway.auth.authenticate import Authenticator
from gateway.auth.secret_check import account_or_refusal
from gateway.auth.sessions import ABSOLUTE_S, Sessions
from gateway.model import Account, AuditEvent, BlockRecord, Channel, Role
from gateway.pipeline.dry_run import CheckError, parse_time
from gateway.runtime.client_address import client_address
from gateway.runtime.clock import Clock
from gateway.store.base import BlockQuery, Store, StoreUnavailable

SESSION_COOKIE = "review_session"
PAGE_SIZE = 50
MAX_FORM_BYTES = 4 * 1024
DEFAULT_SINCE = "7d"
CHART_MAX_BARS = 48
BUCKET_CHOICES_S = (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400)

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 1.5rem auto; padding: 0 1rem;
       line-height: 1.5; color: #1a1a1a; background: #fff; }
a { color: #0b4f9e; }
a:focus, button:focus, input:focus, select:focus { outline: 3px solid #b35c00;
       outline-offset: 2px; }
header { display: flex; justify-content: space-between; align-items: center; gap: 1rem;
       border-bottom: 1px solid #595959; }
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
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'none'; "
    f"style-src 'sha256-{base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()}'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    # Not no-referrer: under it Chromium sends "Origin: null" with same-site form posts,
    # which the Origin check must refuse.
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
<title>{title} - compliance gateway review</title>
<style>{style}</style>
</head>
<body>
{header}
<main>
<h1>{title}</h1>
{body}
</main>
</body>
</html>
"""

Handler = Callable[[web.Request], Awaitable[web.Response]]


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _page(
    title: str, body: str, *, status: int = 200, account: Account | None = None
) -> web.Response:
    header = ""
    if account is not None:
        header = (
            "<header><p>Signed in as <strong>"
            f"{_e(account.name)}</strong> ({_e(account.role.name.lower())})</p>"
            '<form method="post" action="/review/logout">'
            '<button type="submit">Sign out</button></form></header>'
        )
    return web.Response(
        text=PAGE.format(title=_e(title), style=STYLE, header=header, body=body),
        status=status,
        content_type="text/html",
        headers=HEADERS,
    )


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={**HEADERS, "Location": location})


def _when(instant: datetime) -> str:
    utc = instant.astimezone(UTC)
    shown = utc.strftime("%Y-%m-%d %H:%M:%S")
    return f'<time datetime="{_e(utc.isoformat())}">{_e(shown)} UTC</time>'


def _is_id(text: str) -> bool:
    """ASCII digits that fit a 64-bit integer, so the store is never handed an overflow."""
    return text.isascii() and text.isdigit() and len(text) <= 18


def same_origin(request: web.Request) -> bool:
    """A cross-site form post carries a foreign Origin; browsers that omit it still get
    SameSite=Strict. Only scheme-less host:port is compared: TLS may end at a proxy."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == request.host.lower()


@dataclass(frozen=True)
class Filters:
    """The log page's GET parameters, as typed, so the form and links can repeat them."""

    since: str = ""
    until: str = ""
    reason: str = ""
    channel: str = ""
    account: str = ""
    recipient: str = ""

    @classmethod
    def from_request(cls, query: Mapping[str, str]) -> Filters:
        return cls(**{f.name: query.get(f.name, "").strip() for f in dataclasses.fields(cls)})

    def params(self, **extra: str) -> str:
        values = {**dataclasses.asdict(self), **extra}
        return urlencode({k: v for k, v in values.items() if v})

    def window(self, now: datetime) -> tuple[datetime, datetime]:
        try:
            since = parse_time(self.since or DEFAULT_SINCE, now=now)
            until = parse_time(self.until, now=now) if self.until else now
        except OverflowError:
            raise CheckError("that span reaches beyond the calendar") from None
        if since >= until:
            raise CheckError("since must be earlier than until")
        return since, until

    def channel_value(self) -> Channel | None:
        if not self.channel:
            return None
        try:
            return Channel(self.channel)
        except ValueError:
            raise CheckError(f"unknown channel {self.channel!r}") from None


def bucket_seconds(window_s: float) -> int:
    """The smallest round bucket that keeps the chart at CHART_MAX_BARS bars or fewer."""
    for choice in BUCKET_CHOICES_S:
        if window_s / choice <= CHART_MAX_BARS:
            return choice
    return BUCKET_CHOICES_S[-1]


def _duration(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            n = seconds // size
            return f"{n} {unit}" + ("s" if n != 1 else "")
    return f"{seconds} seconds"


def chart_svg(
    series: list[tuple[datetime, int]], since: datetime, until: datetime, bucket_s: int
) -> str:
    """Bars placed by their time, not their index, so sparse series and either bucket
    alignment (to `since` or to the epoch) draw correctly."""
    width, height, left, top, bottom = 720, 200, 40, 12, 28
    plot_w, plot_h = width - left - 8, height - top - bottom
    window_s = (until - since).total_seconds()
    peak = max((n for _, n in series), default=0)
    total = sum(n for _, n in series)
    bar_w = max(plot_w * bucket_s / window_s - 1, 1)
    bars = []
    for start, count in series:
        offset = (start - since).total_seconds() / window_s
        x = left + max(0.0, min(offset, 1.0)) * plot_w
        w = min(bar_w, left + plot_w - x)
        if count <= 0 or w <= 0:
            continue
        h = max(plot_h * count / peak, 1.0)
        label = f"{start.astimezone(UTC):%Y-%m-%d %H:%M} UTC: {count} block" + (
            "s" if count != 1 else ""
        )
        bars.append(
            f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{w:.1f}" height="{h:.1f}" '
            f'fill="#1f4e8c"><title>{_e(label)}</title></rect>'
        )
    summary = (
        f"{total} blocks (every reason, channel and account) in buckets of "
        f"{_duration(bucket_s)} from "
        f"{since.astimezone(UTC):%Y-%m-%d %H:%M} to {until.astimezone(UTC):%Y-%m-%d %H:%M} UTC; "
        f"the busiest bucket had {peak}."
    )
    base = top + plot_h
    return (
        f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        'aria-labelledby="chart-title chart-desc" xmlns="http://www.w3.org/2000/svg">'
        '<title id="chart-title">Blocks over time</title>'
        f'<desc id="chart-desc">{_e(summary)}</desc>'
        f'<line x1="{left}" y1="{base}" x2="{left + plot_w}" y2="{base}" stroke="#1a1a1a"/>'
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{base}" stroke="#1a1a1a"/>'
        f'<text x="{left - 4}" y="{top + 10}" text-anchor="end" font-size="12" '
        f'fill="#1a1a1a">{peak}</text>'
        f'<text x="{left - 4}" y="{base}" text-anchor="end" font-size="12" fill="#1a1a1a">0</text>'
        f'<text x="{left}" y="{height - 8}" font-size="12" fill="#1a1a1a">'
        f"{_e(f'{since.astimezone(UTC):%Y-%m-%d %H:%M}')}</text>"
        f'<text x="{left + plot_w}" y="{height - 8}" text-anchor="end" font-size="12" '
        f"fill=\"#1a1a1a\">{_e(f'{until.astimezone(UTC):%Y-%m-%d %H:%M}')} UTC</text>"
        f"{''.join(bars)}</svg>"
        f"<p>{_e(summary)}</p>"
    )


def _sign_in_body(error: str = "") -> str:
    message = f'<p class="error" id="sign-in-error" role="alert">{_e(error)}</p>' if error else ""
    described = "secret-hint sign-in-error" if error else "secret-hint"
    return (
        f"{message}"
        "<p>Review of blocked messages is open to managers, admins and owners.</p>"
        '<form method="post" action="/review/login">'
        '<label for="secret">Account secret</label>'
        '<input type="password" id="secret" name="secret" required '
        f'autocomplete="current-password" aria-describedby="{described}">'
        '<p class="hint" id="secret-hint">The same secret the account uses with the API. '
        "You stay signed in for 8 hours on this browser.</p>"
        '<p><button type="submit">Sign in</button></p>'
        "</form>"
    )


def _sign_in_refused(status: int, why: str) -> web.Response:
    if status == 429:
        return _page("Sign in", _sign_in_body(
            f"Too many failed sign-ins from this network: {why}."), status=429)
    return _page("Sign in", _sign_in_body(
        "The sign-in could not be checked just now; please try again in a minute."),
        status=status)


class ReviewRoutes:
    def __init__(
        self,
        store: Store,
        accounts: Callable[[], tuple[Account, ...]],
        clock: Clock,
        sessions: Sessions,
        secure_cookies: bool,
        authenticator: Authenticator,
    ) -> None:
        self.store = store
        self.authenticator = authenticator
        self.accounts = accounts
        self.clock = clock
        self.sessions = sessions
        self.secure_cookies = secure_cookies

    def register(self, app: web.Application) -> None:
        app.router.add_get("/review", self._store_errors(self.log_page))
        app.router.add_get(r"/review/blocks/{id:[0-9]{1,18}}", self._store_errors(self.detail_page))
        app.router.add_post("/review/login", self._store_errors(self.login))
        app.router.add_post("/review/logout", self._store_errors(self.logout))

    def _store_errors(self, handler: Handler) -> Handler:
        async def handle(request: web.Request) -> web.Response:
            try:
                return await handler(request)
            except StoreUnavailable:
                response = _page(
                    "Please try again",
                    "<p>The block log could not be read or the sign-in could not be recorded "
                    "just now. Please try again in a minute.</p>",
                    status=503,
                )
                response.headers["Retry-After"] = "60"
                return response

        return handle

    async def signed_in(self, request: web.Request) -> Account | None:
        """The account of the request's live session, as the configuration has it now: one
        removed or no longer a manager or higher has no session."""
        session = await self.sessions.current(request.cookies.get(SESSION_COOKIE, ""))
        if session is None or session.account is None:
            return None
        return next(
            (a for a in self.accounts() if a.name == session.account and a.role >= Role.MANAGER),
            None,
        )

    async def login(self, request: web.Request) -> web.Response:
        if not same_origin(request):
            refused = _sign_in_body("This sign-in came from another site.")
            return _page("Sign in", refused, status=403)
        if (request.content_length or 0) > MAX_FORM_BYTES:
            return _page("Sign in", _sign_in_body("The form was too large."), status=413)
        try:
            form = await request.post()
        except ValueError:
            return _page("Sign in", _sign_in_body("The form could not be read."), status=400)
        secret = form.get("secret")
        account = await account_or_refusal(
            self.authenticator, request, "review", _sign_in_refused,
            secret if isinstance(secret, str) else "", keys_accepted=False,
        )
        if isinstance(account, web.Response):
            return account
        if account is None:
            await self._audit(request, "review.signin_failed", "", "no account has this secret")
            return _page(
                "Sign in", _sign_in_body("That secret does not match any account."), status=401
            )
        if account.role < Role.MANAGER:
            await self._audit(
                request, "review.signin_failed", account.name,
                f"role {account.role.name.lower()} may not review blocks",
            )
            return _page(
                "Sign in",
                _sign_in_body("This account may not review blocks: it needs the manager role "
                              "or higher."),
                status=403,
            )
        # Recorded before the session exists: no session without its audit entry.
        await self._audit(request, "review.signin", account.name, "")
        token = await self.sessions.open(
            role=account.role.name.lower(), method="account-secret", account=account.name
        )
        response = _see_other("/review")
        response.set_cookie(
            SESSION_COOKIE,
            token,
            max_age=ABSOLUTE_S,
            path="/review",
            httponly=True,
            samesite="Strict",
            secure=self.secure_cookies,
        )
        return response

    async def logout(self, request: web.Request) -> web.Response:
        if not same_origin(request):
            return _page("Sign out", "<p>This sign-out came from another site.</p>", status=403)
        await self.sessions.end(request.cookies.get(SESSION_COOKIE, ""))
        response = _see_other("/review")
        response.del_cookie(
            SESSION_COOKIE, path="/review", httponly=True, samesite="Strict",
            secure=self.secure_cookies,
        )
        return response

    async def _audit(self, request: web.Request, action: str, actor: str, problem: str) -> None:
        details: dict[str, object] = {"remote": client_address(request)}
        if problem:
            details["problem"] = problem
        await self.store.append_audit(
            AuditEvent(
                time=self.clock.now(), actor=actor or "unknown", action=action, details=details
            )
        )

    async def log_page(self, request: web.Request) -> web.Response:
        account = await self.signed_in(request)
        if account is None:
            return _page("Sign in", _sign_in_body())
        filters = Filters.from_request(request.query)
        before = request.query.get("before_id", "")
        try:
            since, until = filters.window(self.clock.now())
            channel = filters.channel_value()
            if before and not _is_id(before):
                raise CheckError("the page cursor is not valid")
        except CheckError as exc:
            body = (
                f'<p class="error" role="alert">{_e(exc)}</p>'
                f"{_filter_form(filters)}"
            )
            return _page("Block log", body, status=400, account=account)
        query = BlockQuery(
            since=since, until=until, reason=filters.reason or None, channel=channel,
            account=filters.account or None, recipient=filters.recipient or None,
            limit=PAGE_SIZE + 1, before_id=int(before) if before else None,
        )
        records = await self.store.query_blocks(query)
        bucket_s = bucket_seconds((until - since).total_seconds())
        counts = await self.store.block_counts(since, until)
        series = await self.store.block_series(since, until, bucket_s)
        body = (
            _filter_form(filters)
            + "<h2>Blocks over time</h2>"
            + chart_svg(series, since, until, bucket_s)
            + "<h2>Blocks per reason and channel</h2>"
            + _counts_table(counts, filters, since, until)
            + "<h2>Blocks</h2>"
            + _blocks_table(records[:PAGE_SIZE], since, until, bool(before))
            + _pager(filters, records, bool(before))
        )
        return _page("Block log", body, account=account)

    async def detail_page(self, request: web.Request) -> web.Response:
        account = await self.signed_in(request)
        if account is None:
            return _page("Sign in", _sign_in_body(), status=401)
        record = await self.store.get_block(int(request.match_info["id"]))
        back = '<p><a href="/review">Back to the block log</a></p>'
        if record is None:
            return _page(
                "Block not found", f"<p>There is no block with this number.</p>{back}",
                status=404, account=account,
            )
        fields = (
            ("Time", _when(record.time)),
            ("Channel", _e(record.channel.value)),
            ("Account", _e(record.account)),
            ("Sender", _e(record.sender)),
            ("Recipient", _e(record.recipient)),
            ("Subject", _e(record.subject)),
            ("Message ID", _e(record.message_id)),
            ("Size", f"{record.size} bytes"),
            ("Rules version", _e(record.rules_version)),
            ("Gateway", _e(record.gateway_id)),
        )
        rows = "".join(
            f"<tr><td>{_e(r.code)}</td><td><code>{_e(r.rule)}</code></td><td>{_e(r.message)}</td></tr>"
            for r in record.reasons
        )
        body = (
            back
            + "<h2>Message</h2><dl>"
            + "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in fields)
            + "</dl><h2>Reasons</h2><table><caption>Every reason this recipient was blocked, "
            "with the rule that gave it</caption><thead><tr><th scope=\"col\">Reason</th>"
            '<th scope="col">Rule</th><th scope="col">Message</th></tr></thead>'
            f"<tbody>{rows}</tbody></table>"
        )
        return _page(f"Block {record.id}", body, account=account)


def _filter_form(filters: Filters) -> str:
    def text(name: str, label: str, hint: str = "") -> str:
        hint_html = f'<p class="hint" id="{name}-hint">{_e(hint)}</p>' if hint else ""
        described = f' aria-describedby="{name}-hint"' if hint else ""
        value = getattr(filters, name)
        return (
            f'<div><label for="{name}">{_e(label)}</label>'
            f'<input type="text" id="{name}" name="{name}" value="{_e(value)}"{described}>'
            f"{hint_html}</div>"
        )

    options = "".join(
        f'<option value="{_e(v)}"{" selected" if filters.channel == v else ""}>{_e(t)}</option>'
        for v, t in (("", "Any"), *((c.value, c.value) for c in Channel))
    )
    return (
        '<form method="get" action="/review"><fieldset><legend>Filters</legend>'
        + text("since", "Since", f"ISO 8601 (UTC unless stated) or a span back such as "
               f"24h or 7d; default {DEFAULT_SINCE}")
        + text("until", "Until", "ISO 8601 or a span back; default now")
        + text("reason", "Reason", "A reason code such as QUIET_HOURS")
        + f'<div><label for="channel">Channel</label><select id="channel" name="channel">'
        f"{options}</select></div>"
        + text("account", "Account")
        + text("recipient", "Recipient", "Exactly as recorded")
        + '<div><button type="submit">Apply filters</button> '
        '<a href="/review">Clear filters</a></div></fieldset></form>'
    )


def _window_text(since: datetime, until: datetime) -> str:
    return f"from {_when(since)} to {_when(until)}"


def _counts_table(
    counts: list[tuple[str, str, int]], filters: Filters, since: datetime, until: datetime
) -> str:
    if not counts:
        return f"<p>No blocks {_window_text(since, until)}.</p>"
    channels = [c.value for c in Channel]
    per_reason: dict[str, Counter[str]] = {}
    for channel, reason, n in counts:
        per_reason.setdefault(reason, Counter())[channel] += n
    order = sorted(per_reason, key=lambda r: (-sum(per_reason[r].values()), r))
    head = "".join(f'<th scope="col">{_e(c)}</th>' for c in channels)
    rows = "".join(
        f'<tr><th scope="row"><a href="/review?{_e(filters.params(reason=reason))}">'
        f"{_e(reason)}</a></th>"
        + "".join(f'<td class="num">{per_reason[reason][c]}</td>' for c in channels)
        + "</tr>"
        for reason in order
    )
    return (
        f"<table><caption>Blocks per reason and channel {_window_text(since, until)} "
        "(time window only; a block with several reasons counts under each)</caption>"
        f'<thead><tr><th scope="col">Reason</th>{head}</tr></thead><tbody>{rows}</tbody></table>'
    )


def _blocks_table(
    records: list[BlockRecord], since: datetime, until: datetime, later_page: bool
) -> str:
    if not records:
        return "<p>No blocks match these filters.</p>"
    rows = "".join(
        f'<tr><td><a href="/review/blocks/{r.id}" aria-label="Block {r.id}, '
        f'{_e(r.time.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"))} UTC">'
        f"{_when(r.time)}</a></td>"
        f"<td>{_e(r.channel.value)}</td><td>{_e(r.account)}</td><td>{_e(r.recipient)}</td>"
        f"<td>{_e(', '.join(dict.fromkeys(x.code for x in r.reasons)))}</td>"
        f"<td>{_e(r.subject)}</td></tr>"
        for r in records
    )
    page = "a later page" if later_page else "newest first"
    return (
        f"<table><caption>Blocks {_window_text(since, until)}, {page}</caption><thead><tr>"
        + "".join(
            f'<th scope="col">{name}</th>'
            for name in ("Time", "Channel", "Account", "Recipient", "Reasons", "Subject")
        )
        + f"</tr></thead><tbody>{rows}</tbody></table>"
    )


def _pager(filters: Filters, records: list[BlockRecord], later_page: bool) -> str:
    links = []
    if later_page:
        links.append(f'<a href="/review?{_e(filters.params())}">First page</a>')
    if len(records) > PAGE_SIZE and records[PAGE_SIZE - 1].id is not None:
        cursor = str(records[PAGE_SIZE - 1].id)
        links.append(
            f'<a href="/review?{_e(filters.params(before_id=cursor))}" rel="next">Next page</a>'
        )
    return f'<nav aria-label="Pages"><p>{" · ".join(links)}</p></nav>' if links else ""
