"""People across sign-in methods: matched by external id, else by email; their role the
highest their groups map to; a role change or deactivation ends their sessions. On a real
SQLite store."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.auth.sessions import Sessions
from gateway.model import Role
from gateway.services.people import Identity, IdentityClash, People, role_for, user_name
from gateway.store import open_store
from gateway.store.base import PersonRow, Store
from tests.fakes.clock import SteppingClock

T0 = datetime(2026, 1, 5, tzinfo=UTC)
ROLES = {"compliance-managers": Role.MANAGER, "gateway-admins": Role.ADMIN,
         "security": Role.OWNER}


@pytest.mark.parametrize(
    ("groups", "role"),
    [
        ((), None),
        (("sales",), None),
        (("compliance-managers",), Role.MANAGER),
        (("sales", "security", "compliance-managers"), Role.OWNER),
        (("Compliance-Managers",), None),  # group names are matched exactly
    ],
)
def test_the_highest_mapped_group_gives_the_role(groups: tuple[str, ...], role: Role | None):
    assert role_for(groups, ROLES) == role


@pytest.fixture
async def people(tmp_path: Path) -> AsyncIterator[tuple[People, Store, Sessions]]:
    store = open_store(f"sqlite:///{tmp_path}/gateway.db")
    await store.open()
    clock = SteppingClock()
    sessions = Sessions(store, clock)
    yield People(store, sessions, clock), store, sessions
    await store.close()


async def test_one_person_whichever_way_they_arrive(people) -> None:
    directory, store, _ = people
    first, before = await directory.signed_in(
        Identity("Katie@Acme.example", None, "Katie", ("compliance-managers",)), ROLES
    )
    assert before is None
    assert (first.user_name, first.role, first.external_id) == ("katie@acme.example",
                                                                  "manager", None)
    by_email, before = await directory.signed_in(
        Identity("katie@acme.example", "okta|00u1", "", ("compliance-managers",)), ROLES
    )
    assert before == first
    assert by_email.person_id == first.person_id and by_email.external_id == "okta|00u1"
    assert by_email.display_name == "Katie"
    renamed, _ = await directory.signed_in(
        Identity("katie.lee@acme.example", "okta|00u1", "Katie Lee", ("gateway-admins",)), ROLES
    )
    assert renamed.person_id == first.person_id
    assert (renamed.user_name, renamed.role) == ("katie.lee@acme.example", "admin")
    assert (await store.people())[1] == 1


async def test_a_role_change_or_deactivation_ends_the_sessions(people) -> None:
    directory, _, sessions = people
    katie, _ = await directory.signed_in(Identity("katie@acme.example", "s1", "",
                                               ("gateway-admins",)), ROLES)
    token = await sessions.open(role="admin", method="oidc:okta", person_id=katie.person_id)
    await directory.signed_in(Identity("katie@acme.example", "s1", "", ("gateway-admins",)),
                              ROLES)
    assert await sessions.current(token) is not None  # same role: kept
    await directory.signed_in(Identity("katie@acme.example", "s1", "",
                                       ("compliance-managers",)), ROLES)
    assert await sessions.current(token) is None
    token = await sessions.open(role="manager", method="oidc:okta", person_id=katie.person_id)
    deactivated = await directory.set_active(katie.person_id, False)
    assert deactivated is not None and not deactivated.active
    assert await sessions.current(token) is None
    again, _ = await directory.signed_in(Identity("katie@acme.example", "s1", "",
                                               ("compliance-managers",)), ROLES)
    assert not again.active  # signing in does not reactivate a person SCIM deactivated
    assert await directory.set_active("nobody", True) is None


async def test_scim_groups_set_the_role_and_a_changed_role_ends_the_sessions(people) -> None:
    directory, store, sessions = people
    katie, _ = await directory.signed_in(Identity("katie@acme.example", "s1", "", ()), ROLES)
    token = await sessions.open(role="rep", method="oidc:okta", person_id=katie.person_id)

    after, before = await directory.set_groups(katie.person_id, ["sales"], ROLES)
    assert (before.role, after.groups, after.role) == (None, ("sales",), None)
    assert await sessions.current(token) is not None  # no role before, none now: kept

    after, _ = await directory.set_groups(
        katie.person_id, ["sales", "compliance-managers"], ROLES
    )
    assert after.role == "manager"
    assert await store.person(katie.person_id) == after
    assert await sessions.current(token) is None

    token = await sessions.open(role="manager", method="oidc:okta", person_id=katie.person_id)
    same, unchanged = await directory.set_groups(
        katie.person_id, ["sales", "compliance-managers"], ROLES
    )
    assert same == unchanged == after  # nothing changed: nothing written
    assert await sessions.current(token) is not None
    assert await directory.set_groups("nobody", ["security"], ROLES) is None


async def test_signing_in_keeps_the_attributes_scim_stored(people) -> None:
    directory, store, _ = people
    katie, _ = await directory.signed_in(Identity("katie@acme.example", "s1", "", ()), ROLES)
    await store.save_person(dataclasses.replace(katie, attributes='{"name": {"givenName": "K"}}'))
    again, _ = await directory.signed_in(Identity("katie@acme.example", "s1", "Katie", ()), ROLES)
    assert again.attributes == '{"name": {"givenName": "K"}}'
    assert (await store.person(katie.person_id)).attributes == again.attributes


async def test_a_provider_silent_about_groups_keeps_the_role_scim_gave(people) -> None:
    directory, _, _ = people
    first, _ = await directory.signed_in(Identity("g@acme.example", "g1", "", None), ROLES)
    assert (first.groups, first.role) == ((), None)  # nothing known: no access
    await directory.store.save_person(
        dataclasses.replace(first, groups=("gateway-admins",), role="admin"))
    again, _ = await directory.signed_in(Identity("g@acme.example", "g1", "G", None), ROLES)
    assert (again.groups, again.role, again.display_name) == (("gateway-admins",), "admin", "G")
    emptied, _ = await directory.signed_in(Identity("g@acme.example", "g1", "", ()), ROLES)
    assert emptied.role is None  # an empty list is a statement: no groups


async def test_an_email_never_relinks_a_person_linked_to_another_identity(people) -> None:
    directory, store, _ = people
    alice, _ = await directory.signed_in(
        Identity("alice@acme.example", "okta-1", "", ("gateway-admins",)), ROLES)
    # another identity (another provider's user, or another user) claiming Alice's address
    with pytest.raises(IdentityClash):
        await directory.signed_in(Identity("ALICE@acme.example", "partner|okta-1", "", None),
                                  ROLES)
    assert (await store.person(alice.person_id)).external_id == "okta-1"
    # matched by email alone (SAML sends no id): the same person
    same, _ = await directory.signed_in(Identity("alice@acme.example", None, "", None), ROLES)
    assert same.person_id == alice.person_id and same.role == "admin"


async def test_a_newly_linked_id_inherits_no_role_its_provider_did_not_give(people) -> None:
    directory, store, _ = people
    await store.save_person(PersonRow("p1", "bob@acme.example", T0, T0, None, "",
                                      True, ("gateway-admins",), "admin"))
    bob, _ = await directory.signed_in(Identity("bob@acme.example", "g-1", "", None), ROLES)
    assert (bob.person_id, bob.external_id, bob.role) == ("p1", "g-1", None)


def test_a_look_alike_address_is_not_folded_onto_a_plain_one() -> None:
    assert user_name(" Katie@ACME.example ") == "katie@acme.example"
    assert user_name("\u212aatie@acme.example") != user_name("katie@acme.example")
