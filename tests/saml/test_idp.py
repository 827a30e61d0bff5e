"""The test IdP, checked with the SP library the gateway is to use (python3-saml, strict):
its metadata, a signed response for a chosen user with the attributes, and the bad responses
the gateway's tests will send (tampered, unsigned, forged, wrong audience or recipient,
expired, replayed) refused by the library or, for a replay, left to the SP's own memory."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web

from tests.browser import browser_missing, launch_options
from tests.saml.idp import (
    ATTR_GROUPS,
    BINDING_HTTP_POST,
    BINDING_HTTP_REDIRECT,
    NAMEID_EMAIL,
    NS,
    SIG_RSA_SHA256,
    SamlIdP,
    SamlPost,
    SamlUser,
    redirect_request,
    strip_signatures,
    tamper,
)

pytest.importorskip("onelogin.saml2.auth", reason="python3-saml is not installed")
from onelogin.saml2.auth import OneLogin_Saml2_Auth
from onelogin.saml2.idp_metadata_parser import OneLogin_Saml2_IdPMetadataParser
from onelogin.saml2.settings import OneLogin_Saml2_Settings
from onelogin.saml2.xml_utils import OneLogin_Saml2_XML

ANN = SamlUser("ann@example.com", "Ann Example", ("compliance-managers", "staff"))


class OneLoginSP:
    """An SP made with python3-saml in strict mode, as the gateway's is to be: signed
    assertions wanted, SHA-1 refused, audience, recipient, destination and InResponseTo
    checked."""

    def __init__(self, idp_metadata: str, acs_url: str = "https://sp.example.com/acs",
                 entity_id: str = "https://sp.example.com/metadata",
                 sso_binding: str = BINDING_HTTP_REDIRECT) -> None:
        self.acs_url = acs_url
        self.settings = {
            "strict": True,
            "debug": False,
            "sp": {"entityId": entity_id,
                   "assertionConsumerService": {"url": acs_url, "binding": BINDING_HTTP_POST},
                   "NameIDFormat": NAMEID_EMAIL},
            "idp": OneLogin_Saml2_IdPMetadataParser.parse(
                idp_metadata, required_sso_binding=sso_binding)["idp"],
            "security": {"wantAssertionsSigned": True, "wantMessagesSigned": False,
                         "rejectDeprecatedAlgorithm": True,
                         "rejectUnsolicitedResponsesWithInResponseTo": True,
                         "wantNameId": True},
        }

    def metadata(self) -> str:
        return OneLogin_Saml2_Settings(self.settings, sp_validation_only=True).get_sp_metadata()

    def _request_data(self, url: str, post: dict[str, str] | None = None) -> dict[str, object]:
        parts = urlsplit(url)
        return {"https": "on" if parts.scheme == "https" else "off", "http_host": parts.netloc,
                "script_name": parts.path, "get_data": {}, "post_data": post or {}}

    def login(self, return_to: str = "https://sp.example.com/after") -> tuple[str, str, str]:
        """The redirect to the IdP (HTTP-Redirect binding), the request's ID and its XML."""
        auth = OneLogin_Saml2_Auth(self._request_data(self.acs_url), self.settings)
        url = auth.login(return_to=return_to)
        return url, auth.get_last_request_id(), auth.get_last_request_xml()

    def verify(self, post: SamlPost, request_id: str | None) -> OneLogin_Saml2_Auth:
        auth = OneLogin_Saml2_Auth(self._request_data(post.acs_url, post.form()),
                                   self.settings)
        auth.process_response(request_id=request_id)
        return auth


async def _sp_for(idp: SamlIdP, **kwargs: str) -> OneLoginSP:
    """An SP made from the IdP's metadata as served, and trusted by the IdP."""
    async with aiohttp.ClientSession() as http, http.get(idp.metadata_url) as response:
        assert response.status == 200
        sp = OneLoginSP(await response.text(), **kwargs)
    idp.trust_sp(sp.metadata())
    return sp


