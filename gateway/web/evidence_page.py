"""The printable evidence page of one decision (`GET /v1/decisions/{id}/evidence` with
`Accept: text/html`): the same document as the JSON, as headed sections a browser prints
(or saves as PDF) on its own. Its sections are the template partial the console's decision
page shows too (`console/evidence_sections.html`), so the two never tell a different story;
Jinja2 escapes every value, since agents write subjects, senders and recipients."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from gateway.services.decision_reports import EVIDENCE_PARTS
from gateway.web.pages import render_page


def evidence_context(
    document: Mapping[str, Any], cite: Callable[[str], str | None] = lambda rule: None
) -> dict[str, Any]:
    """What the partial needs: each reason with the citation its rule has in the evidence
    (else `cite`'s), and the parts beside the usual ones."""
    citations = {
        str(rule.get("id")): rule.get("citation")
        for rule in document["rules"] if isinstance(rule, Mapping)
    }
    reasons = [
        {**reason, "citation": citations.get(reason["rule"]) or cite(reason["rule"])}
        for reason in document["decision"]["reason_details"]
    ]
    others = [
        (key, value) for key, value in document.items()
        if key != "decision" and key not in EVIDENCE_PARTS
    ]
    return {"document": document, "decision": document["decision"], "reasons": reasons,
            "others": others}


def evidence_page(document: Mapping[str, Any]) -> web.Response:
    return render_page(
        "console/evidence.html", f"Evidence for decision {document['decision']['id']}",
        **evidence_context(document),
    )
