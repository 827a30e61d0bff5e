"""Calling and texting rules (TCPA, CRTC, state laws), area-code geography and SMS keywords.

`load_calling_rules` reads `calling.toml`, `area_codes.toml`, `keywords.toml` and
`footers/sms_opt_out.txt` once and resolves everything a decision needs (zone objects,
windows as seconds since local midnight, rules grouped by jurisdiction and channel), so the
pure policy only looks things up and compares. Every problem raises `RulesError` naming the
file and the key, so a reviewer can fix the data without reading code.
"""

from __future__ import annotations

import functools
import re
import string
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Literal

import holidays

from gateway.model import Channel, Purpose
from gateway.rules.ruleset import CONFIDENCE_LEVELS, RulesError, read_toml

WEEKDAY_KEYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
TELEPHONY_CHANNELS = (Channel.CALL, Channel.SMS)

# Rules every rule set must have, with the only code each may carry.
CHECK_RULES = {
    "telephony.callee.located": "TIMEZONE_UNKNOWN",
    "telephony.number.valid": "INVALID_RECIPIENT",
    "telephony.suppression": "SUPPRESSED",
    "telephony.destination.covered": "DESTINATION_NOT_COVERED",
    "telephony.callee.timezone": "TIMEZONE_UNKNOWN",
}
NOTICE_RULE = "sms.opt_out_notice"
NOTICE_PLACEHOLDERS = frozenset({"sender_name"})

# Years on which relative holidays ("the day after Thanksgiving") are checked at load time, so
# a renamed anchor in a new `holidays` release fails loading rather than a decision.
_VALIDATION_YEARS = range(2025, 2031)

# ISO 3166-2 codes of US states, DC and territories, and Canadian provinces and territories,
# with the names libphonenumber's geocoder and people use for them. Jurisdictions in the rule
# data and known-address regions are checked against this table.
SUBDIVISIONS: Mapping[str, tuple[str, ...]] = {
    "US-AL": ("Alabama",),
    "US-AK": ("Alaska",),
    "US-AZ": ("Arizona",),
    "US-AR": ("Arkansas",),
    "US-CA": ("California",),
    "US-CO": ("Colorado",),
    "US-CT": ("Connecticut",),
    "US-DE": ("Delaware",),
    "US-DC": ("District of Columbia", "Washington D.C.", "Washington DC"),
    "US-FL": ("Florida",),
    "US-GA": ("Georgia",),
    "US-HI": ("Hawaii",),
    "US-ID": ("Idaho",),
    "US-IL": ("Illinois",),
    "US-IN": ("Indiana",),
    "US-IA": ("Iowa",),
    "US-KS": ("Kansas",),
    "US-KY": ("Kentucky",),
    "US-LA": ("Louisiana",),
    "US-ME": ("Maine",),
    "US-MD": ("Maryland",),
    "US-MA": ("Massachusetts",),
    "US-MI": ("Michigan",),
    "US-MN": ("Minnesota",),
    "US-MS": ("Mississippi",),
    "US-MO": ("Missouri",),
    "US-MT": ("Montana",),
    "US-NE": ("Nebraska",),
    "US-NV": ("Nevada",),
    "US-NH": ("New Hampshire",),
    "US-NJ": ("New Jersey",),
    "US-NM": ("New Mexico",),
    "US-NY": ("New York",),
    "US-NC": ("North Carolina",),
    "US-ND": ("North Dakota",),
    "US-OH": ("Ohio",),
    "US-OK": ("Oklahoma",),
    "US-OR": ("Oregon",),
    "US-PA": ("Pennsylvania",),
    "US-RI": ("Rhode Island",),
    "US-SC": ("South Carolina",),
    "US-SD": ("South Dakota",),
    "US-TN": ("Tennessee",),
    "US-TX": ("Texas",),
    "US-UT": ("Utah",),
    "US-VT": ("Vermont",),
    "US-VA": ("Virginia",),
    "US-WA": ("Washington", "Washington State"),
    "US-WV": ("West Virginia",),
    "US-WI": ("Wisconsin",),
    "US-WY": ("Wyoming",),
    "US-AS": ("American Samoa",),
    "US-GU": ("Guam",),
    "US-MP": ("Northern Mariana Islands",),
    "US-PR": ("Puerto Rico",),
    "US-VI": ("U.S. Virgin Islands", "US Virgin Islands"),
    "CA-AB": ("Alberta",),
    "CA-BC": ("British Columbia", "British Colombia"),
    "CA-MB": ("Manitoba",),
    "CA-NB": ("New Brunswick",),
    "CA-NL": ("Newfoundland and Labrador", "Newfoundland"),
    "CA-NS": ("Nova Scotia",),
    "CA-NT": ("Northwest Territories",),
    "CA-NU": ("Nunavut",),
    "CA-ON": ("Ontario",),
    "CA-PE": ("Prince Edward Island",),
    "CA-QC": ("Quebec", "Québec"),
    "CA-SK": ("Saskatchewan",),
    "CA-YT": ("Yukon", "Watson Lake"),
}

