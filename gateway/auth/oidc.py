"""OpenID Connect relying party: authorization code flow with PKCE (S256), `state`, `nonce`.

The ID token is the only evidence of who signed in, so it is checked the way OpenID
Connect Core §3.1.3.7 says: signed by a key the issuer publishes (its JWKS, fetched again
when a token names a key not seen yet, so the issuer may rotate keys at any time), with an
asymmetric algorithm (never `none`, never a shared-secret MAC), issued by exactly the
configured issuer, for this client, carrying the nonce of this browser's sign-in, and
within its lifetime give or take `CLOCK_SKEW_S`. JOSE is joserfc's (Authlib's maintained
JOSE library); the HTTP is aiohttp's.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import aiohttp
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from gateway.addresses import InvalidAddress, normalized_email
from gateway.config.sso import OidcProvider, is_loopback_host

CLOCK_SKEW_S = 120
SCOPES = "openid email profile"
# Asymmetric signatures only: an HS256 token would be signed with the client secret, which
# a leaked configuration would let anyone forge.
SIGNING_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
                      "ES512", "EdDSA")
HTTP_TIMEOUT_S = 10.0
DISCOVERY_TTL_S = 3600.0
MAX_RESPONSE_BYTES = 1024 * 1024
PENDING_PART = re.compile(r"[A-Za-z0-9_-]{43,64}")


class SignInFailed(Exception):
    """The identity provider's answer does not prove who signed in; the message says why
    in words a person can act on."""


class ProviderUnreachable(Exception):
    """The identity provider could not be asked (down, slow, or answering nonsense)."""


@dataclass(frozen=True)
class PendingSignIn:
    """What one browser's sign-in must be finished with: kept in a short-lived cookie."""

    state: str
    code_verifier: str
    nonce: str

    @classmethod
    def new(cls) -> PendingSignIn:
        return cls(*(secrets.token_urlsafe(32) for _ in range(3)))

    def cookie_value(self) -> str:
        return f"{self.state}.{self.code_verifier}.{self.nonce}"

    @classmethod
    def from_cookie(cls, value: str) -> PendingSignIn | None:
        parts = value.split(".")
        if len(parts) != 3 or not all(PENDING_PART.fullmatch(p) for p in parts):
            return None
        return cls(*parts)

    @property
    def code_challenge(self) -> str:
        digest = hashlib.sha256(self.code_verifier.encode("ascii")).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class SignedIn:
    """Who the ID token (and userinfo, for what it lacks) says signed in."""

    subject: str
    email: str
    name: str
    groups: tuple[str, ...] | None  # None: the provider sent no such claim


def _endpoint(document: dict[str, Any], name: str, *, required: bool = True) -> str:
    value = document.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise ProviderUnreachable(f"its discovery document has no {name}")
    parts = urlsplit(value)
    if parts.scheme == "https" or (parts.scheme == "http"
                                   and is_loopback_host(parts.hostname or "")):
        return value
    raise ProviderUnreachable(f"its {name} is not an https URL")


@dataclass(frozen=True)
class Discovery:
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str
    algorithms: tuple[str, ...]

    @classmethod
    def from_document(cls, document: dict[str, Any], issuer: str) -> Discovery:
        if document.get("issuer") != issuer:
            raise ProviderUnreachable(
                f"its discovery document names issuer {document.get('issuer')!r}, "
                f"not the configured {issuer!r}"
            )
        offered = document.get("id_token_signing_alg_values_supported") or ["RS256"]
        algorithms = tuple(a for a in SIGNING_ALGORITHMS if a in offered)
        if not algorithms:
            raise ProviderUnreachable("it signs ID tokens with no asymmetric algorithm")
        return cls(
            _endpoint(document, "authorization_endpoint"),
            _endpoint(document, "token_endpoint"),
            _endpoint(document, "jwks_uri"),
            _endpoint(document, "userinfo_endpoint", required=False),
            algorithms,
        )


