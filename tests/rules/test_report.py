"""The rules report, derived from the rule data itself: whatever calling.toml says, the
report shows it on the right days, and rules/README.md's generated table matches it."""

from __future__ import annotations

import ast
import json
from datetime import date, timedelta

import pytest

from gateway.config.settings import PACKAGE_RULES_DIR
from gateway.rules.calling import (
    WEEKDAY_KEYS,
    CapRule,
    ConsentRule,
    JurisdictionRule,
    RestrictedDayRule,
    WindowRule,
)
from gateway.rules.calling_loader import load_calling_rules
from gateway.rules.report import (
    TABLE_COMMAND,
    TABLE_END,
    TABLE_START,
    UnknownJurisdiction,
    jurisdictions,
    markdown_table,
    render_text,
    replace_table,
    report,
    report_data,
    resolve_jurisdiction,
)
from tests.test_layout import CLOCK_AND_FILE_CALLS, IO_MODULES, MODULES, imports_of

RULES = load_calling_rules(PACKAGE_RULES_DIR)
DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
JURISDICTION_RULES = [r for r in RULES.rules.values() if isinstance(r, JurisdictionRule)]
DATED = [r for r in JURISDICTION_RULES if r.effective or r.until]
# Every day on which some rule starts or stops, the day before each, and one long before all.
BOUNDARIES = sorted(
    {d for r in DATED for d in (r.effective, r.until) if d}
    | {d - timedelta(days=1) for r in DATED for d in (r.effective, r.until) if d}
    | {date(2000, 1, 1)}
)


def one(at: date | None, jurisdiction: str):
    (item,) = report(RULES, at, jurisdiction)
    return item


@pytest.mark.parametrize("at", BOUNDARIES, ids=str)
def test_hours_per_weekday_are_the_windows_of_the_rules_in_force(at: date) -> None:
    for item in report(RULES, at):
        in_force = [r for r in JURISDICTION_RULES
                    if r.jurisdiction == item.jurisdiction and r.in_force(at)]
        for weekday, day in enumerate(item.hours):
            assert day.weekday == WEEKDAY_KEYS[weekday]
            windows = [
                (str(r.windows[weekday]), r)
                for r in in_force
                if isinstance(r, WindowRule) and r.windows[weekday] is not None
            ]
            assert {(w.hours, c) for w in day.windows for c in w.channels} == {
                (hours, c.value) for hours, r in windows for c in r.channels
            }, (item.jurisdiction, at, day.weekday)
            assert {(w.hours, i) for w in day.windows for i in w.rules} == {
                (hours, r.id) for hours, r in windows
            }
            assert set(day.closed) == {
                c.value for r in in_force
                if isinstance(r, RestrictedDayRule) and weekday in r.weekdays
                for c in r.channels
            }


def test_several_window_rules_of_one_jurisdiction_combine_per_weekday() -> None:
    """Texas: weekday and Sunday rules, calls and (from SB 140's date) texts, one line a day."""
    texts = next(r for r in DATED if r.jurisdiction == "US-TX" and r.effective)
    before = one(texts.effective - timedelta(days=1), "US-TX")
    after = one(texts.effective, "US-TX")
    assert all(len(day.windows) == 1 for day in after.hours)
    assert {day.windows[0].channels for day in after.hours} == {("call", "sms")}
    assert {day.windows[0].channels for day in before.hours} == {("call",)}
    assert "Mon-Sat 09:00-21:00, Sun 12:00-21:00" in render_text(texts.effective, [after])
    assert "Mon-Sat 09:00-21:00 (call only)" in render_text(texts.effective, [before])


@pytest.mark.parametrize("rule", DATED, ids=lambda r: r.id)
def test_a_dated_rule_is_in_the_report_exactly_while_in_force(rule: JurisdictionRule) -> None:
    for day in (d for d in (rule.effective, rule.until) if d):
        for at in (day - timedelta(days=1), day):
            item = one(at, rule.jurisdiction)
            shown = {v.id for v in item.rules}
            later = {v.id for v in item.not_in_force}
            assert (rule.id in shown) == rule.in_force(at), at
            assert (rule.id in later) != rule.in_force(at), at


@pytest.mark.parametrize("rule", JURISDICTION_RULES, ids=lambda r: r.id)
def test_every_rule_shows_its_terms_sources_and_dates(rule: JurisdictionRule) -> None:
    (view,) = [v for v in one(None, rule.jurisdiction).rules if v.id == rule.id]
    assert view.citation == rule.citation
    assert view.confidence == rule.confidence
    assert (view.effective, view.until) == (rule.effective, rule.until)
    assert set(view.channels) == {c.value for c in rule.channels}
    assert [e.citation for e in view.exemptions] == [e.citation for e in rule.exemptions]
    assert [e.within_days for e in view.exemptions] == [e.within_days for e in rule.exemptions]
    if isinstance(rule, RestrictedDayRule):
        names = [c.label for c in rule.calendars]
        names += [e.name for e in rule.extra_holidays] + [d.name for d in rule.defined_holidays]
        assert all(name in view.terms for name in names)
        assert all(DAY_NAMES[d] in view.terms for d in rule.weekdays)
    elif isinstance(rule, CapRule):
        assert view.terms.startswith(f"{rule.limit} per ")
        assert view.terms.endswith(" per offer") == (rule.per == "offer")
    elif isinstance(rule, ConsentRule):
        assert all(kind.value in view.terms for kind in rule.kinds)
    else:
        assert all(str(w) in view.terms for w in rule.windows if w)