InboundKind = Literal["opt_out", "opt_in", "help"]


@dataclass(frozen=True)
class TimeWindow:
    """Allowed from `start_s` up to, not including, `end_s` (seconds after local midnight):
    a call at exactly the end minute is already outside."""

    start_s: int
    end_s: int

    def __contains__(self, seconds: int) -> bool:
        return self.start_s <= seconds < self.end_s

    def __str__(self) -> str:
        return f"{_hhmm(self.start_s)}-{_hhmm(self.end_s)}"


@dataclass(frozen=True)
class CallingRule:
    """What every rule has: identity, the reason it produces, scope, and its source."""

    id: str
    code: str
    name: str
    channels: frozenset[Channel]
    purposes: frozenset[Purpose]
    citation: str
    confidence: str
    verify: bool
    note: str

    def binds(self, channel: Channel, purpose: Purpose) -> bool:
        return channel in self.channels and purpose in self.purposes


@dataclass(frozen=True)
class JurisdictionRule(CallingRule):
    """A rule of one jurisdiction: "US"/"CA" (national) or an ISO 3166-2 code."""

    jurisdiction: str
    automated_only: bool

    @property
    def activity(self) -> str:
        """How reason messages name what is restricted (the statute's own scope)."""
        if self.automated_only:
            return "automated telephone solicitation"
        return "telephone solicitation"


@dataclass(frozen=True)
class WindowRule(JurisdictionRule):
    windows: tuple[TimeWindow | None, ...]  # by weekday, Monday first; None: not open that day

    def label(self, weekday: int) -> str:
        window = self.windows[weekday]
        listed = {w for w in self.windows if w is not None}
        if len(listed) == 1:
            return str(window)
        return f"{window} on {WEEKDAY_NAMES[weekday]}s"


@dataclass(frozen=True)
class HolidayCalendar:
    """One calendar of the `holidays` package; `label` names it in reason messages."""

    country: str
    subdiv: str
    categories: tuple[str, ...]
    label: str


@dataclass(frozen=True)
class RelativeHoliday:
    """A day the package lacks, `days` after the holiday named `after` (same calendars)."""

    name: str
    after: str
    days: int


