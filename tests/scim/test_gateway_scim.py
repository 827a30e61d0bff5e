"""SCIM provisioning at /scim/v2 on a running gateway, over real HTTP: the third-party
conformance checker (scim2-tester) passes on both stores; `userName eq` without case,
paging, bad filters and bodies answered as SCIM errors, the token, uniqueness; group
membership setting a person's role, and de-provisioning ending their /review session at
once."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.config.settings import load_config
from gateway.server import Gateway
from gateway.store.base import PersonRow
from gateway.web.people_sign_in import SESSION_COOKIE
from tests.conftest import write_config
from tests.scim.conformance import checker_missing, run_scim_conformance

TOKEN = "scim-token-for-the-tests-0123456789abcdef"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
SEARCH = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
# The sessions the de-provisioning tests open are "oidc:test" ones: a person's session lasts
# only while the provider that opened it is configured (it is never asked here).
SCIM_SECTION = """
[scim]
token = "{token}"
roles = {{ "compliance-managers" = "manager", "gateway-admins" = "admin" }}

[[sso.oidc]]
name = "test"
issuer = "https://idp.example"
client_id = "gateway"
client_secret = "not-used-here"
roles = {{ "compliance-managers" = "manager", "gateway-admins" = "admin" }}
"""

StartScim = Callable[..., Awaitable[Gateway]]


@pytest.fixture
def start_scim(tmp_path: Path, start_gateway: StartScim, request: pytest.FixtureRequest
               ) -> StartScim:
    """A gateway with SCIM on (`token` "" leaves it off), on SQLite or PostgreSQL."""

    async def start(backend: str = "sqlite", token: str = TOKEN) -> Gateway:
        path = write_config(tmp_path, SCIM_SECTION.format(token=token) if token else "")
        if backend == "postgres":
            url = request.getfixturevalue("postgres_url")
            path.write_text(path.read_text().replace(
                'url = "sqlite:///var/gateway.db"', f'url = "{url}"'))
        return await start_gateway(load_config(path))

    return start


def base_url(gateway: Gateway) -> str:
    return f"http://127.0.0.1:{gateway.http_port}/scim/v2"


class Answer:
    def __init__(self, status: int, headers: Any, text: str) -> None:
        self.status = status
        self.headers = headers
        self.text = text
        scim = headers.get("Content-Type") == "application/scim+json"
        self.json: Any = json.loads(text) if scim and text else None

    def error(self) -> tuple[int, str | None]:
        """(status, scimType) of a SCIM error, checked to be one."""
        assert self.headers["Content-Type"] == "application/scim+json", self.headers
        assert self.json["schemas"] == [ERROR], self.json
        assert self.json["status"] == str(self.status)
        return self.status, self.json.get("scimType")


class Client:
    """A SCIM client over HTTP, with the token unless told otherwise."""

    def __init__(self, gateway: Gateway, token: str | None = TOKEN) -> None:
        self.base = base_url(gateway)
        self.headers = {"Authorization": f"Bearer {token}"} if token is not None else {}

    async def send(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
                   headers: dict[str, str] | None = None, **params: Any) -> Answer:
        data = raw if raw is not None else (None if body is None else json.dumps(body))
        sent = {**self.headers, "Content-Type": "application/scim+json", **(headers or {})}
        async with aiohttp.ClientSession() as http, http.request(
            method, self.base + path, data=data, headers=sent,
            params={k: str(v) for k, v in params.items()},
        ) as response:
            return Answer(response.status, response.headers, await response.text())

    async def create_user(self, user_name: str, **fields: Any) -> dict[str, Any]:
        answer = await self.send("POST", "/Users", {"schemas": [USER], "userName": user_name,
                                                    "active": True, **fields})
        assert answer.status == 201, answer.text
        return answer.json

    async def create_group(self, name: str, *members: str) -> dict[str, Any]:
        answer = await self.send("POST", "/Groups", {
            "schemas": [GROUP], "displayName": name,
            "members": [{"value": member} for member in members],
        })
        assert answer.status == 201, answer.text
        return answer.json

    async def patch(self, path: str, *operations: dict[str, Any]) -> Answer:
        return await self.send("PATCH", path, {"schemas": [PATCH_OP],
                                               "Operations": list(operations)})


async def person(gateway: Gateway, person_id: str) -> PersonRow:
    found = await gateway.services.store.person(person_id)
    assert found is not None
    return found


async def review_page(gateway: Gateway, session_token: str) -> str:
    """The page this session is shown at /review: the console, or, signed out, the sign-in
    page it is sent to."""
    async with aiohttp.ClientSession(cookies={SESSION_COOKIE: session_token}) as http, \
            http.get(f"http://127.0.0.1:{gateway.http_port}/review") as response:
        assert response.status == 200
        assert response.url.path in ("/review", "/review/login")
        return await response.text()


def signed_in_as(page: str) -> bool:
    return "Signed in as" in page


# --- the conformance checker ------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_the_conformance_checker_finds_no_error(start_scim: StartScim, backend: str
                                                     ) -> None:
    missing = checker_missing()
    if missing:
        print(f"*** SCIM conformance test SKIPPED: {missing} ***")
        pytest.skip(f"SCIM conformance test skipped: {missing}")
    gateway = await start_scim(backend)
    assert await run_scim_conformance(base_url(gateway), TOKEN) == []


async def test_what_is_published_is_what_is_kept(start_scim: StartScim) -> None:
    scim = Client(await start_scim())
    config = (await scim.send("GET", "/ServiceProviderConfig")).json
    assert config["patch"] == {"supported": True}
    assert config["filter"] == {"supported": True, "maxResults": 200}
    assert not config["bulk"]["supported"] and not config["sort"]["supported"]
    assert not config["etag"]["supported"] and not config["changePassword"]["supported"]
    assert [s["type"] for s in config["authenticationSchemes"]] == ["oauthbearertoken"]
    user = (await scim.send("GET", f"/Schemas/{USER}")).json
    attributes = {a["name"]: a for a in user["attributes"]}
    assert set(attributes) == {"userName", "name", "displayName", "active", "emails", "groups"}
    assert attributes["groups"]["mutability"] == "readOnly"
    assert attributes["active"]["required"] and attributes["userName"]["uniqueness"] == "server"
    group = (await scim.send("GET", f"/Schemas/{GROUP}")).json
    members = next(a for a in group["attributes"] if a["name"] == "members")
    assert {s["name"] for s in members["subAttributes"]} == {"value", "$ref", "type"}
    types = (await scim.send("GET", "/ResourceTypes")).json
    assert {(t["name"], t["endpoint"]) for t in types["Resources"]} == {
        ("User", "/Users"), ("Group", "/Groups")}


# --- users: create, read back, filter, page ---------------------------------------------


async def test_a_user_reads_back_as_sent_and_is_found_by_user_name_without_case(
    start_scim: StartScim,
) -> None:
    gateway = await start_scim()
    scim = Client(gateway)
    katie = await scim.create_user(
        "Katie.Lee@Acme.example", externalId="00u1katie", displayName="Katie Lee",
        name={"givenName": "Katie", "familyName": "Lee"},
        emails=[{"value": "katie.lee@acme.example", "type": "work", "primary": True}],
    )
    await scim.create_user("omar@acme.example")
    assert katie["meta"]["location"] == f"https://gw.example.com/scim/v2/Users/{katie['id']}"
    stored = await person(gateway, katie["id"])
    assert (stored.user_name, stored.external_id, stored.display_name, stored.active) == (
        "katie.lee@acme.example", "00u1katie", "Katie Lee", True)

    read = (await scim.send("GET", f"/Users/{katie['id']}")).json
    assert read["userName"] == "Katie.Lee@Acme.example"
    assert read["name"] == {"givenName": "Katie", "familyName": "Lee"}
    assert read["emails"] == [{"value": "katie.lee@acme.example", "type": "work",
                               "primary": True}]

    for query in ('userName eq "KATIE.LEE@acme.EXAMPLE"', 'username EQ "katie.lee@acme.example"',
                  'externalId eq "00u1katie"'):
        found = (await scim.send("GET", "/Users", filter=query)).json
        assert found["totalResults"] == 1, query
        assert [u["id"] for u in found["Resources"]] == [katie["id"]]
    for query in ('userName eq "katie@acme.example"', 'externalId eq "00U1KATIE"'):
        assert (await scim.send("GET", "/Users", filter=query)).json["totalResults"] == 0
    searched = await scim.send("POST", "/Users/.search", {
        "schemas": [SEARCH], "filter": 'userName eq "Katie.Lee@ACME.example"',
        "attributes": ["userName"],
    })
    assert searched.json["Resources"] == [{"schemas": [USER], "id": katie["id"],
                                           "userName": "Katie.Lee@Acme.example"}]


async def test_users_and_groups_come_in_pages(start_scim: StartScim) -> None:
    gateway = await start_scim()
    scim = Client(gateway)
    ids = {(await scim.create_user(f"user{n}@acme.example"))["id"] for n in range(5)}

    seen: list[str] = []
    for start in (1, 3, 5):
        page = (await scim.send("GET", "/Users", startIndex=start, count=2)).json
        assert (page["totalResults"], page["startIndex"]) == (5, start)
        assert page["itemsPerPage"] == len(page["Resources"]) == (1 if start == 5 else 2)
        seen += [user["id"] for user in page["Resources"]]
    assert sorted(seen) == sorted(ids)  # each once, none missed
    counted = (await scim.send("GET", "/Users", count=0)).json
    assert (counted["totalResults"], counted["itemsPerPage"]) == (5, 0)
    assert not counted.get("Resources")

    for n in range(3):
        await scim.create_group(f"team {n}")
    groups = (await scim.send("GET", "/Groups", startIndex=2, count=1)).json
    assert (groups["totalResults"], [g["displayName"] for g in groups["Resources"]]) == (
        3, ["team 1"])
    found = (await scim.send("GET", "/Groups", filter='displayName eq "TEAM 2"')).json
    assert [g["displayName"] for g in found["Resources"]] == ["team 2"]


async def test_a_page_holds_at_most_200(start_scim: StartScim) -> None:
    gateway = await start_scim()
    now = gateway.clock.now()
    for n in range(205):
        await gateway.services.store.save_person(
            PersonRow(f"p{n:03}", f"user{n:03}@acme.example", now, now))
    page = (await Client(gateway).send("GET", "/Users", count=1000)).json
    assert (page["totalResults"], page["itemsPerPage"], len(page["Resources"])) == (205, 200, 200)
    rest = (await Client(gateway).send("GET", "/Users", startIndex=201, count=1000)).json
    assert [u["userName"] for u in rest["Resources"]] == [
        f"user{n}@acme.example" for n in range(200, 205)]


# --- refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize("query", [
    'userName co "katie"', 'displayName eq "Katie Lee"', 'userName eq "a" or userName eq "b"',
    'nickName eq "k"', 'userName eq', "userName eq katie",
])
async def test_a_filter_the_store_cannot_answer_is_an_invalid_filter(
    start_scim: StartScim, query: str
) -> None:
    answer = await Client(await start_scim()).send("GET", "/Users", filter=query)
    assert answer.error() == (400, "invalidFilter")


async def test_bad_bodies_get_400_naming_what_is_wrong(start_scim: StartScim) -> None:
    gateway = await start_scim()
    scim = Client(gateway)
    katie = await scim.create_user("katie@acme.example")
    user = f"/Users/{katie['id']}"
    cases = [
        ("POST", "/Users", {"schemas": [USER], "active": True}, "invalidValue"),
        ("POST", "/Users", {"schemas": [USER], "userName": "a@x.example"}, "invalidValue"),
        ("POST", "/Users", {"schemas": [USER], "userName": "b@x.example", "active": "maybe"},
         "invalidValue"),
        ("POST", "/Users", b'{"userName": ', "invalidSyntax"),
        ("POST", "/Users", {"schemas": [GROUP], "userName": "c@x.example", "active": True},
         "invalidSyntax"),
        ("PATCH", user, [{"op": "replace", "path": 'emails[type eq "work"', "value": "k"}],
         "invalidPath"),
        ("PATCH", user, [{"op": "replace", "path": "groups", "value": []}], "mutability"),
        ("PATCH", user, [{"op": "remove", "path": "active"}], "mutability"),
        ("PATCH", user, [{"op": "frobnicate", "path": "active", "value": False}],
         "invalidValue"),
        ("POST", "/Groups", {"schemas": [GROUP], "displayName": "x",
                             "members": [{"value": "no-such-user"}]}, "invalidValue"),
        ("POST", "/Groups", {"schemas": [GROUP], "displayName": "y",
                             "members": [{"value": katie["id"], "type": "Group"}]},
         "invalidValue"),
    ]
    for method, path, body, scim_type in cases:
        if isinstance(body, bytes):
            answer = await scim.send(method, path, raw=body)
        elif method == "PATCH":
            answer = await scim.patch(path, *body)
        else:
            answer = await scim.send(method, path, body)
        assert answer.error() == (400, scim_type), (body, answer.text)
    assert (await person(gateway, katie["id"])).active  # nothing half-applied
    assert (await scim.send("GET", "/Groups")).json["totalResults"] == 0
    unsupported = await scim.send("POST", "/Users", raw=b"userName=x",
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert unsupported.error() == (415, None)
    assert (await scim.send("POST", "/Bulk", {})).error() == (501, None)
    assert (await scim.send("GET", "/Users/no-such-user")).error() == (404, None)


async def test_a_body_over_a_megabyte_is_refused_unread(start_scim: StartScim) -> None:
    scim = Client(await start_scim())
    big = json.dumps({"schemas": [USER], "userName": "k@x.example", "active": True,
                      "displayName": "k" * (1024 * 1024)}).encode()
    assert (await scim.send("POST", "/Users", raw=big)).error() == (413, None)
    assert (await scim.send("GET", "/Users")).json["totalResults"] == 0


@pytest.mark.parametrize("authorization", [
    None, "Bearer not-the-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer",
])
async def test_without_the_token_every_endpoint_answers_401(
    start_scim: StartScim, authorization: str | None
) -> None:
    gateway = await start_scim()
    scim = Client(gateway, token=None)
    headers = {"Authorization": authorization} if authorization else {}
    for method, path in (("GET", "/Users"), ("GET", "/ServiceProviderConfig"),
                         ("POST", "/Users"), ("GET", "/nowhere")):
        answer = await scim.send(method, path, {"schemas": [USER], "userName": "x",
                                                "active": True}, headers=headers)
        assert answer.error() == (401, None)
        assert answer.headers["WWW-Authenticate"] == 'Bearer realm="SCIM"'
    assert (await gateway.services.store.people())[1] == 0


async def test_without_a_configured_token_there_is_no_scim(start_scim: StartScim) -> None:
    gateway = await start_scim(token="")
    for path in ("/Users", "/ServiceProviderConfig", ""):
        assert (await Client(gateway).send("GET", path)).status == 404


async def test_two_users_or_groups_never_share_a_unique_value(start_scim: StartScim) -> None:
    scim = Client(await start_scim())
    katie = await scim.create_user("Katie@Acme.example", externalId="00u1")
    omar = await scim.create_user("omar@acme.example")
    for clash in ({"userName": "katie@ACME.example"},
                  {"userName": "someone@acme.example", "externalId": "00u1"}):
        answer = await scim.send("POST", "/Users", {"schemas": [USER], "active": True, **clash})
        assert answer.error() == (409, "uniqueness")
    replaced = await scim.send("PUT", f"/Users/{omar['id']}", {
        "schemas": [USER], "userName": "KATIE@acme.example", "active": True})
    assert replaced.error() == (409, "uniqueness")
    await scim.create_group("Compliance-Managers")
    clash = await scim.send("POST", "/Groups", {"schemas": [GROUP],
                                                "displayName": "compliance-managers"})
    assert clash.error() == (409, "uniqueness")
    assert (await scim.send("GET", f"/Users/{omar['id']}")).json["userName"] == (
        "omar@acme.example")
    assert (await scim.send("GET", "/Users", filter='externalId eq "00u1"')).json[
        "Resources"][0]["id"] == katie["id"]


# --- groups, roles and de-provisioning --------------------------------------------------


async def test_group_membership_sets_the_role_and_a_changed_role_ends_the_session(
    start_scim: StartScim,
) -> None:
    gateway = await start_scim()
    scim = Client(gateway)
    katie = (await scim.create_user("katie@acme.example", displayName="Katie Lee"))["id"]
    omar = (await scim.create_user("omar@acme.example"))["id"]
    managers = await scim.create_group("compliance-managers", omar)
    admins = await scim.create_group("gateway-admins")
    assert (await person(gateway, omar)).role == "manager"
    assert (await person(gateway, katie)).role is None

    added = await scim.patch(f"/Groups/{managers['id']}",
                             {"op": "add", "path": "members", "value": [{"value": katie}]})
    assert added.status == 204, added.text
    assert ((await person(gateway, katie)).groups, (await person(gateway, katie)).role) == (
        ("compliance-managers",), "manager")
    groups = (await scim.send("GET", f"/Users/{katie}")).json["groups"]
    assert [(g["value"], g["display"]) for g in groups] == [
        (managers["id"], "compliance-managers")]

    token = await gateway.services.sessions.open(role="manager", method="oidc:test",
                                                 person_id=katie)
    assert signed_in_as(page := await review_page(gateway, token))
    assert "Katie Lee" in page

    # promoted: the manager session ends, whatever the person does next
    await scim.patch(f"/Groups/{admins['id']}",
                     {"op": "add", "path": "members", "value": [{"value": katie}]})
    assert (await person(gateway, katie)).role == "admin"
    assert await gateway.services.sessions.current(token) is None
    assert not signed_in_as(await review_page(gateway, token))

    # a renamed group maps as its new name does: gateway-auditors maps to nothing
    await scim.patch(f"/Groups/{admins['id']}",
                     {"op": "replace", "path": "displayName", "value": "gateway-auditors"})
    assert (await person(gateway, katie)).role == "manager"
    # removed (Entra's form: the value names who goes), then the group deleted
    await scim.patch(f"/Groups/{managers['id']}", {
        "op": "remove", "path": f'members[value eq "{katie}"]'})
    assert (await person(gateway, katie)).role is None
    assert (await person(gateway, omar)).role == "manager"
    assert (await scim.send("DELETE", f"/Groups/{managers['id']}")).status == 204
    assert (await person(gateway, omar)).groups == ()
    assert (await person(gateway, omar)).role is None

    changes = [(e.action, e.details) for e in await gateway.services.store.audit_events()
               if e.actor == "scim" and e.action == "scim.user.role_changed"]
    assert ("scim.user.role_changed", {"person_id": katie, "role_from": "manager",
                                       "role_to": "admin"}) in changes


DEACTIVATIONS = {
    "patch with a path": lambda scim, user: scim.patch(
        f"/Users/{user['id']}", {"op": "replace", "path": "active", "value": False}),
    "patch without a path (Okta)": lambda scim, user: scim.patch(
        f"/Users/{user['id']}", {"op": "replace", "value": {"active": False}}),
    "put": lambda scim, user: scim.send(
        "PUT", f"/Users/{user['id']}", {**user, "active": False}),
}


@pytest.mark.parametrize("deactivate", DEACTIVATIONS.values(), ids=DEACTIVATIONS.keys())
async def test_deactivating_a_person_ends_their_review_session_at_once(
    start_scim: StartScim, deactivate: Callable[[Client, dict[str, Any]], Awaitable[Answer]],
) -> None:
    gateway = await start_scim()
    scim = Client(gateway)
    katie = await scim.create_user("katie@acme.example", displayName="Katie Lee")
    await scim.create_group("compliance-managers", katie["id"])
    token = await gateway.services.sessions.open(role="manager", method="oidc:test",
                                                 person_id=katie["id"])
    before = await review_page(gateway, token)
    assert signed_in_as(before) and "Katie Lee" in before

    answer = await deactivate(scim, katie)
    assert answer.status in (200, 204), answer.text

    assert await gateway.services.sessions.current(token) is None
    after = await review_page(gateway, token)
    assert not signed_in_as(after) and "Sign in" in after
    assert not (await person(gateway, katie["id"])).active
    assert (await scim.send("GET", f"/Users/{katie['id']}")).json["active"] is False
    actions = [e.action for e in await gateway.services.store.audit_events()
               if e.details.get("person_id") == katie["id"]]
    assert actions[-1] == "scim.user.deactivated"


async def test_deleting_a_person_ends_their_sessions_and_memberships(
    start_scim: StartScim,
) -> None:
    gateway = await start_scim()
    scim = Client(gateway)
    katie = (await scim.create_user("katie@acme.example"))["id"]
    omar = (await scim.create_user("omar@acme.example"))["id"]
    group = await scim.create_group("compliance-managers", katie, omar)
    token = await gateway.services.sessions.open(role="manager", method="oidc:test",
                                                 person_id=katie)
    assert (await scim.send("DELETE", f"/Users/{katie}")).status == 204
    assert await gateway.services.sessions.current(token) is None
    assert (await scim.send("GET", f"/Users/{katie}")).error() == (404, None)
    members = (await scim.send("GET", f"/Groups/{group['id']}")).json["members"]
    assert [m["value"] for m in members] == [omar]
    assert (await scim.send("DELETE", f"/Users/{katie}")).error() == (404, None)


async def test_the_audit_log_names_people_by_id_only(start_scim: StartScim) -> None:
    gateway = await start_scim()
    scim = Client(gateway)
    katie = await scim.create_user("katie.lee@acme.example", displayName="Katie Lee",
                                   emails=[{"value": "katie.lee@acme.example"}])
    group = await scim.create_group("compliance-managers", katie["id"])
    await scim.patch(f"/Users/{katie['id']}", {"op": "replace", "path": "displayName",
                                               "value": "K. Lee"})
    await scim.send("DELETE", f"/Users/{katie['id']}")
    events = [e for e in await gateway.services.store.audit_events() if e.actor == "scim"]
    assert [e.action for e in events] == [
        "scim.user.created", "scim.group.created", "scim.user.role_changed",
        "scim.user.updated", "scim.user.deleted",
    ]
    assert events[1].details == {"group_id": group["id"], "members": 1}
    written = json.dumps([(e.subject, e.details) for e in events])
    assert "katie" not in written.lower() and "lee" not in written.lower()


async def test_a_store_that_cannot_answer_gives_503_with_retry_after(
    start_scim: StartScim, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await start_scim()
    scim = Client(gateway)
    await gateway.services.store.close()
    for method, path, body in (("GET", "/Users", None),
                               ("POST", "/Users", {"schemas": [USER], "active": True,
                                                   "userName": "katie@acme.example"})):
        answer = await scim.send(method, path, body)
        assert answer.error() == (503, None)
        assert answer.headers["Retry-After"] == "30"
    assert "katie" not in caplog.text
