"""Signing in to /review with SAML 2.0 on the running gateway, against pysaml2's IdP on
loopback (tests/saml/idp.py): the IdP trusts the SP metadata the gateway serves; the whole flow
over HTTP (login -> IdP -> its self-posting page -> ACS -> /review) and once in Chromium; every
bad Response refused with an audited page and no session, none of them a 500."""

from __future__ import annotations

import base64
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from gateway.config.errors import ConfigError
from gateway.config.settings import load_config
from gateway.server import Gateway
from gateway.store import open_store
from gateway.web.people_sign_in import SESSION_COOKIE
from tests.browser import browser_missing, launch_options
from tests.conftest import write_config
from tests.fakes.store import FlakyStore
from tests.postgres_server import free_port
from tests.saml.idp import (
    NAMEID_PERSISTENT,
    SamlIdP,
    SamlPost,
    SamlUser,
    strip_signatures,
    tamper,
)

pytest.importorskip("onelogin.saml2.auth", reason="python3-saml is not installed")
from onelogin.saml2.xml_utils import OneLogin_Saml2_XML

ROLES = '{ "compliance-managers" = "manager", "gateway-admins" = "admin", "security" = "owner" }'
ANN = SamlUser("Ann@Example.com", "Ann Example", ("compliance-managers", "staff"))
BINDING_COOKIE = "saml_request"  # on http (loopback): https has HOST_BINDING_COOKIE
HOST_BINDING_COOKIE = "__Host-saml_request"

StartGateway = Callable[..., Awaitable[Gateway]]


@dataclass
class Site:
    gateway: Gateway
    base: str  # where the gateway listens
    public_url: str

    @property
    def login_url(self) -> str:
        return f"{self.base}/auth/saml/okta/login"

    @property
    def acs_url(self) -> str:
        return f"{self.base}/auth/saml/okta/acs"

    @property
    def metadata_url(self) -> str:
        return f"{self.base}/auth/saml/okta/metadata"

    @property
    def cookie(self) -> str:
        """The binding cookie's name: `__Host-` when the public URL is https."""
        return HOST_BINDING_COOKIE if self.public_url.startswith("https:") else BINDING_COOKIE


async def saml_gateway(
    idp: SamlIdP, start_gateway: StartGateway, tmp_path: Path, *, metadata: str = "file",
    public_url: str = "", extra: str = "", trust: bool = True, store: object = None,
) -> Site:
    """A gateway with the IdP as `[[sso.saml]]` "okta" (its metadata in a file, or by URL),
    on a port known beforehand so that its public URL is where it listens; the IdP trusts
    the SP metadata fetched from it over HTTP."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    if metadata == "file":
        (tmp_path / "idp.xml").write_text(idp.metadata_xml())
        where = "idp.xml"
    else:
        where = metadata
    path = write_config(tmp_path, f"""
        [[sso.saml]]
        name = "okta"
        idp_metadata = "{where}"
        roles = {ROLES}
        {extra}
        """)
    public_url = public_url or base
    path.write_text(
        path.read_text()
        .replace('public_url = "https://gw.example.com"', f'public_url = "{public_url}"')
        .replace('[http]\nlisten = "127.0.0.1:0"', f'[http]\nlisten = "127.0.0.1:{port}"')
    )
    config = load_config(path)
    gateway = await start_gateway(
        config, **({"store": store(config.store_url)} if store is not None else {}))
    site = Site(gateway, base, public_url)
    if trust:
        async with http_session() as http, http.get(site.metadata_url) as response:
            assert response.status == 200
            idp.trust_sp(await response.text())
    return site


def http_session() -> aiohttp.ClientSession:
    """Cookies are carried by hand: what each step sends is what the test says."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())


def cookie_value(response: aiohttp.ClientResponse, name: str) -> str | None:
    for header in response.headers.getall("Set-Cookie", ()):
        if header.startswith(f"{name}="):
            return header.split(";", 1)[0].split("=", 1)[1]
    return None


@dataclass
class Started:
    redirect_url: str
    nonce: str
    set_cookie: str