@dataclass(frozen=True)
class RestrictedDayRule(JurisdictionRule):
    weekdays: frozenset[int]
    calendars: tuple[HolidayCalendar, ...]
    extra_holidays: tuple[RelativeHoliday, ...]
    _by_year: dict[int, Mapping[date, str]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def holidays_in(self, year: int) -> Mapping[date, str]:
        """Restricted dates of `year` with their names; memoised, as the calendars are pure
        functions of the year and a decision must not rebuild them."""
        days = self._by_year.get(year)
        if days is None:
            days = self._by_year[year] = self._compute(year)
        return days

    def _compute(self, year: int) -> Mapping[date, str]:
        days: dict[date, str] = {}
        for calendar in self.calendars:
            for day, name in _calendar_dates(calendar, year).items():
                days.setdefault(day, f"{name} ({calendar.label})")
        for extra in self.extra_holidays:
            anchors = {
                day
                for calendar in self.calendars
                for anchor_year in (year - 1, year, year + 1)
                for day, name in _calendar_dates(calendar, anchor_year).items()
                if extra.after in name.split("; ")
            }
            if not any(day.year == year for day in anchors):
                raise RulesError(f"rule {self.id}: no holiday named {extra.after!r} in {year}")
            for anchor in anchors:
                day = anchor + timedelta(days=extra.days)
                if day.year == year:
                    days.setdefault(day, extra.name)
        return days


@dataclass(frozen=True)
class CapRule(JurisdictionRule):
    limit: int
    window_s: int


@dataclass(frozen=True)
class ConsentRule(JurisdictionRule):
    """A marketing contact on the rule's channels needs a recorded, unexpired consent."""


@dataclass(frozen=True)
class NoticeRule(CallingRule):
    """The SMS opt-out notice: repeated once `repeat_after` has passed, on every message in
    `every_message_in` (national jurisdictions)."""

    repeat_after: timedelta
    every_message_in: frozenset[str]


@dataclass(frozen=True)
class JurisdictionRules:
    """The rules of one jurisdiction for one channel, precomputed at load time."""

    windows: tuple[WindowRule, ...] = ()
    restricted_days: tuple[RestrictedDayRule, ...] = ()
    caps: tuple[CapRule, ...] = ()
    consents: tuple[ConsentRule, ...] = ()


NO_RULES = JurisdictionRules()


@dataclass(frozen=True)
class AreaCodeTable:
    """IANA zones of NANP area codes that span zones, and of states and provinces."""

    by_npa: Mapping[str, tuple[str, ...]]
    region_zones: Mapping[str, tuple[str, ...]]


@dataclass(frozen=True)
class Keywords:
    """Normalised (see `normalize_reply`) inbound SMS keywords and the revocation pattern."""

    opt_out: frozenset[str]
    opt_in: frozenset[str]
    help: frozenset[str]
    revocation: re.Pattern[str]


@dataclass(frozen=True)
class CallingRules:
    """Everything `decide_telephony` needs, resolved at load time.

    `require_consent` is the set of channels on which the NO_CONSENT rules are enforced; it
    comes from `[consent] require` in calling.toml and configuration may narrow it with
    `dataclasses.replace`. `zones` holds every IANA zone, loaded once, so a decision never
    reads tzdata. Callers that count recent contacts for `Facts.recent_contacts` should count
    over `longest_cap_window_s`.
    """

    rules: Mapping[str, CallingRule]
    by_jurisdiction: Mapping[tuple[str, Channel], JurisdictionRules]
    national: Mapping[str, str]
    require_consent: frozenset[Channel]
    notice: NoticeRule
    area_codes: AreaCodeTable
    keywords: Keywords
    sms_opt_out_notice: str
    zones: Mapping[str, zoneinfo.ZoneInfo] = field(repr=False)

    def rule(self, rule_id: str) -> CallingRule:
        return self.rules[rule_id]

    def for_jurisdiction(self, jurisdiction: str, channel: Channel) -> JurisdictionRules:
        return self.by_jurisdiction.get((jurisdiction, channel), NO_RULES)

    @property
    def longest_cap_window_s(self) -> int:
        return max((r.window_s for r in self.rules.values() if isinstance(r, CapRule)), default=0)


def load_calling_rules(directory: Path) -> CallingRules:
    zones = _all_zones()
    calling_file = directory / "calling.toml"
    calling = _Table(read_toml(calling_file), calling_file)
    national = _countries(calling.table("countries"))
    consent = calling.table("consent")
    require_consent = frozenset(_channels(consent, "require", allow_empty=True))
    consent.finish()
    rules = _parse_rules(calling.entries("rule"), set(national))
    calling.finish()
    _check_rule_set(rules, calling_file)
    _check_window_gaps(rules, calling_file)
    for rule in rules.values():
        if isinstance(rule, RestrictedDayRule):
            for year in _VALIDATION_YEARS:
                try:
                    rule.holidays_in(year)
                except RulesError as exc:
                    raise RulesError(f"{calling_file}: {exc}") from exc
    notice = rules[NOTICE_RULE]
    assert isinstance(notice, NoticeRule)
    if not notice.every_message_in <= set(national):
        raise RulesError(
            f"{calling_file}: rule {NOTICE_RULE}.every_message_in must name jurisdictions of "
            "[countries]"
        )
    keywords_file = directory / "keywords.toml"
    keywords = _keywords(_Table(read_toml(keywords_file), keywords_file))
    return CallingRules(
        rules=rules,
        by_jurisdiction=_group(rules),
        national={country: j for j, countries in national.items() for country in countries},
        require_consent=require_consent,
        notice=notice,
        area_codes=_area_codes(directory / "area_codes.toml", zones),
        keywords=keywords,
        sms_opt_out_notice=_notice_template(directory / "footers" / "sms_opt_out.txt", keywords),
        zones=zones,
    )


def normalize_reply(text: str) -> str:
    """Case-folded words joined by single spaces; apostrophes dropped ("don't" = "dont"),
    every other run of punctuation or white space is a word break."""
    return " ".join(_WORD.findall(text.casefold().translate(_APOSTROPHES)))


def classify_inbound_text(body: str, keywords: Keywords) -> InboundKind | None:
    """What an inbound text asks for. An opt-out keyword as the whole reply, or an FCC
    revocation phrase anywhere in it as whole words, is an opt-out, and wins over any opt-in
    word; opt-in and help need the keyword alone (re-subscribing on a chatty reply that
    merely contains "yes" would be the costly mistake)."""
    text = normalize_reply(body)
    if text in keywords.opt_out or keywords.revocation.search(text):
        return "opt_out"
    if text in keywords.opt_in:
        return "opt_in"
    if text in keywords.help:
        return "help"
    return None


_APOSTROPHES = str.maketrans("", "", "'\u2018\u2019`\u00b4")
_WORD = re.compile(r"[^\W_]+")
_TIME_RANGE = re.compile(r"^(\d\d):(\d\d)-(\d\d):(\d\d)$")
_NPA = re.compile(r"^[2-9]\d\d$")
_REGION_CODE = re.compile(r"^[A-Z]{2}$")


@functools.lru_cache(maxsize=512)
def _calendar_dates(calendar: HolidayCalendar, year: int) -> Mapping[date, str]:
    """Shared between rules (the federal calendar backs several states)."""
    return dict(
        holidays.country_holidays(
            calendar.country,
            subdiv=calendar.subdiv or None,
            years=year,
            categories=calendar.categories,
        )
    )


def _all_zones() -> dict[str, zoneinfo.ZoneInfo]:
    return {name: zoneinfo.ZoneInfo(name) for name in zoneinfo.available_timezones()}


def _hhmm(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}"


class _Table:
    """One TOML table being read: typed getters whose errors name the file and the dotted
    key, and a final check that no unknown key (a typo a reviewer would miss) was left."""

    def __init__(self, data: Any, file: Path, prefix: str = "") -> None:
        self.file = file
        self.prefix = prefix
        if not isinstance(data, dict):
            raise self.error("", "must be a table")
        self.data: dict[str, Any] = data
        self.read: set[str] = set()

    def error(self, key: str, problem: str) -> RulesError:
        name = (self.prefix + key).rstrip(".")
        return RulesError(f"{self.file}: {name} {problem}" if name else f"{self.file}: {problem}")

    def get(self, key: str) -> Any:
        self.read.add(key)
        return self.data.get(key)

    def string(self, key: str, *, required: bool = True) -> str:
        value = self.get(key)
        if value is None and not required:
            return ""
        if not isinstance(value, str):
            raise self.error(key, "must be a string")
        return value

    def strings(self, key: str, *, allow_empty: bool = False) -> list[str]:
        value = self.get(key)
        if value is None and allow_empty:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.error(key, "must be a list of non-empty strings")
        if not value and not allow_empty:
            raise self.error(key, "must not be empty")
        return value

    def boolean(self, key: str) -> bool:
        value = self.get(key)
        if value is None:
            return False
        if not isinstance(value, bool):
            raise self.error(key, "must be true or false")
        return value

    def integer(self, key: str, minimum: int) -> int:
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.error(key, f"must be an integer >= {minimum}")
        return value

    def table(self, key: str) -> _Table:
        return _Table(self.get(key), self.file, f"{self.prefix}{key}.")

    def entries(self, key: str) -> list[_Table]:
        value = self.get(key)
        if not isinstance(value, list) or not value:
            raise self.error(key, f"[[{key}]] entries are missing")
        return [
            _Table(item, self.file, f"{self.prefix}{key}[{index}].")
            for index, item in enumerate(value)
        ]

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.read)
        if unknown:
            raise self.error(unknown[0], "is not a known key")


