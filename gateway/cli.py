"""`compliance-gateway` (also `python -m gateway`): serve, migrate, check, suppress, blocks,
audit, rules."""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any, NoReturn

from gateway.addresses import InvalidAddress, suppression_key
from gateway.config.settings import Config, ConfigError, find_config_file, load_config
from gateway.model import (
    Account,
    AuditEvent,
    Channel,
    Consent,
    ConsentKind,
    KnownLocation,
    Purpose,
    Role,
    UpstreamPermanentError,
    UpstreamTemporaryError,
)
from gateway.pipeline.dry_run import CheckError, CheckRequest, parse_time, parse_timezone, run_check
from gateway.rules.calling_loader import load_calling_rules
from gateway.rules.errors import RulesError
from gateway.rules.report import (
    UnknownJurisdiction,
    markdown_table,
    render_text,
    replace_table,
    report,
    report_data,
    resolve_jurisdiction,
)
from gateway.runtime.clock import Clock
from gateway.runtime.logs import configure_logging
from gateway.runtime.processes import LISTENERS_ENV, supervise
from gateway.runtime.progress import Progress
from gateway.server import Gateway, Services, serve_forever
from gateway.services.block_reports import (
    BLOCK_CSV_COLUMNS,
    block_as_dict,
    block_csv_row,
    write_blocks_csv,
)
from gateway.services.consents import ConsentError, make_consent, read_consents_csv
from gateway.services.imports import (
    IMPORT_FORMATS,
    SuppressionFileError,
    import_suppression_file,
    validated_key,
)
from gateway.services.privacy import Privacy, export_json, purge
from gateway.services.retention import apply_retention
from gateway.store import migrate
from gateway.store.base import BlockQuery, StoreUnavailable
from gateway.upstream.postmark import PostmarkEmailUpstream

EXIT_ALLOW = 0
EXIT_BLOCK = 1
EXIT_INVALID = 2
EXIT_UNAVAILABLE = 3


class UsageError(Exception):
    """Invalid input on the command line: one line on stderr, exit status 2."""


def parse_instant(value: str, *, now: datetime | None = None) -> datetime:
    try:
        return parse_time(value, now=now)
    except CheckError as exc:
        raise UsageError(str(exc)) from exc


