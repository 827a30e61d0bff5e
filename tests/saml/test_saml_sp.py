"""gateway/auth/saml.py on its own: reading IdP metadata, who a verified assertion names, the
posted value's decoding, the nonce, the metadata URL's fetch, retry and refresh, a signing
certificate rollover, and two replicas sharing one store (pysaml2's IdP signs, a real SQLite
store keeps the marks)."""

from __future__ import annotations

import base64
import copy
import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from lxml import etree

pytest.importorskip("onelogin.saml2.auth", reason="python3-saml is not installed")

from gateway.auth.saml import (
    CLOCK_SKEW_S,
    DEFAULT_EMAIL_ATTRIBUTE,
    METADATA_MAX_BYTES,
    METADATA_REFRESH_S,
    METADATA_RETRY_S,
    NAMEID_EMAIL,
    NAMEID_UNSPECIFIED,
    IdpMetadataSource,
    IdpUnavailable,
    MetadataError,
    SamlRefused,
    SamlSignIn,
    VerifiedAssertion,
    acs_url,
    binding_cookie,
    decode_saml_response,
    issued_nonce,
    make_nonce,
    parse_idp_metadata,
    person_of,
    request_data,
    settings_for,
    sp_entity_id,
    sp_settings,
    valid_nonce,
    verify_response,
)
from gateway.config.errors import ConfigError
from gateway.config.sso import SamlProvider
from gateway.model import Role
from gateway.store import open_store
from gateway.store.base import Store
from gateway.web.saml_routes import MetadataFetcher
from tests.saml.idp import NAMEID_PERSISTENT, NS, SamlIdP, SamlUser, generate_keypair

PUBLIC_URL = "https://gw.example.com"
ROLES = {"compliance-managers": Role.MANAGER, "security": Role.OWNER}
ANN = SamlUser("ann@example.com", "Ann Example", ("compliance-managers",))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = open_store(f"sqlite:///{tmp_path}/saml.db")
    await opened.open()
    yield opened
    await opened.close()


def provider(metadata_xml: str = "", url: str = "", **kwargs: object) -> SamlProvider:
    return SamlProvider("okta", ROLES, idp_metadata_xml=metadata_xml, idp_metadata_url=url,
                        **kwargs)  # type: ignore[arg-type]


def assertion(name_id: str = "ann@example.com", name_id_format: str = NAMEID_EMAIL,
              **attributes: tuple[str, ...]) -> VerifiedAssertion:
    return VerifiedAssertion("_a1", "_r1", 0.0, name_id, name_id_format, attributes)


# -- URLs, settings, metadata --------------------------------------------------------------


def test_urls_come_from_public_url_alone():
    assert sp_entity_id("https://gw.example.com/", "okta") == \
        "https://gw.example.com/auth/saml/okta/metadata"
    assert acs_url("https://gw.example.com", "okta") == "https://gw.example.com/auth/saml/okta/acs"
    data = request_data("https://gw.example.com:8443/prefix/auth/saml/okta/acs", {"a": "b"})
    assert data == {"https": "on", "http_host": "gw.example.com:8443",
                    "script_name": "/prefix/auth/saml/okta/acs", "get_data": {},
                    "post_data": {"a": "b"}}


def test_settings_are_strict():
    settings = sp_settings("okta", PUBLIC_URL)
    security = settings["security"]
    assert settings["strict"] is True
    assert security["wantAssertionsSigned"] is True
    assert security["rejectDeprecatedAlgorithm"] is True
    assert security["authnRequestsSigned"] is False
    assert settings["sp"]["NameIDFormat"] == NAMEID_EMAIL


def test_idp_metadata_read(saml_idp: SamlIdP):
    metadata = parse_idp_metadata(saml_idp.metadata_xml())
    assert metadata.entity_id == saml_idp.entity_id
    assert metadata.sso_url == saml_idp.sso_redirect_url
    assert metadata.signing_certs == (saml_idp.keypair.cert_base64,)


MD = NS["md"]