def _countries(table: _Table) -> dict[str, tuple[str, ...]]:
    national: dict[str, tuple[str, ...]] = {}
    seen: dict[str, str] = {}
    for jurisdiction in list(table.data):
        if not _REGION_CODE.match(jurisdiction):
            raise table.error(jurisdiction, "must be a two-letter country code")
        countries = table.strings(jurisdiction)
        for country in countries:
            if not _REGION_CODE.match(country):
                raise table.error(jurisdiction, f"has {country!r}, not a two-letter region code")
            if country in seen:
                raise table.error(jurisdiction, f"repeats {country!r} (under {seen[country]})")
            seen[country] = jurisdiction
        national[jurisdiction] = tuple(countries)
    table.finish()
    return national


def _channels(table: _Table, key: str, *, allow_empty: bool = False) -> list[Channel]:
    names = table.strings(key, allow_empty=allow_empty)
    allowed = {c.value for c in TELEPHONY_CHANNELS}
    for name in names:
        if name not in allowed:
            raise table.error(key, f"has {name!r}; allowed: {sorted(allowed)}")
    return [Channel(name) for name in names]


def _parse_rules(entries: list[_Table], nationals: set[str]) -> dict[str, CallingRule]:
    rules: dict[str, CallingRule] = {}
    for entry in entries:
        rule_id = entry.string("id")
        entry.prefix = f"{entry.prefix.rstrip('.')}({rule_id})."
        if rule_id in rules:
            raise entry.error("id", f"duplicates {rule_id!r}")
        rules[rule_id] = _parse_rule(entry, rule_id, nationals)
        entry.finish()
    return rules