async def start_login(http: aiohttp.ClientSession, site: Site, nonce: str = "",
                      cookie: str = "") -> Started:
    """/login with the binding cookie `nonce` (named `cookie`, default the site's)."""
    cookie = cookie or site.cookie
    headers = {"Cookie": f"{cookie}={nonce}"} if nonce else {}
    async with http.get(site.login_url, allow_redirects=False, headers=headers) as response:
        assert response.status == 303, await response.text()
        header = next(h for h in response.headers.getall("Set-Cookie")
                      if h.startswith(f"{site.cookie}="))
        return Started(response.headers["Location"], cookie_value(response, site.cookie)
                       or "", header)


@dataclass
class Answer:
    status: int
    text: str
    location: str
    session: str | None


async def post_to_acs(http: aiohttp.ClientSession, site: Site, post: SamlPost,
                      nonce: str | None, cookie: str = "") -> Answer:
    """Posts the IdP's form to the ACS where the gateway listens (the form's action is the
    public ACS URL, which differs from it only when public_url is another host), with the
    binding cookie `nonce` (named `cookie`, default the site's)."""
    assert post.acs_url == f"{site.public_url}/auth/saml/okta/acs"
    headers = {"Cookie": f"{cookie or site.cookie}={nonce}"} if nonce else {}
    async with http.post(site.acs_url, data=post.form(), headers=headers,
                         allow_redirects=False) as response:
        return Answer(response.status, await response.text(),
                      response.headers.get("Location", ""),
                      cookie_value(response, SESSION_COOKIE))


async def review_page(http: aiohttp.ClientSession, site: Site, session: str) -> str:
    async with http.get(f"{site.base}/review",
                        headers={"Cookie": f"{SESSION_COOKIE}={session}"}) as response:
        assert response.status == 200
        return await response.text()


async def signin_audit(site: Site, action: str = "review.signin_failed") -> list[dict]:
    return [dict(e.details) for e in await site.gateway.services.store.audit_events()
            if e.action == action]


def assert_refused(answer: Answer, status: int, words: str) -> None:
    assert answer.status == status, answer.text
    assert answer.session is None
    assert "Sign-in failed" in answer.text
    assert words in answer.text, answer.text


# -- the flow ------------------------------------------------------------------------------


async def test_sp_metadata_is_served_for_the_idp(saml_idp: SamlIdP, start_gateway, tmp_path):
    site = await saml_gateway(saml_idp, start_gateway, tmp_path, trust=False)
    async with http_session() as http, http.get(site.metadata_url) as response:
        assert response.status == 200
        assert response.content_type == "application/samlmetadata+xml"
        metadata = await response.text()
    valid = OneLogin_Saml2_XML.validate_xml(metadata, "saml-schema-metadata-2.0.xsd")
    assert not isinstance(valid, str), valid
    assert f'entityID="{site.base}/auth/saml/okta/metadata"' in metadata
    assert f'Location="{site.base}/auth/saml/okta/acs"' in metadata
    assert 'WantAssertionsSigned="true"' in metadata
    assert "nameid-format:emailAddress" in metadata
    assert saml_idp.trust_sp(metadata) == f"{site.base}/auth/saml/okta/metadata"
    async with http_session() as http, http.get(
            f"{site.base}/auth/saml/nobody/metadata") as response:
        assert response.status == 404


async def test_sign_in_over_http_ends_on_the_review_page(saml_idp: SamlIdP, start_gateway,
                                                         tmp_path):
    site = await saml_gateway(saml_idp, start_gateway, tmp_path)
    saml_idp.sign_in_as(ANN)
    async with http_session() as http:
        started = await start_login(http, site)
        assert started.redirect_url.startswith(saml_idp.sso_redirect_url + "?SAMLRequest=")
        for attribute in ("HttpOnly", "Secure", "SameSite=None", "Path=/;", "Max-Age=600"):
            assert attribute in started.set_cookie + ";"
        assert started.set_cookie.startswith(f"{BINDING_COOKIE}=")  # http: no __Host-
        assert "Domain" not in started.set_cookie
        async with http.get(started.redirect_url) as response:
            assert response.status == 200
            post = SamlPost.from_page(await response.text())
        request = saml_idp.requests[-1]
        assert request.sp_entity_id == f"{site.base}/auth/saml/okta/metadata"
        assert request.acs_url == f"{site.base}/auth/saml/okta/acs"
        assert "nameid-format:emailAddress" in request.xml
        answer = await post_to_acs(http, site, post, started.nonce)
        assert answer.status == 303, answer.text
        assert answer.location == "/review"
        assert answer.session
        page = await review_page(http, site, answer.session)
    assert "Signed in as <strong>Ann Example</strong> (manager)" in page
    session = await site.gateway.services.sessions.current(answer.session)
    assert session is not None and session.method == "saml:okta"
    assert session.role == "manager"
    person = await site.gateway.services.store.person_by_user_name("ann@example.com")
    assert person is not None and person.person_id == session.person_id
    assert person.display_name == "Ann Example"
    assert person.external_id is None
    assert person.groups == ("compliance-managers", "staff")
    [signed_in] = await signin_audit(site, "review.signin")
    assert signed_in["method"] == "saml:okta"
    assert signed_in["person_id"] == person.person_id