class OneLineErrorParser(argparse.ArgumentParser):
    """Invalid input is one line on stderr and exit status 2, as scripts expect."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_INVALID, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        help="TOML file (default: $GATEWAY_CONFIG, then ./gateway.toml, then built-in defaults)",
    )

    parser = OneLineErrorParser(prog="compliance-gateway", parents=[common])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineErrorParser)

    serve = commands.add_parser("serve", parents=[common], help="run the gateway")
    serve.add_argument("--now", help="start the clock at this ISO 8601 instant (staging/tests)")
    commands.add_parser(
        "migrate", parents=[common], help="apply pending store schema migrations and list them"
    )

    check = commands.add_parser("check", help="print the decision for a hypothetical message")
    check_kinds = check.add_subparsers(
        dest="kind", required=True, parser_class=OneLineErrorParser
    )
    email = check_kinds.add_parser("email", parents=[common])
    email.add_argument("--to", required=True)
    email.add_argument("--from", dest="sender", required=True)
    email.add_argument("--subject", default="")
    email.add_argument("--reply", action="store_true", help="the message answers another")
    email.add_argument("--account", help="check as this account (default: any account)")
    for kind in ("call", "sms"):
        telephony = check_kinds.add_parser(kind, parents=[common])
        telephony.add_argument("--to", required=True, help="E.164 number")
        telephony.add_argument("--from", dest="sender", default="")
        telephony.add_argument("--at", help="ISO 8601 instant (default: now)")
        telephony.add_argument(
            "--purpose", choices=[p.value for p in Purpose], default=Purpose.MARKETING.value
        )
        telephony.add_argument("--timezone", default="", help="callee's known IANA zone")
        telephony.add_argument("--account", help="check as this account")

    consent = commands.add_parser("consent", help="the consent registry")
    consent_actions = consent.add_subparsers(
        dest="action", required=True, parser_class=OneLineErrorParser
    )
    consent_add = consent_actions.add_parser("add", parents=[common])
    consent_add.add_argument("subject", help="E.164 number or email address")
    consent_add.add_argument("--channel", required=True, choices=[c.value for c in Channel])
    consent_add.add_argument("--kind", required=True, choices=[k.value for k in ConsentKind])
    consent_add.add_argument("--obtained-at", required=True, help="ISO 8601 with offset")
    consent_add.add_argument("--source", required=True, help="where it was obtained")
    consent_add.add_argument("--evidence", default="", help="reference to the proof")
    consent_import = consent_actions.add_parser("import", parents=[common])
    consent_import.add_argument("file", type=Path)
    consent_list = consent_actions.add_parser("list", parents=[common])
    consent_list.add_argument("subjects", nargs="+")

    location = commands.add_parser("location", help="where callees live (the contact registry)")
    location_actions = location.add_subparsers(
        dest="action", required=True, parser_class=OneLineErrorParser
    )
    location_set = location_actions.add_parser("set", parents=[common])
    location_set.add_argument("number")
    location_set.add_argument("--timezone", default="")
    location_set.add_argument("--region", default="", help="ISO 3166-2, e.g. US-FL or CA-ON")
    location_set.add_argument("--postal-code", default="")
    location_set.add_argument("--lat", type=float)
    location_set.add_argument("--lon", type=float)
    location_show = location_actions.add_parser("show", parents=[common])
    location_show.add_argument("numbers", nargs="+")

    suppress = commands.add_parser("suppress", help="manage the suppression list")
    actions = suppress.add_subparsers(dest="action", required=True, parser_class=OneLineErrorParser)
    add = actions.add_parser("add", parents=[common])
    add.add_argument("addresses", nargs="+")
    add.add_argument("--reason", default="added by operator")
    remove = actions.add_parser("remove", parents=[common])
    remove.add_argument("addresses", nargs="+")
    actions.add_parser("list", parents=[common])
    importer = actions.add_parser("import", parents=[common])
    importer.add_argument("file", type=Path, nargs="?")
    importer.add_argument(
        "--from-postmark", metavar="STREAM",
        help="pull the suppression dump of this Postmark message stream instead of a file",
    )
    importer.add_argument("--reason", default="imported")
    importer.add_argument(
        "--format",
        choices=sorted(IMPORT_FORMATS),
        default="csv",
        help="csv (the first column, or the one a header names: address, email, phone, "
        "number), dnc (US National DNC Registry download: one 10-digit number per line) "
        "or dncl (Canada's National DNCL download)",
    )
    importer.add_argument(
        "--skip-bad", action="store_true",
        help="import the valid rows even if some are bad (default: a bad row imports nothing)",
    )
    actions.add_parser("export", parents=[common])

    blocks = commands.add_parser("blocks", parents=[common], help="read the block log")
    blocks.add_argument("--since", help="ISO 8601 or a span such as 24h, 7d")
    blocks.add_argument("--until")
    blocks.add_argument("--reason")
    blocks.add_argument("--channel", choices=[c.value for c in Channel])
    blocks.add_argument("--account")
    blocks.add_argument("--recipient")
    blocks.add_argument("--limit", type=int, default=1000)
    blocks.add_argument("--format", choices=["json", "csv", "table"], default="json")

    audit = commands.add_parser("audit", help="the hash-chained audit log")
    audit_actions = audit.add_subparsers(
        dest="action", required=True, parser_class=OneLineErrorParser
    )
    audit_actions.add_parser("verify", parents=[common])
    audit_actions.add_parser("list", parents=[common])
    _add_privacy_commands(commands, common)
    _add_rules_commands(commands, common)
    return parser


def _add_privacy_commands(
    commands: argparse._SubParsersAction[OneLineErrorParser], common: argparse.ArgumentParser
) -> None:
    privacy = commands.add_parser("privacy", help="data-subject requests: export, erase")
    privacy_actions = privacy.add_subparsers(
        dest="action", required=True, parser_class=OneLineErrorParser
    )
    for action, help_text in (
        ("export", "print everything held about an address or number as JSON"),
        ("erase", "delete their personal data; an opt-out is kept as a keyed hash"),
    ):
        request = privacy_actions.add_parser(action, parents=[common], help=help_text)
        request.add_argument("subject", metavar="ADDRESS_OR_E164")
        request.add_argument("--actor", default="operator", help="who asked (for the audit log)")

    retention = commands.add_parser("retention", help="the retention job")
    retention_actions = retention.add_subparsers(
        dest="action", required=True, parser_class=OneLineErrorParser
    )
    retention_actions.add_parser("run", parents=[common], help="apply [retention] once now")

    purge = commands.add_parser(
        "purge", parents=[common], help="owner: erase ALL data, leaving only the purge's audit"
    )
    purge.add_argument("--yes", action="store_true", help="confirm: nothing can be recovered")


def _add_rules_commands(
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
        help="rewrite the generated section of README.md in the rules directory",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(find_config_file(getattr(args, "config", None)))
        if args.command == "serve":
            return _serve(config, args)
        if args.command == "migrate":
            return asyncio.run(_migrate(config))
        if args.command == "rules":
            return _rules(config, args)
        configure_logging("WARNING")
        return asyncio.run(_with_services(config, COMMANDS[args.command], args))
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_INVALID
    except RulesError as exc:
        print(f"rules error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except StoreUnavailable as exc:
        print(f"store unavailable: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE


def _serve(config: Config, args: argparse.Namespace) -> int:
    configure_logging()
    start = parse_instant(args.now) if args.now else None
    clock = Clock(start)
    if start is not None:
        print(
            f"WARNING: clock shifted: the gateway believes it is {start.isoformat()} "
            "(--now is for staging and acceptance tests only)",
            file=sys.stderr,
            flush=True,
        )
    if config.workers > 1 and LISTENERS_ENV not in os.environ:
        arguments = ["--config", str(config.source)] if config.source else []
        return supervise(config, arguments + (["--now", args.now] if args.now else []))
    asyncio.run(serve_forever(Gateway(config, clock)))
    return 0


async def _migrate(config: Config) -> int:
    """Only the store is opened (no rules, no upstreams): a deploy can migrate first."""
    applied = await migrate(config.store_url)
    for migration in applied:
        print(f"applied {migration.version:04d}_{migration.name}")
    print(f"schema is current ({len(applied)} migration(s) applied now)")
    return 0


def _rules(config: Config, args: argparse.Namespace) -> int:
    """Reads only the rule files (no store, no upstreams); the clock only for `--at`'s
    default."""
    calling = load_calling_rules(config.rules_dir)
    if args.action == "table":
        return _rules_table(config.rules_dir / "README.md", markdown_table(calling), args.write)
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


def _rules_table(readme: Path, table: str, write: bool) -> int:
    """`make rules-table`; tests/rules/test_report.py fails while the committed table is
    stale."""
    if not write:
        sys.stdout.write(table)
        return 0
    text = _read_text(readme)
    try:
        updated = replace_table(text, table)
    except ValueError as exc:
        raise UsageError(f"{readme}: {exc}") from exc
    if updated != text:
        readme.write_text(updated, encoding="utf-8")
    print(f"{readme}: rules table {'rewritten' if updated != text else 'already current'}")
    return 0


async def _with_services(
    config: Config,
    command: Callable[[Services, argparse.Namespace], Awaitable[int]],
    args: argparse.Namespace,
) -> int:
    services = Services(config, Clock())
    await services.open()
    try:
        return await command(services, args)
    finally:
        await services.close()


async def _check(services: Services, args: argparse.Namespace) -> int:
    channel = Channel(args.kind)
    try:
        request = CheckRequest(
            channel=channel,
            to=args.to,
            sender=args.sender,
            subject=getattr(args, "subject", ""),
            is_reply=getattr(args, "reply", False),
            at=parse_instant(args.at) if getattr(args, "at", None) else None,
            purpose=Purpose(args.purpose) if hasattr(args, "purpose") else None,
            timezone=parse_timezone(getattr(args, "timezone", "")),
        )
        result = await run_check(
            services.pipeline, request, _check_account(services.config, args.account)
        )
    except CheckError as exc:
        raise UsageError(str(exc)) from exc
    print(json.dumps(result, indent=2, default=str))
    return EXIT_ALLOW if result["decision"] == "allow" else EXIT_BLOCK


def _check_account(config: Config, name: str | None) -> Account:
    """The named account, or one that may send from any domain some account may use."""
    if name:
        account = config.account(name)
        if account is None:
            raise UsageError(f"no account named {name!r} in the configuration")
        return account
    domains = tuple(dict.fromkeys(d for a in config.accounts for d in a.sender_domains))
    return Account(
        name="(any account)",
        secret="",
        role=Role.REP,
        sender_domains=domains,
        purpose=Purpose.MARKETING,
        identity=config.sender,
    )


async def _suppress(services: Services, args: argparse.Namespace) -> int:
    suppressions = services.suppressions
    if args.action == "add":
        _validate_addresses(args.addresses)
        added = await suppressions.add(
            args.addresses, source="cli", reason=args.reason, actor="operator"
        )
        print(f"suppressed {len(args.addresses)} ({added} new)")
    elif args.action == "remove":
        _validate_addresses(args.addresses)
        removed = await suppressions.remove(args.addresses, actor="operator")
        print(f"removed {removed} of {len(args.addresses)}")
    elif args.action == "import" and args.from_postmark:
        return await _import_from_postmark(services, args.from_postmark)
    elif args.action == "import":
        if args.file is None:
            raise UsageError("give a FILE to import, or --from-postmark STREAM")
        return await _import_file(services, args)
    else:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        if args.action == "export":
            writer.writerow(["address", "source", "reason", "time"])
        for entry in await services.store.list_suppressions():
            writer.writerow([entry.address, entry.source, entry.reason, entry.time.isoformat()])
    return 0


async def _import_file(services: Services, args: argparse.Namespace) -> int:
    """Bad rows go to stderr (the first few, then a count); the summary to stdout."""
    try:
        summary = await import_suppression_file(
            services.store, args.file, args.format, reason=args.reason, actor="operator",
            now=services.clock.now(), skip_bad=args.skip_bad, progress=Progress(),
        )
    except SuppressionFileError as exc:
        raise UsageError(str(exc)) from exc
    for problem in summary.problems:
        print(f"{args.file}: {problem}", file=sys.stderr)
    if summary.bad > len(summary.problems):
        print(f"{args.file}: and {summary.bad - len(summary.problems)} more bad rows",
              file=sys.stderr)
    if not summary.applied:
        raise UsageError(
            f"{args.file}: {summary.bad} of {summary.rows} rows are bad, nothing imported "
            f"(fix them, or add --skip-bad to import the {summary.valid} valid rows)"
        )
    print(summary.line(args.file.name))
    return 0


async def _import_from_postmark(services: Services, stream: str) -> int:
    """A customer moving onto the gateway starts with what Postmark already suppresses."""
    upstream_config = services.config.email_upstream
    if not upstream_config.server_token:
        raise UsageError("--from-postmark needs upstream.email.server_token in the configuration")
    postmark = PostmarkEmailUpstream(upstream_config)
    await postmark.start()
    try:
        dump = await postmark.suppression_dump(stream)
    except (UpstreamTemporaryError, UpstreamPermanentError) as exc:
        raise UsageError(f"Postmark did not give the suppression dump: {exc}") from exc
    finally:
        await postmark.close()
    by_reason: dict[str, list[str]] = {}
    for entry in dump:
        try:
            address = validated_key(str(entry.get("EmailAddress", "")))
        except InvalidAddress:
            continue
        by_reason.setdefault(str(entry.get("SuppressionReason") or "Unknown"), []).append(address)
    added = 0
    for reason, addresses in by_reason.items():
        added += await services.suppressions.add(
            addresses, source=f"postmark:{reason}", reason=f"Postmark {stream}: {reason}",
            actor="operator",
        )
    total = sum(len(a) for a in by_reason.values())
    print(f"imported {total} suppressions from Postmark stream {stream!r} ({added} new)")
    return 0


def _validate_addresses(addresses: Sequence[str]) -> None:
    for address in addresses:
        try:
            validated_key(address)
        except InvalidAddress as exc:
            raise UsageError(f"{address!r} is not a valid address or number: {exc}") from exc


async def _blocks(services: Services, args: argparse.Namespace) -> int:
    now = services.clock.now()
    query = BlockQuery(
        since=parse_instant(args.since, now=now) if args.since else None,
        until=parse_instant(args.until, now=now) if args.until else None,
        reason=args.reason,
        channel=Channel(args.channel) if args.channel else None,
        account=args.account,
        recipient=args.recipient,
        limit=args.limit,
    )
    records = await services.store.query_blocks(query)
    if args.format == "json":
        print(json.dumps([block_as_dict(r) for r in records], indent=2))
        return 0
    if args.format == "csv":
        write_blocks_csv(sys.stdout, records)
        return 0
    rows = [list(BLOCK_CSV_COLUMNS), *(block_csv_row(r) for r in records)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(BLOCK_CSV_COLUMNS))]
    for row in rows:
        print("  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)))
    return 0


async def _audit(services: Services, args: argparse.Namespace) -> int:
    if args.action == "list":
        for event in await services.store.audit_events():
            print(json.dumps({
                "id": event.id, "time": event.time.isoformat(), "actor": event.actor,
                "action": event.action, "subject": event.subject, "details": event.details,
            }, default=str))
        return 0
    problem = await services.store.verify_audit()
    if problem is None:
        count = len(await services.store.audit_events())
        print(f"audit log verified: {count} entries, chain intact")
        return 0
    print(f"audit log TAMPERED at entry {problem.entry_id}: {problem.problem}")
    return 1


async def _consent(services: Services, args: argparse.Namespace) -> int:
    store = services.store
    if args.action == "list":
        keys = [_key(s) for s in args.subjects]
        found = await store.consents_for(keys)
        rows = [_consent_dict(c, services.clock.now()) for k in keys for c in found.get(k, ())]
        print(json.dumps(rows, indent=2))
        return 0
    try:
        if args.action == "add":
            consents = [make_consent(
                args.subject, args.channel, args.kind, parse_instant(args.obtained_at),
                args.source, args.evidence,
            )]
        else:
            consents = read_consents_csv(_read_text(args.file))
    except ConsentError as exc:
        raise UsageError(str(exc)) from exc
    added = await store.add_consents(consents)
    await store.append_audit(AuditEvent(
        time=services.clock.now(), actor="operator", action="consent.add",
        subject=",".join(sorted({c.subject for c in consents}))[:2000],
        details={"count": len(consents), "new": added},
    ))
    print(f"recorded {len(consents)} consents ({added} new)")
    return 0


def _consent_dict(consent: Consent, now: datetime) -> dict[str, Any]:
    valid = consent.obtained_at <= now and (consent.expires_at is None or consent.expires_at > now)
    return {
        "subject": consent.subject, "channel": consent.channel.value, "kind": consent.kind.value,
        "obtained_at": consent.obtained_at.isoformat(),
        "expires_at": consent.expires_at.isoformat() if consent.expires_at else None,
        "valid_now": valid, "source": consent.source, "evidence": consent.evidence,
    }


async def _location(services: Services, args: argparse.Namespace) -> int:
    store = services.store
    if args.action == "show":
        found = await store.known_locations([_key(n) for n in args.numbers])
        print(json.dumps({n: vars(loc) for n, loc in found.items()}, indent=2))
        return 0
    number = _key(args.number)
    if "@" in number:
        raise UsageError("a location belongs to a phone number (E.164)")
    if (args.lat is None) != (args.lon is None):
        raise UsageError("give --lat and --lon together")
    try:
        timezone = parse_timezone(args.timezone)
    except CheckError as exc:
        raise UsageError(str(exc)) from exc
    if not args.region:
        raise UsageError(
            "give --region (e.g. US-FL): the state's rules apply to a callee living there, "
            "and a time zone or coordinates alone do not say which state"
        )
    location = KnownLocation(
        timezone=timezone, latitude=args.lat, longitude=args.lon,
        region=args.region.upper(), postal_code=args.postal_code,
    )
    if location == KnownLocation():
        raise UsageError("give at least one of --timezone, --region, --postal-code, --lat/--lon")
    await store.set_known_location(number, location)
    await store.append_audit(AuditEvent(
        time=services.clock.now(), actor="operator", action="location.set", subject=number,
        details={k: v for k, v in vars(location).items() if v not in ("", None)},
    ))
    print(f"location of {number} recorded")
    return 0


def _key(subject: str) -> str:
    try:
        return suppression_key(subject)
    except InvalidAddress as exc:
        raise UsageError(f"{subject!r} is not a valid address or number: {exc}") from exc


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc


async def _privacy(services: Services, args: argparse.Namespace) -> int:
    _validate_addresses([args.subject])
    privacy = Privacy(services.store, services.clock, services.erasure_key)
    if args.action == "export":
        print(export_json(await privacy.export(args.subject, actor=args.actor)))
    else:
        counts = await privacy.erase(args.subject, actor=args.actor)
        print(json.dumps({"erased": counts, "opt_out_kept": counts["suppressions"] > 0}))
    return 0


async def _retention(services: Services, args: argparse.Namespace) -> int:
    counts = await apply_retention(services.store, services.config, services.clock.now())
    print(json.dumps(counts))
    return 0


async def _purge(services: Services, args: argparse.Namespace) -> int:
    if not args.yes:
        raise UsageError("purge deletes every record and outbox file for good; add --yes")
    event = await purge(services.store, services.config, services.clock, actor="owner")
    print(f"workspace purged; audit log restarted at entry {event.id}")
    return 0


COMMANDS: dict[str, Callable[[Services, argparse.Namespace], Awaitable[int]]] = {
    "check": _check,
    "consent": _consent,
    "location": _location,
    "suppress": _suppress,
    "blocks": _blocks,
    "audit": _audit,
    "privacy": _privacy,
    "retention": _retention,
    "purge": _purge,
}