def _parse_rule(entry: _Table, rule_id: str, nationals: set[str]) -> CallingRule:
    code = entry.string("code")
    confidence = entry.string("confidence")
    if confidence not in CONFIDENCE_LEVELS:
        raise entry.error("confidence", f"must be one of {CONFIDENCE_LEVELS}")
    verify = entry.boolean("verify")
    if verify != (confidence == "med"):
        raise entry.error("verify", 'must be true exactly when confidence is "med"')
    citation = entry.string("citation")
    if not citation.strip():
        raise entry.error("citation", "must not be empty")
    try:
        purposes = frozenset(Purpose(p) for p in entry.strings("purposes"))
    except ValueError as exc:
        raise entry.error("purposes", str(exc)) from exc
    common: dict[str, Any] = {
        "id": rule_id,
        "code": code,
        "name": entry.string("name", required=False),
        "channels": frozenset(_channels(entry, "channels")),
        "purposes": purposes,
        "citation": citation,
        "confidence": confidence,
        "verify": verify,
        "note": entry.string("note", required=False),
    }
    if rule_id in CHECK_RULES:
        if code != CHECK_RULES[rule_id]:
            raise entry.error("code", f"must be {CHECK_RULES[rule_id]!r}")
        return CallingRule(**common)
    if not common["name"]:
        raise entry.error("name", "must be a non-empty string (reason messages use it)")
    if rule_id == NOTICE_RULE:
        every = entry.strings("every_message_in", allow_empty=True)
        return NoticeRule(
            **common,
            repeat_after=timedelta(days=entry.integer("repeat_after_days", 0)),
            every_message_in=frozenset(every),
        )
    jurisdiction = entry.string("jurisdiction")
    if jurisdiction not in nationals and jurisdiction not in SUBDIVISIONS:
        raise entry.error(
            "jurisdiction", "must be a key of [countries] or an ISO 3166-2 code such as US-FL"
        )
    common["jurisdiction"] = jurisdiction
    common["automated_only"] = entry.boolean("automated_only")
    if code == "QUIET_HOURS":
        return WindowRule(**common, windows=_windows(entry.table("window")))
    if code == "RESTRICTED_DAY":
        weekdays = frozenset(_weekday(entry, d) for d in _optional(entry, "weekdays"))
        calendars = tuple(
            _calendar(entry, i, c) for i, c in enumerate(_optional(entry, "holidays"))
        )
        extra = tuple(
            _relative(entry, i, e) for i, e in enumerate(_optional(entry, "extra_holidays"))
        )
        if not weekdays and not calendars:
            raise entry.error("weekdays", "or holidays must restrict something")
        if extra and not calendars:
            raise entry.error("extra_holidays", "need holidays calendars to find their anchors")
        return RestrictedDayRule(
            **common, weekdays=weekdays, calendars=calendars, extra_holidays=extra
        )
    if code == "FREQUENCY_CAP":
        cap = entry.table("cap")
        rule = CapRule(
            **common,
            limit=cap.integer("limit", 1),
            window_s=cap.integer("window_hours", 1) * 3600,
        )
        cap.finish()
        return rule
    if code == "NO_CONSENT":
        return ConsentRule(**common)
    raise entry.error(
        "code", "must be QUIET_HOURS, RESTRICTED_DAY, FREQUENCY_CAP or NO_CONSENT for this id"
    )


