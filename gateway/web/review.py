"""The console's Activity page (`/review`: every decision, allowed and blocked, filtered,
counted and charted), a decision's detail, the block detail older bookmarks point at, and
the sign-in page. Rendered from templates (`console/activity.html` and friends), so every
value an agent wrote (subjects, senders, display names, recipients) is escaped by Jinja2.

People sign in with single sign-on (`people_sign_in`), or with an account's secret where
that door is open; every request re-reads the session from the store (`Console.page`), so
sign-out, deactivation, a role change or a removed account ends access at once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from multidict import MultiDict, MultiMapping

from gateway.auth.authenticate import Authenticator
from gateway.auth.secret_check import account_or_refusal
from gateway.model import BlockRecord, Channel, DecisionOutcome, Role
from gateway.rules.ruleset import RuleSet
from gateway.services.decision_reports import evidence_document
from gateway.store.base import DecisionQuery, DecisionSummary, StoreUnavailable
from gateway.store.core import summary_of_decisions
from gateway.web.admin import ParameterError, only_parameters, rule_source
from gateway.web.console import Console, unavailable
from gateway.web.decisions import DECISION_CURSOR, decision_query
from gateway.web.evidence_page import evidence_context
from gateway.web.pages import Handler, Viewer, read_form, render_page, same_origin, see_other
from gateway.web.people_sign_in import MAX_FORM_BYTES

PAGE_SIZE = 50
DEFAULT_WINDOW = timedelta(days=7)
CHART_MAX_BARS = 48
BUCKET_CHOICES_S = (
    60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400, 30 * 86400,
    365 * 86400,
)
"""Round bucket sizes; the longest keeps a window of decades to a few dozen bars (and as
few counts)."""
FILTERS = (
    "since", "until", "channel", "outcome", "reason", "account", "sender", "recipient", "q",
    "upstream_id",
)
"""The Activity form's fields: `GET /v1/decisions`'s filters, so an export link repeats
them as they are."""
PAGE_PARAMETERS = frozenset((*FILTERS, "cursor"))
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
LONGEST_WINDOW = timedelta(seconds=CHART_MAX_BARS * BUCKET_CHOICES_S[-1])
"""The Activity window: no earlier than the epoch the chart's buckets are aligned to, and
no longer than the chart's bars of its longest bucket (48 years)."""
BLOCK_MATCH_SLACK = timedelta(minutes=1)
"""A block and its decision are recorded moments apart, for the same message (gateway id)."""


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


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    outcome: str
    label: str


@dataclass(frozen=True)
class Chart:
    """The SVG's geometry, computed here so the template only places it."""

    width: int
    height: int
    left: int
    top: int
    plot_width: int
    base: int
    peak: int
    bars: tuple[Bar, ...]
    since: str
    until: str
    summary: str


def chart(
    series: tuple[tuple[datetime, str, int], ...], since: datetime, until: datetime,
    bucket_s: int,
) -> Chart:
    """Stacked bars (blocked above allowed) placed by their time, not their index, so a
    sparse series draws correctly."""
    width, height, left, top, bottom = 720, 200, 48, 12, 28
    plot_w, plot_h = width - left - 8, height - top - bottom
    window_s = (until - since).total_seconds()
    per_bucket: dict[datetime, Counter[str]] = {}
    for start, outcome, n in series:
        per_bucket.setdefault(start, Counter())[outcome] += n
    peak = max((sum(c.values()) for c in per_bucket.values()), default=0)
    bar_w = max(plot_w * bucket_s / window_s - 1, 1)
    bars: list[Bar] = []
    for start, counts in sorted(per_bucket.items()):
        offset = (start - since).total_seconds() / window_s
        x = left + max(0.0, min(offset, 1.0)) * plot_w
        w = min(bar_w, left + plot_w - x)
        stacked = 0.0
        for outcome in (DecisionOutcome.ALLOWED, DecisionOutcome.BLOCKED):
            count = counts[outcome.value]
            if count <= 0 or w <= 0:
                continue
            h = max(plot_h * count / peak, 1.0)
            stacked += h
            label = f"{start:%Y-%m-%d %H:%M} UTC: {count} {outcome.value}"
            bars.append(Bar(x, top + plot_h - stacked, w, h, outcome.value, label))
    total = sum(n for _, _, n in series)
    blocked = sum(n for _, outcome, n in series if outcome == DecisionOutcome.BLOCKED)
    summary = (
        f"{_plural(total, 'decision')} ({blocked} blocked) in buckets of {_duration(bucket_s)}"
        f" from {since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC; the busiest bucket"
        f" had {peak}."
    )
    return Chart(width, height, left, top, plot_w, top + plot_h, peak, tuple(bars),
                 f"{since:%Y-%m-%d %H:%M}", f"{until:%Y-%m-%d %H:%M}", summary)


