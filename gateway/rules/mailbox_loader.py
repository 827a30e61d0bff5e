"""Read `rules/mailboxes.toml` into `MailboxRules`; every problem names the file and key."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import date, datetime
from pathlib import Path

from gateway.config.toml_reader import TomlTable
from gateway.rules.geography_loader import check_source
from gateway.rules.mailboxes import DefaultRule, Folding, MailboxRules, Provider, Source
from gateway.rules.toml_files import file_table

MAILBOX_FILE = "mailboxes.toml"
_DOMAIN = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)+$")
# RFC 5322 atext: what a dot-atom local part is made of. A separator may not be "." (the
# atom boundary itself); an ignored character may.
_ATEXT = set("abcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+/=?^_`{|}~-")


def load_mailbox_rules(directory: Path) -> MailboxRules:
    data = file_table(directory / MAILBOX_FILE)
    default_table = data.table("default")
    default = DefaultRule(_separators(default_table, allow_empty=False), _source(default_table))
    default_table.finish()
    providers: list[Provider] = []
    by_domain: dict[str, Folding] = {}
    for entry in data.entries("provider"):
        provider = _provider(entry, default)
        entry.finish()
        for domain in provider.domains:
            if domain in by_domain:
                raise entry.error("domains", f"repeats {domain!r}, listed by another provider")
            by_domain[domain] = Folding(
                canonical_domain=provider.canonical_domain,
                separators=tuple(dict.fromkeys((*default.separators, *provider.separators))),
                ignored="".join(provider.ignored),
            )
        providers.append(provider)
    data.finish()
    return MailboxRules(
        default=default,
        providers=tuple(providers),
        by_domain=by_domain,
        version=_version(default, by_domain),
    )


def _provider(entry: TomlTable, default: DefaultRule) -> Provider:
    name = entry.string("name", required=True)
    domains = entry.strings("domains")
    for domain in domains:
        if not _DOMAIN.match(domain):
            raise entry.error("domains", f"has {domain!r}, not a lower-case domain name")
    if len(set(domains)) != len(domains):
        raise entry.error("domains", "lists a domain twice")
    canonical = entry.string("canonical_domain", required=True)
    if canonical not in domains:
        raise entry.error("canonical_domain", f"{canonical!r} must be one of domains")
    separators = _separators(entry, allow_empty=True)
    ignored = entry.strings("ignored", allow_empty=True)
    for character in ignored:
        if len(character) != 1 or character not in _ATEXT | {"."}:
            raise entry.error("ignored", f"has {character!r}, not one local-part character")
        if any(character in s for s in (*default.separators, *separators)):
            raise entry.error("ignored", f"has {character!r}, which is also a separator")
    return Provider(
        name=name,
        domains=tuple(domains),
        canonical_domain=canonical,
        separators=separators,
        ignored=tuple(dict.fromkeys(ignored)),
        source=_source(entry),
    )


def _separators(table: TomlTable, *, allow_empty: bool) -> tuple[str, ...]:
    separators = table.strings("separators", allow_empty=allow_empty)
    for separator in separators:
        if not set(separator) <= _ATEXT:
            raise table.error(
                "separators", f"has {separator!r}: a separator is made of atext characters"
                " (not '.', '@' or white space)",
            )
    return tuple(dict.fromkeys(separators))


def _source(table: TomlTable) -> Source:
    check_source(table)
    return Source(
        citation=table.string("citation"),
        confidence=table.string("confidence"),
        verify=table.boolean("verify"),
        checked=_date(table, "checked", required=True) or date.min,
        since=_date(table, "since"),
        note=table.string("note", ""),
    )


def _date(table: TomlTable, key: str, *, required: bool = False) -> date | None:
    value = table.get(key)
    if value is None and not required:
        return None
    if isinstance(value, datetime) or not isinstance(value, date):
        raise table.error(key, "must be a date such as 2026-01-01 (no quotes, no time)")
    return value


def _version(default: DefaultRule, by_domain: dict[str, Folding]) -> str:
    content = {
        "default": list(default.separators),
        "domains": {
            domain: [f.canonical_domain, list(f.separators), f.ignored]
            for domain, f in sorted(by_domain.items())
        },
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]