def _optional(entry: _Table, key: str) -> list[Any]:
    value = entry.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise entry.error(key, "must be a list")
    return value


def _weekday(entry: _Table, name: Any) -> int:
    if name not in WEEKDAY_KEYS:
        raise entry.error("weekdays", f"has {name!r}; weekdays are {', '.join(WEEKDAY_KEYS)}")
    return WEEKDAY_KEYS.index(name)


def _windows(table: _Table) -> tuple[TimeWindow | None, ...]:
    windows: list[TimeWindow | None] = [None] * 7
    for key in list(table.data):
        days = _day_range(table, key)
        window = _time_range(table, key, table.string(key))
        for day in days:
            if windows[day] is not None:
                raise table.error(key, f"repeats {WEEKDAY_KEYS[day]}")
            windows[day] = window
    if not any(windows):
        raise table.error("", "must list at least one day")
    table.finish()
    return tuple(windows)


def _day_range(table: _Table, key: str) -> range:
    first, _, last = key.partition("-")
    if first not in WEEKDAY_KEYS or (last and last not in WEEKDAY_KEYS):
        raise table.error(key, "is not a weekday (mon..sun) or a range such as mon-fri")
    start, end = WEEKDAY_KEYS.index(first), WEEKDAY_KEYS.index(last or first)
    if end < start:
        raise table.error(key, "must run forward within one week (mon-sun)")
    return range(start, end + 1)