@pytest.mark.parametrize(("xml", "problem"), [
    ("not xml at all", "not readable SAML metadata"),
    ('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "e">]><x>&e;</x>',
     "not readable SAML metadata"),
    (f'<md:EntityDescriptor xmlns:md="{MD}" entityID="https://idp"/>', "no IDPSSODescriptor"),
    (f'<md:EntityDescriptor xmlns:md="{MD}" entityID="https://idp"><md:IDPSSODescriptor '
     'protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol"/>'
     "</md:EntityDescriptor>", "HTTP-Redirect"),
    (f'<md:EntityDescriptor xmlns:md="{MD}" entityID="https://idp"><md:IDPSSODescriptor '
     'protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">'
     '<md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" '
     'Location="https://idp/sso"/></md:IDPSSODescriptor></md:EntityDescriptor>',
     "no signing certificate"),
])
def test_unusable_idp_metadata_says_what_is_missing(xml: str, problem: str):
    with pytest.raises(MetadataError, match=problem):
        parse_idp_metadata(xml)


def test_an_unusable_metadata_file_is_a_config_error_naming_the_setting(store: Store):
    with pytest.raises(ConfigError) as raised:
        SamlSignIn(provider("<md:EntityDescriptor/>"), PUBLIC_URL, store, index=2)
    assert raised.value.key == "sso.saml[2].idp_metadata"


# -- who the assertion names ---------------------------------------------------------------


@pytest.mark.parametrize(("made", "config", "email"), [
    (assertion(), {}, "ann@example.com"),
    (assertion("Ann@Example.COM", NAMEID_UNSPECIFIED), {}, "Ann@Example.COM"),  # as sent
    # passed on as received, never rewritten (People keys it, and refuses look-alikes)
    (assertion("\u212aatie@example.com"), {}, "\u212aatie@example.com"),
    (assertion("zoe@B\u00fccher.Example"), {}, "zoe@B\u00fccher.Example"),
    (assertion("u-1", NAMEID_PERSISTENT, email=(" Dee@Example.com\n",)), {}, "Dee@Example.com"),
    (assertion("u-123", NAMEID_PERSISTENT, email=("dee@example.com",)), {}, "dee@example.com"),
    # an emailAddress NameID that is not one: the attribute then
    (assertion("not an email", NAMEID_EMAIL, email=("eve@example.com",)), {},
     "eve@example.com"),
    (assertion("ann@example.com", mail=("ann.other@example.com",)),
     {"email_attribute": "mail"}, "ann.other@example.com"),
])
def test_the_email_is_the_name_id_or_an_attribute(made: VerifiedAssertion,
                                                  config: dict[str, str], email: str):
    assert person_of(provider("x", **config), made).email == email


@pytest.mark.parametrize(("made", "config"), [
    (assertion("u-123", NAMEID_PERSISTENT), {}),
    (assertion("u-123", NAMEID_PERSISTENT, email=("not-an-address",)), {}),
    (assertion("ann@example.com"), {"email_attribute": "mail"}),  # configured: that only
    (assertion("transient", "urn:oasis:names:tc:SAML:2.0:nameid-format:transient",
               email=("a b@example.com",)), {}),
])
def test_no_usable_email_is_refused(made: VerifiedAssertion, config: dict[str, str]):
    with pytest.raises(SamlRefused) as refused:
        person_of(provider("x", **config), made)
    assert refused.value.status == 400
    assert "no usable email address" in refused.value.problem
    assert refused.value.reason == "no email"


@pytest.mark.parametrize(("made", "config"), [
    (assertion("u-123", NAMEID_PERSISTENT, email=()), {}),
    (assertion("u-123", NAMEID_PERSISTENT, email=("",)), {}),
    (assertion("u-123", NAMEID_PERSISTENT, email=(" ",)), {}),
    (assertion("ann@example.com", mail=()), {"email_attribute": "mail"}),
])
def test_an_email_attribute_without_a_value_is_no_email(made: VerifiedAssertion,
                                                        config: dict[str, str]):
    """An attribute sent with no (or a blank) value: refused saying so, never an error."""
    with pytest.raises(SamlRefused) as refused:
        person_of(provider("x", **config), made)
    assert (refused.value.status, refused.value.reason) == (400, "no email")


def test_display_name_and_groups():
    entra = assertion(**{
        "http://schemas.microsoft.com/identity/claims/displayname": ("Ann E.",),
        "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups": ("g1", "g2", "g1"),
    })
    person = person_of(provider(
        "x", role_attribute="http://schemas.microsoft.com/ws/2008/06/identity/claims/groups"),
        entra)
    assert person.display_name == "Ann E."
    assert person.groups == ("g1", "g2")
    plain = person_of(provider("x"), assertion(displayName=("Ann",), groups=("a",)))
    assert (plain.display_name, plain.groups) == ("Ann", ("a",))
    assert DEFAULT_EMAIL_ATTRIBUTE == "email"


