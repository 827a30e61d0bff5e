"""Which spellings of an address reach one mailbox (rules/mailboxes.toml), and the table of
rules/README.md made from it.

Pure data: `gateway.rules.mailbox_loader` reads the file. `MailboxRules` is what
`gateway.addresses.mailbox_key` takes (its `MailboxRules` protocol), so the key function
stays free of the rules package.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

MAILBOX_TABLE_START = "<!-- mailbox-table:start -->"
MAILBOX_TABLE_END = "<!-- mailbox-table:end -->"


@dataclass(frozen=True)
class Folding:
    """One domain's rule, as `mailbox_key` applies it (the default's separators included)."""

    canonical_domain: str
    separators: tuple[str, ...]
    ignored: str


@dataclass(frozen=True)
class Source:
    citation: str
    confidence: str
    verify: bool
    checked: date
    since: date | None = None
    note: str = ""


@dataclass(frozen=True)
class DefaultRule:
    separators: tuple[str, ...]
    source: Source


@dataclass(frozen=True)
class Provider:
    name: str
    domains: tuple[str, ...]
    canonical_domain: str
    separators: tuple[str, ...]
    ignored: tuple[str, ...]
    source: Source


@dataclass(frozen=True)
class MailboxRules:
    default: DefaultRule
    providers: tuple[Provider, ...]
    by_domain: Mapping[str, Folding]
    version: str
    """A hash of what changes a key (domains, separators, ignored characters), not of the
    citations: stored mailbox keys are computed again when it changes."""

    def for_domain(self, domain: str) -> Folding:
        folding = self.by_domain.get(domain)
        if folding is None:
            return Folding("", self.default.separators, "")
        return folding


def mailbox_markdown_table(rules: MailboxRules) -> str:
    """The table of rules/README.md: the default, then a row per provider."""
    lines = [
        "| provider | domains (key's domain first) | separators | ignored in the user part "
        "| citation | confidence | checked | since |",
        "|---|---|---|---|---|---|---|---|",
    ]
    default = rules.default
    lines.append(_row("every domain (default)", "any", default.separators, (), default.source))
    for provider in rules.providers:
        domains = [provider.canonical_domain] + [
            d for d in provider.domains if d != provider.canonical_domain
        ]
        separators = tuple(dict.fromkeys((*default.separators, *provider.separators)))
        lines.append(
            _row(provider.name, ", ".join(domains), separators, provider.ignored, provider.source)
        )
    return "\n".join(lines) + "\n"


def _row(
    name: str, domains: str, separators: tuple[str, ...], ignored: tuple[str, ...],
    source: Source,
) -> str:
    confidence = "med (verify)" if source.verify else source.confidence
    cells = [
        name,
        domains,
        " ".join(f"`{s}`" for s in separators),
        " ".join(f"`{c}`" for c in ignored),
        source.citation,
        confidence,
        source.checked.isoformat(),
        source.since.isoformat() if source.since else "",
    ]
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