async def _follow(url: str, data: dict[str, str] | None = None) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http:
        method = http.post(url, data=data) if data is not None else http.get(url)
        async with method as response:
            return response.status, await response.text()


def _refused(auth: OneLogin_Saml2_Auth, reason: str) -> None:
    assert not auth.is_authenticated()
    assert auth.get_errors() == ["invalid_response"]
    assert reason in (auth.get_last_error_reason() or ""), auth.get_last_error_reason()


async def test_metadata_is_saml_metadata_with_the_signing_certificate(saml_idp: SamlIdP):
    async with aiohttp.ClientSession() as http, http.get(saml_idp.metadata_url) as response:
        assert response.status == 200
        metadata = await response.text()
    schema_valid = OneLogin_Saml2_XML.validate_xml(metadata, "saml-schema-metadata-2.0.xsd")
    assert not isinstance(schema_valid, str), schema_valid
    idp = OneLogin_Saml2_IdPMetadataParser.parse(metadata)["idp"]
    assert idp["entityId"] == saml_idp.entity_id
    assert idp["x509cert"] == saml_idp.keypair.cert_base64
    assert idp["singleSignOnService"]["url"] == saml_idp.sso_redirect_url
    post_binding = OneLogin_Saml2_IdPMetadataParser.parse(
        metadata, required_sso_binding=BINDING_HTTP_POST)["idp"]
    assert post_binding["singleSignOnService"]["url"] == saml_idp.sso_post_url


async def test_a_signed_response_for_the_chosen_user_over_http_redirect(saml_idp: SamlIdP):
    sp = await _sp_for(saml_idp)
    saml_idp.sign_in_as(ANN)
    url, request_id, _ = sp.login(return_to="https://sp.example.com/review")
    assert url.startswith(saml_idp.sso_redirect_url + "?")
    status, page = await _follow(url)
    assert status == 200
    post = SamlPost.from_page(page)
    assert post.acs_url == sp.acs_url
    assert post.relay_state == "https://sp.example.com/review"
    assert saml_idp.responses == [post]
    assert saml_idp.requests[-1].id == request_id
    assertion = post.root().find("saml:Assertion", NS)
    signature = assertion.find("ds:Signature", NS)
    assert signature.find("ds:SignedInfo/ds:SignatureMethod", NS).get("Algorithm") == \
        SIG_RSA_SHA256

    auth = sp.verify(post, request_id)
    assert auth.get_errors() == [], auth.get_last_error_reason()
    assert auth.is_authenticated()
    assert auth.get_nameid() == "ann@example.com"
    assert auth.get_attributes() == {"email": ["ann@example.com"],
                                     "displayName": ["Ann Example"],
                                     "groups": ["compliance-managers", "staff"]}
    assert auth.get_last_assertion_id()


async def test_a_signed_response_over_http_post_with_the_whole_response_signed(
        saml_idp: SamlIdP):
    sp = await _sp_for(saml_idp, sso_binding=BINDING_HTTP_POST)
    saml_idp.sign_in_as(SamlUser("bo@example.com", "Bo", ("gateway-admins",),
                                 attributes={"department": ["risk"]}))
    saml_idp.sign_response = True
    _, request_id, request_xml = sp.login()
    status, page = await _follow(saml_idp.sso_post_url, {
        "SAMLRequest": base64.b64encode(request_xml.encode()).decode(), "RelayState": "r1"})
    assert status == 200
    post = SamlPost.from_page(page)
    assert post.relay_state == "r1"
    assert post.root().find("ds:Signature", NS) is not None
    auth = sp.verify(post, request_id)
    assert auth.is_authenticated(), auth.get_last_error_reason()
    assert auth.get_attributes()["groups"] == ["gateway-admins"]
    assert auth.get_attributes()["department"] == ["risk"]