def test_no_groups_attribute_says_nothing_an_empty_one_is_no_groups():
    """None (keep what SCIM gave) only when the attribute is not there at all."""
    assert person_of(provider("x"), assertion()).groups is None
    assert person_of(provider("x"), assertion(groups=())).groups == ()
    assert person_of(provider("x", role_attribute="roles"),
                     assertion(groups=("a",))).groups is None


# -- the posted value and the nonce --------------------------------------------------------


def test_a_base64_response_wrapped_in_lines_is_read():
    encoded = base64.b64encode(b"<samlp:Response/>" * 20).decode()
    wrapped = "\r\n".join(encoded[i:i + 76] for i in range(0, len(encoded), 76))
    assert decode_saml_response(wrapped) == encoded


@pytest.mark.parametrize(("value", "words"), [
    ("", "not base64"),
    ("PGE+P", "not base64"),
    ("PGE+\x00", "not base64"),
    ("=PGE", "not base64"),
    (base64.b64encode(b"\x89PNG").decode(), "not XML"),
    ("A" * (600 * 1024), "too large"),
])
def test_undecodable_values_are_refused(value: str, words: str):
    with pytest.raises(SamlRefused) as refused:
        decode_saml_response(value)
    assert refused.value.status == 400
    assert words in refused.value.problem


def test_only_nonces_the_gateway_made_are_taken():
    key, other_key = b"k" * 32, b"o" * 32
    made = make_nonce(key)
    assert valid_nonce(made) and issued_nonce(key, made)
    assert make_nonce(key) != made
    assert not issued_nonce(other_key, made)
    assert not issued_nonce(key, made[:22] + make_nonce(key)[22:])  # halves of two nonces
    assert valid_nonce("a" * 44) and not issued_nonce(key, "a" * 44)
    for shape in ("", "a" * 43, "a" * 45, "a" * 43 + ":", "é" * 44, made + "\x00"):
        assert not valid_nonce(shape) and not issued_nonce(key, shape)


def test_the_binding_cookie_is_host_only_on_https(saml_idp: SamlIdP, store: Store):
    assert binding_cookie("https://gw.example.com") == "__Host-saml_request"
    assert binding_cookie("http://127.0.0.1:8025") == "saml_request"
    https = SamlSignIn(provider(saml_idp.metadata_xml()), "https://gw.example.com/prefix",
                       store)
    assert (https.cookie_name, https.cookie_path) == ("__Host-saml_request", "/")


async def test_login_adopts_only_a_nonce_it_made(saml_idp: SamlIdP, store: Store):
    """A nonce planted in the browser (someone else's choice) is replaced; one the gateway
    made, by any replica, is kept so sign-ins begun in two tabs both work."""
    first, second = (SamlSignIn(provider(saml_idp.metadata_xml()), PUBLIC_URL, store)
                     for _ in range(2))
    planted = "P" * 44
    started = await first.start(planted)
    assert started.nonce != planted and await second.issued(started.nonce)
    assert not await second.issued(planted)
    again = await second.start(started.nonce)
    assert again.nonce == started.nonce
    with pytest.raises(SamlRefused) as refused:
        await first.finish("PGE+", planted)  # refused before the post is looked at
    assert (refused.value.status, refused.value.reason) == (400, "no sign-in cookie")


async def test_a_request_mark_is_bounded_whatever_the_cookie(saml_idp: SamlIdP, store: Store):
    """/login writes one mark per GET, anonymous ones too: of a fixed shape and size, with
    nothing of the request's in it but a nonce the gateway made."""
    written: list[str] = []

    class Recording:
        async def use_once(self, mark: str, now: float, expires_at: float) -> bool:
            written.append(mark)
            return await store.use_once(mark, now, expires_at)

        async def claim_setting(self, name: str, value: str) -> str:
            return await store.claim_setting(name, value)

    sign_in = SamlSignIn(provider(saml_idp.metadata_xml()), PUBLIC_URL,
                         Recording())  # type: ignore[arg-type]
    for cookie in ("", "x" * 4096, "P" * 44, "\u212a" * 44):
        await sign_in.start(cookie)
    assert len(written) == 4
    for mark in written:
        assert re.fullmatch(r"saml-request:okta:ONELOGIN_[0-9a-f]{40}:[0-9a-f]{64}", mark), mark