async def test_sign_in_in_chromium(saml_idp_keypair, start_gateway, tmp_path):
    """Chromium: the gateway's sign-in link, the IdP's form (on "localhost", another site
    than the gateway on 127.0.0.1, so the POST back is cross-site as with a real IdP), its
    self-posting page, the ACS, and the review page naming the person."""
    reason = browser_missing()
    if reason:
        print(f"browser test skipped: {reason}")
        pytest.skip(f"browser test skipped: {reason}")
    from tests.saml.conftest import idp_missing

    missing = idp_missing()
    if missing:
        pytest.skip(f"SAML IdP test skipped: {missing}")
    from playwright.async_api import async_playwright

    with SamlIdP(keypair=saml_idp_keypair, url_host="localhost") as idp:
        site = await saml_gateway(idp, start_gateway, tmp_path)
        idp.add_user(SamlUser("bo@example.com", "Bo Admin", ("gateway-admins",)))
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(**launch_options())
            try:
                page = await browser.new_page()
                await page.goto(f"{site.base}/review/login")
                await page.get_by_role("link", name=re.compile("okta")).click()
                await page.get_by_label("Email").fill("bo@example.com")
                await page.get_by_role("button", name="Sign in").click()
                await page.wait_for_url(f"{site.base}/review**")
                header = await page.locator("header").inner_text()
                cookies = await page.context.cookies()
            finally:
                await browser.close()
    assert "Signed in as Bo Admin (admin)" in header
    session = next(c for c in cookies if c["name"] == SESSION_COOKIE)
    assert session["sameSite"] == "Lax" and session["httpOnly"]
    assert not any(c["name"] == BINDING_COOKIE for c in cookies)  # cleared once used


async def test_idp_metadata_by_url(saml_idp: SamlIdP, start_gateway, tmp_path):
    site = await saml_gateway(saml_idp, start_gateway, tmp_path, metadata=saml_idp.metadata_url)
    saml_idp.sign_in_as(ANN)
    async with http_session() as http:
        started = await start_login(http, site)
        answer = await post_to_acs(http, site, saml_idp.respond(started.redirect_url),
                                   started.nonce)
    assert answer.status == 303, answer.text


async def test_public_url_decides_the_acs_address_behind_a_proxy(saml_idp: SamlIdP,
                                                                 start_gateway, tmp_path):
    """Behind a TLS-terminating proxy the gateway is reached at http://127.0.0.1 but known as
    https://gw.example.com: the IdP addresses its response there, and the gateway checks it
    against its public URL, not the Host it was reached at."""
    site = await saml_gateway(saml_idp, start_gateway, tmp_path,
                              public_url="https://gw.example.com")
    saml_idp.sign_in_as(ANN)
    async with http_session() as http:
        started = await start_login(http, site)
        post = saml_idp.respond(started.redirect_url)
        assert post.acs_url == "https://gw.example.com/auth/saml/okta/acs"
        answer = await post_to_acs(http, site, post, started.nonce)
    assert answer.status == 303, answer.text


# -- refused -------------------------------------------------------------------------------


def _at(shift: timedelta) -> datetime:
    return datetime.now(UTC) + shift


