"""The commands that read and change the registries: the dry-run check, suppressions and their
imports, the block and audit logs, consents, known locations, privacy, retention, purge."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from gateway.addresses import InvalidAddress, suppression_key
from gateway.cli.common import (
    EXIT_ALLOW,
    EXIT_BLOCK,
    UsageError,
    parse_instant,
    read_text,
)
from gateway.config.settings import Config
from gateway.model import (
    Account,
    AuditEvent,
    Channel,
    Consent,
    KnownLocation,
    Purpose,
    Role,
    UpstreamPermanentError,
    UpstreamTemporaryError,
)
from gateway.pipeline.dry_run import CheckError, CheckRequest, parse_timezone, run_check
from gateway.runtime.progress import Progress
from gateway.server import Services
from gateway.services.block_reports import (
    BLOCK_CSV_COLUMNS,
    block_as_dict,
    block_csv_row,
    write_blocks_csv,
)
from gateway.services.consents import ConsentError, make_consent, read_consents_csv
from gateway.services.csv_cells import formula_safe_writer
from gateway.services.imports import (
    SuppressionFileError,
    import_suppression_file,
    validated_key,
)
from gateway.services.privacy import export_json, purge
from gateway.services.retention import apply_retention
from gateway.store.base import BlockQuery
from gateway.upstream.postmark import PostmarkEmailUpstream


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
        writer = formula_safe_writer(sys.stdout)
        if args.action == "export":
            writer.writerow(["address", "source", "reason", "time", "mailbox"])
        for entry in await services.store.list_suppressions():
            writer.writerow(
                [entry.address, entry.source, entry.reason, entry.time.isoformat(), entry.mailbox]
            )
    return 0


async def _import_file(services: Services, args: argparse.Namespace) -> int:
    """Bad rows go to stderr (the first few, then a count); the summary to stdout."""
    try:
        summary = await import_suppression_file(
            services.store, args.file, args.format, reason=args.reason, actor="operator",
            now=services.clock.now(), skip_bad=args.skip_bad, progress=Progress(),
            mailboxes=services.ruleset.mailboxes,
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
    chain = await services.store.check_audit()
    if chain.problem is None:
        print(f"audit log verified: {chain.entries} entries, chain intact")
        return 0
    print(f"audit log TAMPERED at entry {chain.problem.entry_id}: {chain.problem.problem}")
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
            consents = read_consents_csv(read_text(args.file))
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


async def _privacy(services: Services, args: argparse.Namespace) -> int:
    _validate_addresses([args.subject])
    privacy = services.privacy()
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
