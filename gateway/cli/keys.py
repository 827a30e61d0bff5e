"""`keys create|list|revoke`: agent keys, so that agents stop sharing their account's secret;
`keys rotate-data`: every sealed value re-sealed under the active data key;
`keys log-pseudonym`: what the logs carry for a person, to search them by.

`create` prints the key once, alone on the last line of stdout (scripts take `tail -1`);
only its keyed digest is stored. Every action is audited with the key id, never the key.
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import datetime, timedelta

from gateway.addresses import e164
from gateway.cli.common import OneLineErrorParser, UsageError, parse_instant
from gateway.model import AuditEvent
from gateway.server import Services
from gateway.services.data_rotation import reseal_store
from gateway.store.base import AgentKeyRow

DURATION = re.compile(r"^(\d{1,5})([dhm])$")
UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def add_keys_commands(
    commands: argparse._SubParsersAction[OneLineErrorParser], common: argparse.ArgumentParser
) -> None:
    keys = commands.add_parser(
        "keys", help="agent keys: create, list, revoke; data keys: rotate-data"
    )
    actions = keys.add_subparsers(dest="action", required=True, parser_class=OneLineErrorParser)
    create = actions.add_parser("create", parents=[common], help="a new key for an account")
    create.add_argument("--account", required=True, help="an [[accounts]] name")
    create.add_argument("--expires", help="90d, 12h, 30m, or an instant (ISO 8601)")
    listing = actions.add_parser("list", parents=[common], help="keys with age and last use")
    listing.add_argument("--account", help="only this account's keys")
    revoke = actions.add_parser("revoke", parents=[common], help="end a key at once")
    revoke.add_argument("key", metavar="ID_OR_KEY")
    actions.add_parser(
        "rotate-data", parents=[common],
        help="re-seal stored personal data under [encryption] active (resumable)",
    )
    pseudonym = actions.add_parser(
        "log-pseudonym", parents=[common],
        help="the value logs carry for an address or number, one line each",
    )
    pseudonym.add_argument("values", nargs="+", metavar="ADDRESS_OR_NUMBER")


def expiry(value: str | None, now: datetime) -> datetime | None:
    if value is None:
        return None
    match = DURATION.match(value)
    moment = (
        now + timedelta(**{UNITS[match.group(2)]: int(match.group(1))}) if match
        else parse_instant(value, now=now)
    )
    if moment <= now:
        raise UsageError(f"--expires {value} is not in the future")
    return moment


async def run_keys(services: Services, args: argparse.Namespace) -> int:
    now = services.clock.now()
    if args.action == "create":
        if not any(account.name == args.account for account in services.config.accounts):
            raise UsageError(f"no account named {args.account!r} in [[accounts]]")
        row, key = await services.agent_keys.create(args.account, expiry(args.expires, now))
        await _audit(services, "key.created", row.key_id, row.account)
        expires = row.expires_at.isoformat() if row.expires_at else "never"
        print(f"key {row.key_id} for account {row.account}, expires {expires}")
        print("shown once; store it where the agent reads its secrets:")
        print(key)
        return 0
    if args.action == "rotate-data":
        return await _rotate_data(services)
    if args.action == "log-pseudonym":
        cipher = services.data_keys.cipher
        if not cipher.enabled:
            raise UsageError("encryption is off ([encryption] enabled = false): logs carry "
                             "recipients as they are")
        for value in args.values:  # a number as the gateway logs it: E.164
            print(cipher.log_pseudonym(value if "@" in value else e164(value)))
        return 0
    if args.action == "list":
        rows = await services.store.agent_keys(args.account)
        print(f"{'id':<16}  {'account':<15}  {'state':<7}  {'age_days':>8}  "
              f"{'last_used':<25}  expires")
        for row in rows:
            print(_row_line(row, now))
        return 0
    revoked = await services.agent_keys.revoke(args.key)
    if revoked is None:
        raise UsageError("no key with that id, or it is revoked already")
    await _audit(services, "key.revoked", revoked.key_id, revoked.account)
    print(f"key {revoked.key_id} of account {revoked.account} revoked")
    return 0


def _row_line(row: AgentKeyRow, now: datetime) -> str:
    if row.revoked_at is not None:
        state = "revoked"
    elif row.expires_at is not None and row.expires_at <= now:
        state = "expired"
    else:
        state = "active"
    age = (now - row.created_at).total_seconds() / 86400
    used = row.last_used_at.isoformat(timespec="seconds") if row.last_used_at else "never"
    expires = row.expires_at.isoformat(timespec="seconds") if row.expires_at else "never"
    return f"{row.key_id}  {row.account:<15}  {state:<7}  {age:8.1f}  {used:<25}  {expires}"


async def _rotate_data(services: Services) -> int:
    """Progress on stderr, a line per table; the run is audited when it starts and ends."""
    cipher = services.data_keys.cipher
    if not cipher.enabled:
        raise UsageError("encryption is off ([encryption] enabled = false): nothing to rotate")
    active = cipher.active_key_id
    await services.store.append_audit(AuditEvent(
        time=services.clock.now(), actor="operator", action="data-key.rotation-started",
        subject=f"data key {active}", details={},
    ))

    def progress(table: str, walked: int, total: int) -> None:
        print(f"{table}: {walked}/{total} rows", file=sys.stderr, flush=True)

    report = await reseal_store(services.store, active, progress)
    await services.store.append_audit(AuditEvent(
        time=services.clock.now(), actor="operator", action="data-key.rotation-finished",
        subject=f"data key {active}",
        details={"resealed": report.resealed, "retired": report.retired,
                 "in_use": report.in_use, "skipped": report.skipped},
    ))
    print(f"re-sealed {sum(report.resealed.values())} rows under data key {active}; "
          f"retired: {', '.join(report.retired) or 'none'}")
    if report.in_use:
        print(f"not retired: {', '.join(report.in_use)}: a running gateway (or command) "
              f"sealed under it during the pass. Restart every replica with {active} active, "
              "then run `keys rotate-data` again", file=sys.stderr)
    if report.skipped:
        print(f"left {report.skipped} rows a concurrent write changed under the pass, so no "
              "key is retired: run `keys rotate-data` again", file=sys.stderr)
    return 1 if report.in_use or report.skipped else 0


async def _audit(services: Services, action: str, key_id: str, account: str) -> None:
    await services.store.append_audit(AuditEvent(
        time=services.clock.now(), actor="operator", action=action, subject=f"key {key_id}",
        details={"account": account},
    ))
