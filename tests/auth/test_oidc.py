"""The OpenID Connect relying party's checks of what an issuer answers (OpenID Connect Core
§3.1.3.7), each bad ID token refused.

The real OpenID Provider (tests/sso) cannot be made to sign a forged, expired or misaddressed
token, so here a small issuer on loopback publishes discovery, a JWKS and a token endpoint that
answers with whatever token the test made, signed with keys the test holds.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from joserfc import jwt
from joserfc.jwk import KeySet, OctKey, RSAKey

from gateway.auth.oidc import (
    CLOCK_SKEW_S,
    OidcClient,
    PendingSignIn,
    ProviderUnreachable,
    SignInFailed,
)
from gateway.config.sso import OidcProvider
from gateway.model import Role

CLIENT_ID, CLIENT_SECRET = "gateway", "client-secret-0123456789abcdef"
NOW = 1_900_000_000


@dataclass
class Issuer:
    """What the loopback issuer publishes and answers; a test changes it before signing in."""

    keys: list[RSAKey] = field(default_factory=lambda: [
        RSAKey.generate_key(2048, parameters={"kid": "k1", "alg": "RS256", "use": "sig"})])
    id_token: str = ""
    userinfo: dict[str, Any] = field(default_factory=dict)
    token_error: dict[str, Any] | None = None
    discovery_changes: dict[str, Any] = field(default_factory=dict)
    base: str = ""
    seen_token_requests: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()

        async def discovery(_: web.Request) -> web.Response:
            return web.json_response({
                "issuer": self.base,
                "authorization_endpoint": f"{self.base}/auth",
                "token_endpoint": f"{self.base}/token",
                "jwks_uri": f"{self.base}/jwks",
                "userinfo_endpoint": f"{self.base}/me",
                "id_token_signing_alg_values_supported": ["RS256", "HS256", "none"],
                **self.discovery_changes,
            })

        async def jwks(_: web.Request) -> web.Response:
            return web.json_response(KeySet(self.keys).as_dict(private=False))

        async def token(request: web.Request) -> web.Response:
            self.seen_token_requests.append(
                {"form": dict(await request.post()), "auth": request.headers.get("Authorization")})
            if self.token_error is not None:
                return web.json_response(self.token_error, status=400)
            return web.json_response({"id_token": self.id_token, "access_token": "at",
                                      "token_type": "Bearer"})

        async def userinfo(_: web.Request) -> web.Response:
            return web.json_response(self.userinfo)

        app.router.add_get("/.well-known/openid-configuration", discovery)
        app.router.add_get("/jwks", jwks)
        app.router.add_post("/token", token)
        app.router.add_get("/me", userinfo)
        return app

    def claims(self, expected_nonce: str, **changes: Any) -> dict[str, Any]:
        claims = {"iss": self.base, "sub": "u1", "aud": CLIENT_ID, "exp": NOW + 300,
                  "iat": NOW, "nonce": expected_nonce, "email": "katie@acme.example",
                  "email_verified": True, "name": "Katie", "groups": ["managers"]}
        claims.update(changes)
        return {k: v for k, v in claims.items() if v is not None}

    def sign(self, claims: dict[str, Any], key: RSAKey | None = None, kid: str = "k1") -> str:
        return jwt.encode({"alg": "RS256", "kid": kid}, claims, key or self.keys[0])


@pytest.fixture
async def issuer() -> AsyncIterator[tuple[Issuer, Callable[..., OidcClient]]]:
    state = Issuer()
    server = TestServer(state.app(), host="127.0.0.1")
    await server.start_server()
    state.base = str(server.make_url("")).rstrip("/")
    sessions: list[aiohttp.ClientSession] = []

    def client(**changes: Any) -> OidcClient:
        session = aiohttp.ClientSession()
        sessions.append(session)
        provider = OidcProvider(
            **{"name": "t", "issuer": state.base, "client_id": CLIENT_ID,
               "client_secret": CLIENT_SECRET, "roles": {"managers": Role.MANAGER},
               **changes})
        return OidcClient(provider, "https://gw.example/auth/oidc/t/callback",
                          lambda: session, now=lambda: NOW)

    yield state, client
    for session in sessions:
        await session.close()
    await server.close()


async def finish(issuer: Issuer, client: OidcClient, **claim_changes: Any) -> Any:
    pending = PendingSignIn.new()
    issuer.id_token = issuer.sign(issuer.claims(pending.nonce, **claim_changes))
    return await client.finish("code-1", pending)


async def test_a_good_token_says_who_signed_in(issuer) -> None:
    state, client = issuer
    signed_in = await finish(state, client())
    assert (signed_in.subject, signed_in.email, signed_in.name, signed_in.groups) == (
        "u1", "katie@acme.example", "Katie", ("managers",))
    [request] = state.seen_token_requests
    assert request["form"]["grant_type"] == "authorization_code"
    assert request["form"]["code_verifier"] and "client_secret" not in request["form"]
    assert base64.b64decode(request["auth"].split()[1]).decode() == f"{CLIENT_ID}:{CLIENT_SECRET}"


async def test_client_secret_post_sends_the_secret_in_the_form(issuer) -> None:
    state, client = issuer
    await finish(state, client(client_auth="client_secret_post"))
    [request] = state.seen_token_requests
    assert request["auth"] is None and request["form"]["client_secret"] == CLIENT_SECRET


def wrong(problem: str, **claim_changes: Any) -> Any:
    return pytest.param(claim_changes, problem, id=problem)


@pytest.mark.parametrize(("changes", "problem"), [
    wrong("another issuer", iss="https://evil.example"),
    wrong("another audience", aud="someone-else"),
    wrong("several audiences without azp", aud=[CLIENT_ID, "other"]),
    wrong("several audiences, azp another", aud=[CLIENT_ID, "other"], azp="other"),
    wrong("expired beyond the skew", exp=NOW - CLOCK_SKEW_S - 1),
    wrong("issued in the future", iat=NOW + CLOCK_SKEW_S + 60),
    wrong("no nonce", nonce=None),
    wrong("another nonce", nonce="n" * 43),
    wrong("no subject", sub=None),
    wrong("no expiry", exp=None),
    wrong("an unverified email", email_verified=False),
    wrong("email_verified given as a string", email_verified="false"),
    wrong("an email with a line break", email="katie@acme.example\r\nBcc: x@y.example"),
    wrong("azp another client with one audience", azp="other"),
    wrong("groups that are not names", groups=[1, 2]),
])
async def test_a_token_that_does_not_prove_this_sign_in_is_refused(
    issuer, changes: dict[str, Any], problem: str
) -> None:
    state, client = issuer
    pending = PendingSignIn.new()
    claims = state.claims(pending.nonce, **changes)
    for name, value in changes.items():
        if value is None:
            claims.pop(name, None)
    state.id_token = state.sign(claims)
    with pytest.raises(SignInFailed):
        await client().finish("code-1", pending)


async def test_an_issuer_written_with_a_trailing_slash_is_matched_exactly(issuer) -> None:
    state, client = issuer
    slashed = f"{state.base}/"
    state.discovery_changes = {"issuer": slashed}
    assert (await finish(state, client(issuer=slashed), iss=slashed)).subject == "u1"
    with pytest.raises(SignInFailed):
        await finish(state, client(issuer=slashed))  # iss without the slash: another issuer


async def test_expiry_within_the_clock_skew_is_accepted(issuer) -> None:
    state, client = issuer
    assert (await finish(state, client(), exp=NOW - CLOCK_SKEW_S + 5)).subject == "u1"


def _unsigned(claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


@pytest.mark.parametrize("forgery", ["another key, same kid", "unknown kid", "alg none",
                                     "HS256 with the client secret", "garbage"])
async def test_a_forged_token_is_refused(issuer, forgery: str) -> None:
    state, client = issuer
    pending = PendingSignIn.new()
    claims = state.claims(pending.nonce)
    stranger = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    state.id_token = {
        "another key, same kid": lambda: state.sign(claims, stranger),
        "unknown kid": lambda: state.sign(claims, stranger, kid="k9"),
        "alg none": lambda: _unsigned(claims),
        "HS256 with the client secret": lambda: jwt.encode(
            {"alg": "HS256", "kid": "k1"}, claims, OctKey.import_key(CLIENT_SECRET),
            algorithms=["HS256"]),
        "garbage": lambda: "not.a.token",
    }[forgery]()
    with pytest.raises(SignInFailed, match="not validly signed"):
        await client().finish("code-1", pending)


async def test_a_new_signing_key_is_fetched_when_a_token_names_it(issuer) -> None:
    state, client = issuer
    oidc = client()
    await finish(state, oidc)
    rotated = RSAKey.generate_key(2048, parameters={"kid": "k2", "alg": "RS256", "use": "sig"})
    state.keys = [rotated]
    pending = PendingSignIn.new()
    state.id_token = state.sign(state.claims(pending.nonce, sub="u2"), rotated, kid="k2")
    assert (await oidc.finish("code-2", pending)).subject == "u2"


async def test_what_the_id_token_lacks_comes_from_userinfo_for_the_same_subject(issuer) -> None:
    state, client = issuer
    state.userinfo = {"sub": "u1", "email": "katie@acme.example", "groups": "managers"}
    signed_in = await finish(state, client(), email=None, groups=None)
    assert (signed_in.email, signed_in.groups) == ("katie@acme.example", ("managers",))
    state.userinfo = {"sub": "someone-else", "email": "boss@acme.example"}
    with pytest.raises(SignInFailed, match="someone else"):
        await finish(state, client(), email=None)


async def test_no_groups_claim_anywhere_is_none_not_an_empty_list(issuer) -> None:
    state, client = issuer
    state.userinfo = {"sub": "u1"}
    assert (await finish(state, client(), groups=None)).groups is None
    assert (await finish(state, client(), groups=[])).groups == ()


async def test_the_token_endpoints_refusal_is_reported(issuer) -> None:
    state, client = issuer
    state.token_error = {"error": "invalid_grant", "error_description": "code expired"}
    with pytest.raises(SignInFailed, match=r"invalid_grant.*code expired"):
        await finish(state, client())


@pytest.mark.parametrize("changes", [
    {"issuer": "https://evil.example"},
    {"token_endpoint": "http://idp.example/token"},  # plain http off loopback
    {"id_token_signing_alg_values_supported": ["HS256"]},
])
async def test_a_discovery_document_that_cannot_be_trusted_stops_sign_in(
    issuer, changes: dict[str, Any]
) -> None:
    state, client = issuer
    state.discovery_changes = changes
    with pytest.raises(ProviderUnreachable):
        await client().authorization_url(PendingSignIn.new())


async def test_the_authorization_request_asks_for_pkce_s256_state_and_nonce(issuer) -> None:
    _, client = issuer
    pending = PendingSignIn.new()
    url = await client().authorization_url(pending)
    query = dict(part.split("=", 1) for part in url.split("?", 1)[1].split("&"))
    assert query["code_challenge_method"] == "S256"
    assert query["code_challenge"] == pending.code_challenge != pending.code_verifier
    assert query["state"] == pending.state and query["nonce"] == pending.nonce
    assert query["scope"] == "openid+email+profile" and query["response_type"] == "code"
    assert PendingSignIn.from_cookie(pending.cookie_value()) == pending
    assert PendingSignIn.from_cookie("a.b.c") is None


async def test_an_issuer_that_is_down_is_unreachable() -> None:
    provider = OidcProvider("t", "http://127.0.0.1:9", CLIENT_ID, CLIENT_SECRET,
                            {"m": Role.MANAGER})
    async with aiohttp.ClientSession() as session:
        client = OidcClient(provider, "https://gw.example/cb", lambda: session, time.time)
        with pytest.raises(ProviderUnreachable, match="could not be reached"):
            await client.authorization_url(PendingSignIn.new())