def _time_range(table: _Table, key: str, text: str) -> TimeWindow:
    match = _TIME_RANGE.match(text)
    if match:
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        start, end = h1 * 3600 + m1 * 60, h2 * 3600 + m2 * 60
        if max(m1, m2) < 60 and h1 < 24 and end <= 24 * 3600 and start < end:
            return TimeWindow(start, end)
    raise table.error(key, f"{text!r} must be HH:MM-HH:MM with the start before the end")


def _calendar(entry: _Table, index: int, data: Any) -> HolidayCalendar:
    table = _Table(data, entry.file, f"{entry.prefix}holidays[{index}].")
    calendar = HolidayCalendar(
        country=table.string("country"),
        subdiv=table.string("subdiv", required=False),
        categories=tuple(table.strings("categories")),
        label=table.string("label"),
    )
    table.finish()
    try:
        holidays.country_holidays(
            calendar.country, subdiv=calendar.subdiv or None, categories=calendar.categories
        )
    except (NotImplementedError, ValueError, KeyError) as exc:
        # The holidays package signals an unknown country with NotImplementedError and an
        # unknown subdivision or category with the others: all are a rule-data error.
        raise table.error("", f"is not a calendar of the holidays package: {exc}") from exc
    return calendar


def _relative(entry: _Table, index: int, data: Any) -> RelativeHoliday:
    table = _Table(data, entry.file, f"{entry.prefix}extra_holidays[{index}].")
    days = table.get("days")
    if isinstance(days, bool) or not isinstance(days, int) or days == 0:
        raise table.error("days", "must be a non-zero integer")
    extra = RelativeHoliday(name=table.string("name"), after=table.string("after"), days=days)
    table.finish()
    return extra


def _check_rule_set(rules: Mapping[str, CallingRule], path: Path) -> None:
    for rule_id in (*CHECK_RULES, NOTICE_RULE):
        if rule_id not in rules:
            raise RulesError(f"{path}: rule {rule_id!r} is missing")


def _check_window_gaps(rules: Mapping[str, CallingRule], path: Path) -> None:
    """A weekday a window rule leaves out must be closed by another rule of the same
    jurisdiction, channels and purposes; otherwise the gap would silently allow contacts."""
    for rule in rules.values():
        if not isinstance(rule, WindowRule):
            continue
        for day, window in enumerate(rule.windows):
            if window is None and not any(
                other.jurisdiction == rule.jurisdiction
                and other.channels >= rule.channels
                and other.purposes >= rule.purposes
                and (
                    (isinstance(other, RestrictedDayRule) and day in other.weekdays)
                    or (isinstance(other, WindowRule) and other.windows[day] is not None)
                )
                for other in rules.values()
                if isinstance(other, JurisdictionRule)
            ):
                raise RulesError(
                    f"{path}: rule {rule.id}.window does not list {WEEKDAY_KEYS[day]}: list it, "
                    f"or add a RESTRICTED_DAY rule for {rule.jurisdiction} with that weekday"
                )


def _group(rules: Mapping[str, CallingRule]) -> dict[tuple[str, Channel], JurisdictionRules]:
    grouped: dict[tuple[str, Channel], dict[str, list[JurisdictionRule]]] = {}
    kinds = {
        WindowRule: "windows",
        RestrictedDayRule: "restricted_days",
        CapRule: "caps",
        ConsentRule: "consents",
    }
    for rule in rules.values():
        if isinstance(rule, JurisdictionRule):
            for channel in rule.channels:
                lists = grouped.setdefault((rule.jurisdiction, channel), {})
                lists.setdefault(kinds[type(rule)], []).append(rule)
    return {
        key: JurisdictionRules(**{kind: tuple(items) for kind, items in lists.items()})
        for key, lists in grouped.items()
    }