class OidcClient:
    """One configured provider. Discovery is cached for an hour, keys until a token names
    one not among them."""

    def __init__(
        self, provider: OidcProvider, redirect_uri: str,
        http: Callable[[], aiohttp.ClientSession], now: Callable[[], float] = time.time,
    ) -> None:
        self.provider = provider
        self.redirect_uri = redirect_uri
        self._http = http
        self._now = now
        self._discovery: Discovery | None = None
        self._discovered_at = 0.0
        self._keys: KeySet | None = None
        self._lock = asyncio.Lock()

    async def _get_json(self, url: str, **kwargs: Any) -> dict[str, Any]:
        return await self._json("GET", url, **kwargs)

    async def _json(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        try:
            async with self._http().request(
                method, url, timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S),
                allow_redirects=False, **kwargs,
            ) as response:
                body = await response.content.read(MAX_RESPONSE_BYTES + 1)
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ProviderUnreachable(f"{urlsplit(url).netloc} could not be reached "
                                      f"({type(exc).__name__})") from None
        if len(body) > MAX_RESPONSE_BYTES:
            raise ProviderUnreachable(f"{urlsplit(url).path} answered with too much")
        try:
            document = json.loads(body) if body else {}
        except ValueError:
            document = None
        if not isinstance(document, dict):
            raise ProviderUnreachable(f"{urlsplit(url).path} answered {status} without JSON")
        if status >= 400:
            raise SignInFailed(
                f"the identity provider refused: {document.get('error', status)}"
                + (f" ({document['error_description']})"
                   if isinstance(document.get("error_description"), str) else "")
            )
        return document

    async def discovery(self) -> Discovery:
        async with self._lock:
            if self._discovery is None or self._now() - self._discovered_at > DISCOVERY_TTL_S:
                document = await self._get_json(
                    f"{self.provider.issuer.rstrip('/')}/.well-known/openid-configuration"
                )
                self._discovery = Discovery.from_document(document, self.provider.issuer)
                self._discovered_at = self._now()
            return self._discovery

    async def authorization_url(self, pending: PendingSignIn) -> str:
        discovery = await self.discovery()
        query = urlencode({
            "response_type": "code",
            "client_id": self.provider.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": SCOPES,
            "state": pending.state,
            "nonce": pending.nonce,
            "code_challenge": pending.code_challenge,
            "code_challenge_method": "S256",
        })
        separator = "&" if urlsplit(discovery.authorization_endpoint).query else "?"
        return f"{discovery.authorization_endpoint}{separator}{query}"

    async def finish(self, code: str, pending: PendingSignIn) -> SignedIn:
        """Trades the code for tokens and says who they prove signed in."""
        discovery = await self.discovery()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "code_verifier": pending.code_verifier,
        }
        headers = {"Accept": "application/json"}
        if self.provider.client_auth == "client_secret_post":
            form |= {"client_id": self.provider.client_id,
                     "client_secret": self.provider.client_secret}
        else:  # RFC 6749 §2.3.1: each part form-encoded before Basic's base64
            pair = f"{quote(self.provider.client_id, safe='')}:" \
                   f"{quote(self.provider.client_secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        tokens = await self._json("POST", discovery.token_endpoint, data=form, headers=headers)
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise SignInFailed("the identity provider sent no ID token")
        claims = await self.verified_claims(id_token, pending.nonce, discovery)
        access_token = tokens.get("access_token")
        return await self._signed_in(claims, access_token, discovery)

    async def verified_claims(
        self, id_token: str, nonce: str, discovery: Discovery
    ) -> dict[str, Any]:
        keys = await self._key_set(discovery, refresh=False)
        try:
            token = jwt.decode(id_token, keys, algorithms=list(discovery.algorithms))
        except (JoseError, ValueError) as exc:
            # A key not seen yet: the issuer rotated (ID tokens come only from its token
            # endpoint, so a stranger cannot make the gateway fetch at will).
            if not isinstance(exc, InvalidKeyIdError):
                raise SignInFailed(f"the ID token is not validly signed ({_why(exc)})") from None
            keys = await self._key_set(discovery, refresh=True)
            try:
                token = jwt.decode(id_token, keys, algorithms=list(discovery.algorithms))
            except (JoseError, ValueError) as again:
                raise SignInFailed(
                    f"the ID token is not validly signed ({_why(again)})"
                ) from None
        claims = dict(token.claims)
        registry = jwt.JWTClaimsRegistry(
            now=int(self._now()), leeway=CLOCK_SKEW_S,
            iss={"essential": True, "value": self.provider.issuer},
            sub={"essential": True},
            aud={"essential": True, "value": self.provider.client_id},
            exp={"essential": True},
            iat={"essential": True},
            nonce={"essential": True, "value": nonce},
        )
        try:
            registry.validate(claims)
        except JoseError as exc:
            raise SignInFailed(f"the ID token is not for this sign-in ({_why(exc)})") from None
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        azp = claims.get("azp")
        if (len(audiences) > 1 or azp is not None) and azp != self.provider.client_id:
            raise SignInFailed("the ID token was issued to another client (azp)")
        if not isinstance(claims.get("iat"), int | float) or (
            claims["iat"] > self._now() + CLOCK_SKEW_S
        ):
            raise SignInFailed("the ID token was issued in the future")
        return claims

    async def _key_set(self, discovery: Discovery, *, refresh: bool) -> KeySet:
        async with self._lock:
            if self._keys is None or refresh:
                document = await self._get_json(discovery.jwks_uri)
                try:
                    self._keys = KeySet.import_key_set(document)  # type: ignore[arg-type]
                except (JoseError, ValueError, TypeError, KeyError) as exc:
                    raise ProviderUnreachable(f"its JWKS could not be read ({_why(exc)})") from None
            return self._keys

    async def _signed_in(
        self, claims: dict[str, Any], access_token: object, discovery: Discovery
    ) -> SignedIn:
        role_claim = self.provider.role_claim
        if ("email" not in claims or role_claim not in claims) and isinstance(access_token, str) \
                and discovery.userinfo_endpoint:
            info = await self._get_json(
                discovery.userinfo_endpoint, headers={"Authorization": f"Bearer {access_token}"}
            )
            if info.get("sub") != claims["sub"]:
                raise SignInFailed("the userinfo endpoint answered for someone else")
            claims = {**info, **claims}
        email = claims.get("email")
        if not isinstance(email, str) or "@" not in email:
            raise SignInFailed("the identity provider gave no email address")
        try:
            normalized_email(email)  # validated; passed on as sent (People keys it)
        except InvalidAddress:
            raise SignInFailed("the identity provider gave an invalid email address") from None
        # Absent is accepted (Entra ID sends no email_verified); anything but true is not.
        if "email_verified" in claims and claims["email_verified"] is not True:
            raise SignInFailed("the identity provider has not verified this email address")
        groups = claims.get(role_claim)
        if isinstance(groups, str):
            groups = [groups]
        if groups is not None and (
            not isinstance(groups, list) or not all(isinstance(g, str) for g in groups)
        ):
            raise SignInFailed(f"the {role_claim!r} claim is not a list of group names")
        name = claims.get("name")
        return SignedIn(
            subject=str(claims["sub"]), email=email,
            name=name if isinstance(name, str) else "",
            groups=None if groups is None else tuple(groups),
        )


def _why(exc: Exception) -> str:
    return getattr(exc, "description", "") or type(exc).__name__
