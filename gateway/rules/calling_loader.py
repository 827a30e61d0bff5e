"""Read `calling.toml`, `area_codes.toml`, `keywords.toml` and `footers/sms_opt_out.txt`
into `CallingRules`.

Everything a decision needs is resolved here, once. Every problem raises `RulesError` naming
the file and the key, so a reviewer can fix the data without reading code.
"""

from __future__ import annotations

import re
import string
import zoneinfo
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import holidays

from gateway.config.toml_reader import TomlTable
from gateway.model import Channel, ConsentKind, Purpose
from gateway.rules.calendars import DefinedHoliday, HolidayCalendar, RelativeHoliday
from gateway.rules.calling import (
    CHECK_RULES,
    NOTICE_PLACEHOLDERS,
    NOTICE_RULE,
    TELEPHONY_CHANNELS,
    WEEKDAY_KEYS,
    CallingRule,
    CallingRules,
    CapRule,
    ConsentRule,
    Exemption,
    JurisdictionRule,
    JurisdictionRules,
    NoticeRule,
    RestrictedDayRule,
    TimeWindow,
    WindowRule,
)
from gateway.rules.errors import RulesError
from gateway.rules.geography import SUBDIVISIONS
from gateway.rules.geography_loader import check_source, load_area_codes
from gateway.rules.keywords import Keywords, normalize_reply
from gateway.rules.ruleset import CONFIDENCE_LEVELS
from gateway.rules.toml_files import file_table, nested_table

# Years on which relative holidays ("the day after Thanksgiving") are checked at load time, so
# a renamed anchor in a new `holidays` release fails loading rather than a decision.
_VALIDATION_YEARS = range(2025, 2031)

def load_calling_rules(directory: Path) -> CallingRules:
    zones = _all_zones()
    calling_file = directory / "calling.toml"
    calling = file_table(calling_file)
    national = _countries(calling.table("countries"))
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
    keywords = _keywords(file_table(keywords_file))
    return CallingRules(
        rules=rules,
        by_jurisdiction=group_by_jurisdiction(rules),
        national={country: j for j, countries in national.items() for country in countries},
        notice=notice,
        area_codes=load_area_codes(directory / "area_codes.toml", zones),
        keywords=keywords,
        sms_opt_out_notice=_notice_template(directory / "footers" / "sms_opt_out.txt", keywords),
        zones=zones,
    )



_TIME_RANGE = re.compile(r"^(\d\d):(\d\d)-(\d\d):(\d\d)$")
_REGION_CODE = re.compile(r"^[A-Z]{2}$")



def _all_zones() -> dict[str, zoneinfo.ZoneInfo]:
    return {name: zoneinfo.ZoneInfo(name) for name in zoneinfo.available_timezones()}



def _countries(table: TomlTable) -> dict[str, tuple[str, ...]]:
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


def _channels(table: TomlTable, key: str, *, allow_empty: bool = False) -> list[Channel]:
    names = table.strings(key, allow_empty=allow_empty)
    allowed = {c.value for c in TELEPHONY_CHANNELS}
    for name in names:
        if name not in allowed:
            raise table.error(key, f"has {name!r}; allowed: {sorted(allowed)}")
    return [Channel(name) for name in names]


def _parse_rules(entries: list[TomlTable], nationals: set[str]) -> dict[str, CallingRule]:
    rules: dict[str, CallingRule] = {}
    for entry in entries:
        rule_id = entry.string("id")
        entry.prefix = f"{entry.prefix}({rule_id})"
        if rule_id in rules:
            raise entry.error("id", f"duplicates {rule_id!r}")
        rules[rule_id] = _parse_rule(entry, rule_id, nationals)
        entry.finish()
    return rules