FAULTS = {
    "wrong audience": ({"audience": "https://other.example.com/metadata"}, 403,
                       "made for another service or address"),
    "wrong recipient": ({"recipient": "https://other.example.com/acs"}, 403,
                        "made for another"),
    "recipient that only starts with ours": ({"recipient": "{acs}.evil"}, 403,
                                             "made for another"),
    "wrong destination": ({"destination": "https://other.example.com/acs"}, 403,
                          "made for another service or address"),
    "expired": ({"clock": timedelta(hours=-1)}, 403, "has expired or is not valid yet"),
    "not valid yet": ({"clock": timedelta(hours=1)}, 403, "has expired or is not valid yet"),
    # within python3-saml's own 300 s allowance, beyond the gateway's CLOCK_SKEW_S
    "issued 200 s ahead of our clock": ({"clock": timedelta(seconds=200)}, 403,
                                        "has expired or is not valid yet"),
    "assertion unsigned": ({"sign_assertion": False}, 403, "is not signed"),
    "only the response signed": ({"sign_assertion": False, "sign_response": True}, 403,
                                 "is not signed"),
}


@pytest.mark.parametrize("case", FAULTS)
async def test_a_faulty_response_is_refused(saml_idp: SamlIdP, start_gateway, tmp_path,
                                            case: str):
    fault, status, words = FAULTS[case]
    site = await saml_gateway(saml_idp, start_gateway, tmp_path)
    saml_idp.sign_in_as(ANN)
    async with http_session() as http:
        started = await start_login(http, site)
        fault = {k: (_at(v) if k == "clock" else
                     v.format(acs=f"{site.public_url}/auth/saml/okta/acs")
                     if isinstance(v, str) else v) for k, v in fault.items()}
        answer = await post_to_acs(http, site, saml_idp.respond(started.redirect_url, **fault),
                                   started.nonce)
        assert_refused(answer, status, words)
        # the same sign-in without the fault goes through: the fault is what was refused
        fine = await post_to_acs(http, site, saml_idp.respond(started.redirect_url),
                                 started.nonce)
        assert fine.status == 303, fine.text
    [refusal] = await signin_audit(site)
    assert refusal["method"] == "saml:okta"
    assert words in refusal["problem"]
    assert refusal["reason"]
    assert "detail" not in refusal  # the library's words, which may quote the document


async def test_a_response_from_an_idp_clock_within_the_skew_is_accepted(
        saml_idp: SamlIdP, start_gateway, tmp_path):
    site = await saml_gateway(saml_idp, start_gateway, tmp_path)
    saml_idp.sign_in_as(ANN)
    async with http_session() as http:
        started = await start_login(http, site)
        post = saml_idp.respond(started.redirect_url, clock=_at(timedelta(seconds=60)))
        assert (await post_to_acs(http, site, post, started.nonce)).status == 303


async def test_tampered_unsigned_and_forged_responses_are_refused(
        saml_idp: SamlIdP, start_gateway, tmp_path):
    site = await saml_gateway(saml_idp, start_gateway, tmp_path)
    saml_idp.sign_in_as(ANN)
    async with http_session() as http:
        started = await start_login(http, site)
        post = saml_idp.respond(started.redirect_url)
        for bad in (tamper(post, "groups", ["security"]),
                    tamper(post, "email", ["boss@example.com"]),
                    strip_signatures(post)):
            assert_refused(await post_to_acs(http, site, bad, started.nonce), 403,
                           "is not signed by the identity provider, or its signature does not "
                           "verify")
        seen = saml_idp.requests[-1]
        with SamlIdP(entity_id=saml_idp.entity_id) as forger:  # same name, another key
            async with http.get(site.metadata_url) as response:
                forger.trust_sp(await response.text())
            forged = forger.issue(seen.sp_entity_id,
                                  SamlUser("ann@example.com", "Ann", ("security",)),
                                  in_response_to=seen.id, acs_url=seen.acs_url)
        assert_refused(await post_to_acs(http, site, forged, started.nonce), 403,
                       "its signature does not verify")
        # the genuine one still signs Ann in, as a manager
        answer = await post_to_acs(http, site, post, started.nonce)
        assert answer.status == 303
    session = await site.gateway.services.sessions.current(answer.session or "")
    assert session is not None and session.role == "manager"
    assert len(await signin_audit(site)) == 4


