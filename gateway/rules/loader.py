"""Read the reviewed rule data under `rules/` into an immutable `RuleSet`: the only place
the rules touch files."""

from __future__ import annotations

import hashlib
import itertools
import re
from pathlib import Path
from typing import Any

from gateway.config.toml_reader import read_toml
from gateway.lookalikes import fold
from gateway.model import Purpose
from gateway.rules.calling_loader import load_calling_rules
from gateway.rules.errors import RulesError
from gateway.rules.mailbox_loader import load_mailbox_rules
from gateway.rules.ruleset import CONFIDENCE_LEVELS, REQUIRED_EMAIL_RULES, Rule, RuleSet


def rules_version(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(path.relative_to(directory).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def load_rules(directory: Path) -> RuleSet:
    email_file = directory / "email.toml"
    data = read_toml(email_file, RulesError)
    rules = _parse_rules(data.get("rule"), email_file)
    for rule_id in REQUIRED_EMAIL_RULES:
        if rule_id not in rules:
            raise RulesError(f"{email_file}: rule {rule_id!r} is missing")
    return RuleSet(
        version=rules_version(directory),
        rules=rules,
        deceptive_subject=_prefix_pattern(data, email_file),
        postal_address=_regex(data, email_file, "identity", "postal_address_pattern"),
        footer_text=_read_text(directory / "footers" / "commercial.txt"),
        footer_html=_read_text(directory / "footers" / "commercial.html"),
        calling=load_calling_rules(directory),
        mailboxes=load_mailbox_rules(directory),
    )


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").rstrip("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError(f"{path}: cannot read: {exc}") from exc


def _parse_rules(entries: Any, path: Path) -> dict[str, Rule]:
    if not isinstance(entries, list):
        raise RulesError(f"{path}: [[rule]] entries are missing")
    rules: dict[str, Rule] = {}
    for index, entry in enumerate(entries):
        where = f"{path}: rule[{index}]"
        for key in ("id", "code", "citation", "confidence"):
            if not isinstance(entry.get(key), str):
                raise RulesError(f"{where}.{key} must be a string")
        if not entry["citation"].strip():
            raise RulesError(f"{where}.citation must not be empty")
        if entry["confidence"] not in CONFIDENCE_LEVELS:
            raise RulesError(f"{where}.confidence must be one of {CONFIDENCE_LEVELS}")
        try:
            purposes = frozenset(Purpose(p) for p in entry.get("purposes", []))
        except ValueError as exc:
            raise RulesError(f"{where}.purposes: {exc}") from exc
        if entry["id"] in rules:
            raise RulesError(f"{where}.id duplicates {entry['id']!r}")
        rules[entry["id"]] = Rule(
            id=entry["id"],
            code=entry["code"],
            purposes=purposes,
            citation=entry["citation"],
            confidence=entry["confidence"],
        )
    return rules


def _prefix_pattern(data: dict[str, Any], path: Path) -> re.Pattern[str]:
    """The reply and forward prefixes as a pattern over a subject folded by
    `gateway.lookalikes.fold`: each prefix is folded in every spelling of its letters'
    case that folds differently ("I" folds to "l", "i" to itself), and matched ignoring
    case, so that any look-alike of any spelling matches."""
    prefixes = data.get("deceptive_subject", {}).get("prefixes")
    if not isinstance(prefixes, list) or not all(isinstance(p, str) and p for p in prefixes):
        raise RulesError(f"{path}: deceptive_subject.prefixes must be a list of strings")
    spellings = {spelling for prefix in prefixes for spelling in _folded_spellings(prefix)}
    alternatives = "|".join(re.escape(s) for s in sorted(spellings, key=len, reverse=True))
    # fold() has already made every colon look-alike (full-width, ratio, modifier) a ":"
    # and every space a " "; digits stay digits.
    return re.compile(
        rf"^\s*(?:\[[^\]]*\]\s*)*(?:{alternatives})\s*(?:\[\d+\]|\(\d+\))?\s*:",
        re.IGNORECASE,
    )


def _folded_spellings(prefix: str) -> set[str]:
    options = []
    for char in prefix:
        forms: dict[str, str] = {}
        for form in (char.lower(), char.upper()):
            forms.setdefault(fold(form).casefold(), form)
        options.append(list(forms.values()))
    return {fold("".join(spelling)) for spelling in itertools.product(*options)}


def _regex(data: dict[str, Any], path: Path, table: str, key: str) -> re.Pattern[str]:
    value = data.get(table, {}).get(key)
    if not isinstance(value, str):
        raise RulesError(f"{path}: {table}.{key} must be a string")
    try:
        return re.compile(value)
    except re.error as exc:
        raise RulesError(f"{path}: {table}.{key} is not a valid pattern: {exc}") from exc
