"""The OpenID Provider the SSO tests sign in at is real and usable: its discovery document and
JWKS, the authorization code flow with PKCE in Chromium and over plain HTTP, the ID token's
signature and claims (email, groups), and signing-key rotation.

The relying party here is the test itself (PKCE, token exchange with aiohttp, ID token checks
with joserfc, the JOSE library Authlib builds on): what the gateway's own sign-in will do.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError
from joserfc.jwk import KeySet
from yarl import URL

from tests.browser import browser_missing, launch_options
from tests.sso.oidc_provider import (
    OidcClient,
    OidcProvider,
    http_session,
    sign_in_over_http,
    skip_oidc,
)

UNUSED_REDIRECT = "http://127.0.0.1:9/callback"  # sign_in_over_http stops before fetching it
SCOPE = "openid email profile"


@dataclass(frozen=True)
class AuthorizationRequest:
    url: str
    state: str
    nonce: str
    code_verifier: str


def authorization_request(provider: OidcProvider, client: OidcClient, *, scope: str = SCOPE,
                          pkce: str | None = "S256", **extra: str) -> AuthorizationRequest:
    state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    verifier = secrets.token_urlsafe(48)
    params = {"response_type": "code", "client_id": client.client_id,
              "redirect_uri": client.redirect_uris[0], "scope": scope, "state": state,
              "nonce": nonce}
    if pkce == "S256":
        digest = hashlib.sha256(verifier.encode()).digest()
        params["code_challenge"] = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        params["code_challenge_method"] = "S256"
    elif pkce == "plain":
        params["code_challenge"], params["code_challenge_method"] = verifier, "plain"
    params.update(extra)
    url = URL(provider.endpoint("authorization_endpoint")).with_query(params)
    return AuthorizationRequest(str(url), state, nonce, verifier)


async def exchange_code(provider: OidcProvider, client: OidcClient, code: str,
                        code_verifier: str) -> tuple[int, dict[str, Any]]:
    """The token request, authenticated the way the client registered (RFC 6749 2.3.1)."""
    form = {"grant_type": "authorization_code", "code": code,
            "redirect_uri": client.redirect_uris[0], "code_verifier": code_verifier}
    headers = {}
    if client.token_endpoint_auth_method == "client_secret_post":
        form |= {"client_id": client.client_id, "client_secret": client.client_secret}
    else:
        pair = f"{quote(client.client_id, safe='')}:{quote(client.client_secret, safe='')}"
        headers["Authorization"] = f"Basic {base64.b64encode(pair.encode()).decode()}"
    async with aiohttp.ClientSession() as session, session.post(
        provider.endpoint("token_endpoint"), data=form, headers=headers
    ) as response:
        return response.status, await response.json()


def validated_id_token(provider: OidcProvider, client: OidcClient, id_token: str,
                       nonce: str) -> jwt.Token:
    """Signature against the published JWKS, then iss, aud, exp, iat and nonce."""
    keys = KeySet.import_key_set(provider.jwks())  # type: ignore[arg-type]
    token = jwt.decode(id_token, keys, algorithms=["RS256"])
    jwt.JWTClaimsRegistry(
        leeway=30,
        iss={"essential": True, "value": provider.issuer},
        aud={"essential": True, "value": client.client_id},
        sub={"essential": True},
        exp={"essential": True},
        iat={"essential": True},
        nonce={"essential": True, "value": nonce},
    ).validate(token.claims)
    return token


async def sign_in_for_tokens(provider: OidcProvider, client: OidcClient,
                             login: str) -> tuple[AuthorizationRequest, dict[str, Any]]:
    """The whole code flow over plain HTTP: the tokens the client gets."""
    request = authorization_request(provider, client)
    async with http_session() as session:
        back = await sign_in_over_http(session, request.url, login, client.redirect_uris[0])
    assert back.query.get("state") == request.state, back
    status, tokens = await exchange_code(provider, client, back.query["code"],
                                         request.code_verifier)
    assert status == 200, tokens
    return request, tokens


# --- discovery and keys ------------------------------------------------------------------


async def test_discovery_document_names_the_endpoints_and_pkce_s256(
    oidc_provider: OidcProvider,
) -> None:
    issuer = oidc_provider.issuer
    assert URL(issuer).host == "127.0.0.1"
    async with aiohttp.ClientSession() as session, session.get(
        f"{issuer}/.well-known/openid-configuration"
    ) as response:
        assert response.status == 200
        document = await response.json()
    assert document["issuer"] == issuer
    for endpoint in ("authorization_endpoint", "token_endpoint", "jwks_uri",
                     "userinfo_endpoint", "registration_endpoint"):
        assert document[endpoint].startswith(f"{issuer}/"), endpoint
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert document["response_types_supported"] == ["code"]
    assert {"client_secret_basic", "client_secret_post"} == set(
        document["token_endpoint_auth_methods_supported"]
    )
    assert {"openid", "email", "profile", "groups"} <= set(document["scopes_supported"])
    assert {"sub", "email", "name", "groups"} <= set(document["claims_supported"])
    assert "RS256" in document["id_token_signing_alg_values_supported"]


async def test_jwks_publishes_one_rsa_signing_key_and_no_private_part(
    oidc_provider: OidcProvider,
) -> None:
    async with aiohttp.ClientSession() as session, session.get(
        oidc_provider.endpoint("jwks_uri")
    ) as response:
        assert response.status == 200
        jwks = await response.json()
    [key] = jwks["keys"]
    assert key["kty"] == "RSA" and key["use"] == "sig" and key["alg"] == "RS256"
    assert key["kid"] and key["n"] and key["e"] == "AQAB"
    assert len(base64.urlsafe_b64decode(key["n"] + "==")) * 8 == 2048
    assert not {"d", "p", "q", "dp", "dq", "qi"} & key.keys()


# --- the code flow -----------------------------------------------------------------------


@pytest.fixture
async def redirect_target() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """A throwaway client page on loopback: its callback URL, and the queries it got."""
    received: list[dict[str, str]] = []

    async def callback(request: web.Request) -> web.Response:
        received.append(dict(request.query))
        return web.Response(text="<!DOCTYPE html><title>Client</title><h1>Back at the client</h1>",
                            content_type="text/html")

    app = web.Application()
    app.router.add_get("/callback", callback)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/callback", received
    await runner.cleanup()


async def test_chromium_signs_in_with_code_and_pkce_and_the_id_token_carries_groups(
    start_oidc_provider: Callable[..., OidcProvider],
    redirect_target: tuple[str, list[dict[str, str]]],
) -> None:
    """Real Chromium types an email into the provider's sign-in page; no consent screen; the
    code comes back to the client with the state; the token request with the PKCE verifier
    gives an ID token signed with the published key, with email, name and groups."""
    reason = browser_missing()
    if reason:
        skip_oidc(reason)
    from playwright.async_api import async_playwright

    callback_url, received = redirect_target
    client = OidcClient("gateway-test", "gateway-test-secret-0123456789", (callback_url,))
    provider = start_oidc_provider(clients=[client])
    request = authorization_request(provider, client)

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(**launch_options())
        try:
            page = await browser.new_page()
            await page.goto(request.url)
            await page.get_by_role("heading", name="Sign in").wait_for()
            assert await page.locator("#client").text_content() == client.client_id
            await page.get_by_label("Username or email").fill("alice@example.com")
            await page.get_by_role("button", name="Sign in").click()
            await page.get_by_role("heading", name="Back at the client").wait_for()
            assert page.url.startswith(callback_url + "?")
        finally:
            await browser.close()

    [query] = received
    assert query["state"] == request.state
    assert query["iss"] == provider.issuer  # RFC 9207
    assert "error" not in query
    status, tokens = await exchange_code(provider, client, query["code"], request.code_verifier)
    assert status == 200, tokens
    assert tokens["token_type"] == "Bearer" and tokens["access_token"]

    token = validated_id_token(provider, client, tokens["id_token"], request.nonce)
    assert token.header["alg"] == "RS256"
    assert token.header["kid"] == provider.jwks()["keys"][0]["kid"]
    claims = token.claims
    assert claims["sub"] == "alice"
    assert claims["email"] == "alice@example.com" and claims["email_verified"] is True
    assert claims["name"] == "Alice Manager"
    assert claims["groups"] == ["compliance-managers", "staff"]

    # A code is good once (RFC 6749 4.1.2).
    status, error = await exchange_code(provider, client, query["code"], request.code_verifier)
    assert status == 400 and error["error"] == "invalid_grant"


async def test_a_registered_client_posting_its_secret_gets_groups_at_userinfo_too(
    oidc_provider: OidcProvider,
) -> None:
    client = oidc_provider.add_client([UNUSED_REDIRECT], "client_secret_post")
    assert client.token_endpoint_auth_method == "client_secret_post"
    request, tokens = await sign_in_for_tokens(oidc_provider, client, "bob")

    claims = validated_id_token(oidc_provider, client, tokens["id_token"], request.nonce).claims
    assert (claims["sub"], claims["email"], claims["groups"]) == (
        "bob", "bob@example.com", ["gateway-admins"])
    async with aiohttp.ClientSession() as session, session.get(
        oidc_provider.endpoint("userinfo_endpoint"),
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
    ) as response:
        assert response.status == 200
        userinfo = await response.json()
    assert userinfo == {"sub": "bob", "email": "bob@example.com", "email_verified": True,
                        "name": "Bob Admin", "groups": ["gateway-admins"]}


async def test_a_person_in_no_group_gets_an_empty_groups_claim(
    oidc_provider_session: OidcProvider,
) -> None:
    provider = oidc_provider_session
    client = provider.add_client([UNUSED_REDIRECT])
    request, tokens = await sign_in_for_tokens(provider, client, "nina@example.com")
    claims = validated_id_token(provider, client, tokens["id_token"], request.nonce).claims
    assert claims["sub"] == "nina" and claims["groups"] == []
    with pytest.raises(RuntimeError, match="not rotated"):
        provider.rotate_keys()


@pytest.mark.parametrize("pkce", [None, "plain"])
async def test_an_authorization_request_without_s256_pkce_is_refused(
    oidc_provider_session: OidcProvider, pkce: str | None
) -> None:
    client = oidc_provider_session.add_client([UNUSED_REDIRECT])
    request = authorization_request(oidc_provider_session, client, pkce=pkce)
    async with http_session() as session:
        back = await sign_in_over_http(session, request.url, "alice", UNUSED_REDIRECT)
    assert back.query["error"] == "invalid_request", back
    assert "code" not in back.query and back.query["state"] == request.state


async def test_a_code_without_its_verifier_or_with_a_wrong_secret_gets_no_tokens(
    oidc_provider: OidcProvider,
) -> None:
    client = oidc_provider.add_client([UNUSED_REDIRECT])
    for attempt in ("wrong verifier", "wrong secret"):
        request = authorization_request(oidc_provider, client)
        async with http_session() as session:
            back = await sign_in_over_http(session, request.url, "alice", UNUSED_REDIRECT)
        if attempt == "wrong verifier":
            status, error = await exchange_code(oidc_provider, client, back.query["code"],
                                                secrets.token_urlsafe(48))
            assert (status, error["error"]) == (400, "invalid_grant"), attempt
        else:
            wrong = OidcClient(client.client_id, "not-the-secret", client.redirect_uris)
            status, error = await exchange_code(oidc_provider, wrong, back.query["code"],
                                                request.code_verifier)
            assert (status, error["error"]) == (401, "invalid_client"), attempt


async def test_an_unknown_login_shows_the_form_again_and_cancel_denies_access(
    oidc_provider: OidcProvider,
) -> None:
    client = oidc_provider.add_client([UNUSED_REDIRECT])
    request = authorization_request(oidc_provider, client)
    async with http_session() as session:
        async with session.get(request.url) as response:
            assert response.status == 200
            form_url = response.url
        async with session.post(f"{form_url}/login", data={"login": "mallory@example.com"}
                                ) as response:
            assert response.status == 400
            page = await response.text()
        assert "Unknown account" in page and 'name="login"' in page
        async with session.post(f"{form_url}/abort", allow_redirects=False) as response:
            assert response.status == 303
            resumed = response.url.join(URL(response.headers["Location"]))
        back = await sign_in_over_http(session, str(resumed), "unused", UNUSED_REDIRECT)
    assert back.query["error"] == "access_denied" and back.query["state"] == request.state


# --- key rotation ------------------------------------------------------------------------


async def test_after_a_key_rotation_new_tokens_carry_the_new_kid_and_both_keys_are_published(
    oidc_provider: OidcProvider,
) -> None:
    client = oidc_provider.add_client([UNUSED_REDIRECT])
    old_request, old_tokens = await sign_in_for_tokens(oidc_provider, client, "alice")
    [old_key] = oidc_provider.jwks()["keys"]
    old_token = validated_id_token(oidc_provider, client, old_tokens["id_token"],
                                   old_request.nonce)
    assert old_token.header["kid"] == old_key["kid"]

    new_kid = oidc_provider.rotate_keys()
    assert new_kid != old_key["kid"]
    assert [k["kid"] for k in oidc_provider.jwks()["keys"]] == [new_kid, old_key["kid"]]
    request, tokens = await sign_in_for_tokens(oidc_provider, client, "alice")
    token = validated_id_token(oidc_provider, client, tokens["id_token"], request.nonce)
    assert token.header["kid"] == new_kid and token.claims["groups"] == [
        "compliance-managers", "staff"]
    # The earlier token still verifies: its key is still published.
    validated_id_token(oidc_provider, client, old_tokens["id_token"], old_request.nonce)

    # Retiring: only the newest key is published, and a token of an earlier key no longer
    # verifies against the JWKS (its kid is not there).
    newest = oidc_provider.rotate_keys(retire=True)
    assert [k["kid"] for k in oidc_provider.jwks()["keys"]] == [newest]
    with pytest.raises(InvalidKeyIdError):
        validated_id_token(oidc_provider, client, tokens["id_token"], request.nonce)
    request, tokens = await sign_in_for_tokens(oidc_provider, client, "alice")
    assert validated_id_token(oidc_provider, client, tokens["id_token"],
                              request.nonce).header["kid"] == newest


async def test_the_provider_can_be_stopped_like_an_idp_that_is_down(
    oidc_provider: OidcProvider,
) -> None:
    issuer = oidc_provider.issuer
    assert oidc_provider.startup_s < 10, oidc_provider.startup_s
    oidc_provider.stop()
    assert not oidc_provider.running
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(f"{issuer}/.well-known/openid-configuration")