async def test_a_replayed_response_is_refused(saml_idp: SamlIdP, start_gateway, tmp_path):
    site = await saml_gateway(saml_idp, start_gateway, tmp_path)
    saml_idp.sign_in_as(ANN)
    async with http_session() as http:
        started = await start_login(http, site)
        async with http.get(started.redirect_url) as response:
            captured = SamlPost.from_page(await response.text())
        assert (await post_to_acs(http, site, captured, started.nonce)).status == 303
        assert_refused(await post_to_acs(http, site, captured, started.nonce), 403,
                       "already used")
        # in another browser, with a sign-in of its own started there
        other = await start_login(http, site)
        assert other.nonce != started.nonce
        assert_refused(await post_to_acs(http, site, captured, other.nonce), 403,
                       "already used")
        # a second response to the same request (another assertion ID): the request mark
        # was taken by the first
        again = saml_idp.respond(started.redirect_url)
        assert_refused(await post_to_acs(http, site, again, started.nonce), 400,
                       "was completed already")
    reasons = [r["reason"] for r in await signin_audit(site)]
    assert reasons == ["assertion replayed", "assertion replayed",
                       "not a live request of this browser"]


async def test_unsolicited_and_unknown_request_responses_are_refused(
        saml_idp: SamlIdP, start_gateway, tmp_path):
    site = await saml_gateway(saml_idp, start_gateway, tmp_path)
    saml_idp.sign_in_as(ANN)
    entity_id = f"{site.base}/auth/saml/okta/metadata"
    async with http_session() as http:
        started = await start_login(http, site)
        unsolicited = saml_idp.issue(entity_id, ANN)  # IdP-initiated: no InResponseTo
        assert_refused(await post_to_acs(http, site, unsolicited, started.nonce), 400,
                       "not started here")
        never_made = saml_idp.issue(entity_id, ANN, in_response_to="_never-made-here")
        assert_refused(await post_to_acs(http, site, never_made, started.nonce), 400,
                       "not started in this browser")
        # again (another assertion): the refusal left nothing behind a second try could use
        never_made = saml_idp.issue(entity_id, ANN, in_response_to="_never-made-here")
        assert_refused(await post_to_acs(http, site, never_made, started.nonce), 400,
                       "not started in this browser")
        # and the browser's own sign-in is still there to be completed
        answer = await post_to_acs(http, site, saml_idp.respond(started.redirect_url),
                                   started.nonce)
        assert answer.status == 303, answer.text


async def test_a_response_planted_in_another_browser_is_refused(
        saml_idp: SamlIdP, start_gateway, tmp_path):
    """Login CSRF: an attacker's own genuine response, posted from the victim's browser (which
    holds no nonce, or the nonce of a sign-in of its own), signs nobody in."""
    site = await saml_gateway(saml_idp, start_gateway, tmp_path)
    saml_idp.sign_in_as(SamlUser("mallory@example.com", "Mallory", ("security",)))
    async with http_session() as http:
        attacker = await start_login(http, site)
        victim = await start_login(http, site)
        planted = saml_idp.respond(attacker.redirect_url)
        # no cookie, or one the gateway did not make: refused before the post is read
        for cookie in (None, "x" * 43, "x" * 44, attacker.nonce[:22] + victim.nonce[22:]):
            assert_refused(await post_to_acs(http, site, planted, cookie), 400,
                           "its sign-in cookie is missing or was not made here")
        # the victim's own cookie: the response answers another browser's request
        assert_refused(await post_to_acs(http, site, planted, victim.nonce), 400,
                       "not started in this browser")
    [refusal] = await signin_audit(site)  # only the post that carried a cookie made here
    assert refusal["reason"] == "not a live request of this browser"


async def test_two_sign_ins_begun_in_one_browser_both_work(saml_idp: SamlIdP, start_gateway,
                                                           tmp_path):
    site = await saml_gateway(saml_idp, start_gateway, tmp_path)
    saml_idp.sign_in_as(ANN)
    async with http_session() as http:
        first = await start_login(http, site)
        second = await start_login(http, site, nonce=first.nonce)
        assert second.nonce == first.nonce
        for started in (second, first):
            answer = await post_to_acs(http, site, saml_idp.respond(started.redirect_url),
                                       started.nonce)
            assert answer.status == 303, answer.text


