"""`compliance-gateway` (also `python -m gateway`): serve, migrate, and the commands of
`gateway.cli.registries` and `gateway.cli.rules`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from gateway.cli.common import (
    EXIT_ALLOW,
    EXIT_BLOCK,
    EXIT_FAULT,
    EXIT_INVALID,
    EXIT_IO,
    EXIT_UNAVAILABLE,
    OneLineErrorParser,
    UsageError,
    parse_instant,
)
from gateway.cli.dkim import print_dkim_record
from gateway.cli.evidence import add_evidence_commands, run_evidence
from gateway.cli.keys import add_keys_commands, run_keys
from gateway.cli.output import OutputLost, guarded_output, host_io_error, output_lost, say
from gateway.cli.people import add_people_commands, run_people
from gateway.cli.registries import COMMANDS
from gateway.cli.rules import add_rules_commands, run_rules
from gateway.config.settings import (
    Config,
    ConfigError,
    config_search_path,
    find_config_file,
    load_config,
)
from gateway.model import (
    Channel,
    ConsentKind,
    Purpose,
)
from gateway.rules.errors import RulesError
from gateway.runtime.clock import Clock
from gateway.runtime.logs import configure_logging
from gateway.runtime.processes import LISTENERS_ENV, ListenError, supervise
from gateway.server import Gateway, Services, serve_forever
from gateway.services.imports import (
    IMPORT_FORMATS,
)
from gateway.store import migrate
from gateway.store.base import StoreUnavailable

log = logging.getLogger("gateway.cli")

# Commands that only read what the store holds (and `privacy export`, which audits its
# read). Without a configuration file they refuse: the built-in defaults would open an
# empty database created on the spot and answer "nothing there" (or, for `check`, allow a
# recipient the real store has suppressed). The key commands refuse too: a key made in a
# database created on the spot opens nothing. Commands that put records in (`suppress
# add`, imports) or run the gateway keep the built-in defaults.
READ_COMMANDS = frozenset({
    "blocks", "audit list", "audit verify", "suppress list", "suppress export",
    "consent list", "location show", "privacy export", "check email", "check call",
    "check sms", "keys create", "keys list", "keys revoke", "keys rotate-data",
    "keys log-pseudonym", "people list",
    "people deactivate", "people activate", "evidence",
})


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        help="TOML file (default: $GATEWAY_CONFIG, then ./gateway.toml, then built-in "
        "defaults, which commands that only read the store refuse)",
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
    dkim = check_kinds.add_parser(
        "dkim", parents=[common], help="print the DNS TXT record of the key that signs DOMAIN"
    )
    dkim.add_argument("--domain", required=True)
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
    add_rules_commands(commands, common)
    add_keys_commands(commands, common)
    add_people_commands(commands, common)
    add_evidence_commands(commands, common)
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with guarded_output():
        status = _status(args)
        try:
            sys.stdout.flush()  # a failed write shows here, not in Python's report at exit
        except OutputLost as lost:
            io_status = output_lost(lost.cause)
            return io_status if status in (EXIT_ALLOW, EXIT_BLOCK) else status  # the first news
    return status


def _status(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except ConfigError as exc:
        say(str(exc))
        return EXIT_INVALID
    except RulesError as exc:
        say(f"rules error: {exc}")
        return EXIT_INVALID
    except (UsageError, ListenError) as exc:
        say(f"error: {exc}")
        return EXIT_INVALID
    except StoreUnavailable as exc:
        say(f"store unavailable: {exc}")
        return EXIT_UNAVAILABLE
    except OutputLost as lost:
        return output_lost(lost.cause)
    except OSError as exc:
        if args.command == "serve" or not host_io_error(exc):
            return _fault(args.command)
        say(f"error: {exc}")
        return EXIT_IO
    except Exception:  # a fault of the gateway's own, not of its input
        return _fault(args.command)


def _run(args: argparse.Namespace) -> int:
    config_file = find_config_file(getattr(args, "config", None))
    command = " ".join(
        [args.command, *(getattr(args, part) for part in ("action", "kind") if part in args)]
    )
    if config_file is None and command in READ_COMMANDS:
        raise UsageError(
            f"'{command}' reads the store, and no configuration file was found (looked "
            f"at: {config_search_path()}); pass --config FILE or set GATEWAY_CONFIG"
        )
    config = load_config(config_file)
    if args.command == "serve":
        return _serve(config, args)
    if args.command == "migrate":
        return asyncio.run(_migrate(config))
    if args.command == "rules":
        return run_rules(config, args)
    if args.command == "check" and args.kind == "dkim":
        return print_dkim_record(config, args.domain)
    configure_logging("WARNING")
    command_runner = {
        **COMMANDS, "keys": run_keys, "people": run_people, "evidence": run_evidence,
    }[args.command]
    return asyncio.run(_with_services(config, command_runner, args))


def _fault(command: str) -> int:
    """Python's own report would be a bare traceback on stderr, outside the JSON lines and
    their pseudonyms (a traceback quotes values, addresses among them): it goes through the
    log formatter as one line instead."""
    if not logging.getLogger().handlers:
        configure_logging("WARNING")
    log.critical("command-failed", exc_info=True, extra={"fields": {"command": command}})
    return EXIT_FAULT


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