# -- across replicas, and a certificate rollover --------------------------------------------


async def test_two_replicas_share_the_requests_and_the_replay_marks(saml_idp: SamlIdP,
                                                                    store: Store):
    """Login on one replica, the ACS on another: the store's marks are the only memory."""
    first, second = (SamlSignIn(provider(saml_idp.metadata_xml()), PUBLIC_URL, store)
                     for _ in range(2))
    saml_idp.trust_sp(first.sp_metadata())
    saml_idp.sign_in_as(ANN)
    started = await first.start()
    post = saml_idp.respond(started.redirect_url)
    person = await second.finish(post.saml_response, started.nonce)
    assert person.email == "ann@example.com"
    with pytest.raises(SamlRefused, match="already used"):
        await first.finish(post.saml_response, started.nonce)


async def test_the_replay_mark_outlives_the_assertion(saml_idp: SamlIdP, store: Store):
    """A replica whose clock runs up to the skew ahead must not forget an assertion ID while
    another could still accept it: the mark lasts its NotOnOrAfter plus twice the skew."""
    marks: list[tuple[str, str, float]] = []

    class Recording:
        async def use_once(self, mark: str, now: float, expires_at: float) -> bool:
            marks.append(("use", mark, expires_at))
            return await store.use_once(mark, now, expires_at)

        async def take_once(self, mark: str, now: float) -> bool:
            marks.append(("take", mark, now))
            return await store.take_once(mark, now)

        async def claim_setting(self, name: str, value: str) -> str:
            return await store.claim_setting(name, value)

    now = 1_000_000.0
    sign_in = SamlSignIn(provider(saml_idp.metadata_xml()), PUBLIC_URL,
                         Recording(), clock=lambda: now)  # type: ignore[arg-type]
    saml_idp.trust_sp(sign_in.sp_metadata())
    saml_idp.sign_in_as(ANN)
    started = await sign_in.start()
    post = saml_idp.respond(started.redirect_url)
    await sign_in.finish(post.saml_response, started.nonce)
    kinds = [(op, mark.split(":")[0], at) for op, mark, at in marks]
    assert [(op, kind) for op, kind, _ in kinds] == [
        ("use", "saml-request"), ("use", "saml"), ("take", "saml-request")]
    assert marks[0][1] == marks[2][1]  # the request recorded at /login is the one taken
    assert kinds[0][2] == now + 600  # the request, recorded at /login
    until = kinds[1][2]
    lifetime = saml_idp.lifetime.total_seconds()
    assert now + lifetime + 2 * CLOCK_SKEW_S - 5 <= until <= now + lifetime + 2 * CLOCK_SKEW_S


T = 2_000_000_000.0


async def test_a_replica_whose_clock_is_behind_refuses_an_answer_to_no_request(
        saml_idp: SamlIdP, store: Store):
    """A response to a request never made (or one of another browser), posted with a nonce
    the gateway did make: refused on a replica ahead, then on one a second behind, then again
    when a replica's clock steps back; the refusals leave no mark a later post could find."""
    ahead, behind = (SamlSignIn(provider(saml_idp.metadata_xml()), PUBLIC_URL, store,
                                clock=lambda at=at: at) for at in (T + 1.0, T))
    saml_idp.trust_sp(ahead.sp_metadata())
    nonce = (await ahead.start()).nonce  # anyone may have one: GET /login
    mallory = SamlUser("mallory@example.com", "Mallory", ("security",))
    for replica in (ahead, behind, ahead, behind):
        post = saml_idp.issue(ahead.entity_id, mallory, in_response_to="_never-made",
                              acs_url=ahead.acs_url)
        with pytest.raises(SamlRefused) as refused:
            await replica.finish(post.saml_response, nonce)
        assert (refused.value.status, refused.value.reason) == (
            400, "not a live request of this browser")
    never = f"saml-request:okta:_never-made:{hashlib.sha256(nonce.encode()).hexdigest()}"
    assert await store.take_once(never, T - 1000) is False  # nothing was written