async def test_people_without_a_role_or_deactivated_are_refused(saml_idp: SamlIdP,
                                                                start_gateway, tmp_path):
    site = await saml_gateway(saml_idp, start_gateway, tmp_path)
    async with http_session() as http:
        saml_idp.sign_in_as(SamlUser("carl@example.com", "Carl", ("staff", "sales")))
        started = await start_login(http, site)
        answer = await post_to_acs(http, site, saml_idp.respond(started.redirect_url),
                                   started.nonce)
        assert_refused(answer, 403, "none of this person&#x27;s groups is given a role")

        saml_idp.sign_in_as(ANN)
        started = await start_login(http, site)
        answer = await post_to_acs(http, site, saml_idp.respond(started.redirect_url),
                                   started.nonce)
        assert answer.status == 303
        person = await site.gateway.services.store.person_by_user_name("ann@example.com")
        assert person is not None
        await site.gateway.services.people.set_active(person.person_id, False)
        assert await site.gateway.services.sessions.current(answer.session or "") is None
        started = await start_login(http, site)
        answer = await post_to_acs(http, site, saml_idp.respond(started.redirect_url),
                                   started.nonce)
        assert_refused(answer, 403, "this person is deactivated")
    problems = [r["problem"] for r in await signin_audit(site)]
    assert problems == ["none of this person's groups is given a role here",
                        "this person is deactivated"]


async def test_a_person_without_an_email_is_refused(saml_idp: SamlIdP, start_gateway,
                                                    tmp_path):
    site = await saml_gateway(saml_idp, start_gateway, tmp_path)
    saml_idp.sign_in_as(SamlUser("x@example.com", "Opaque", ("security",), name_id="u-123",
                                 name_id_format=NAMEID_PERSISTENT, attributes={"email": []}))
    async with http_session() as http:
        started = await start_login(http, site)
        answer = await post_to_acs(http, site, saml_idp.respond(started.redirect_url),
                                   started.nonce)
    assert_refused(answer, 400, "sent no usable email address")


async def test_a_persistent_name_id_with_an_email_attribute_signs_in(
        saml_idp: SamlIdP, start_gateway, tmp_path):
    site = await saml_gateway(saml_idp, start_gateway, tmp_path)
    saml_idp.sign_in_as(SamlUser("dee@example.com", "Dee", ("security",), name_id="u-456",
                                 name_id_format=NAMEID_PERSISTENT))
    async with http_session() as http:
        started = await start_login(http, site)
        answer = await post_to_acs(http, site, saml_idp.respond(started.redirect_url),
                                   started.nonce)
        assert answer.status == 303, answer.text
        assert "Signed in as <strong>Dee</strong> (owner)" in await review_page(
            http, site, answer.session or "")


BOMB = ('<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa">'
        '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><samlp:Response '
        'xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol">&b;</samlp:Response>')
MALFORMED = {
    "not base64": ({"SAMLResponse": "%%% not base64 %%%"}, "not base64"),
    "base64 of text": ({"SAMLResponse": base64.b64encode(b"hello").decode()}, "not XML"),
    "broken XML": ({"SAMLResponse": base64.b64encode(b"<samlp:Response").decode()},
                   "malformed XML"),
    "entity expansion": ({"SAMLResponse": base64.b64encode(BOMB.encode()).decode()},
                         "malformed XML"),
    "other XML": ({"SAMLResponse": base64.b64encode(b"<html><body/></html>").decode()},
                  "not valid"),
    "no SAMLResponse": ({"RelayState": "/review"}, "carried no SAML response"),
    "two SAMLResponses": ([("SAMLResponse", "PGE+"), ("SAMLResponse", "PGE+")],
                          "carried no SAML response"),
}


@pytest.mark.parametrize("case", MALFORMED)
async def test_malformed_posts_are_refused_not_crashed_on(saml_idp: SamlIdP, start_gateway,
                                                          tmp_path, case: str):
    form, words = MALFORMED[case]
    site = await saml_gateway(saml_idp, start_gateway, tmp_path)
    async with http_session() as http:
        started = await start_login(http, site)
        async with http.post(site.acs_url, data=form, allow_redirects=False,
                             headers={"Cookie": f"{site.cookie}={started.nonce}"}
                             ) as response:
            text = await response.text()
            assert response.status == 400, text
            assert words in text
            assert cookie_value(response, SESSION_COOKIE) is None
    [refusal] = await signin_audit(site)
    assert words in refusal["problem"]


