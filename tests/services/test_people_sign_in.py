"""Where a sign-in ends (web/people_sign_in.PeopleSignIn.complete), over real HTTP on a real
store: a look-alike address is refused with an audited 403, and a person deactivated before
or while their sign-in is recorded gets no session."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.auth.sessions import Sessions
from gateway.config.sso import SsoConfig
from gateway.model import Role
from gateway.services.people import Identity, People
from gateway.store import open_store
from gateway.store.base import Store
from gateway.web.people_sign_in import SESSION_COOKIE, PeopleSignIn
from tests.fakes.clock import SteppingClock
from tests.services.held import HeldStore, interleaved

ROLES = {"gateway-admins": Role.ADMIN}


@dataclass
class Site:
    client: TestClient
    held: HeldStore
    store: Store
    people: People

    async def sign_in(self, email: str) -> tuple[int, str, bool]:
        """(status, page, whether a session cookie was set) of a sign-in as `email`."""
        response = await self.client.get("/signed-in", params={"email": email},
                                         allow_redirects=False)
        return response.status, await response.text(), SESSION_COOKIE in response.cookies


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    store = open_store(f"sqlite:///{tmp_path}/gateway.db")
    await store.open()
    held = HeldStore(store)
    clock = SteppingClock()
    sessions = Sessions(store, clock)
    people = People(held, sessions, clock)  # type: ignore[arg-type]
    sign_in = PeopleSignIn(held, people, sessions, clock, lambda: (),  # type: ignore[arg-type]
                           lambda: SsoConfig(), False)

    async def signed_in(request: web.Request) -> web.Response:
        """What the OIDC callback and the SAML ACS do once the provider vouched."""
        identity = Identity(request.query["email"], None, "", ("gateway-admins",))
        return await sign_in.complete(request, identity, ROLES, "oidc:test")

    app = web.Application()
    app.router.add_get("/signed-in", signed_in)
    async with TestClient(TestServer(app)) as client:
        yield Site(client, held, store, people)
    await store.close()


async def refusals(store: Store) -> list[dict[str, object]]:
    return [dict(event.details) for event in await store.audit_events()
            if event.action == "review.signin_failed"]


async def test_a_look_alike_address_is_refused_not_signed_in_as_the_plain_one(
    site: Site,
) -> None:
    status, _, session = await site.sign_in("katie@acme.example")
    assert (status, session) == (303, True)
    katie = await site.store.person_by_user_name("katie@acme.example")

    for look_alike in ("\u212aatie@acme.example", "\uff4batie@acme.example"):
        status, page, session = await site.sign_in(look_alike)
        assert (status, session) == (403, False)
        assert "compatibility characters" in page
    assert await site.store.person_by_user_name("katie@acme.example") == katie
    assert (await site.store.people())[1] == 1
    assert [r["problem"] for r in await refusals(site.store)] == [
        "this email address has characters that could stand for another address "
        "(compatibility characters), or an invalid domain"] * 2


async def test_a_deactivation_while_the_sign_in_is_recorded_refuses_it(site: Site) -> None:
    await site.sign_in("katie@acme.example")
    katie = await site.store.person_by_user_name("katie@acme.example")

    status, page, session = await interleaved(
        site.held, site.sign_in("katie@acme.example"),
        site.people.set_active(katie.person_id, False))

    assert site.held.held == "update_person"
    assert (status, session) == (403, False)
    assert "this person is deactivated" in page
    assert not (await site.store.person(katie.person_id)).active


async def test_a_deactivation_just_after_the_sign_in_is_recorded_refuses_it(
    site: Site,
) -> None:
    """The check reads the stored flag after the sign-in's write, not what it wrote."""
    await site.sign_in("katie@acme.example")
    katie = await site.store.person_by_user_name("katie@acme.example")

    status, _, session = await interleaved(
        site.held, site.sign_in("katie@acme.example"),
        site.people.set_active(katie.person_id, False),
        at=frozenset({"person"}),  # the sign-in is recorded; the check is next
    )

    assert (status, session) == (403, False)