async def test_a_request_is_answered_once_whichever_replica_and_clock(saml_idp: SamlIdP,
                                                                      store: Store):
    """A second response to the same request (another assertion) is refused on the replica
    behind as on the one ahead: the ACS takes the request's mark, it never writes one."""
    ahead, behind = (SamlSignIn(provider(saml_idp.metadata_xml()), PUBLIC_URL, store,
                                clock=lambda at=at: at) for at in (T + 1.0, T))
    saml_idp.trust_sp(ahead.sp_metadata())
    saml_idp.sign_in_as(ANN)
    started = await behind.start()
    assert (await ahead.finish(saml_idp.respond(started.redirect_url).saml_response,
                               started.nonce)).email == "ann@example.com"
    for replica in (behind, ahead):
        with pytest.raises(SamlRefused) as refused:
            await replica.finish(saml_idp.respond(started.redirect_url).saml_response,
                                 started.nonce)
        assert refused.value.reason == "not a live request of this browser"


def with_second_certificate(metadata: str, cert_base64: str) -> str:
    """The metadata with a second signing KeyDescriptor (the new certificate) after the
    first, as an IdP publishes them during a rollover."""
    root = etree.fromstring(metadata.encode())
    first = root.find(".//md:KeyDescriptor", NS)
    second = copy.deepcopy(first)
    second.set("use", "signing")
    second.find(".//ds:X509Certificate", NS).text = cert_base64
    first.addnext(second)
    return etree.tostring(root).decode()


async def test_a_certificate_rollover_with_both_certificates_in_the_metadata(
        saml_idp: SamlIdP, store: Store):
    """During a rollover the IdP's metadata lists the old and the new signing certificate:
    assertions signed with either are accepted, any other key still refused."""
    new_key = generate_keypair("new signing key")
    old_cert = saml_idp.keypair.cert_base64
    both = with_second_certificate(saml_idp.metadata_xml(), new_key.cert_base64)
    assert parse_idp_metadata(both).signing_certs == (old_cert, new_key.cert_base64)
    sign_in = SamlSignIn(provider(both), PUBLIC_URL, store)
    saml_idp.trust_sp(sign_in.sp_metadata())
    saml_idp.sign_in_as(ANN)
    started = await sign_in.start()
    assert (await sign_in.finish(saml_idp.respond(started.redirect_url).saml_response,
                                 started.nonce)).email == "ann@example.com"
    for keypair, accepted in ((new_key, True), (generate_keypair("stranger"), False)):
        with SamlIdP(keypair=keypair, entity_id=saml_idp.entity_id) as rolled:
            rolled.trust_sp(sign_in.sp_metadata())
            started = await sign_in.start()  # a request to the IdP's SSO URL, answered by
            post = rolled.issue(sign_in.entity_id, ANN,  # the IdP signing with that key
                                in_response_to=started.request_id, acs_url=sign_in.acs_url)
            if accepted:
                assert (await sign_in.finish(post.saml_response, started.nonce)).email
            else:
                with pytest.raises(SamlRefused, match="signature does not verify"):
                    await sign_in.finish(post.saml_response, started.nonce)


# -- metadata from a URL -------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_metadata_url_retried_after_a_failure_and_refreshed(saml_idp: SamlIdP):
    answers: list[bytes | Exception] = [ConnectionRefusedError("connection refused")]
    fetched: list[str] = []

    async def fetch(url: str) -> bytes:
        fetched.append(url)
        answer = answers[0] if len(answers) == 1 else answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    clock = Clock()
    source = IdpMetadataSource(provider(url="https://idp.example.com/md"), PUBLIC_URL, fetch,
                               clock=clock)
    assert not await source.load()
    with pytest.raises(IdpUnavailable) as unavailable:
        await source.current()  # not again before METADATA_RETRY_S
    assert unavailable.value.status == 503
    assert "connection refused" in unavailable.value.detail
    assert len(fetched) == 1

    answers[:] = [saml_idp.metadata_xml().encode()]
    clock.now += METADATA_RETRY_S
    assert await source.current()
    assert source.metadata is not None and source.metadata.entity_id == saml_idp.entity_id
    assert len(fetched) == 2
    await source.current()
    assert len(fetched) == 2  # fresh enough

    # an hour on, it is read again; a failed re-read keeps the good copy
    answers[:] = [TimeoutError()]
    clock.now += METADATA_REFRESH_S
    assert await source.current()
    assert len(fetched) == 3
    # and a rolled-over certificate published there is picked up
    new_key = generate_keypair("next")
    answers[:] = [saml_idp.metadata_xml().replace(saml_idp.keypair.cert_base64,
                                                  new_key.cert_base64).encode()]
    clock.now += METADATA_RETRY_S
    await source.current()
    assert source.metadata is not None
    assert source.metadata.signing_certs == (new_key.cert_base64,)