def _parse_rule(entry: TomlTable, rule_id: str, nationals: set[str]) -> CallingRule:
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
    effective, until = _date(entry, "effective"), _date(entry, "until")
    if effective and until and until <= effective:
        raise entry.error("until", f"must be after effective ({effective})")
    common: dict[str, Any] = {
        "effective": effective,
        "until": until,
        "id": rule_id,
        "code": code,
        "name": entry.string("name", ""),
        "channels": frozenset(_channels(entry, "channels")),
        "purposes": purposes,
        "citation": citation,
        "confidence": confidence,
        "verify": verify,
        "note": entry.string("note", ""),
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
            repeat_after=timedelta(days=entry.integer("repeat_after_days", minimum=0)),
            every_message_in=frozenset(every),
        )
    jurisdiction = entry.string("jurisdiction")
    if jurisdiction not in nationals and jurisdiction not in SUBDIVISIONS:
        raise entry.error(
            "jurisdiction", "must be a key of [countries] or an ISO 3166-2 code such as US-FL"
        )
    common["jurisdiction"] = jurisdiction
    common["automated_only"] = entry.boolean("automated_only")
    common["exemptions"] = tuple(
        _exemption(entry, i, e) for i, e in enumerate(_optional(entry, "exemptions"))
    )
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
        defined = tuple(
            _defined(entry, i, d) for i, d in enumerate(_optional(entry, "defined_holidays"))
        )
        if not weekdays and not calendars and not defined:
            raise entry.error("weekdays", "or holidays or defined_holidays must restrict something")
        if extra and not calendars:
            raise entry.error("extra_holidays", "need holidays calendars to find their anchors")
        holiday_weekdays = frozenset(
            _weekday(entry, d, "holiday_weekdays") for d in _optional(entry, "holiday_weekdays")
        )
        return RestrictedDayRule(
            **common, weekdays=weekdays, calendars=calendars, extra_holidays=extra,
            defined_holidays=defined, holiday_weekdays=holiday_weekdays or frozenset(range(7)),
        )
    if code == "FREQUENCY_CAP":
        cap = entry.table("cap")
        rule = CapRule(
            **common,
            limit=cap.integer("limit", minimum=1),
            window_s=_period(cap),
            per=cap.choice("per", "recipient", ("recipient", "offer")),
        )
        cap.finish()
        return rule
    if code == "NO_CONSENT":
        return ConsentRule(**common, kinds=_consent_kinds(entry, "consent_kinds"))
    raise entry.error(
        "code", "must be QUIET_HOURS, RESTRICTED_DAY, FREQUENCY_CAP or NO_CONSENT for this id"
    )


def _optional(entry: TomlTable, key: str) -> list[Any]:
    value = entry.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise entry.error(key, "must be a list")
    return value


def _weekday(entry: TomlTable, name: Any, key: str = "weekdays") -> int:
    if name not in WEEKDAY_KEYS:
        raise entry.error(key, f"has {name!r}; weekdays are {', '.join(WEEKDAY_KEYS)}")
    return WEEKDAY_KEYS.index(name)


def _date(entry: TomlTable, key: str) -> date | None:
    """A TOML date (`effective = 2026-01-01`), or None when absent."""
    value = entry.get(key)
    if value is None:
        return None
    if isinstance(value, datetime) or not isinstance(value, date):
        raise entry.error(key, "must be a date such as 2026-01-01 (no quotes, no time)")
    return value


_PERIOD = re.compile(r"^([1-9]\d{0,3})([hd])$")


def _period(cap: TomlTable) -> int:
    """`period = "24h"` or `"30d"`: the window a cap counts over, in seconds."""
    value = cap.get("period")
    match = _PERIOD.match(value) if isinstance(value, str) else None
    if match is None:
        raise cap.error("period", 'is required: hours or days such as "24h" or "30d"')
    return int(match.group(1)) * (3600 if match.group(2) == "h" else 86_400)


def _consent_kinds(table: TomlTable, key: str) -> frozenset[ConsentKind]:
    names = table.strings(key)
    allowed = [k.value for k in ConsentKind]
    for name in names:
        if name not in allowed:
            raise table.error(key, f"has {name!r}; consent kinds are {', '.join(allowed)}")
    return frozenset(ConsentKind(name) for name in names)


def _exemption(entry: TomlTable, index: int, data: Any) -> Exemption:
    table = nested_table(entry, f"exemptions[{index}]", data)
    within = table.get("within_days")
    if within is not None and (isinstance(within, bool) or not isinstance(within, int)
                               or within < 1):
        raise table.error("within_days", "must be a whole number of days >= 1")
    citation = table.string("citation")
    if not citation.strip():
        raise table.error("citation", "must not be empty")
    exemption = Exemption(
        kinds=_consent_kinds(table, "consent_kinds"), within_days=within, citation=citation
    )
    table.finish()
    return exemption


