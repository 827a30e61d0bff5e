"""SAML sign-in on the running gateway, what an attack review asked of it: the binding cookie
is `__Host-` on https and only one the gateway made counts; a post to the ACS without one
is refused before it is read and leaves no audit entry; audited refusals carry only the
gateway's own words; an assertion without the groups attribute leaves the groups SCIM gave;
an email attribute without a value is "no email"."""

from __future__ import annotations

import aiohttp
import pytest
from lxml import etree

from tests.saml.idp import NAMEID_PERSISTENT, NS, SamlIdP, SamlUser
from tests.saml.test_gateway_saml import (
    ANN,
    BINDING_COOKIE,
    HOST_BINDING_COOKIE,
    assert_refused,
    http_session,
    post_to_acs,
    saml_gateway,
    signin_audit,
    start_login,
)

pytest.importorskip("onelogin.saml2.auth", reason="python3-saml is not installed")

CHOSEN = "CHOSEN-BY-ANYONE"
SCIM_TOKEN = "scim-token-for-the-saml-tests-0123456789"
SCIM = f"""
[scim]
token = "{SCIM_TOKEN}"
"""
NOT_MADE_HERE = "its sign-in cookie is missing or was not made here"


async def all_audit(site) -> list:
    return await site.gateway.services.store.audit_events()


# -- the binding cookie --------------------------------------------------------------------


async def test_on_https_the_cookie_is_host_only_and_a_plain_one_is_ignored(
        saml_idp: SamlIdP, start_gateway, tmp_path):
    """public_url https: `__Host-saml_request` (Secure, Path=/, no Domain), which no sibling
    subdomain can set; a `saml_request` cookie, which one could, counts for nothing."""
    site = await saml_gateway(saml_idp, start_gateway, tmp_path,
                              public_url="https://gw.example.com")
    saml_idp.sign_in_as(ANN)
    async with http_session() as http:
        started = await start_login(http, site)
        assert started.set_cookie.startswith(f"{HOST_BINDING_COOKIE}={started.nonce};")
        for attribute in ("Secure", "HttpOnly", "SameSite=None", "Max-Age=600"):
            assert attribute in started.set_cookie
        assert "Path=/;" in started.set_cookie + ";"
        assert "Domain" not in started.set_cookie
        post = saml_idp.respond(started.redirect_url)
        # the same nonce under the plain name: not read on https
        assert_refused(await post_to_acs(http, site, post, started.nonce,
                                         cookie=BINDING_COOKIE), 400, NOT_MADE_HERE)
        again = await start_login(http, site, nonce=started.nonce, cookie=BINDING_COOKIE)
        assert again.nonce != started.nonce  # nor adopted at /login
        answer = await post_to_acs(http, site, post, started.nonce)
        assert answer.status == 303, answer.text
    assert await signin_audit(site) == []


async def test_a_planted_nonce_is_not_adopted_and_signs_nobody_in(saml_idp: SamlIdP,
                                                                  start_gateway, tmp_path):
    """Login CSRF by a planted cookie: the attacker's nonce is not taken up at /login, so his
    own genuine response, posted from the victim's browser holding that nonce, is refused."""
    site = await saml_gateway(saml_idp, start_gateway, tmp_path)
    saml_idp.sign_in_as(SamlUser("mallory@example.com", "Mallory", ("compliance-managers",)))
    planted = "P" * 44
    async with http_session() as attacker:
        mine = await start_login(attacker, site, nonce=planted)
        assert mine.nonce != planted
        response = saml_idp.respond(mine.redirect_url)
    async with http_session() as victim:
        answer = await post_to_acs(victim, site, response, planted)
    assert_refused(answer, 400, NOT_MADE_HERE)
    assert await signin_audit(site) == []


# -- anonymous posts and what the audit log keeps ------------------------------------------


