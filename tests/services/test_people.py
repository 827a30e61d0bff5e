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
from gateway.services.people import (
    Identity,
    IdentityClash,
    InvalidUserName,
    People,
    role_for,
    user_name,
)
from gateway.store import open_store
from gateway.store.base import PersonRow, Store
from tests.fakes.clock import SteppingClock
from tests.services.held import HeldStore, interleaved
from tests.store.test_store import backend_url

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


@pytest.mark.parametrize(
    ("spelled", "key"),
    [
        (" Katie@ACME.example ", "katie@acme.example"),
        # non-ASCII local parts keep their case; NFD and NFC spellings are one address
        ("Zoë@Acme.Example", "Zoë@acme.example"),
        ("Zoe\u0308@Acme.Example", "Zoë@acme.example"),
        # a domain in its IDNA ASCII form, whichever way it is written
        ("ann@Bücher.Example", "ann@xn--bcher-kva.example"),
        ("ann@XN--BCHER-KVA.example", "ann@xn--bcher-kva.example"),
        ("ann@bu\u0308cher.example", "ann@xn--bcher-kva.example"),
        ("ann@faß.example", "ann@xn--fa-hia.example"),  # IDNA 2008: ß is not ss
        ("Ann", "ann"),  # a userName that is no address is keyed as a local part
    ],
)
def test_one_person_key_for_every_spelling_of_an_address(spelled: str, key: str) -> None:
    assert user_name(spelled) == key


@pytest.mark.parametrize(
    "look_alike",
    [
        "\u212aatie@acme.example",  # KELVIN SIGN, which NFC turns into K
        "\uff4batie@acme.example",  # FULLWIDTH LATIN SMALL LETTER K
        "katie@acme.\uff45xample",  # a fullwidth letter in the domain
        "\ufb01nance@acme.example",  # LATIN SMALL LIGATURE FI
        "katie@\u212bcme.example",  # ANGSTROM SIGN, which NFC turns into Å
        "ann@xn--bcher-kva-.example",  # not what any Unicode label encodes to
        "ann@bad_label.bücher.example",
    ],
)
def test_a_look_alike_address_is_no_person_key(look_alike: str) -> None:
    with pytest.raises(InvalidUserName):
        user_name(look_alike)


async def test_a_look_alike_address_never_signs_in_as_the_plain_one(people) -> None:
    directory, store, _ = people
    katie, _ = await directory.signed_in(
        Identity("katie@acme.example", None, "Katie", ("gateway-admins",)), ROLES)
    with pytest.raises(InvalidUserName):
        await directory.signed_in(
            Identity("\u212aatie@acme.example", None, "Mallory", ("gateway-admins",)), ROLES)
    assert await store.person(katie.person_id) == katie
    assert (await store.people())[1] == 1


# --- writers racing one another: each writes only what it owns ----------------------------


@pytest.fixture(params=["sqlite", "postgres"])
async def held_people(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[People, HeldStore, Store]]:
    store = open_store(backend_url(request, tmp_path))
    await store.open()
    held = HeldStore(store)
    clock = SteppingClock()
    yield People(held, Sessions(store, clock), clock), held, store  # type: ignore[arg-type]
    await store.close()


async def test_a_group_change_in_flight_never_undoes_a_deactivation(held_people) -> None:
    directory, held, store = held_people
    katie, _ = await directory.signed_in(
        Identity("katie@acme.example", "s1", "", ("compliance-managers",)), ROLES)

    after, before = await interleaved(
        held, directory.set_groups(katie.person_id, ["gateway-admins"], ROLES),
        directory.set_active(katie.person_id, False))

    assert held.held == "update_person"
    assert (before.active, after.active, after.role) == (False, False, "admin")
    assert await store.person(katie.person_id) == after


async def test_a_sign_in_in_flight_never_undoes_a_deactivation(held_people) -> None:
    directory, held, store = held_people
    katie, _ = await directory.signed_in(
        Identity("katie@acme.example", "s1", "", ("compliance-managers",)), ROLES)

    signed, before = await interleaved(
        held, directory.signed_in(
            Identity("katie@acme.example", "s1", "Katie", ("gateway-admins",)), ROLES),
        directory.set_active(katie.person_id, False))

    assert held.held == "update_person"
    # what the sign-in returns is what is stored: the caller refuses an inactive person
    assert (signed.active, signed.role, signed.display_name) == (False, "admin", "Katie")
    assert before is not None and not before.active
    assert await store.person(katie.person_id) == signed


async def test_a_deactivation_in_flight_is_not_undone_by_a_sign_in(held_people) -> None:
    directory, held, store = held_people
    katie, _ = await directory.signed_in(
        Identity("katie@acme.example", "s1", "", ("compliance-managers",)), ROLES)

    await interleaved(
        held, directory.set_active(katie.person_id, False),
        directory.signed_in(Identity("katie@acme.example", "s1", "K", ("gateway-admins",)),
                            ROLES))

    stored = await store.person(katie.person_id)
    assert (stored.active, stored.role, stored.display_name) == (False, "admin", "K")


async def test_a_sign_in_keeps_the_groups_scim_sets_meanwhile(held_people) -> None:
    """A provider silent about groups leaves SCIM's as they are when the sign-in is written,
    not as they were when it read the person."""
    directory, held, store = held_people
    katie, _ = await directory.signed_in(
        Identity("katie@acme.example", "s1", "", ("compliance-managers",)), ROLES)

    signed, _ = await interleaved(
        held, directory.signed_in(Identity("katie@acme.example", "s1", "", None), ROLES),
        directory.set_groups(katie.person_id, ["sales"], ROLES))

    assert (signed.groups, signed.role) == (("sales",), None)
    assert await store.person(katie.person_id) == signed


async def test_a_person_deleted_during_their_sign_in_comes_back_as_someone_new(
    held_people,
) -> None:
    directory, held, store = held_people
    katie, _ = await directory.signed_in(
        Identity("katie@acme.example", "s1", "", ("compliance-managers",)), ROLES)
    await directory.set_active(katie.person_id, False)

    again, before = await interleaved(
        held, directory.signed_in(Identity("katie@acme.example", "s1", "", None), ROLES),
        store.delete_person(katie.person_id))

    # not the deleted record written back (with its old id, groups and role)
    assert before is None and again.person_id != katie.person_id
    assert (again.active, again.groups, again.role) == (True, (), None)
    assert await store.person(katie.person_id) is None