def form_values(query: MultiMapping[str]) -> MultiDict[str]:
    """The form's fields as typed, blank ones left out: a GET form sends every field, and
    `decision_query` refuses an empty filter."""
    return MultiDict((name, value.strip()) for name, value in query.items() if value.strip())


def activity_query(values: MultiMapping[str], now: datetime) -> DecisionQuery:
    """`GET /v1/decisions`'s checks, then the page's own window: the 7 days before `until`
    (default now) unless `since` says otherwise."""
    only_parameters(values, PAGE_PARAMETERS)
    query = decision_query(values, now)
    until = query.until or now
    try:
        since = query.since or until - DEFAULT_WINDOW
    except OverflowError:
        raise ParameterError("until", "too early to have 7 days before it") from None
    if since >= until:
        raise ParameterError("since", "must be earlier than until (default now)")
    # The chart's buckets are aligned to the Unix epoch and counted one by one (SQLite
    # reads an index range per bucket): a window reaching year 1 or 9999 was a 500
    # (OverflowError past the calendar), and one of millennia thousands of counts.
    if since < EARLIEST:
        raise ParameterError("since", f"must be {EARLIEST:%Y-%m-%d} or later")
    if until > LATEST:
        raise ParameterError("until", f"must be before {LATEST:%Y-%m-%d}")
    if until - since > LONGEST_WINDOW:
        raise ParameterError(
            "since", f"at most {LONGEST_WINDOW.days} days before until (default now)")
    return replace(
        query, since=since.astimezone(UTC), until=until.astimezone(UTC), limit=PAGE_SIZE + 1
    )


def export_link(values: MultiMapping[str], query: DecisionQuery, kind: str) -> str:
    """The API's URL for exactly this view: the window as the page resolved it, so the file
    holds the decisions the page counted."""
    assert query.since is not None and query.until is not None
    filters = [(k, v) for k, v in values.items() if k not in ("since", "until", "cursor")]
    window = [("since", query.since.isoformat()), ("until", query.until.isoformat())]
    return "/v1/decisions?" + urlencode([*window, *filters, ("format", kind)])


def reason_rows(summary: DecisionSummary) -> list[tuple[str, list[int]]]:
    """(reason code, decisions per channel in `Channel` order), the most frequent first."""
    per_reason: dict[str, Counter[str]] = {}
    for channel, code, n in summary.reasons:
        per_reason.setdefault(code, Counter())[channel] += n
    order = sorted(per_reason, key=lambda code: (-sum(per_reason[code].values()), code))
    return [(code, [per_reason[code][c.value] for c in Channel]) for code in order]


def outcome_rows(summary: DecisionSummary) -> list[tuple[str, int, int]]:
    """(channel, allowed, blocked) for every channel."""
    counts = {(channel, outcome): n for channel, outcome, n in summary.counts}
    return [
        (c.value, counts.get((c.value, "allowed"), 0), counts.get((c.value, "blocked"), 0))
        for c in Channel
    ]