def _defined(entry: TomlTable, index: int, data: Any) -> DefinedHoliday:
    """One of: month and day; month, weekday and nth; or easter = true; each with an
    optional offset_days."""
    table = nested_table(entry, f"defined_holidays[{index}]", data)
    name = table.string("name", required=True)
    offset = table.integer("offset_days", 0, minimum=-366, maximum=366)
    common: dict[str, Any] = {"name": name, "offset_days": offset}
    if table.boolean("easter"):
        holiday = DefinedHoliday(**common, easter=True)
    else:
        month = table.integer("month", minimum=1, maximum=12)
        weekday = table.get("weekday")
        if weekday is None:
            day = table.integer("day", minimum=1, maximum=31)
            try:
                date(2024, month, day)
            except ValueError as exc:
                raise table.error("day", f"{day} is not a day of month {month}") from exc
            holiday = DefinedHoliday(
                **common, month=month, day=day,
                sunday_to_monday=table.boolean("sunday_to_monday"),
            )
        else:
            nth = table.integer("nth", minimum=-1, maximum=5)
            if nth == 0:
                raise table.error("nth", "must be 1 to 5, or -1 for the last")
            holiday = DefinedHoliday(
                **common, month=month, weekday=_weekday(table, weekday, "weekday"), nth=nth
            )
    table.finish()
    return holiday


def _windows(table: TomlTable) -> tuple[TimeWindow | None, ...]:
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


def _day_range(table: TomlTable, key: str) -> range:
    first, _, last = key.partition("-")
    if first not in WEEKDAY_KEYS or (last and last not in WEEKDAY_KEYS):
        raise table.error(key, "is not a weekday (mon..sun) or a range such as mon-fri")
    start, end = WEEKDAY_KEYS.index(first), WEEKDAY_KEYS.index(last or first)
    if end < start:
        raise table.error(key, "must run forward within one week (mon-sun)")
    return range(start, end + 1)


def _time_range(table: TomlTable, key: str, text: str) -> TimeWindow:
    match = _TIME_RANGE.match(text)
    if match:
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        start, end = h1 * 3600 + m1 * 60, h2 * 3600 + m2 * 60
        if max(m1, m2) < 60 and h1 < 24 and end <= 24 * 3600 and start < end:
            return TimeWindow(start, end)
    raise table.error(key, f"{text!r} must be HH:MM-HH:MM with the start before the end")


def _calendar(entry: TomlTable, index: int, data: Any) -> HolidayCalendar:
    table = nested_table(entry, f"holidays[{index}]", data)
    calendar = HolidayCalendar(
        country=table.string("country"),
        subdiv=table.string("subdiv", ""),
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


def _relative(entry: TomlTable, index: int, data: Any) -> RelativeHoliday:
    table = nested_table(entry, f"extra_holidays[{index}]", data)
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


def _covers_whenever(other: JurisdictionRule, rule: JurisdictionRule) -> bool:
    """`other` is in force whenever `rule` is, and no consent lifts it that does not lift
    `rule` too."""
    starts_in_time = other.effective is None or (
        rule.effective is not None and other.effective <= rule.effective
    )
    lasts = other.until is None or (rule.until is not None and other.until >= rule.until)
    return starts_in_time and lasts and set(other.exemptions) <= set(rule.exemptions)


def _check_window_gaps(rules: Mapping[str, CallingRule], path: Path) -> None:
    """A weekday a window rule leaves out must be closed by another rule of the same
    jurisdiction, channels and purposes, in force whenever the window rule is; otherwise the
    gap would silently allow contacts."""
    for rule in rules.values():
        if not isinstance(rule, WindowRule):
            continue
        for day, window in enumerate(rule.windows):
            if window is None and not any(
                other.jurisdiction == rule.jurisdiction
                and other.channels >= rule.channels
                and other.purposes >= rule.purposes
                and _covers_whenever(other, rule)
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


def group_by_jurisdiction(
    rules: Mapping[str, CallingRule],
) -> dict[tuple[str, Channel], JurisdictionRules]:
    """The jurisdiction rules of each (jurisdiction, channel), as a decision looks them up."""
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


def _keywords(data: TomlTable) -> Keywords:
    groups: dict[str, frozenset[str]] = {}
    owner: dict[str, str] = {}
    phrases: list[str] = []
    for name in ("opt_out", "revocation", "opt_in", "help"):
        table = data.table(name)
        check_source(table)
        table.string("note", "")
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