async def test_the_sign_in_form_when_nobody_is_chosen(saml_idp: SamlIdP):
    sp = await _sp_for(saml_idp)
    saml_idp.add_user(ANN)
    url, request_id, _ = sp.login()
    status, form = await _follow(url)
    assert status == 200
    assert 'name="username"' in form
    key = form.split('name="key" value="')[1].split('"')[0]
    status, _ = await _follow(f"{saml_idp.base_url}/login", {"username": "eve@example.com",
                                                             "key": key})
    assert status == 401
    assert saml_idp.refusals == ["unknown user 'eve@example.com'"]

    url, request_id, _ = sp.login()
    _, form = await _follow(url)
    key = form.split('name="key" value="')[1].split('"')[0]
    status, page = await _follow(f"{saml_idp.base_url}/login", {"username": "ANN@example.com",
                                                                "key": key})
    assert status == 200
    auth = sp.verify(SamlPost.from_page(page), request_id)
    assert auth.is_authenticated(), auth.get_last_error_reason()
    assert auth.get_nameid() == "ann@example.com"


async def test_requests_from_an_sp_not_trusted_or_to_an_acs_not_in_its_metadata_refused(
        saml_idp: SamlIdP):
    metadata = (await _follow(saml_idp.metadata_url))[1]
    stranger = OneLoginSP(metadata, entity_id="https://stranger.example.com/metadata")
    saml_idp.sign_in_as(ANN)
    status, _ = await _follow(stranger.login()[0])
    assert status == 400
    assert "not trusted" in saml_idp.refusals[-1]

    trusted = await _sp_for(saml_idp)
    elsewhere = OneLoginSP(metadata, acs_url="https://evil.example.net/acs")
    assert elsewhere.settings["sp"]["entityId"] == trusted.settings["sp"]["entityId"]
    status, _ = await _follow(elsewhere.login()[0])
    assert status == 400
    assert "Unknown entity or unsupported bindings" in saml_idp.refusals[-1]
    assert saml_idp.responses == []


async def test_a_tampered_response_fails_the_signature_check(saml_idp: SamlIdP):
    sp = await _sp_for(saml_idp)
    saml_idp.sign_in_as(ANN)
    url, request_id, _ = sp.login()
    post = saml_idp.respond(url)
    # the helpers' own parse and serialisation leave a signature valid ...
    assert sp.verify(post.with_xml(_reserialised(post)), request_id).is_authenticated()
    # ... so what fails is the change
    forged_groups = tamper(post, ATTR_GROUPS, ["gateway-admins", "security"])
    assert "security" in forged_groups.xml
    _refused(sp.verify(forged_groups, request_id), "Signature validation failed")
    _refused(sp.verify(tamper(post, "email", ["boss@example.com"]), request_id),
             "Signature validation failed")


def _reserialised(post: SamlPost) -> bytes:
    from lxml import etree

    return etree.tostring(post.root(), xml_declaration=True, encoding="UTF-8")


async def test_unsigned_and_forged_responses_fail(saml_idp: SamlIdP):
    sp = await _sp_for(saml_idp)
    saml_idp.sign_in_as(ANN)
    url, request_id, _ = sp.login()
    _refused(sp.verify(strip_signatures(saml_idp.respond(url)), request_id),
             "The Assertion of the Response is not signed")
    _refused(sp.verify(saml_idp.respond(url, sign_assertion=False), request_id),
             "The Assertion of the Response is not signed")
    seen = saml_idp.requests[-1]
    with SamlIdP(entity_id=saml_idp.entity_id) as forger:  # same name, another key
        forger.trust_sp(sp.metadata())
        forged = forger.issue(seen.sp_entity_id, SamlUser("ann@example.com", "Ann",
                                                          ("security",)),
                              in_response_to=seen.id, acs_url=seen.acs_url)
    _refused(sp.verify(forged, seen.id), "Signature validation failed")