class ReviewRoutes:
    def __init__(
        self, console: Console, authenticator: Authenticator,
        rules: Callable[[], RuleSet] | None = None,
    ) -> None:
        """`rules`, where given, cites a rule a record's own evidence does not (blocks
        recorded before the decision log)."""
        self.console = console
        self.store = console.store
        self.sign_in = console.sign_in
        self.authenticator = authenticator
        self.clock = console.clock
        self.rules = rules

    def register(self, app: web.Application) -> None:
        page = self.console.page
        app.router.add_get("/review", page(Role.MANAGER, self.activity_page))
        app.router.add_get(r"/review/decisions/{id:[0-9]{1,18}}",
                           page(Role.MANAGER, self.decision_page))
        app.router.add_get(r"/review/blocks/{id:[0-9]{1,18}}", page(Role.MANAGER, self.block_page))
        app.router.add_get("/review/login", self._store_errors(self.login_page))
        app.router.add_post("/review/login", self._store_errors(self.login))

    def _store_errors(self, handler: Handler) -> Handler:
        async def handle(request: web.Request) -> web.Response:
            try:
                return await handler(request)
            except StoreUnavailable:
                return unavailable(viewer=None)

        return handle

    def _sign_in_page(self, error: str = "", status: int = 200) -> web.Response:
        sso = self.sign_in.sso()
        providers = [
            *(("oidc", p.name) for p in sso.oidc),
            *(("saml", p.name) for p in sso.saml),
        ]
        return render_page(
            "console/sign_in.html", "Sign in", status=status, error=error,
            providers=providers, secret_form=self.sign_in.secret_sign_in_offered,
        )

    def _refused(self, status: int, why: str) -> web.Response:
        if status == 429:
            return self._sign_in_page(f"Too many failed sign-ins from this network: {why}.", 429)
        return self._sign_in_page(
            "The sign-in could not be checked just now; please try again in a minute.", status
        )

    async def login_page(self, request: web.Request) -> web.Response:
        viewer = await self.sign_in.viewer(request)
        if viewer is not None and viewer.role >= Role.MANAGER:
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
        try:
            form = await read_form(request, MAX_FORM_BYTES)
        except web.HTTPRequestEntityTooLarge:
            return self._sign_in_page("The form was too large.", 413)
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
                f"This account may not use the console this way: it needs {needed}.", 403
            )
        return await self.sign_in.open_account_session(request, account, method)

    async def activity_page(self, request: web.Request, viewer: Viewer) -> web.Response:
        values = form_values(request.query)
        context: dict[str, Any] = {"values": values, "channels": [c.value for c in Channel]}
        try:
            query = activity_query(values, self.clock.now())
        except ParameterError as exc:
            return render_page(
                "console/activity.html", "Activity", status=400, viewer=viewer,
                section="activity", error=str(exc), **context,
            )
        assert query.since is not None and query.until is not None
        bucket_s = bucket_seconds((query.until - query.since).total_seconds())
        records = await self.store.query_decisions(query)
        if query.before_id is None and len(records) <= PAGE_SIZE:
            summary = summary_of_decisions(records, bucket_s)  # the page holds every match
        else:
            summary = await self.store.decision_summary(query, bucket_s)
        shown = records[:PAGE_SIZE]
        kept = [(k, v) for k, v in values.items() if k != "cursor"]
        next_link = (
            "/review?" + urlencode([*kept, ("cursor", DECISION_CURSOR.encode(shown[-1].id))])
            if len(records) > PAGE_SIZE else None
        )
        return render_page(
            "console/activity.html", "Activity", viewer=viewer, section="activity", error="",
            since=query.since, until=query.until, decisions=shown, summary=summary,
            outcomes=outcome_rows(summary), reasons=reason_rows(summary),
            chart=chart(summary.series, query.since, query.until, bucket_s),
            later_page=query.before_id is not None, next_link=next_link,
            first_link="/review?" + urlencode(kept),
            reason_link=lambda code: "/review?" + urlencode(
                [*((k, v) for k, v in kept if k != "reason"), ("reason", code)]),
            csv_link=export_link(values, query, "csv"),
            json_link=export_link(values, query, "json"), **context,
        )

    async def decision_page(self, request: web.Request, viewer: Viewer) -> web.Response:
        record = await self.store.get_decision(int(request.match_info["id"]))
        if record is None:
            return render_page(
                "console/decision_missing.html", "Decision not found", status=404,
                viewer=viewer, section="activity", what="decision",
            )
        return render_page(
            "console/decision.html", f"Decision {record.id}", viewer=viewer,
            section="activity", record=record,
            **evidence_context(evidence_document(record), self._current_citation),
        )

    async def block_page(self, request: web.Request, viewer: Viewer) -> web.Response:
        """An older bookmark: the block's decision where the log has it (the same message
        and recipient, blocked moments apart), else the block as the block log keeps it."""
        record = await self.store.get_block(int(request.match_info["id"]))
        if record is None:
            return render_page(
                "console/decision_missing.html", "Block not found", status=404,
                viewer=viewer, section="activity", what="block",
            )
        decision_id = await self._decision_of(record)
        if decision_id is not None:
            return see_other(f"/review/decisions/{decision_id}")
        reasons = [(reason, self._current_citation(reason.rule)) for reason in record.reasons]
        return render_page(
            "console/decision_block.html", f"Block {record.id}", viewer=viewer,
            section="activity", record=record, reasons=reasons,
        )

    async def _decision_of(self, block: BlockRecord) -> int | None:
        if not block.gateway_id:
            return None
        found = await self.store.query_decisions(DecisionQuery(
            since=block.time - BLOCK_MATCH_SLACK, until=block.time + BLOCK_MATCH_SLACK,
            channel=block.channel, outcome=DecisionOutcome.BLOCKED, account=block.account,
            recipient=block.recipient, limit=100,
        ))
        ids = [
            d.id for d in found
            if d.gateway_id == block.gateway_id and d.recipient == block.recipient
        ]
        return ids[0] if len(ids) == 1 else None

    def _current_citation(self, rule_id: str) -> str | None:
        if self.rules is None:
            return None
        return rule_source(self.rules(), rule_id)["citation"]
