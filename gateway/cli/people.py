"""`people list|deactivate|activate`: the people who sign in, for an operator without SCIM.

Deactivating ends the person's sessions at once on every replica and refuses their next
sign-in, whatever their identity provider says; it is what to do the day someone leaves
when provisioning is not automated. Every change is audited.
"""

from __future__ import annotations

import argparse

from gateway.cli.common import OneLineErrorParser, UsageError
from gateway.model import AuditEvent
from gateway.server import Services
from gateway.services.people import InvalidUserName, user_name
from gateway.store.base import PersonRow


def add_people_commands(
    commands: argparse._SubParsersAction[OneLineErrorParser], common: argparse.ArgumentParser
) -> None:
    people = commands.add_parser("people", help="people who sign in: list, deactivate, activate")
    actions = people.add_subparsers(dest="action", required=True, parser_class=OneLineErrorParser)
    actions.add_parser("list", parents=[common], help="everyone known, with role and state")
    for action, text in (("deactivate", "end their sessions and refuse their sign-in"),
                         ("activate", "let them sign in again")):
        change = actions.add_parser(action, parents=[common], help=text)
        change.add_argument("email", metavar="EMAIL")
        change.add_argument("--actor", default="operator", help="who asked (for the audit log)")


async def run_people(services: Services, args: argparse.Namespace) -> int:
    if args.action == "list":
        start, page = 0, 200
        print(f"{'user_name':<40}  {'role':<8}  {'state':<8}  groups")
        while True:
            rows, total = await services.store.people(start, page)
            for row in rows:
                print(_line(row))
            start += page
            if start >= total or not rows:
                return 0
    try:
        key = user_name(args.email)
    except InvalidUserName as exc:
        raise UsageError(f"{args.email!r} is not a user name: {exc}") from None
    person = await services.store.person_by_user_name(key)
    if person is None:
        raise UsageError(f"nobody with the user name {key!r}")
    active = args.action == "activate"
    changed = await services.people.set_active(person.person_id, active)
    assert changed is not None
    await services.store.append_audit(AuditEvent(
        time=services.clock.now(), actor=args.actor, action=f"person.{args.action}d",
        subject=changed.user_name, details={"person_id": changed.person_id},
    ))
    print(f"{changed.user_name} {args.action}d")
    return 0


def _line(row: PersonRow) -> str:
    state = "active" if row.active else "inactive"
    return f"{row.user_name:<40}  {row.role or '-':<8}  {state:<8}  {', '.join(row.groups)}"