async def test_a_new_signing_certificate_at_the_metadata_url_is_followed_at_once(
        saml_idp: SamlIdP, store: Store):
    """An IdP that switches to a new certificate without publishing it first: the first
    response it signs has the gateway read the metadata URL again, and verify with it."""
    published = [saml_idp.metadata_xml().encode()]
    fetched: list[str] = []

    async def fetch(url: str) -> bytes:
        fetched.append(url)
        return published[0]

    clock = Clock()
    sign_in = SamlSignIn(provider(url="https://idp.example.com/md"), PUBLIC_URL, store, fetch)
    sign_in.idp.clock = clock
    assert await sign_in.idp.load()
    saml_idp.trust_sp(sign_in.sp_metadata())
    with SamlIdP(keypair=generate_keypair("rolled"), entity_id=saml_idp.entity_id) as rolled:
        rolled.trust_sp(sign_in.sp_metadata())

        async def attempt() -> str:
            started = await sign_in.start()
            post = rolled.issue(sign_in.entity_id, ANN, in_response_to=started.request_id,
                                acs_url=sign_in.acs_url)
            return (await sign_in.finish(post.saml_response, started.nonce)).email

        # not yet published: refused, and the URL is not read again within METADATA_RETRY_S
        clock.now += METADATA_RETRY_S
        with pytest.raises(SamlRefused, match="signature does not verify"):
            await attempt()
        assert len(fetched) == 2
        with pytest.raises(SamlRefused, match="signature does not verify"):
            await attempt()
        assert len(fetched) == 2
        published[0] = rolled.metadata_xml().encode()
        clock.now += METADATA_RETRY_S
        assert await attempt() == "ann@example.com"
        assert len(fetched) == 3


@pytest.fixture
async def metadata_server(saml_idp: SamlIdP) -> AsyncIterator[str]:
    async def good(_: web.Request) -> web.Response:
        return web.Response(text=saml_idp.metadata_xml())

    async def moved(_: web.Request) -> web.Response:
        raise web.HTTPFound("/good")

    async def huge(_: web.Request) -> web.Response:
        return web.Response(body=b"<" * (METADATA_MAX_BYTES + 10))

    async def missing(_: web.Request) -> web.Response:
        return web.Response(status=404)

    app = web.Application()
    for name, handler in (("good", good), ("moved", moved), ("huge", huge),
                          ("missing", missing)):
        app.router.add_get(f"/{name}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def test_metadata_fetcher(metadata_server: str, saml_idp: SamlIdP):
    fetcher = MetadataFetcher()
    try:
        assert parse_idp_metadata(await fetcher.fetch(f"{metadata_server}/good")).entity_id \
            == saml_idp.entity_id
        with pytest.raises(MetadataError, match="redirected to /good: configure that URL"):
            await fetcher.fetch(f"{metadata_server}/moved")
        with pytest.raises(MetadataError, match="larger than"):
            await fetcher.fetch(f"{metadata_server}/huge")
        with pytest.raises(MetadataError, match="HTTP 404"):
            await fetcher.fetch(f"{metadata_server}/missing")
    finally:
        await fetcher.close()


def test_an_encrypted_assertion_is_refused_saying_so(saml_idp: SamlIdP):
    settings = settings_for("okta", PUBLIC_URL, parse_idp_metadata(saml_idp.metadata_xml()))
    xml = (
        '<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" '
        'xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_r" Version="2.0" '
        'IssueInstant="2026-01-01T00:00:00Z"><saml:EncryptedAssertion>'
        '<xenc:EncryptedData xmlns:xenc="http://www.w3.org/2001/04/xmlenc#"/>'
        "</saml:EncryptedAssertion></samlp:Response>"
    )
    with pytest.raises(SamlRefused) as refused:
        verify_response(settings, PUBLIC_URL, "okta", base64.b64encode(xml.encode()).decode(),
                        0.0)
    assert refused.value.status == 400
    assert "encrypted" in refused.value.problem
