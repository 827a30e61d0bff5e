"""`rules show` and `rules table`: the calling rules (and, in rules/README.md, the mailbox
rules) as a reviewer reads them."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path

from gateway.cli.common import OneLineErrorParser, UsageError, read_text
from gateway.config.settings import Config
from gateway.rules.calling_loader import load_calling_rules
from gateway.rules.mailbox_loader import MAILBOX_FILE, load_mailbox_rules
from gateway.rules.mailboxes import MAILBOX_TABLE_END, MAILBOX_TABLE_START, mailbox_markdown_table
from gateway.rules.report import (
    UnknownJurisdiction,
    markdown_table,
    render_text,
    replace_section,
    replace_table,
    report,
    report_data,
    resolve_jurisdiction,
)


def add_rules_commands(
    commands: argparse._SubParsersAction[OneLineErrorParser], common: argparse.ArgumentParser
) -> None:
    rules = commands.add_parser("rules", help="the calling rules, as a reviewer reads them")
    rules_actions = rules.add_subparsers(
        dest="action", required=True, parser_class=OneLineErrorParser
    )
    show = rules_actions.add_parser(
        "show", parents=[common], help="the rules in force on a date, per jurisdiction"
    )
    show.add_argument(
        "--jurisdiction", help="US, CA, or an ISO 3166-2 code such as US-FL (also FL, Florida)"
    )
    show.add_argument("--at", help="the callee's local date, YYYY-MM-DD (default: today)")
    show.add_argument("--format", choices=["text", "json"], default="text")
    table = rules_actions.add_parser(
        "table", parents=[common],
        help="the markdown table of every rule, as rules/README.md holds it",
    )
    table.add_argument(
        "--write", action="store_true",
        help="rewrite the generated sections of README.md in the rules directory (the"
        " calling rules, and the mailbox rules of mailboxes.toml)",
    )


def run_rules(config: Config, args: argparse.Namespace) -> int:
    """Reads only the rule files (no store, no upstreams); the clock only for `--at`'s
    default."""
    calling = load_calling_rules(config.rules_dir)
    if args.action == "table":
        mailboxes = mailbox_markdown_table(load_mailbox_rules(config.rules_dir))
        return _rules_table(
            config.rules_dir / "README.md", markdown_table(calling), mailboxes, args.write
        )
    at = _parse_date(args.at) if args.at else date.today()
    try:
        jurisdiction = (
            resolve_jurisdiction(calling, args.jurisdiction) if args.jurisdiction else None
        )
    except UnknownJurisdiction as exc:
        raise UsageError(str(exc)) from exc
    reports = report(calling, at, jurisdiction)
    if args.format == "json":
        print(json.dumps(report_data(at, reports), indent=2, ensure_ascii=False))
    else:
        sys.stdout.write(render_text(at, reports))
    return 0


def _parse_date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise UsageError(f"--at {value!r} is not a date such as 2026-01-01") from exc


def _rules_table(readme: Path, table: str, mailboxes: str, write: bool) -> int:
    """`make rules-table`; tests/rules/test_report.py fails while the committed table is
    stale."""
    if not write:
        sys.stdout.write(table)
        return 0
    text = read_text(readme)
    try:
        updated = replace_section(
            replace_table(text, table), mailboxes, MAILBOX_TABLE_START, MAILBOX_TABLE_END,
            MAILBOX_FILE,
        )
    except ValueError as exc:
        raise UsageError(f"{readme}: {exc}") from exc
    if updated != text:
        readme.write_text(updated, encoding="utf-8")
    print(f"{readme}: rules table {'rewritten' if updated != text else 'already current'}")
    return 0