@pytest.mark.parametrize(("fault", "reason"), [
    ({"audience": "https://other.example.com/metadata"}, "is not a valid audience"),
    ({"recipient": "https://other.example.com/acs"}, "A valid SubjectConfirmation was not found"),
    ({"destination": "https://other.example.com/acs"}, "The response was received at"),
    ({"clock": timedelta(hours=-1)}, "expired"),  # the IdP's clock an hour behind
    ({"clock": timedelta(hours=1)}, "Could not validate timestamp"),
])
async def test_signed_responses_with_a_fault_fail(saml_idp: SamlIdP, fault: dict[str, object],
                                                  reason: str):
    sp = await _sp_for(saml_idp)
    saml_idp.sign_in_as(ANN)
    url, request_id, _ = sp.login()
    if "clock" in fault:  # relative: the parameters are made at collection
        fault = {"clock": datetime.now(UTC) + fault["clock"]}  # type: ignore[operator]
    post = saml_idp.respond(url, **fault)
    assert post.root().find("saml:Assertion/ds:Signature", NS) is not None
    _refused(sp.verify(post, request_id), reason)
    # the same without the fault passes: the fault is what fails
    assert sp.verify(saml_idp.respond(url), request_id).is_authenticated()


async def test_a_replay_is_left_to_the_sp_which_gets_the_assertion_id_to_remember(
        saml_idp: SamlIdP):
    """python3-saml checks a response, not whether it was seen before: the gateway has to
    refuse a second use of get_last_assertion_id() (remembered until its NotOnOrAfter). A
    replay under another sign-in's request ID fails InResponseTo in the library itself."""
    sp = await _sp_for(saml_idp)
    saml_idp.sign_in_as(ANN)
    url, request_id, _ = sp.login()
    _, page = await _follow(url)
    captured = SamlPost.from_page(page)
    assert saml_idp.responses[-1] == captured
    first = sp.verify(captured, request_id)
    again = sp.verify(captured, request_id)
    assert first.is_authenticated() and again.is_authenticated()
    assert first.get_last_assertion_id() == again.get_last_assertion_id()
    assert again.get_last_assertion_not_on_or_after() > datetime.now(UTC).timestamp()

    _, other_request_id, _ = sp.login()
    _refused(sp.verify(captured, other_request_id), "The InResponseTo of the Response")


async def test_the_idp_pages_work_in_a_browser(saml_idp: SamlIdP):
    """Chromium goes to the IdP, fills its sign-in form and is posted on to the SP's ACS by
    the IdP's page (the IdP on "localhost", the ACS on 127.0.0.1: another site)."""
    reason = browser_missing()
    if reason:
        print(f"browser test skipped: {reason}")
        pytest.skip(f"browser test skipped: {reason}")
    from playwright.async_api import async_playwright

    posted: list[dict[str, str]] = []

    async def acs(request: web.Request) -> web.Response:
        posted.append(dict(await request.post()))  # type: ignore[arg-type]
        return web.Response(text="<h1>Signed in</h1>", content_type="text/html")

    app = web.Application()
    app.router.add_post("/acs", acs)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    acs_url = f"http://127.0.0.1:{runner.addresses[0][1]}/acs"
    with SamlIdP(keypair=saml_idp.keypair, url_host="localhost") as idp:
        try:
            sp = await _sp_for(idp, acs_url=acs_url)
            idp.add_user(ANN)
            url, request_id, _ = sp.login()
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(**launch_options())
                try:
                    page = await browser.new_page()
                    await page.goto(url)
                    await page.get_by_label("Email").fill("ann@example.com")
                    await page.get_by_role("button", name="Sign in").click()
                    await page.get_by_role("heading", name="Signed in").wait_for()
                finally:
                    await browser.close()
        finally:
            await runner.cleanup()
    assert len(posted) == 1
    post = SamlPost(acs_url, posted[0]["SAMLResponse"], posted[0].get("RelayState"))
    auth = sp.verify(post, request_id)
    assert auth.is_authenticated(), auth.get_last_error_reason()
    assert auth.get_attributes()["groups"] == ["compliance-managers", "staff"]


def test_redirect_request_reads_the_authn_request(saml_idp: SamlIdP):
    sp = OneLoginSP(saml_idp.metadata_xml())
    url, request_id, _ = sp.login()
    assert f'ID="{request_id}"' in redirect_request(url)