def _area_codes(path: Path, zones: Mapping[str, zoneinfo.ZoneInfo]) -> AreaCodeTable:
    data = _Table(read_toml(path), path)

    def zone_list(table: _Table, key: str) -> tuple[str, ...]:
        names = table.strings(key)
        for name in names:
            if name not in zones:
                raise table.error(key, f"has {name!r}, not an IANA zone")
        return tuple(dict.fromkeys(names))

    by_npa: dict[str, tuple[str, ...]] = {}
    for entry in data.entries("area_code"):
        _source(entry)
        npa_zones = zone_list(entry, "zones")
        for npa in entry.strings("npas"):
            if not _NPA.match(npa):
                raise entry.error("npas", f"has {npa!r}, not a three-digit NANP area code")
            if npa in by_npa:
                raise entry.error("npas", f"repeats {npa!r}")
            by_npa[npa] = npa_zones
        entry.finish()
    regions = data.table("region_zones")
    _source(regions)
    region_table = regions.table("zones")
    region_zones = {code: zone_list(region_table, code) for code in list(region_table.data)}
    region_table.finish()
    regions.finish()
    data.finish()
    missing = sorted(set(SUBDIVISIONS) - set(region_zones))
    unknown = sorted(set(region_zones) - set(SUBDIVISIONS))
    if missing or unknown:
        problem = f"lacks {missing[0]}" if missing else f"has {unknown[0]}, not a known region"
        raise region_table.error("", problem)
    return AreaCodeTable(by_npa=by_npa, region_zones=region_zones)


def _source(table: _Table) -> None:
    """Validate the citation, confidence and verify keys of a geography entry."""
    if not table.string("citation").strip():
        raise table.error("citation", "must not be empty")
    confidence = table.string("confidence")
    if confidence not in CONFIDENCE_LEVELS:
        raise table.error("confidence", f"must be one of {CONFIDENCE_LEVELS}")
    if table.boolean("verify") != (confidence == "med"):
        raise table.error("verify", 'must be true exactly when confidence is "med"')


def _keywords(data: _Table) -> Keywords:
    groups: dict[str, frozenset[str]] = {}
    owner: dict[str, str] = {}
    phrases: list[str] = []
    for name in ("opt_out", "revocation", "opt_in", "help"):
        table = data.table(name)
        _source(table)
        table.string("note", required=False)
        key = "phrases" if name == "revocation" else "keywords"
        normalized = []
        for value in table.strings(key):
            text = normalize_reply(value)
            if not text:
                raise table.error(key, f"has {value!r}, which has no letters or digits")
            if name != "revocation":
                if owner.get(text, name) != name:
                    raise table.error(key, f"has {value!r}, already in [{owner[text]}]")
                owner[text] = name
            normalized.append(text)
        table.finish()
        if name == "revocation":
            phrases = normalized
        else:
            groups[name] = frozenset(normalized)
    data.finish()
    alternatives = sorted(set(phrases) | groups["opt_out"], key=len, reverse=True)
    revocation = re.compile(
        "(?:^| )(?:" + "|".join(re.escape(p) for p in alternatives) + ")(?= |$)"
    )
    return Keywords(groups["opt_out"], groups["opt_in"], groups["help"], revocation)


def _notice_template(path: Path, keywords: Keywords) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError(f"{path}: cannot read: {exc}") from exc
    template = string.Template(text)
    unknown = set(template.get_identifiers()) - NOTICE_PLACEHOLDERS
    if not template.is_valid() or unknown:
        raise RulesError(
            f"{path}: only ${', $'.join(sorted(NOTICE_PLACEHOLDERS))} may be used as placeholders"
        )
    if not any(word in keywords.opt_out for word in normalize_reply(text).split()):
        raise RulesError(f"{path}: the notice must name an opt-out keyword such as STOP")
    return text