async def test_oversized_and_non_form_posts_are_refused(saml_idp: SamlIdP, start_gateway,
                                                        tmp_path):
    site = await saml_gateway(saml_idp, start_gateway, tmp_path)
    async with http_session() as http:
        started = await start_login(http, site)
        cookie = {"Cookie": f"{site.cookie}={started.nonce}"}
        huge = "A" * (1024 * 1024)
        async with http.post(site.acs_url, data={"SAMLResponse": huge},
                             headers=cookie) as response:
            assert response.status == 400
            assert "too large" in await response.text()

        async def chunks():  # no Content-Length: read until the cap, then refused
            for _ in range(20):
                yield b"SAMLResponse=" + b"A" * 64 * 1024

        async with http.post(site.acs_url, data=chunks(), headers={
                **cookie, "Content-Type": "application/x-www-form-urlencoded"}) as response:
            assert response.status == 400
            assert "too large" in await response.text()
        async with http.post(site.acs_url, json={"SAMLResponse": "PGE+"},
                             headers=cookie) as response:
            assert response.status == 400
            assert "not posted as a form" in await response.text()
        async with http.post(f"{site.base}/auth/saml/nobody/acs", data={}) as response:
            assert response.status == 404
    assert len(await signin_audit(site)) == 3


async def test_a_store_outage_is_a_page_to_try_again(saml_idp: SamlIdP, start_gateway,
                                                     tmp_path):
    """Without the store no request can be recorded or looked up: 503, nothing half done,
    and the same response goes through once the store is back."""
    stores: list[FlakyStore] = []

    def flaky(url: str) -> FlakyStore:
        stores.append(FlakyStore(open_store(url)))
        return stores[-1]

    site = await saml_gateway(saml_idp, start_gateway, tmp_path, store=flaky)
    saml_idp.sign_in_as(ANN)
    async with http_session() as http:
        stores[0].down = True
        async with http.get(site.login_url, allow_redirects=False) as response:
            assert response.status == 503
            assert "try again in a minute" in await response.text()
        stores[0].down = False
        started = await start_login(http, site)
        post = saml_idp.respond(started.redirect_url)
        stores[0].down = True
        answer = await post_to_acs(http, site, post, started.nonce)
        assert answer.status == 503 and answer.session is None
        stores[0].down = False
        assert (await post_to_acs(http, site, post, started.nonce)).status == 303


# -- the IdP's metadata --------------------------------------------------------------------


async def test_metadata_url_down_gives_a_clear_page_and_sending_goes_on(
        saml_idp: SamlIdP, start_gateway, tmp_path, caplog: pytest.LogCaptureFixture):
    """The IdP's metadata URL does not answer when the gateway starts: it starts anyway (mail
    is not held up by an identity provider), and sign-in with that provider says why."""
    dead = f"http://127.0.0.1:{free_port()}/metadata"
    site = await saml_gateway(saml_idp, start_gateway, tmp_path, metadata=dead, trust=False)
    async with http_session() as http:
        async with http.get(site.login_url, allow_redirects=False) as response:
            text = await response.text()
            assert response.status == 503
            assert response.headers["Retry-After"] == "60"
            assert "is not available just now" in text
            assert "Sending is not affected" in text
        async with http.get(site.metadata_url) as response:  # ours does not depend on it
            assert response.status == 200
        async with http.get(f"{site.base}/healthz") as response:
            assert response.status == 200
    # not audited: anyone may GET /login, and no one is identified (the log says why)
    assert await signin_audit(site) == []
    [logged] = [r for r in caplog.records if r.getMessage() == "saml-login-unavailable"]
    assert dead in logged.fields["detail"]  # type: ignore[attr-defined]


async def test_an_unusable_metadata_file_stops_start_up(tmp_path):
    (tmp_path / "idp.xml").write_text(
        '<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" '
        'entityID="https://idp.example.com"/>')
    path = write_config(tmp_path, f"""
        [[sso.saml]]
        name = "okta"
        idp_metadata = "idp.xml"
        roles = {ROLES}
        """)
    with pytest.raises(ConfigError) as raised:
        Gateway(load_config(path))
    assert raised.value.key == "sso.saml[0].idp_metadata"
    assert "IDPSSODescriptor" in raised.value.problem
