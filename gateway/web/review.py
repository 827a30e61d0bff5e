"""Managers' review of the block log: server-rendered pages under /review.

People sign in with single sign-on (`people_sign_in`), or with an account's secret where
that door is open; every request re-reads the session from the store, so sign-out,
deactivation, a role change or a removed account ends access at once.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlencode

from aiohttp import web

from gateway.auth.authenticate import Authenticator
from gateway.auth.secret_check import account_or_refusal
from gateway.config.sso import SsoConfig
from gateway.model import BlockRecord, Channel, Role
from gateway.pipeline.dry_run import CheckError, parse_time
from gateway.store.base import BlockQuery, StoreUnavailable
from gateway.web.console import Console
from gateway.web.pages import Handler, Viewer, page, same_origin, see_other
from gateway.web.pages import escape as _e
from gateway.web.people_sign_in import MAX_FORM_BYTES

PAGE_SIZE = 50
DEFAULT_SINCE = "7d"
CHART_MAX_BARS = 48
BUCKET_CHOICES_S = (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400)


def _when(instant: datetime) -> str:
    utc = instant.astimezone(UTC)
    shown = utc.strftime("%Y-%m-%d %H:%M:%S")
    return f'<time datetime="{_e(utc.isoformat())}">{_e(shown)} UTC</time>'


def _is_id(text: str) -> bool:
    """ASCII digits that fit a 64-bit integer, so the store is never handed an overflow."""
    return text.isascii() and text.isdigit() and len(text) <= 18


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


def _sign_in_body(sso: SsoConfig, secret_form: bool, error: str = "") -> str:
    message = f'<p class="error" id="sign-in-error" role="alert">{_e(error)}</p>' if error else ""
    providers = [
        *(("oidc", p.name) for p in sso.oidc),
        *(("saml", p.name) for p in sso.saml),
    ]
    links = "".join(
        f'<li><a href="/auth/{kind}/{_e(name)}/login">Sign in with {_e(name)}</a></li>'
        for kind, name in providers
    )
    body = (
        f"{message}"
        "<p>Review of blocked messages is open to managers, admins and owners. "
        "You stay signed in for 8 hours on this browser, or 30 minutes without using it.</p>"
    )
    if links:
        body += f'<h2>Your company account</h2><ul>{links}</ul>'
    if secret_form:
        described = "secret-hint sign-in-error" if error else "secret-hint"
        hint = (
            "Break-glass sign-in for owners when single sign-on is down; it is audited."
            if providers else "The same secret the account uses with the API."
        )
        body += (
            ("<h2>Account secret</h2>" if providers else "")
            + '<form method="post" action="/review/login">'
            '<label for="secret">Account secret</label>'
            '<input type="password" id="secret" name="secret" required '
            f'autocomplete="current-password" aria-describedby="{described}">'
            f'<p class="hint" id="secret-hint">{_e(hint)}</p>'
            '<p><button type="submit">Sign in</button></p>'
            "</form>"
        )
    return body


class ReviewRoutes:
    def __init__(self, console: Console, authenticator: Authenticator) -> None:
        self.console = console
        self.store = console.store
        self.sign_in = console.sign_in
        self.authenticator = authenticator
        self.clock = console.clock

    def register(self, app: web.Application) -> None:
        app.router.add_get("/review", self._store_errors(self.log_page))
        app.router.add_get(r"/review/blocks/{id:[0-9]{1,18}}", self._store_errors(self.detail_page))
        app.router.add_get("/review/login", self._store_errors(self.login_page))
        app.router.add_post("/review/login", self._store_errors(self.login))

    def _store_errors(self, handler: Handler) -> Handler:
        async def handle(request: web.Request) -> web.Response:
            try:
                return await handler(request)
            except StoreUnavailable:
                response = page(
                    "Please try again",
                    "<p>The block log could not be read or the sign-in could not be recorded "
                    "just now. Please try again in a minute.</p>",
                    status=503,
                )
                response.headers["Retry-After"] = "60"
                return response

        return handle

    def _sign_in_page(self, error: str = "", status: int = 200) -> web.Response:
        body = _sign_in_body(self.sign_in.sso(), self.sign_in.secret_sign_in_offered, error)
        return page("Sign in", body, status=status)

    def _refused(self, status: int, why: str) -> web.Response:
        if status == 429:
            return self._sign_in_page(f"Too many failed sign-ins from this network: {why}.", 429)
        return self._sign_in_page(
            "The sign-in could not be checked just now; please try again in a minute.", status
        )

    async def reviewer(self, request: web.Request) -> Viewer | None:
        """The request's signed-in viewer when they may review blocks (manager and up)."""
        viewer = await self.sign_in.viewer(request)
        return viewer if viewer is not None and viewer.role >= Role.MANAGER else None

    async def login_page(self, request: web.Request) -> web.Response:
        if await self.reviewer(request) is not None:
            return see_other("/review")
        return self._sign_in_page()

    async def login(self, request: web.Request) -> web.Response:
        """Sign-in with an account secret (see `PeopleSignIn.secret_sign_in_open_to`)."""
        method = "break-glass" if self.sign_in.sso().configured else "account-secret"
        if not same_origin(request):
            return self._sign_in_page("This sign-in came from another site.", 403)
        if not self.sign_in.secret_sign_in_offered:
            return await self.sign_in.refused(
                request, method, "sign-in with an account secret is off while single "
                "sign-on is configured; use your company account", status=403,
            )
        if (request.content_length or 0) > MAX_FORM_BYTES:
            return self._sign_in_page("The form was too large.", 413)
        try:
            form = await request.post()
        except ValueError:
            return self._sign_in_page("The form could not be read.", 400)
        secret = form.get("secret")
        account = await account_or_refusal(
            self.authenticator, request, "review", self._refused,
            secret if isinstance(secret, str) else "", keys_accepted=False,
        )
        if isinstance(account, web.Response):
            return account
        if account is None:
            await self.sign_in.audit(request, "review.signin_failed", "", {
                "method": method, "problem": "no account has this secret"})
            return self._sign_in_page("That secret does not match any account.", 401)
        if not self.sign_in.secret_sign_in_open_to(account):
            needed = "the owner role" if self.sign_in.sso().configured else (
                "the manager role or higher")
            await self.sign_in.audit(request, "review.signin_failed", account.name, {
                "method": method,
                "problem": f"role {account.role.name.lower()} may not sign in this way"})
            return self._sign_in_page(
                f"This account may not review blocks this way: it needs {needed}.", 403
            )
        return await self.sign_in.open_account_session(request, account, method)

    async def log_page(self, request: web.Request) -> web.Response:
        viewer = await self.reviewer(request)
        if viewer is None:
            return self._sign_in_page()
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
            return page("Block log", body, status=400, viewer=viewer)
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
        return page("Block log", body, viewer=viewer)

    async def detail_page(self, request: web.Request) -> web.Response:
        viewer = await self.reviewer(request)
        if viewer is None:
            return self._sign_in_page(status=401)
        record = await self.store.get_block(int(request.match_info["id"]))
        back = '<p><a href="/review">Back to the block log</a></p>'
        if record is None:
            return page(
                "Block not found", f"<p>There is no block with this number.</p>{back}",
                status=404, viewer=viewer,
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
        return page(f"Block {record.id}", body, viewer=viewer)


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
