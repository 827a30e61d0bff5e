"""The calling rules as a reviewer reads them: per jurisdiction, what is in force on a date
(hours per weekday, restricted days, caps, consent, exemptions, dates, citations and
confidence), as text, as JSON-ready data, and as the generated table of rules/README.md.

Pure, like the rule types it reads: rules and a date in, data or text out. The command line
(`compliance-gateway rules show`, `rules table`) reads the clock and the files.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

from gateway.model import Channel, ConsentKind
from gateway.rules.calling import (
    TELEPHONY_CHANNELS,
    WEEKDAY_KEYS,
    CallingRules,
    CapRule,
    ConsentRule,
    Exemption,
    JurisdictionRule,
    RestrictedDayRule,
    WindowRule,
)
from gateway.rules.geography import SUBDIVISIONS

TABLE_START = "<!-- rules-table:start -->"
TABLE_END = "<!-- rules-table:end -->"
TABLE_COMMAND = "make rules-table"
KINDS = ("hours", "restricted days", "cap", "consent")
_KIND_TYPES = (WindowRule, RestrictedDayRule, CapRule, ConsentRule)
_DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_ALL_CHANNELS = tuple(c.value for c in TELEPHONY_CHANNELS)


class UnknownJurisdiction(ValueError):
    """A jurisdiction filter that names neither a national jurisdiction nor a subdivision."""


@dataclass(frozen=True)
class ExemptionView:
    consent_kinds: tuple[str, ...]
    within_days: int | None
    citation: str


@dataclass(frozen=True)
class RuleView:
    """One rule: `terms` says what it requires in a line ("Mon-Sat 08:00-20:00", "3 per
    24 h"); the rest says where it binds, since and until when, and on what authority."""

    id: str
    kind: str
    terms: str
    channels: tuple[str, ...]
    automated_only: bool
    effective: date | None
    until: date | None
    exemptions: tuple[ExemptionView, ...]
    citation: str
    confidence: str
    note: str


@dataclass(frozen=True)
class Window:
    """Hours on one weekday, with the channels they bind and the rules they come from."""

    hours: str
    channels: tuple[str, ...]
    rules: tuple[str, ...]


@dataclass(frozen=True)
class Day:
    """One weekday: its windows, and the channels on which a restricted-day rule closes it."""

    weekday: str
    windows: tuple[Window, ...]
    closed: tuple[str, ...]


@dataclass(frozen=True)
class JurisdictionReport:
    """`rules`: in force on the report's date (every rule when it has none); `hours`: their
    windows combined per weekday, Monday first; `not_in_force`: the rest, with their dates."""

    jurisdiction: str
    name: str
    hours: tuple[Day, ...]
    rules: tuple[RuleView, ...]
    not_in_force: tuple[RuleView, ...]


def jurisdictions(rules: CallingRules) -> tuple[str, ...]:
    """Every jurisdiction with a rule: national first, then ISO 3166-2 codes alphabetically."""
    nationals = tuple(dict.fromkeys(rules.national.values()))
    subdivisions = {
        r.jurisdiction for r in _jurisdiction_rules(rules) if r.jurisdiction not in nationals
    }
    return nationals + tuple(sorted(subdivisions))


def resolve_jurisdiction(rules: CallingRules, text: str) -> str:
    """The code a filter names: a national jurisdiction ("US"), an ISO 3166-2 code ("US-FL"),
    a subdivision's own code ("FL", "BC") or its name ("Florida"), in any case. "CA" is
    Canada; California is "US-CA"."""
    wanted = text.strip().upper()
    nationals = set(rules.national.values())
    if wanted in nationals or wanted in SUBDIVISIONS:
        return wanted
    for code, names in SUBDIVISIONS.items():
        country, _, own = code.partition("-")
        if country in nationals and (
            own == wanted or wanted.casefold() in (n.casefold() for n in names)
        ):
            return code
    raise UnknownJurisdiction(
        f"unknown jurisdiction {text!r}: give US, CA, or an ISO 3166-2 code such as US-FL"
    )


def report(
    rules: CallingRules, at: date | None, jurisdiction: str | None = None
) -> tuple[JurisdictionReport, ...]:
    """The rules of each jurisdiction (or of `jurisdiction`, a resolved code) in force on
    `at`, the callee's local date; with `at` None, every rule whatever its dates."""
    codes = jurisdictions(rules) if jurisdiction is None else (jurisdiction,)
    reports = []
    for code in codes:
        own = sorted(
            (r for r in _jurisdiction_rules(rules) if r.jurisdiction == code),
            key=lambda r: _KIND_TYPES.index(type(r)),
        )
        current = [r for r in own if at is None or r.in_force(at)]
        reports.append(JurisdictionReport(
            jurisdiction=code,
            name=_name(rules, code),
            hours=_week(current),
            rules=tuple(_view(r) for r in current),
            not_in_force=tuple(_view(r) for r in own if at is not None and not r.in_force(at)),
        ))
    return tuple(reports)


def report_data(at: date, reports: Sequence[JurisdictionReport]) -> dict[str, Any]:
    """The report as JSON-ready data (dates as ISO 8601)."""
    return {
        "at": at.isoformat(),
        "jurisdictions": [_iso_dates(asdict(r)) for r in reports],
    }


def render_text(at: date, reports: Sequence[JurisdictionReport]) -> str:
    """What `rules show` prints: a summary per jurisdiction, then each rule with its dates,
    citation, confidence, exemptions and note, then what is not in force that day."""
    lines = [
        f"Calling rules in force on {at.isoformat()} (the callee's local date; hours are the "
        "callee's local time; med = secondary sources, verify)",
    ]
    for item in reports:
        lines += ["", f"{item.jurisdiction}  {item.name}"]
        if any(day.windows for day in item.hours):
            lines.append(f"  {'hours':<16}{_days_text(item.hours)}")
        for kind in KINDS[1:]:
            same_kind = [v for v in item.rules if v.kind == kind]
            if same_kind:
                lines.append(f"  {kind:<16}{_merged_terms(same_kind)}")
        if not item.rules:
            lines.append(f"  nothing in force on {at.isoformat()}")
        for view in item.rules:
            lines += _rule_lines(view)
        if item.not_in_force:
            lines.append(f"  not in force on {at.isoformat()}:")
            lines += [f"    {v.id}: {v.kind} {v.terms}; {_dates(v)}" for v in item.not_in_force]
        if "-" in item.jurisdiction:
            country = item.jurisdiction.partition("-")[0]
            lines.append(
                f"  the national rules apply as well: rules show --jurisdiction {country}"
            )
    return "\n".join(lines) + "\n"


def markdown_table(rules: CallingRules) -> str:
    """Every rule whatever its dates, a row per jurisdiction: the table of rules/README.md,
    which therefore does not go stale as dates pass."""
    lines = [
        "| jurisdiction | hours (callee's local time) | restricted days | caps | consent "
        "| exemptions | in force | citation | confidence |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for item in report(rules, None):
        views = item.rules
        cells = [
            f"{item.jurisdiction} ({item.name})",
            _table_hours(views),
            *(
                "; ".join(_qualified(v) for v in views if v.kind == kind)
                for kind in KINDS[1:]
            ),
            _table_exemptions(views),
            _table_dates(views),
            _table_citations(views),
            _table_confidence(views),
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def replace_table(document: str, table: str) -> str:
    """`document` with `table` between its TABLE_START and TABLE_END lines."""
    return replace_section(document, table, TABLE_START, TABLE_END, "calling.toml")


def replace_section(document: str, table: str, start_mark: str, end_mark: str, source: str) -> str:
    """`document` with `table`, generated from the rule file `source`, between its
    `start_mark` and `end_mark` lines."""
    start, end = document.find(start_mark), document.find(end_mark)
    if start < 0 or end < start:
        raise ValueError(f"no {start_mark} ... {end_mark} section")
    head = document[: start + len(start_mark)]
    return f"{head}\n{_generated_by(source)}\n\n{table}{document[end:]}"


def _generated_by(source: str) -> str:
    return f"<!-- generated from {source} by `{TABLE_COMMAND}`: do not edit -->"


def _jurisdiction_rules(rules: CallingRules) -> list[JurisdictionRule]:
    return [r for r in rules.rules.values() if isinstance(r, JurisdictionRule)]


def _name(rules: CallingRules, code: str) -> str:
    if code in SUBDIVISIONS:
        return SUBDIVISIONS[code][0]
    countries = [country for country, j in rules.national.items() if j == code]
    return f"national: numbers of {', '.join(countries)}"


def _channels(channels: Iterable[Channel | str]) -> tuple[str, ...]:
    values = {Channel(c).value for c in channels}
    return tuple(c for c in _ALL_CHANNELS if c in values)


def _week(current: Sequence[JurisdictionRule]) -> tuple[Day, ...]:
    """Each weekday's windows from every window rule in force (Texas weekday and Sunday
    rules, calls and texts, combine here); one window binding several channels is listed
    once with all of them."""
    days = []
    for weekday, key in enumerate(WEEKDAY_KEYS):
        merged: dict[str, tuple[set[str], list[str]]] = {}
        for rule in current:
            window = rule.windows[weekday] if isinstance(rule, WindowRule) else None
            if window is not None:
                channels, ids = merged.setdefault(str(window), (set(), []))
                channels.update(c.value for c in rule.channels)
                ids.append(rule.id)
        closed = (
            c
            for r in current
            if isinstance(r, RestrictedDayRule) and weekday in r.weekdays
            for c in r.channels
        )
        days.append(Day(
            weekday=key,
            windows=tuple(
                Window(hours, _channels(channels), tuple(ids))
                for hours, (channels, ids) in merged.items()
            ),
            closed=_channels(closed),
        ))
    return tuple(days)


def _view(rule: JurisdictionRule) -> RuleView:
    return RuleView(
        id=rule.id,
        kind=KINDS[_KIND_TYPES.index(type(rule))],
        terms=_terms(rule),
        channels=_channels(rule.channels),
        automated_only=rule.automated_only,
        effective=rule.effective,
        until=rule.until,
        exemptions=tuple(_exemption(e) for e in rule.exemptions),
        citation=rule.citation,
        confidence=rule.confidence,
        note=rule.note,
    )


def _terms(rule: JurisdictionRule) -> str:
    if isinstance(rule, WindowRule):
        return _runs([str(w) if w else "" for w in rule.windows])
    if isinstance(rule, RestrictedDayRule):
        parts = []
        if rule.weekdays:
            parts.append(", ".join(_DAY_NAMES[d] for d in sorted(rule.weekdays)))
        holidays = [
            *(c.label for c in rule.calendars),
            *(e.name for e in rule.extra_holidays),
            *(d.name for d in rule.defined_holidays),
        ]
        if holidays:
            on = "" if len(rule.holiday_weekdays) == 7 else " falling on " + ", ".join(
                label for label, _ in _day_runs(
                    ["x" if d in rule.holiday_weekdays else "" for d in range(7)]
                )
            )
            parts.append(f"holidays{on}: {', '.join(holidays)}")
        return "; ".join(parts)
    if isinstance(rule, CapRule):
        days, hours = divmod(rule.window_s, 86_400)
        period = f"{days} days" if days > 1 and not hours else f"{rule.window_s // 3600} h"
        per = "" if rule.per == "recipient" else f" per {rule.per}"
        return f"{rule.limit} per {period}{per}"
    assert isinstance(rule, ConsentRule)
    return _either(rule.kinds)


def _exemption(exemption: Exemption) -> ExemptionView:
    return ExemptionView(
        consent_kinds=tuple(k.value for k in ConsentKind if k in exemption.kinds),
        within_days=exemption.within_days,
        citation=exemption.citation,
    )


def _either(kinds: Iterable[ConsentKind | str]) -> str:
    """Consent kinds in the model's order: "express-written or express"."""
    values = {ConsentKind(k).value for k in kinds}
    ordered = [k.value for k in ConsentKind if k.value in values]
    return ordered[0] if len(ordered) == 1 else f"{', '.join(ordered[:-1])} or {ordered[-1]}"


def _exemption_text(exemption: ExemptionView) -> str:
    within = (
        f" obtained within the last {exemption.within_days} days" if exemption.within_days else ""
    )
    return f"a recorded {_either(exemption.consent_kinds)} consent{within} ({exemption.citation})"


def _runs(texts: Sequence[str]) -> str:
    """Seven weekday texts (Monday first; "" for none) as runs: "Mon-Sat 08:00-20:00, Sun
    12:00-21:00"."""
    return ", ".join(f"{label} {text}" for label, text in _day_runs(texts))


def _day_runs(texts: Sequence[str]) -> list[tuple[str, str]]:
    """Runs of consecutive weekdays with the same text ("Mon-Fri"), those with a text."""
    runs: list[tuple[int, int]] = []
    for day, text in enumerate(texts):
        if runs and texts[runs[-1][0]] == text:
            runs[-1] = (runs[-1][0], day)
        else:
            runs.append((day, day))
    return [
        (_DAY_NAMES[first] + (f"-{_DAY_NAMES[last]}" if last > first else ""), texts[first])
        for first, last in runs
        if texts[first]
    ]


def _days_text(days: Sequence[Day]) -> str:
    texts = []
    for day in days:
        parts = [w.hours + _only(w.channels) for w in day.windows]
        if day.closed:
            parts.append("closed" + _only(day.closed))
        texts.append(", ".join(parts) or "no hours of its own")
    return _runs(texts)


def _only(channels: Sequence[str]) -> str:
    return "" if tuple(channels) == _ALL_CHANNELS else f" ({', '.join(channels)} only)"


def _merged_terms(views: Sequence[RuleView]) -> str:
    """The same terms from several rules once, with the channels they bind together."""
    merged: dict[str, set[str]] = {}
    for view in views:
        merged.setdefault(view.terms, set()).update(view.channels)
    return "; ".join(terms + _only(_channels(channels)) for terms, channels in merged.items())


def _dates(view: RuleView) -> str:
    return " ".join(_date_parts(view.effective, view.until))


def _date_parts(effective: date | None, until: date | None) -> list[str]:
    parts = []
    if effective:
        parts.append(f"from {effective.isoformat()}")
    if until:
        parts.append(f"until {until.isoformat()}")
    return parts


def _confidence(confidence: str) -> str:
    return "med (verify)" if confidence == "med" else confidence


def _rule_lines(view: RuleView) -> list[str]:
    scope = [", ".join(view.channels)]
    if view.automated_only:
        scope.append("automated only")
    scope += _date_parts(view.effective, view.until)
    lines = [
        f"  - {view.id}: {view.kind} {view.terms}; {'; '.join(scope)}; "
        f"{_confidence(view.confidence)}",
        f"      citation: {view.citation}",
    ]
    lines += [f"      lifted by {_exemption_text(e)}" for e in view.exemptions]
    if view.note:
        lines.append(f"      note: {view.note}")
    return lines


def _qualified(view: RuleView) -> str:
    return view.terms + _limits(view.channels, view.automated_only, view.effective, view.until)


def _limits(
    channels: tuple[str, ...], automated_only: bool, effective: date | None, until: date | None
) -> str:
    """What narrows a rule, for the table: channels other than all, automated only, dates."""
    limits = []
    if channels != _ALL_CHANNELS:
        limits.append(f"{', '.join(channels)} only")
    if automated_only:
        limits.append("automated only")
    limits += _date_parts(effective, until)
    return f" ({'; '.join(limits)})" if limits else ""


def _table_hours(views: Sequence[RuleView]) -> str:
    """Window rules grouped by channels and dates, each group's windows combined per weekday:
    Texas calls, and Texas texts from 2025-09-01."""
    groups: dict[tuple[tuple[str, ...], bool, date | None, date | None], list[str]] = {}
    for view in views:
        if view.kind == "hours":
            key = (view.channels, view.automated_only, view.effective, view.until)
            groups.setdefault(key, []).append(view.terms)
    return "; ".join(", ".join(terms) + _limits(*key) for key, terms in groups.items())


def _table_exemptions(views: Sequence[RuleView]) -> str:
    lifted: dict[str, list[str]] = {}
    for view in views:
        for exemption in view.exemptions:
            lifted.setdefault(_exemption_text(exemption), []).append(view.kind)
    return "; ".join(f"{', '.join(kinds)}: lifted by {text}" for text, kinds in lifted.items())


def _table_dates(views: Sequence[RuleView]) -> str:
    dated: dict[str, list[str]] = {}
    for view in views:
        if view.effective or view.until:
            dated.setdefault(_dates(view), []).append(f"`{view.id}`")
    return "; ".join(f"{when}: {', '.join(ids)}" for when, ids in dated.items())


def _table_citations(views: Sequence[RuleView]) -> str:
    """Each source once: citations are split at ";", and one that another repeats with more
    after it ("15 O.S. 775C.4" beside "15 O.S. 775C.4 (Oklahoma ...)") is left out."""
    parts = list(dict.fromkeys(p.strip() for v in views for p in v.citation.split(";")))
    return "; ".join(
        part for part in parts
        if not any(other.startswith((f"{part} (", f"{part}, ")) for other in parts)
    )


def _table_confidence(views: Sequence[RuleView]) -> str:
    unsure = [f"`{v.id}`" for v in views if v.confidence != "high"]
    if not unsure:
        return "high"
    if len(unsure) == len(views):
        return "med (verify)"
    return f"high; med (verify): {', '.join(unsure)}"


def _iso_dates(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _iso_dates(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_iso_dates(v) for v in value]
    if isinstance(value, date):
        return value.isoformat()
    return value