def test_caps_read_as_the_statutes_say() -> None:
    assert [v.terms for v in one(None, "US-FL").rules if v.kind == "cap"] == ["3 per 24 h"]
    assert [v.terms for v in one(None, "CA-BC").rules if v.kind == "cap"] == [
        "1 per 30 days per offer"
    ]


def test_jurisdictions_national_first_then_alphabetical_and_every_rule_once() -> None:
    order = jurisdictions(RULES)
    nationals = list(dict.fromkeys(RULES.national.values()))
    assert list(order[: len(nationals)]) == nationals
    assert list(order[len(nationals):]) == sorted(order[len(nationals):])
    assert set(order) == {r.jurisdiction for r in JURISDICTION_RULES}
    listed = [v.id for item in report(RULES, None) for v in item.rules]
    assert sorted(listed) == sorted(r.id for r in JURISDICTION_RULES)


@pytest.mark.parametrize(
    ("text", "code"),
    [("US-FL", "US-FL"), ("us-fl", "US-FL"), ("FL", "US-FL"), ("Florida", "US-FL"),
     ("US", "US"), ("ca", "CA"), ("BC", "CA-BC"), ("US-CA", "US-CA"), ("US-AK", "US-AK")],
)
def test_a_jurisdiction_filter_names_a_code_or_a_name(text: str, code: str) -> None:
    assert resolve_jurisdiction(RULES, text) == code


@pytest.mark.parametrize("text", ["US-XX", "Narnia", "", "DE-BY"])
def test_an_unknown_jurisdiction_is_refused_by_name(text: str) -> None:
    with pytest.raises(UnknownJurisdiction, match=repr(text)):
        resolve_jurisdiction(RULES, text)


def test_a_subdivision_without_rules_says_the_national_rules_apply() -> None:
    text = render_text(date(2026, 1, 1), report(RULES, date(2026, 1, 1), "US-AK"))
    assert "nothing in force on 2026-01-01" in text
    assert "rules show --jurisdiction US" in text


def test_the_json_report_round_trips_with_iso_dates() -> None:
    at = date(2026, 1, 1)
    data = json.loads(json.dumps(report_data(at, report(RULES, at, "US-OR"))))
    (oregon,) = data["jurisdictions"]
    assert data["at"] == "2026-01-01"
    assert {r["id"]: r["effective"] for r in oregon["rules"]} == {
        r.id: r.effective.isoformat() for r in DATED if r.jurisdiction == "US-OR"
    }
    assert [d["windows"][0]["hours"] for d in oregon["hours"]] == ["08:00-20:00"] * 7


def test_the_table_has_a_row_per_jurisdiction_with_its_citations() -> None:
    rows = markdown_table(RULES).splitlines()[2:]
    assert [row.split(" | ")[0].removeprefix("| ").split(" ")[0] for row in rows] == list(
        jurisdictions(RULES)
    )
    for row, code in zip(rows, jurisdictions(RULES), strict=True):
        for rule in (r for r in JURISDICTION_RULES if r.jurisdiction == code):
            assert rule.citation.split(";")[0].split(" (")[0] in row, rule.id
            for day in (rule.effective, rule.until):
                assert day is None or day.isoformat() in row


def test_rules_readme_table_matches_the_rules() -> None:
    readme = (PACKAGE_RULES_DIR / "README.md").read_text(encoding="utf-8")
    assert TABLE_START in readme and TABLE_END in readme
    assert replace_table(readme, markdown_table(RULES)) == readme, (
        f"rules/README.md's table is stale: run `{TABLE_COMMAND}`"
    )


def test_replace_table_needs_its_markers() -> None:
    with pytest.raises(ValueError, match="rules-table:start"):
        replace_table("# Rules\n", "| a |\n")
    document = f"before\n{TABLE_START}\nold\n{TABLE_END}\nafter\n"
    replaced = replace_table(document, "| new |\n")
    assert replaced.startswith(f"before\n{TABLE_START}\n") and replaced.endswith(
        f"| new |\n{TABLE_END}\nafter\n"
    )
    assert "old" not in replaced
    assert replace_table(replaced, "| new |\n") == replaced


def test_the_report_module_is_pure() -> None:
    """It may import the model and rule types only: no I/O, no clock (the CLI reads them)."""
    name = "gateway.rules.report"
    path = MODULES[name]
    imported = {i.imported for i in imports_of(name, path)}
    gateway = {m for m in imported if m.startswith("gateway.")}
    assert all(m == "gateway.model" or m.startswith("gateway.rules.") for m in gateway)
    assert not any(m.endswith("loader") for m in gateway)
    assert not {m.split(".")[0] for m in imported} & IO_MODULES
    calls = {
        node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
    }
    assert not calls & CLOCK_AND_FILE_CALLS
