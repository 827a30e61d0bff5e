"""The SCIM directory on a real store, driven through scim2-server's handler as the web
layer drives it: a PUT or PATCH writes only what the client changed in what it read (so a
deactivation made meanwhile, by another replica or an operator, stands); userNames keyed as
single sign-on keys emails, look-alikes refused; any startIndex and count answered."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from scim2_models import SCIMException
from scim2_server.handler import AsyncScimHandler
from scim2_server.requests import ScimRequest

from gateway.auth.sessions import Sessions
from gateway.model import Role
from gateway.services.people import Identity, People
from gateway.services.scim.directory import ScimDirectory, scim_handler
from gateway.store import open_store
from gateway.store.base import Store
from tests.fakes.clock import SteppingClock
from tests.services.held import HeldStore, interleaved
from tests.store.test_store import backend_url

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
SEARCH = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"
ROLES = {"compliance-managers": Role.MANAGER, "gateway-admins": Role.ADMIN}


@dataclass
class Scim:
    handler: AsyncScimHandler
    held: HeldStore
    store: Store
    people: People

    async def send(self, method: str, path: str, body: Any = None, **query: Any) -> Any:
        """(status, body) as web/scim.py answers them."""
        try:
            response = await self.handler.handle(ScimRequest(
                method=method, base_url="https://gw.example/scim/v2", path=path,
                query={key: str(value) for key, value in query.items()},
                headers={"Content-Type": "application/scim+json"},
                body=b"" if body is None else json.dumps(body).encode(),
            ))
        except SCIMException as exc:
            response = self.handler.service.error_response(exc)
        return int(response.status), response.body

    async def create_user(self, user_name: str, **fields: Any) -> dict[str, Any]:
        status, body = await self.send("POST", "/Users", {
            "schemas": [USER], "userName": user_name, "active": True, **fields})
        assert status == 201, body
        return body

    def patch(self, path: str, *operations: dict[str, Any]) -> Any:
        return self.send("PATCH", path, {"schemas": [PATCH_OP], "Operations": list(operations)})


@pytest.fixture(params=["sqlite", "postgres"])
async def scim(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Scim]:
    store = open_store(backend_url(request, tmp_path))
    await store.open()
    held = HeldStore(store)
    clock = SteppingClock()
    people = People(held, Sessions(store, clock), clock)  # type: ignore[arg-type]
    directory = ScimDirectory(held, people, clock, lambda: ROLES)  # type: ignore[arg-type]
    yield Scim(scim_handler(directory), held, store, people)
    await store.close()


async def test_a_patch_in_flight_never_undoes_a_deactivation_made_meanwhile(scim: Scim) -> None:
    """The PATCH read the User (active) before the person was deactivated elsewhere (another
    replica, the operator's command); it changes the displayName only, so writes only that."""
    katie = await scim.create_user("katie@acme.example")

    status, _ = await interleaved(
        scim.held, scim.patch(f"/Users/{katie['id']}",
                              {"op": "replace", "path": "displayName", "value": "Katie Lee"}),
        scim.people.set_active(katie["id"], False),
        at=frozenset({"groups_of_person"}),  # the PATCH has read the person, not written
    )

    assert status == 204
    stored = await scim.store.person(katie["id"])
    assert (stored.active, stored.display_name) == (False, "Katie Lee")


async def test_a_put_in_flight_never_undoes_a_group_change_made_meanwhile(scim: Scim) -> None:
    katie = await scim.create_user("katie@acme.example")

    status, _ = await interleaved(
        scim.held, scim.send("PUT", f"/Users/{katie['id']}", {
            "schemas": [USER], "userName": "katie@acme.example", "active": True,
            "displayName": "Katie"}),
        scim.people.set_groups(katie["id"], ["gateway-admins"], ROLES),
    )

    assert status == 200
    stored = await scim.store.person(katie["id"])
    assert (stored.display_name, stored.groups, stored.role) == ("Katie", ("gateway-admins",),
                                                                 "admin")


async def test_a_deactivation_in_flight_is_not_undone_by_a_sign_in(scim: Scim) -> None:
    katie = await scim.create_user("katie@acme.example")

    status, _ = await interleaved(
        scim.held, scim.patch(f"/Users/{katie['id']}",
                              {"op": "replace", "path": "active", "value": False}),
        scim.people.signed_in(Identity("katie@acme.example", None, "K", None), ROLES),
    )

    assert status == 204
    assert not (await scim.store.person(katie["id"])).active


@pytest.mark.parametrize("look_alike", ["\u212aatie@acme.example", "\uff4batie@acme.example",
                                        "\ufb01nance@acme.example"])
async def test_a_look_alike_user_name_is_refused_and_found_by_no_filter(
    scim: Scim, look_alike: str
) -> None:
    await scim.create_user("katie@acme.example")
    await scim.create_user("finance@acme.example")

    status, body = await scim.send("POST", "/Users", {
        "schemas": [USER], "userName": look_alike, "active": True})
    assert (status, body["scimType"]) == (400, "invalidValue")
    status, body = await scim.send("GET", "/Users", filter=f'userName eq "{look_alike}"')
    assert (status, body["totalResults"]) == (200, 0)
    assert (await scim.store.people())[1] == 2


@pytest.mark.parametrize(("provisioned", "signs_in_as"), [
    ("Zoë@Acme.Example", "Zoe\u0308@acme.example"),  # NFD, domain in another case
    ("Zoe\u0308@ACME.example", "Zoë@acme.example"),
    ("ann@xn--bcher-kva.example", "ann@Bücher.example"),  # punycode, Unicode
    ("ann@bücher.example", "Ann@XN--BCHER-KVA.EXAMPLE"),
])
async def test_scim_and_single_sign_on_key_one_address_alike(
    scim: Scim, provisioned: str, signs_in_as: str
) -> None:
    """What SCIM provisions and deactivates is the person single sign-on signs in."""
    user = await scim.create_user(provisioned)
    status, body = await scim.send("GET", "/Users", filter=f'userName eq "{signs_in_as}"')
    assert [found["id"] for found in body["Resources"]] == [user["id"]]
    assert body["Resources"][0]["userName"] == provisioned  # as the client spelled it

    signed, before = await scim.people.signed_in(
        Identity(signs_in_as, None, "", ("gateway-admins",)), ROLES)
    assert before is not None and signed.person_id == user["id"]
    status, _ = await scim.patch(f"/Users/{user['id']}",
                                 {"op": "replace", "path": "active", "value": False})
    assert status == 204
    assert not (await scim.store.person(signed.person_id)).active
    assert (await scim.store.people())[1] == 1


@pytest.mark.parametrize("start", [2**63 - 1, 2**63, 2**64, 10**20])
async def test_any_start_index_and_count_are_answered(scim: Scim, start: int) -> None:
    await scim.create_user("katie@acme.example")
    for path in ("/Users", "/Groups", ""):
        status, body = await scim.send("GET", path, startIndex=start, count=2**64)
        assert (status, body.get("Resources", [])) == (200, [])
    status, body = await scim.send("POST", "/.search", {"schemas": [SEARCH],
                                                        "startIndex": start})
    assert status == 200 and body["totalResults"] == 1
    status, body = await scim.send("GET", "/Users", startIndex=1, count=2**64)
    assert status == 200 and len(body["Resources"]) == 1
