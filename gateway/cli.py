"""`compliance-gateway` (also `python -m gateway`): serve, check, suppress, blocks, audit."""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import re
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.addresses import InvalidAddress
from gateway.clock import Clock
from gateway.config import Config, ConfigError, find_config_file, load_config
from gateway.logs import configure_logging
from gateway.model import (
    Account,
    BlockRecord,
    Channel,
    EmailContent,
    OutboundMessage,
    Purpose,
    Role,
)
from gateway.rules import RulesError
from gateway.server import Gateway, Services, serve_forever
from gateway.store.base import BlockQuery, StoreUnavailable
from gateway.unsubscribe import suppression_key

EXIT_ALLOW = 0
EXIT_BLOCK = 1
EXIT_INVALID = 2
EXIT_UNAVAILABLE = 3
RELATIVE_TIME = re.compile(r"^(\d+)([smhd])$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


class UsageError(Exception):
    """Invalid input on the command line: one line on stderr, exit status 2."""


def parse_instant(value: str, *, now: datetime | None = None) -> datetime:
    """ISO 8601 (naive means UTC), or a span back from now such as 24h or 7d."""
    match = RELATIVE_TIME.match(value)
    if match and now is not None:
        return now - timedelta(**{UNITS[match.group(2)]: int(match.group(1))})
    try:
        instant = datetime.fromisoformat(value)
    except ValueError as exc:
        raise UsageError(f"not an ISO 8601 time: {value!r}") from exc
    return instant if instant.tzinfo else instant.replace(tzinfo=UTC)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        help="TOML file (default: $GATEWAY_CONFIG, then ./gateway.toml, then built-in defaults)",
    )

    parser = argparse.ArgumentParser(prog="compliance-gateway", parents=[common])
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", parents=[common], help="run the gateway")
    serve.add_argument("--now", help="start the clock at this ISO 8601 instant (staging/tests)")

    check = commands.add_parser("check", help="print the decision for a hypothetical message")
    check_kinds = check.add_subparsers(dest="kind", required=True)
    email = check_kinds.add_parser("email", parents=[common])
    email.add_argument("--to", required=True)
    email.add_argument("--from", dest="sender", required=True)
    email.add_argument("--subject", default="")
    email.add_argument("--reply", action="store_true", help="the message answers another")
    email.add_argument("--account", help="check as this account (default: any account)")

    suppress = commands.add_parser("suppress", help="manage the suppression list")
    actions = suppress.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", parents=[common])
    add.add_argument("addresses", nargs="+")
    add.add_argument("--reason", default="added by operator")
    remove = actions.add_parser("remove", parents=[common])
    remove.add_argument("addresses", nargs="+")
    actions.add_parser("list", parents=[common])
    importer = actions.add_parser("import", parents=[common])
    importer.add_argument("file", type=Path)
    importer.add_argument("--reason", default="imported")
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
    audit_actions = audit.add_subparsers(dest="action", required=True)
    audit_actions.add_parser("verify", parents=[common])
    audit_actions.add_parser("list", parents=[common])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(find_config_file(getattr(args, "config", None)))
        if args.command == "serve":
            return _serve(config, args)
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
    asyncio.run(serve_forever(Gateway(config, clock)))
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
    account = _check_account(services.config, args.account)
    message = OutboundMessage(
        id=uuid.uuid4().hex,
        channel=Channel.EMAIL,
        ingress="cli",
        account=account,
        envelope_sender=args.sender,
        recipients=(args.to,),
        received_at=services.clock.now(),
        email=EmailContent(
            from_addresses=(args.sender,),
            subject=args.subject,
            is_reply=args.reply,
            message_id="",
            size=0,
        ),
    )
    decision = await services.pipeline.evaluate(message)
    result = decision.as_dict()
    result["channel"] = "email"
    result["account"] = account.name
    print(json.dumps(result, indent=2))
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
    elif args.action == "import":
        addresses = _read_suppression_csv(args.file)
        added = await suppressions.add(
            addresses, source=f"import:{args.file.name}", reason=args.reason, actor="operator"
        )
        print(f"imported {len(addresses)} rows ({added} new)")
    else:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        if args.action == "export":
            writer.writerow(["address", "source", "reason", "time"])
        for entry in await services.store.list_suppressions():
            writer.writerow([entry.address, entry.source, entry.reason, entry.time.isoformat()])
    return 0


def _validate_addresses(addresses: Sequence[str]) -> None:
    for address in addresses:
        try:
            suppression_key(address)
        except InvalidAddress as exc:
            raise UsageError(f"{address!r} is not a valid address: {exc}") from exc
        if "@" not in address and not re.fullmatch(r"\+[1-9]\d{6,14}", address):
            raise UsageError(f"{address!r} is neither an email address nor an E.164 number")


def _read_suppression_csv(path: Path) -> list[str]:
    """All rows are validated before any is applied: an import is whole or not at all."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc
    addresses: list[str] = []
    errors: list[str] = []
    for line_number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or not row[0].strip():
            continue
        cell = row[0].strip()
        if line_number == 1 and cell.lower() in {"address", "email", "phone", "number"}:
            continue
        try:
            _validate_addresses([cell])
        except UsageError as exc:
            errors.append(f"line {line_number}: {exc}")
            continue
        addresses.append(cell)
    if errors:
        shown = "; ".join(errors[:10])
        more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
        raise UsageError(f"{path}: {len(errors)} bad rows, nothing imported: {shown}{more}")
    return addresses


def block_as_dict(record: BlockRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "time": record.time.isoformat(),
        "channel": record.channel.value,
        "account": record.account,
        "sender": record.sender,
        "recipient": record.recipient,
        "reasons": list(dict.fromkeys(r.code for r in record.reasons)),
        "reason_details": [r.as_dict() for r in record.reasons],
        "rules_version": record.rules_version,
        "message_id": record.message_id,
        "subject": record.subject,
        "size": record.size,
        "gateway_id": record.gateway_id,
    }


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
    records = [block_as_dict(r) for r in await services.store.query_blocks(query)]
    if args.format == "json":
        print(json.dumps(records, indent=2))
        return 0
    columns = ["time", "channel", "account", "recipient", "reasons", "rules_version", "subject"]
    rows = [[_cell(r[c]) for c in columns] for r in records]
    if args.format == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
        return 0
    widths = [max([len(c)] + [len(row[i]) for row in rows]) for i, c in enumerate(columns)]
    for row in [columns, *rows]:
        print("  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)))
    return 0


def _cell(value: object) -> str:
    return ",".join(value) if isinstance(value, list) else str(value)


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


COMMANDS: dict[str, Callable[[Services, argparse.Namespace], Awaitable[int]]] = {
    "check": _check,
    "suppress": _suppress,
    "blocks": _blocks,
    "audit": _audit,
}
