"""The printable evidence page of one decision (`GET /v1/decisions/{id}/evidence` with
`Accept: text/html`): the same document as the JSON, as headed sections a browser prints
(or saves as PDF) on its own. Server-rendered in the shared page shell (`pages.page`: no
script, strict headers); every value is escaped, since agents write subjects, senders and
recipients."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aiohttp import web

from gateway.web.pages import escape, page


def evidence_page(document: Mapping[str, Any]) -> web.Response:
    decision = document["decision"]
    sections = [
        _section("Decision", _facts(_decision_facts(decision))),
        _section("Candidate zones and local times", _table(
            ("Zone", "Local time"),
            [(zone.get("zone"), zone.get("local_time")) for zone in document["zones"]],
            empty="No zone: an email has no calling hours.",
        )),
        _section("Rules applied", _table(
            ("Rule", "Citation", "Confidence", "In force", "Notes"),
            [
                (
                    rule.get("id"), rule.get("citation") or "(not in the rules)",
                    rule.get("confidence"), _dates(rule), _rule_notes(rule),
                )
                for rule in document["rules"]
            ],
            empty="No rule was applied.",
        )),
        _section("Consent record used", _facts(list((document["consent"] or {}).items()))
                 if document["consent"] else "<p>None: no consent was needed or used.</p>"),
        _section("Suppression entries found", _list(document["suppression"])
                 or "<p>None: the recipient was not on the suppression list.</p>"),
        _section("Added by the gateway", _table(
            ("Kind", "Header", "Text or value", "Where"),
            [
                (r.get("kind"), r.get("name"), r.get("text") or r.get("value"), r.get("where"))
                for r in document["rewrites"]
            ],
            empty="Nothing: no copy went out, or none needed a footer or notice.",
        )),
        _section("Upstream answer", _facts(list((document["upstream"] or {}).items()))
                 if document["upstream"] else "<p>None: nothing was handed to a provider.</p>"),
    ]
    others = [
        (key, value) for key, value in document.items()
        if key not in ("decision", "zones", "rules", "consent", "suppression", "rewrites",
                       "upstream")
    ]
    if others:
        sections.append(_section("What else the decision saw", _facts(others)))
    return page(f"Evidence for decision {decision['id']}", "\n".join(sections))


def _decision_facts(decision: Mapping[str, Any]) -> list[tuple[str, object]]:
    reasons = [
        f"{r['code']}: {r['message']} ({r['rule']})" for r in decision["reason_details"]
    ]
    return [
        ("Outcome", decision["outcome"]),
        ("Time (UTC)", decision["time"]),
        ("Channel", decision["channel"]),
        ("Account", decision["account"]),
        ("Agent key", decision["key_id"] or "none (the account's own secret)"),
        ("Sender", decision["sender"]),
        ("Recipient", decision["recipient"]),
        ("Purpose", decision["purpose"]),
        ("Subject", decision["subject"]),
        ("Reasons", reasons or "none: allowed"),
        ("Rules version", decision["rules_version"]),
        ("Upstream id", decision["upstream_id"] or "none: nothing went out"),
        ("Gateway id", decision["gateway_id"]),
    ]


def _dates(rule: Mapping[str, Any]) -> str:
    if "effective" not in rule and "until" not in rule:
        return "always"
    return f"from {rule.get('effective') or 'always'} until {rule.get('until') or 'now'}"


def _rule_notes(rule: Mapping[str, Any]) -> str:
    notes = []
    if rule.get("exempted_by"):
        notes.append(f"lifted by {rule['exempted_by']}")
    consent = rule.get("consent")
    if isinstance(consent, Mapping):
        notes.append(f"met by {consent.get('kind')} consent of {consent.get('obtained_at')}")
    return "; ".join(notes)


def _section(title: str, body: str) -> str:
    return f"<section><h2>{escape(title)}</h2>\n{body}\n</section>"


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return "<br>".join(_text(item) for item in value)
    if isinstance(value, Mapping):
        return "; ".join(f"{escape(k)}: {_text(v)}" for k, v in value.items())
    return escape(value)


def _facts(pairs: Iterable[tuple[str, object]]) -> str:
    rows = "".join(f"<dt>{escape(name)}</dt><dd>{_text(value)}</dd>" for name, value in pairs)
    return f"<dl>{rows}</dl>"


def _table(columns: Sequence[str], rows: Sequence[Sequence[object]], *, empty: str) -> str:
    if not rows:
        return f"<p>{escape(empty)}</p>"
    head = "".join(f'<th scope="col">{escape(c)}</th>' for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_text(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _list(items: Sequence[object]) -> str:
    if not items:
        return ""
    return "<ul>" + "".join(f"<li>{_text(item)}</li>" for item in items) + "</ul>"