async def test_posts_without_a_cookie_made_here_are_refused_unread_and_unaudited(
        saml_idp: SamlIdP, start_gateway, tmp_path):
    site = await saml_gateway(saml_idp, start_gateway, tmp_path)
    before = len(await all_audit(site))
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        for cookie in ("", f"{BINDING_COOKIE}={'x' * 44}", f"{BINDING_COOKIE}={CHOSEN}"):
            for _ in range(20):
                async with http.post(
                        site.acs_url, data=b"SAMLResponse=" + CHOSEN.encode(),
                        headers={"Content-Type": f"text/{CHOSEN}-" + "x" * 200,
                                 **({"Cookie": cookie} if cookie else {})}) as response:
                    assert response.status == 400
                    text = await response.text()
                    assert NOT_MADE_HERE in text and CHOSEN not in text
        # not read: a body far over the cap is refused as not started here, not too large
        async with http.post(site.acs_url, data={"SAMLResponse": "A" * (2 * 1024 * 1024)}
                             ) as response:
            assert response.status == 400
            assert NOT_MADE_HERE in await response.text()
    assert len(await all_audit(site)) == before


async def test_audited_refusals_hold_only_the_gateways_words(
        saml_idp: SamlIdP, start_gateway, tmp_path, caplog: pytest.LogCaptureFixture):
    """With a cookie the gateway made (anyone can have one: GET /login), a refusal is
    audited, but with fixed phrases: nothing the sender chose (a Content-Type, the
    Response's unsigned Destination, a broken document) reaches the audit log."""
    site = await saml_gateway(saml_idp, start_gateway, tmp_path)
    saml_idp.sign_in_as(ANN)
    async with http_session() as http:
        started = await start_login(http, site)
        cookie = {"Cookie": f"{site.cookie}={started.nonce}"}
        async with http.post(site.acs_url, data=b"SAMLResponse=PGE%2B", headers={
                **cookie, "Content-Type": f"text/{CHOSEN}"}) as response:
            assert response.status == 400
        post = saml_idp.respond(started.redirect_url)
        root = post.root()
        root.set("Destination", f"https://evil.example/{CHOSEN}")  # not under the signature
        assert_refused(await post_to_acs(http, site, post.with_xml(etree.tostring(root)),
                                         started.nonce), 403, "made for another service")
        broken = f"<samlp:Response xmlns:samlp='{NS['samlp']}' ID='{CHOSEN}'><{CHOSEN}"
        assert_refused(await post_to_acs(http, site, post.with_xml(broken), started.nonce),
                       400, "malformed XML")
        wrong = saml_idp.respond(started.redirect_url, audience=f"https://x/{CHOSEN}")
        assert_refused(await post_to_acs(http, site, wrong, started.nonce), 403,
                       "made for another service")
    refusals = await signin_audit(site)
    assert [r["reason"] for r in refusals] == [
        "not a form", "python3-saml WRONG_DESTINATION", "malformed XML",
        "python3-saml WRONG_AUDIENCE"]
    for refusal in refusals:
        assert set(refusal) == {"remote", "method", "problem", "reason"}
        assert CHOSEN.lower() not in str(refusal).lower()
    # what the library and the checks said, the sender's words with it, is in the log
    logged = [r.fields for r in caplog.records  # type: ignore[attr-defined]
              if r.getMessage() == "saml-signin-refused"]
    assert len(logged) == 4
    assert all(CHOSEN.lower() in fields["detail"].lower() for fields in logged[:3]), logged


# -- groups and email ----------------------------------------------------------------------


async def scim(site, method: str, path: str, body: dict) -> dict:
    async with aiohttp.ClientSession() as http, http.request(
            method, f"{site.base}/scim/v2{path}", json=body,
            headers={"Authorization": f"Bearer {SCIM_TOKEN}",
                     "Content-Type": "application/scim+json"}) as response:
        assert response.status == 201, await response.text()
        return await response.json(content_type=None)


async def scim_manager(site, email: str) -> str:
    person = await scim(site, "POST", "/Users", {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": email, "active": True})
    await scim(site, "POST", "/Groups", {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
        "displayName": "compliance-managers", "members": [{"value": person["id"]}]})
    return person["id"]


def empty_groups_attribute(root: etree._Element) -> None:
    """Adds `groups` with no value to the assertion's attributes (before it is signed)."""
    statement = root.find(".//saml:AttributeStatement", NS)
    etree.SubElement(statement, f"{{{NS['saml']}}}Attribute", Name="groups")


async def test_no_groups_attribute_keeps_the_role_scim_gave(saml_idp: SamlIdP,
                                                           start_gateway, tmp_path):
    site = await saml_gateway(saml_idp, start_gateway, tmp_path, extra=SCIM)
    person_id = await scim_manager(site, "ann@example.com")
    store = site.gateway.services.store
    saml_idp.sign_in_as(SamlUser("ann@example.com", "Ann", ()))  # no groups attribute
    async with http_session() as http:
        started = await start_login(http, site)
        post = saml_idp.respond(started.redirect_url)
        assert 'Name="groups"' not in post.xml
        answer = await post_to_acs(http, site, post, started.nonce)
        assert answer.status == 303, answer.text
        session = await site.gateway.services.sessions.current(answer.session or "")
        assert session is not None and session.role == "manager"
        after = await store.person(person_id)
        assert after is not None
        assert (after.groups, after.role) == (("compliance-managers",), "manager")
        # an attribute sent without values says "no groups": the role goes
        started = await start_login(http, site)
        post = saml_idp.respond(started.redirect_url, edit=empty_groups_attribute)
        assert 'Name="groups"' in post.xml
        assert_refused(await post_to_acs(http, site, post, started.nonce), 403,
                       "none of this person&#x27;s groups is given a role")
    after = await store.person(person_id)
    assert after is not None and (after.groups, after.role) == ((), None)


async def test_without_scim_no_groups_attribute_is_no_groups(saml_idp: SamlIdP,
                                                             start_gateway, tmp_path):
    """Nothing but the IdP speaks for groups: an assertion without the attribute (Okta's
    filtered group statement, Entra ID, once the person is in no such group) must not leave
    the role their last sign-in gave."""
    site = await saml_gateway(saml_idp, start_gateway, tmp_path)
    async with http_session() as http:
        saml_idp.sign_in_as(ANN)
        started = await start_login(http, site)
        answer = await post_to_acs(http, site, saml_idp.respond(started.redirect_url),
                                   started.nonce)
        assert answer.status == 303, answer.text
        saml_idp.sign_in_as(SamlUser(ANN.email, ANN.name, ()))
        started = await start_login(http, site)
        assert_refused(await post_to_acs(http, site, saml_idp.respond(started.redirect_url),
                                         started.nonce), 403, "groups is given a role")
        assert await site.gateway.services.sessions.current(answer.session or "") is None
    person = await site.gateway.services.store.person_by_user_name("ann@example.com")
    assert person is not None and person.role is None


@pytest.mark.parametrize("values", [[" "], [""]])
async def test_an_email_attribute_without_a_value_is_refused_cleanly(
        saml_idp: SamlIdP, start_gateway, tmp_path, values: list[str]):
    site = await saml_gateway(saml_idp, start_gateway, tmp_path)
    saml_idp.sign_in_as(SamlUser("", "Opaque", ("security",), name_id="u-123",
                                 name_id_format=NAMEID_PERSISTENT,
                                 attributes={"email": values}))
    async with http_session() as http:
        started = await start_login(http, site)
        answer = await post_to_acs(http, site, saml_idp.respond(started.redirect_url),
                                   started.nonce)
    assert_refused(answer, 400, "sent no usable email address")
    [refusal] = await signin_audit(site)
    assert refusal["reason"] == "no email"


async def test_a_look_alike_address_is_refused_not_matched(saml_idp: SamlIdP, start_gateway,
                                                           tmp_path):
    """The address goes to People as the IdP sent it: U+212A KELVIN SIGN is not turned into
    a K on the way, so it cannot stand for katie@ (People refuses it)."""
    site = await saml_gateway(saml_idp, start_gateway, tmp_path, extra=SCIM)
    katie_id = await scim_manager(site, "katie@acme.example")
    saml_idp.sign_in_as(SamlUser("\u212aatie@acme.example", "Mallory", ("security",)))
    async with http_session() as http:
        started = await start_login(http, site)
        answer = await post_to_acs(http, site, saml_idp.respond(started.redirect_url),
                                   started.nonce)
    assert_refused(answer, 403, "could stand for another address")
    katie = await site.gateway.services.store.person(katie_id)
    assert katie is not None and katie.display_name != "Mallory" and katie.role == "manager"
