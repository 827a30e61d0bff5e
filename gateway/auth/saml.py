"""SAML 2.0 sign-in (`[[sso.saml]]`): the service provider's side, with python3-saml, no HTTP.

For each provider the gateway is a service provider (SP) with the entity id
`public_url + /auth/saml/{name}/metadata` (where its metadata is served) and one assertion
consumer service (ACS, HTTP-POST binding) at `public_url + /auth/saml/{name}/acs`. Both come
from `public_url` alone, never from the request's Host or scheme: TLS may end at a proxy, and
a Host header is the client's to choose.

What a Response must be to sign someone in (`verify_response`):

- python3-saml in strict mode: schema-valid, one assertion, status Success, issued by the
  IdP of the metadata, the assertion signed (`wantAssertionsSigned`) by a certificate the
  IdP's metadata lists (several during a certificate rollover), a Response signature verified
  as well when there is one, SHA-1 refused (`rejectDeprecatedAlgorithm`), no DTDs.
- Checked here as well, where python3-saml is lenient: an audience restriction must be
  present and name our entity id (the library accepts an assertion without one); the
  SubjectConfirmationData Recipient must be our ACS URL exactly (the library accepts any
  Recipient that contains it) and carry NotOnOrAfter and InResponseTo; a Destination, when
  present, must be our ACS URL exactly (the library compares prefixes); every instant is
  held to our clock within `CLOCK_SKEW_S` (the library allows 300 s on Conditions).

Binding a Response to the AuthnRequest this gateway sent to this browser, on any replica
(`SamlSignIn`). There is no IdP-initiated sign-in. The store, shared by the replicas, keeps
one-time marks and the key nonces are made with:

1. `/login` gives the browser a nonce (cookie `__Host-saml_request` when `public_url` is https,
   so that no sibling subdomain or plain-http page can plant one; `saml_request` on an http
   loopback address. HttpOnly, Secure, Path=/, no Domain, SameSite=None since the IdP's POST
   to the ACS is cross-site and a Lax cookie would stay behind; `REQUEST_LIFETIME_S`) and
   records the mark `saml-request:{name}:{request id}:{sha256(nonce)}` until the request
   expires. The provider's name is in the mark, so one cookie serves every provider. A
   nonce is random with an HMAC under a key generated once into the store
   (`NONCE_KEY_SETTING`): `/login` reuses the browser's nonce (two sign-ins begun in two
   tabs both work) only when it is one the gateway made, else it makes a new one.
2. The ACS refuses a post without such a nonce before reading it (not audited: nothing
   identifies anyone, and anyone may send one). It reads the request id from the signed
   assertion (SubjectConfirmationData InResponseTo: the Response's own InResponseTo is not
   signed unless the whole Response is).
3. The assertion's ID is used once: `saml:{name}:{assertion id}` until the
   SubjectConfirmationData NotOnOrAfter plus twice the skew (a replica whose clock is ahead
   by up to the skew must not forget it while another would still accept it).
4. The request mark is taken (`take_once`: removed if it is there and not expired, never
   written): an unsolicited response, one to a request never made, made in another browser,
   expired, or answered already finds none. Taking it also makes each request answerable
   once; and since the ACS only ever removes request marks, a replica whose clock is behind
   another's cannot make one appear.

So a replayed response, one planted in someone else's browser (login CSRF), or one the IdP
sends unasked is refused on every replica. The nonce never leaves the browser and the gateway:
the store holds only its hash.

A refusal carries the words shown to the person (`problem`), the check's or library's own
words for the log (`detail`, which may quote the posted document), and `reason`, a short
phrase from a fixed vocabulary (ours, or python3-saml's error code names) for the audit log,
which must never carry text a sender chose.

Times: the IdP stamps assertions with real time, so these checks use real time (`wall`),
not the gateway's clock, which `--now` may shift; the marks are kept in the gateway's clock,
as every other user of the store's marks keeps them.

IdP metadata comes from a file (read with the configuration: bad metadata stops start-up,
ConfigError naming `sso.saml[i].idp_metadata`) or a URL (`IdpMetadataSource`: fetched when
the gateway starts; if that fails the gateway still starts, logs the error, and sign-in with
that provider shows a clear page until a fetch succeeds, tried again at most every
`METADATA_RETRY_S`; a good copy is re-read every `METADATA_REFRESH_S`, and kept if the
re-read fails; a signature that none of its certificates verifies has it re-read at once (at
most every `METADATA_RETRY_S`), so an IdP that switched to a new signing certificate is
followed within a sign-in).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from lxml import etree
from onelogin.saml2.auth import OneLogin_Saml2_Auth
from onelogin.saml2.constants import OneLogin_Saml2_Constants
from onelogin.saml2.errors import OneLogin_Saml2_Error, OneLogin_Saml2_ValidationError
from onelogin.saml2.idp_metadata_parser import OneLogin_Saml2_IdPMetadataParser
from onelogin.saml2.response import OneLogin_Saml2_Response
from onelogin.saml2.settings import OneLogin_Saml2_Settings
from onelogin.saml2.utils import OneLogin_Saml2_Utils

from gateway.addresses import InvalidAddress, normalized_email
from gateway.config.errors import ConfigError
from gateway.config.sso import SamlProvider
from gateway.runtime.logs import log_event
from gateway.store.base import OneTimeMarks, SharedSettings

log = logging.getLogger("gateway.auth.saml")

# How far the IdP's clock may be from ours, for every instant in an assertion.
CLOCK_SKEW_S = 120
# How long an AuthnRequest may be answered (and the browser's nonce cookie lives).
REQUEST_LIFETIME_S = 600
# The largest SAMLResponse form field accepted (base64): real responses are a few KiB, those
# with hundreds of groups a few hundred.
MAX_RESPONSE_CHARS = 512 * 1024
# IdP metadata from a URL: fetched within, at most this large, re-read after, retried after.
METADATA_TIMEOUT_S = 10.0
METADATA_MAX_BYTES = 2 * 1024 * 1024
METADATA_REFRESH_S = 3600.0
METADATA_RETRY_S = 30.0

# The browser's nonce: `__Host-` (Secure, Path=/, no Domain: no other host can set it) when
# public_url is https; the plain name on an http loopback address, which cannot take it.
BINDING_COOKIE = "saml_request"
HOST_BINDING_COOKIE = "__Host-saml_request"
# The key nonces are made with, generated once into the store (SharedSettings).
NONCE_KEY_SETTING = "key:saml-nonce"
_NONCE_RANDOM_BYTES = 16
_NONCE_MAC_BYTES = 16
NONCE_CHARS = 44  # two unpadded base64url halves of 22 characters
# Where /login sends the browser back to after sign-in (python3-saml always sends a
# RelayState; the ACS ignores it and always continues to /review).
RELAY_STATE = "/review"

NAMEID_EMAIL = OneLogin_Saml2_Constants.NAMEID_EMAIL_ADDRESS
NAMEID_UNSPECIFIED = OneLogin_Saml2_Constants.NAMEID_UNSPECIFIED
BINDING_REDIRECT = OneLogin_Saml2_Constants.BINDING_HTTP_REDIRECT
BINDING_POST = OneLogin_Saml2_Constants.BINDING_HTTP_POST
# Attributes a display name is read from, in order (Okta/OneLogin, then Entra ID).
DISPLAY_NAME_ATTRIBUTES = (
    "displayName",
    "http://schemas.microsoft.com/identity/claims/displayname",
    "name",
)
DEFAULT_EMAIL_ATTRIBUTE = "email"
MAX_GROUPS = 1000

_NS = {
    "samlp": OneLogin_Saml2_Constants.NS_SAMLP,
    "saml": OneLogin_Saml2_Constants.NS_SAML,
}
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_WHITESPACE = re.compile(r"\s+")
_NONCE = re.compile(r"[A-Za-z0-9_-]+")
# python3-saml's error codes by name: the only words of the library's an audit entry carries.
_VALIDATION_CODES = {code: name for name, code in vars(OneLogin_Saml2_ValidationError).items()
                     if name.isupper() and isinstance(code, int)}
_ERROR_CODES = {code: name for name, code in vars(OneLogin_Saml2_Error).items()
                if name.isupper() and isinstance(code, int)}


class SamlStore(OneTimeMarks, SharedSettings, Protocol):
    """What sign-in keeps in the store: one-time marks and the nonce key."""


class SamlRefused(Exception):
    """A sign-in refused. `problem` is for the person (and the audit log), `detail` the
    library's or check's words for the log (they may quote the request); `reason` a fixed
    phrase of our code's for the audit log (never the request's text); `status` the HTTP
    status to answer with."""

    def __init__(self, problem: str, status: int = 403, detail: str = "", *,
                 reason: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.status = status
        self.detail = detail or problem
        self.reason = reason


class MetadataError(ValueError):
    """IdP metadata that cannot be used (what is wrong with it)."""


class IdpUnavailable(SamlRefused):
    """The IdP's metadata could not be had: sign-in with this provider waits for it."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(
            f"sign-in with {name!r} is not available just now: the gateway could not read the "
            "identity provider's metadata. Sending is not affected; please try again in a few "
            "minutes, and tell your administrator if it persists",
            503,
            detail,
            reason="identity provider metadata unavailable",
        )


# -- URLs and settings ---------------------------------------------------------------------


def sp_entity_id(public_url: str, name: str) -> str:
    return f"{public_url.rstrip('/')}/auth/saml/{name}/metadata"


def acs_url(public_url: str, name: str) -> str:
    return f"{public_url.rstrip('/')}/auth/saml/{name}/acs"


@dataclass(frozen=True)
class IdpMetadata:
    entity_id: str
    sso_url: str
    signing_certs: tuple[str, ...]  # base64 DER, as metadata carries them


def parse_idp_metadata(xml: str | bytes) -> IdpMetadata:
    """The IdP's entity id, HTTP-Redirect single sign-on URL and signing certificates (the
    first IDPSSODescriptor of the document); MetadataError saying what is missing."""
    try:
        parsed = OneLogin_Saml2_IdPMetadataParser.parse(xml, required_sso_binding=BINDING_REDIRECT)
    except Exception as exc:  # the parser raises lxml's, defusedxml-style and its own errors
        raise MetadataError(f"not readable SAML metadata ({type(exc).__name__}: {exc})") from None
    idp = parsed.get("idp")
    if not idp or not idp.get("entityId"):
        raise MetadataError("no IDPSSODescriptor with an entityID (is this IdP metadata?)")
    sso = (idp.get("singleSignOnService") or {}).get("url")
    if not sso:
        raise MetadataError("no SingleSignOnService with the HTTP-Redirect binding")
    if urlsplit(sso).scheme not in ("https", "http"):
        raise MetadataError(f"the SingleSignOnService location {sso!r} is not an http(s) URL")
    certs = tuple((idp.get("x509certMulti") or {}).get("signing") or ())
    if not certs and idp.get("x509cert"):
        certs = (idp["x509cert"],)
    if not certs:
        raise MetadataError("no signing certificate (KeyDescriptor use=\"signing\")")
    return IdpMetadata(idp["entityId"], sso, certs)


def sp_settings(name: str, public_url: str) -> dict[str, Any]:
    """python3-saml settings for our side: strict, signed assertions wanted, SHA-1 refused,
    an email NameID asked for, unsigned AuthnRequests (no SP key to keep)."""
    return {
        "strict": True,
        "debug": False,
        "sp": {
            "entityId": sp_entity_id(public_url, name),
            "assertionConsumerService": {"url": acs_url(public_url, name),
                                         "binding": BINDING_POST},
            "NameIDFormat": NAMEID_EMAIL,
            "x509cert": "",
            "privateKey": "",
        },
        "security": {
            "authnRequestsSigned": False,
            "logoutRequestSigned": False,
            "logoutResponseSigned": False,
            "signMetadata": False,
            "wantMessagesSigned": False,  # the Response's signature is checked when present
            "wantAssertionsSigned": True,
            "wantAssertionsEncrypted": False,
            "wantNameId": True,
            "wantNameIdEncrypted": False,
            "wantAttributeStatement": False,  # no groups is "no role" (403), not malformed
            "requestedAuthnContext": False,  # Entra ID refuses an exact password context
            "failOnAuthnContextMismatch": False,
            "rejectDeprecatedAlgorithm": True,
            "rejectUnsolicitedResponsesWithInResponseTo": True,
            "allowRepeatAttributeName": False,
            "signatureAlgorithm": OneLogin_Saml2_Constants.RSA_SHA256,
            "digestAlgorithm": OneLogin_Saml2_Constants.SHA256,
        },
    }


def settings_for(name: str, public_url: str, idp: IdpMetadata) -> OneLogin_Saml2_Settings:
    settings = sp_settings(name, public_url)
    settings["idp"] = {
        "entityId": idp.entity_id,
        "singleSignOnService": {"url": idp.sso_url, "binding": BINDING_REDIRECT},
        "x509certMulti": {"signing": list(idp.signing_certs)},
    }
    try:
        return OneLogin_Saml2_Settings(settings)
    except Exception as exc:  # OneLogin_Saml2_Error naming the settings it cannot take
        raise MetadataError(f"not usable with python3-saml: {exc}") from None


def sp_metadata(name: str, public_url: str) -> str:
    """Our SP metadata, for the IdP: entity id, ACS (HTTP-POST), the NameID format wanted,
    WantAssertionsSigned="true"."""
    settings = OneLogin_Saml2_Settings(sp_settings(name, public_url), sp_validation_only=True)
    metadata = settings.get_sp_metadata()
    return metadata.decode() if isinstance(metadata, bytes) else metadata


def request_data(url: str, post: Mapping[str, str] | None = None) -> dict[str, Any]:
    """python3-saml's view of a request to `url` (built from public_url, the authority on
    scheme, host and port; never from the request's own Host)."""
    parts = urlsplit(url)
    return {
        "https": "on" if parts.scheme == "https" else "off",
        "http_host": parts.netloc,
        "script_name": parts.path,
        "get_data": {},
        "post_data": dict(post or {}),
    }


# -- the AuthnRequest ----------------------------------------------------------------------


@dataclass(frozen=True)
class AuthnRequestMade:
    redirect_url: str  # the IdP's SSO URL with the deflated AuthnRequest (HTTP-Redirect)
    request_id: str


def make_authn_request(settings: OneLogin_Saml2_Settings, public_url: str, name: str
                       ) -> AuthnRequestMade:
    auth = OneLogin_Saml2_Auth(request_data(acs_url(public_url, name)), settings)
    url = auth.login(return_to=RELAY_STATE)
    return AuthnRequestMade(url, auth.get_last_request_id())


def binding_cookie(public_url: str) -> str:
    """The nonce cookie's name: `__Host-` on https, where browsers keep it to this host."""
    return HOST_BINDING_COOKIE if public_url.startswith("https://") else BINDING_COOKIE


def valid_nonce(nonce: str) -> bool:
    """Shaped as `make_nonce` makes them (NONCE_CHARS URL-safe characters): nothing else is
    looked at further."""
    return len(nonce) == NONCE_CHARS and _NONCE.fullmatch(nonce) is not None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _nonce_mac(key: bytes, random_part: str) -> str:
    digest = hmac.new(key, b"saml-nonce:" + random_part.encode(), hashlib.sha256).digest()
    return _b64(digest[:_NONCE_MAC_BYTES])


def make_nonce(key: bytes) -> str:
    """A random nonce the gateway can later recognise as its own (an HMAC under `key`)."""
    random_part = _b64(secrets.token_bytes(_NONCE_RANDOM_BYTES))
    return random_part + _nonce_mac(key, random_part)


def issued_nonce(key: bytes, nonce: str) -> bool:
    """Whether `nonce` is one `make_nonce` made with `key` (not one a client chose)."""
    if not valid_nonce(nonce):
        return False
    half = NONCE_CHARS // 2
    return hmac.compare_digest(nonce[half:], _nonce_mac(key, nonce[:half]))


def nonce_hash(nonce: str) -> str:
    return hashlib.sha256(nonce.encode("utf-8", "replace")).hexdigest()


def request_mark(name: str, request_id: str, nonce: str) -> str:
    return f"saml-request:{name}:{request_id}:{nonce_hash(nonce)}"


# -- the Response --------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifiedAssertion:
    """What a Response that passed every check says (its assertion signed by the IdP)."""

    assertion_id: str
    request_id: str  # SubjectConfirmationData InResponseTo
    not_on_or_after: float  # SubjectConfirmationData NotOnOrAfter, POSIX seconds
    name_id: str
    name_id_format: str
    attributes: Mapping[str, tuple[str, ...]]


@dataclass(frozen=True)
class SamlPerson:
    """Who the IdP says signed in. `groups` None: the assertion has no `role_attribute` at
    all (it says nothing about groups); () an attribute without values (no groups)."""

    email: str
    display_name: str = ""
    groups: tuple[str, ...] | None = ()
    name_id: str = ""


# The library's refusals, worded for the person; anything else is "not valid".
_SIGNATURE = ("the sign-in response is not signed by the identity provider, or its signature "
              "does not verify")
_EXPIRED = ("the sign-in response has expired or is not valid yet; please start again (if it "
            "persists, the identity provider's clock or the gateway's is wrong)")
_ADDRESSED = "the sign-in response was made for another service or address"
_NOT_VALID = "the sign-in response is not valid"
# Refusals of a document that is not a SAML Response at all (400; the rest are 403).
_MALFORMED = frozenset((
    OneLogin_Saml2_ValidationError.UNSUPPORTED_SAML_VERSION,
    OneLogin_Saml2_ValidationError.MISSING_ID,
    OneLogin_Saml2_ValidationError.MISSING_STATUS,
    OneLogin_Saml2_ValidationError.MISSING_STATUS_CODE,
    OneLogin_Saml2_ValidationError.INVALID_XML_FORMAT,
))
_REFUSAL_WORDS: dict[int, str] = {
    **dict.fromkeys((
        OneLogin_Saml2_ValidationError.WRONG_SIGNED_ELEMENT,
        OneLogin_Saml2_ValidationError.ID_NOT_FOUND_IN_SIGNED_ELEMENT,
        OneLogin_Saml2_ValidationError.DUPLICATED_ID_IN_SIGNED_ELEMENTS,
        OneLogin_Saml2_ValidationError.INVALID_SIGNED_ELEMENT,
        OneLogin_Saml2_ValidationError.DUPLICATED_REFERENCE_IN_SIGNED_ELEMENTS,
        OneLogin_Saml2_ValidationError.UNEXPECTED_SIGNED_ELEMENTS,
        OneLogin_Saml2_ValidationError.WRONG_NUMBER_OF_SIGNATURES_IN_RESPONSE,
        OneLogin_Saml2_ValidationError.WRONG_NUMBER_OF_SIGNATURES_IN_ASSERTION,
        OneLogin_Saml2_ValidationError.NO_SIGNED_ASSERTION,
        OneLogin_Saml2_ValidationError.NO_SIGNATURE_FOUND,
        OneLogin_Saml2_ValidationError.INVALID_SIGNATURE,
        OneLogin_Saml2_ValidationError.WRONG_NUMBER_OF_SIGNATURES,
        OneLogin_Saml2_ValidationError.DEPRECATED_SIGNATURE_METHOD,
        OneLogin_Saml2_ValidationError.DEPRECATED_DIGEST_METHOD,
    ), _SIGNATURE),
    **dict.fromkeys((
        OneLogin_Saml2_ValidationError.ASSERTION_TOO_EARLY,
        OneLogin_Saml2_ValidationError.ASSERTION_EXPIRED,
        OneLogin_Saml2_ValidationError.SESSION_EXPIRED,
        OneLogin_Saml2_ValidationError.RESPONSE_EXPIRED,
    ), _EXPIRED),
    **dict.fromkeys((
        OneLogin_Saml2_ValidationError.WRONG_DESTINATION,
        OneLogin_Saml2_ValidationError.EMPTY_DESTINATION,
        OneLogin_Saml2_ValidationError.WRONG_AUDIENCE,
        OneLogin_Saml2_ValidationError.SP_NAME_QUALIFIER_NAME_MISMATCH,
    ), _ADDRESSED),
    OneLogin_Saml2_ValidationError.WRONG_SUBJECTCONFIRMATION: (
        "the sign-in response was made for another address, or has expired "
        "(no valid subject confirmation)"),
    OneLogin_Saml2_ValidationError.WRONG_ISSUER: (
        "the sign-in response was issued by another identity provider"),
    OneLogin_Saml2_ValidationError.STATUS_CODE_IS_NOT_SUCCESS: (
        "the identity provider did not sign you in"),
    OneLogin_Saml2_ValidationError.NO_NAMEID: "the sign-in response names nobody (no NameID)",
    OneLogin_Saml2_ValidationError.EMPTY_NAMEID: "the sign-in response names nobody (no NameID)",
}


def _library_reason(codes: Mapping[int, str], code: object) -> str:
    """python3-saml's name for its error code (a fixed vocabulary), never its message."""
    name = codes.get(code) if isinstance(code, int) else None
    return f"python3-saml {name}" if name else "python3-saml error"


def decode_saml_response(value: str) -> str:
    """The posted SAMLResponse, checked to be base64 of XML (whitespace, which some IdPs
    wrap base64 with, removed); SamlRefused (400) otherwise."""
    if len(value) > MAX_RESPONSE_CHARS:
        raise SamlRefused("the sign-in response is too large", 400,
                          f"SAMLResponse of {len(value)} characters", reason="too large")
    compact = _WHITESPACE.sub("", value)
    if not compact or len(compact) % 4 or not _BASE64.fullmatch(compact):
        raise SamlRefused("the sign-in response is not readable (not base64)", 400,
                          "SAMLResponse is not base64", reason="not base64")
    try:
        raw = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise SamlRefused("the sign-in response is not readable (not base64)", 400,
                          "SAMLResponse is not base64", reason="not base64") from None
    if not raw.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<"):
        raise SamlRefused("the sign-in response is not readable (not XML)", 400,
                          "SAMLResponse is not XML", reason="not XML")
    return compact


def verify_response(settings: OneLogin_Saml2_Settings, public_url: str, name: str,
                    saml_response: str, now: float) -> VerifiedAssertion:
    """Every check of the Response itself (the module docstring's list); SamlRefused (400
    when it is malformed, 403 when it is not to be trusted). Not the one-time marks."""
    compact = decode_saml_response(saml_response)
    acs = acs_url(public_url, name)
    try:
        response = OneLogin_Saml2_Response(settings, compact)
    except OneLogin_Saml2_Error as exc:
        if exc.code != OneLogin_Saml2_Error.PRIVATE_KEY_NOT_FOUND:
            raise SamlRefused(_NOT_VALID, 400, str(exc),
                              reason=_library_reason(_ERROR_CODES, exc.code)) from None
        raise SamlRefused(
            "the sign-in response is encrypted, which this gateway does not take (turn "
            "assertion encryption off for it at the identity provider; TLS protects it)", 400,
            str(exc), reason="encrypted assertion") from None
    except Exception as exc:  # lxml and the defused parser raise their own
        raise SamlRefused("the sign-in response is not readable (malformed XML)", 400,
                          f"{type(exc).__name__}: {exc}", reason="malformed XML") from None
    try:
        response.is_valid(request_data(acs, {"SAMLResponse": compact}),
                          response.get_in_response_to(), raise_exceptions=True)
        assertion = _signed_assertion(response)
        _check_addressed_to_us(response, assertion, sp_entity_id(public_url, name), acs)
        request_id, not_on_or_after = _subject_confirmation(response, assertion, acs, now)
        _check_times(assertion, now)
        assertion_id = response.get_assertion_id()
        name_id = response.get_nameid_data()
        attributes = response.get_attributes()
    except SamlRefused:
        raise
    except OneLogin_Saml2_ValidationError as exc:
        words = _REFUSAL_WORDS.get(exc.code, _NOT_VALID)
        status = 400 if exc.code in _MALFORMED else 403
        raise SamlRefused(words, status, str(exc),
                          reason=_library_reason(_VALIDATION_CODES, exc.code)) from None
    except Exception as exc:  # whatever else a hostile document makes the library raise
        raise SamlRefused(_NOT_VALID, 400, f"{type(exc).__name__}: {exc}",
                          reason="not processable") from None
    if not assertion_id:
        raise SamlRefused(_NOT_VALID, 403, "assertion without ID", reason="no assertion ID")
    return VerifiedAssertion(
        assertion_id=assertion_id,
        request_id=request_id,
        not_on_or_after=not_on_or_after,
        name_id=str(name_id.get("Value") or ""),
        name_id_format=str(name_id.get("Format") or NAMEID_UNSPECIFIED),
        attributes={key: tuple(v for v in values if isinstance(v, str))
                    for key, values in attributes.items()},
    )


def _signed_assertion(response: OneLogin_Saml2_Response) -> etree._Element:
    """The one assertion, which `is_valid` verified the signature of: it accepted the
    document only with exactly one Assertion (anywhere in it), a direct child of the Response,
    whose signature references it by ID."""
    found = response.get_xml_document().findall("saml:Assertion", _NS)
    if len(found) != 1:
        raise SamlRefused(_SIGNATURE, 403, "no signed assertion at /Response/Assertion",
                          reason="no signed assertion")
    return found[0]


def _check_addressed_to_us(response: OneLogin_Saml2_Response, assertion: etree._Element,
                           entity_id: str, acs: str) -> None:
    restrictions = assertion.findall("saml:Conditions/saml:AudienceRestriction", _NS)
    if not restrictions:
        raise SamlRefused(_ADDRESSED, 403, "assertion without an AudienceRestriction",
                          reason="no audience")
    for restriction in restrictions:
        audiences = [(a.text or "").strip() for a in restriction.findall("saml:Audience", _NS)]
        if entity_id not in audiences:
            raise SamlRefused(_ADDRESSED, 403,
                              f"audience {audiences!r} is not our entity id {entity_id}",
                              reason="audience not ours")
    destination = response.get_xml_document().get("Destination")
    if destination is not None and destination != acs:
        raise SamlRefused(_ADDRESSED, 403, f"Destination {destination!r} is not {acs}",
                          reason="destination not our ACS")


def _subject_confirmation(response: OneLogin_Saml2_Response, assertion: etree._Element,
                          acs: str, now: float) -> tuple[str, float]:
    """The bearer SubjectConfirmationData addressed to our ACS exactly: its InResponseTo (the
    signed request id) and NotOnOrAfter."""
    unsigned_request_id = response.get_in_response_to()
    for confirmation in assertion.findall("saml:Subject/saml:SubjectConfirmation", _NS):
        if confirmation.get("Method") != OneLogin_Saml2_Constants.CM_BEARER:
            continue
        data = confirmation.find("saml:SubjectConfirmationData", _NS)
        if data is None or data.get("Recipient") != acs:
            continue
        not_on_or_after = data.get("NotOnOrAfter")
        ends = None if not not_on_or_after else float(
            OneLogin_Saml2_Utils.parse_SAML_to_time(not_on_or_after))
        if ends is not None and ends <= now:
            continue  # expired (python3-saml accepted another one)
        request_id = data.get("InResponseTo")
        if not request_id:
            raise SamlRefused(
                "this sign-in was not started here: the gateway accepts only answers to its own "
                "sign-in requests; please start from the gateway's sign-in page", 400,
                "unsolicited: no InResponseTo in the SubjectConfirmationData",
                reason="unsolicited")
        if unsigned_request_id is not None and unsigned_request_id != request_id:
            raise SamlRefused(_SIGNATURE, 403, "Response InResponseTo differs from the "
                              "assertion's", reason="InResponseTo differs")
        if ends is None:
            raise SamlRefused(_EXPIRED, 403, "SubjectConfirmationData without NotOnOrAfter",
                              reason="no NotOnOrAfter")
        return request_id, ends
    raise SamlRefused(_ADDRESSED, 403, f"no bearer SubjectConfirmation with Recipient {acs}",
                      reason="no subject confirmation for our ACS")


def _check_times(assertion: etree._Element, now: float) -> None:
    def instant(element: etree._Element | None, attribute: str) -> float | None:
        value = None if element is None else element.get(attribute)
        return None if value is None else float(OneLogin_Saml2_Utils.parse_SAML_to_time(value))

    conditions = assertion.find("saml:Conditions", _NS)
    too_early = [
        ("Assertion IssueInstant", instant(assertion, "IssueInstant")),
        ("Conditions NotBefore", instant(conditions, "NotBefore")),
        *(("AuthnInstant", instant(statement, "AuthnInstant"))
          for statement in assertion.findall("saml:AuthnStatement", _NS)),
    ]
    for what, when in too_early:
        if when is not None and when > now + CLOCK_SKEW_S:
            raise SamlRefused(_EXPIRED, 403, f"{what} is {when - now:.0f} s ahead of our clock",
                              reason="issued ahead of our clock")
    ends = instant(conditions, "NotOnOrAfter")
    if ends is not None and now >= ends + CLOCK_SKEW_S:
        raise SamlRefused(_EXPIRED, 403, f"Conditions NotOnOrAfter passed {now - ends:.0f} s ago",
                          reason="expired")


def person_of(provider: SamlProvider, assertion: VerifiedAssertion) -> SamlPerson:
    """Email (`email_attribute`; when empty, the NameID if it is an email address, else the
    attribute "email"), display name and groups (`role_attribute`: None when the assertion
    has no such attribute at all, which says nothing about groups; an attribute without
    values is no groups)."""
    attributes = assertion.attributes
    if provider.email_attribute:
        email = _email(_first(attributes, provider.email_attribute))
        source = f"attribute {provider.email_attribute!r}"
    else:
        email = None
        if assertion.name_id_format in (NAMEID_EMAIL, NAMEID_UNSPECIFIED):
            email = _email(assertion.name_id)
        if email is None:
            email = _email(_first(attributes, DEFAULT_EMAIL_ATTRIBUTE))
        source = f"the NameID or attribute {DEFAULT_EMAIL_ATTRIBUTE!r}"
    if email is None:
        raise SamlRefused(
            "the identity provider sent no usable email address for you (your administrator "
            "can send it as the NameID in the emailAddress format, or as the attribute "
            "'email')",
            400, f"no email address in {source}", reason="no email")
    display_name = next((values[0] for key in DISPLAY_NAME_ATTRIBUTES
                         for values in (attributes.get(key, ()),) if values), "")
    sent = attributes.get(provider.role_attribute)
    groups = None if sent is None else tuple(dict.fromkeys(sent))[:MAX_GROUPS]
    return SamlPerson(email, display_name[:200], groups, assertion.name_id)


def _first(attributes: Mapping[str, tuple[str, ...]], name: str) -> str:
    """The attribute's first value; "" when it is absent or has none."""
    values = attributes.get(name) or ()
    return values[0] if values else ""


def _email(value: str) -> str | None:
    """The address as the IdP sent it (without surrounding white space), when it is one;
    validated with `normalized_email`, never replaced by its result: People keys it (NFC
    here would turn U+212A KELVIN SIGN into a plain K before People could refuse it)."""
    value = value.strip()
    if not value or len(value) > 254 or any(c.isspace() for c in value):
        return None
    try:
        normalized_email(value)
    except InvalidAddress:
        return None
    return value


# -- IdP metadata from a URL ---------------------------------------------------------------

Fetch = Callable[[str], Awaitable[bytes]]


@dataclass
class IdpMetadataSource:
    """The IdP's metadata for one provider: fixed (a file), or fetched from a URL and
    re-read (see the module docstring). `current()` gives what to sign in with or raises
    IdpUnavailable."""

    provider: SamlProvider
    public_url: str
    fetch: Fetch | None = None
    index: int = 0  # in [[sso.saml]], for the setting's name in errors
    clock: Callable[[], float] = time.monotonic
    _settings: OneLogin_Saml2_Settings | None = field(default=None, init=False, repr=False)
    _metadata: IdpMetadata | None = field(default=None, init=False, repr=False)
    _previous: IdpMetadata | None = field(default=None, init=False, repr=False)
    _read_at: float = field(default=0.0, init=False, repr=False)
    _tried_at: float | None = field(default=None, init=False, repr=False)
    _problem: str = field(default="", init=False, repr=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.provider.idp_metadata_url:
            try:
                self._use(parse_idp_metadata(self.provider.idp_metadata_xml))
            except MetadataError as exc:
                raise ConfigError(self.config_key, str(exc)) from None

    @property
    def config_key(self) -> str:
        return f"sso.saml[{self.index}].idp_metadata"

    @property
    def metadata(self) -> IdpMetadata | None:
        return self._metadata

    def _use(self, metadata: IdpMetadata) -> None:
        self._settings = settings_for(self.provider.name, self.public_url, metadata)
        self._previous = self._metadata
        self._metadata = metadata
        self._read_at = self.clock()
        self._problem = ""

    async def load(self) -> bool:
        """Fetches URL metadata now (at start-up); logs and remembers a failure. True when
        there is metadata to sign in with."""
        if self.provider.idp_metadata_url:
            async with self._lock:
                if self._due():
                    await self._fetch()
        return self._settings is not None

    async def current(self) -> OneLogin_Saml2_Settings:
        """The settings to sign in with; a fetch that is due is made first, and one under
        way (the one at start-up) is waited for."""
        if self.provider.idp_metadata_url and (self._due() or self._lock.locked()):
            async with self._lock:
                if self._due():
                    await self._fetch()
        if self._settings is None:
            raise IdpUnavailable(self.provider.name, self._problem or "metadata not read yet")
        return self._settings

    async def reread_for_new_certificates(self) -> bool:
        """After a signature no certificate of this copy verifies: the URL is read again
        (at most every METADATA_RETRY_S, so forged responses cannot make the gateway hammer
        the IdP); True when it now lists other signing certificates (a rollover)."""
        if not self.provider.idp_metadata_url:
            return False
        async with self._lock:
            if self._tried_at is not None and self.clock() - self._tried_at < METADATA_RETRY_S:
                return False
            before = self._metadata
            await self._fetch()
            return (self._metadata is not None and before is not None
                    and self._metadata.signing_certs != before.signing_certs)

    def _due(self) -> bool:
        now = self.clock()
        if self._tried_at is not None and now - self._tried_at < METADATA_RETRY_S:
            return False
        return self._settings is None or now - self._read_at >= METADATA_REFRESH_S

    async def _fetch(self) -> None:
        url = self.provider.idp_metadata_url
        self._tried_at = self.clock()
        try:
            if self.fetch is None:
                raise MetadataError("no way to fetch metadata over HTTP was given")
            raw = await asyncio.wait_for(self.fetch(url), METADATA_TIMEOUT_S)
            if len(raw) > METADATA_MAX_BYTES:
                raise MetadataError(f"larger than {METADATA_MAX_BYTES} bytes")
            metadata = parse_idp_metadata(raw)
            self._use(metadata)
        except Exception as exc:  # refused, unreachable, too slow, not metadata: all logged
            self._problem = f"{url}: {str(exc) or type(exc).__name__}"
            log_event(log, "saml-idp-metadata-unavailable", logging.ERROR,
                      provider=self.provider.name, setting=self.config_key,
                      error=self._problem, kept="the last good copy" if self._settings
                      else "none: sign-in with this provider is refused until a fetch works")
            return
        if metadata != self._previous:
            log_event(log, "saml-idp-metadata-read", provider=self.provider.name,
                      entity_id=metadata.entity_id, signing_certificates=len(
                          metadata.signing_certs))


# -- one provider's sign-in, with the store's one-time marks -------------------------------


@dataclass(frozen=True)
class LoginStart:
    redirect_url: str
    nonce: str  # for the browser's binding cookie (`SamlSignIn.cookie_name`)
    request_id: str


NOT_STARTED_HERE = (
    "this sign-in was not started in this browser (its sign-in cookie is missing or was not "
    "made here); please start again from the gateway's sign-in page")


class SamlSignIn:
    """One `[[sso.saml]]` provider: the AuthnRequest at /login and the checks at the ACS,
    bound to each other through the store (module docstring)."""

    def __init__(self, provider: SamlProvider, public_url: str, store: SamlStore,
                 fetch: Fetch | None = None, *, index: int = 0,
                 clock: Callable[[], float] = time.time,
                 wall: Callable[[], float] = time.time) -> None:
        """`clock`: the gateway's time (POSIX seconds), which the store's marks are kept in,
        as every other user of them keeps them; `wall`: real time, which assertions are
        checked against (the two differ only when `--now` shifts the gateway's clock)."""
        self.provider = provider
        self.name = provider.name
        self.public_url = public_url.rstrip("/")
        self.marks = store
        self.clock = clock
        self.wall = wall
        self.idp = IdpMetadataSource(provider, self.public_url, fetch, index)
        self.method = f"saml:{provider.name}"
        self.cookie_name = binding_cookie(self.public_url)
        self.cookie_path = "/"  # what `__Host-` requires; the mark names the provider
        self._sp_metadata = sp_metadata(provider.name, self.public_url)
        self._nonce_key: bytes | None = None

    @property
    def entity_id(self) -> str:
        return sp_entity_id(self.public_url, self.name)

    @property
    def acs_url(self) -> str:
        return acs_url(self.public_url, self.name)

    def sp_metadata(self) -> str:
        return self._sp_metadata

    async def _key(self) -> bytes:
        """The nonce key every replica shares: generated into the store by the first."""
        if self._nonce_key is None:
            self._nonce_key = (await self.marks.claim_setting(
                NONCE_KEY_SETTING, secrets.token_urlsafe(48))).encode()
        return self._nonce_key

    async def issued(self, nonce: str) -> bool:
        """Whether the browser's nonce is one this gateway made (before anything is read)."""
        return valid_nonce(nonce) and issued_nonce(await self._key(), nonce)

    async def start(self, nonce: str = "") -> LoginStart:
        """An AuthnRequest bound to the browser's nonce: the one its cookie already holds
        when the gateway made it (so sign-ins begun in two tabs both work), else a new one."""
        settings = await self.idp.current()
        made = make_authn_request(settings, self.public_url, self.name)
        if not await self.issued(nonce):
            nonce = make_nonce(await self._key())
        now = self.clock()
        await self.marks.use_once(request_mark(self.name, made.request_id, nonce), now,
                                  now + REQUEST_LIFETIME_S)
        return LoginStart(made.redirect_url, nonce, made.request_id)

    async def finish(self, saml_response: str, nonce: str) -> SamlPerson:
        """The person a posted SAMLResponse signs in, or SamlRefused."""
        if not await self.issued(nonce):
            raise SamlRefused(NOT_STARTED_HERE, 400, f"no {self.cookie_name} cookie made here",
                              reason="no sign-in cookie")
        wall = self.wall()
        try:
            assertion = await asyncio.to_thread(
                verify_response, await self.idp.current(), self.public_url, self.name,
                saml_response, wall)
        except SamlRefused as refused:
            # the IdP may have rolled its certificate over since the metadata was read
            if refused.problem != _SIGNATURE or not await self.idp.reread_for_new_certificates():
                raise
            assertion = await asyncio.to_thread(
                verify_response, await self.idp.current(), self.public_url, self.name,
                saml_response, wall)
        await self._answers_our_request(assertion, nonce, wall)
        return person_of(self.provider, assertion)

    async def _answers_our_request(self, assertion: VerifiedAssertion, nonce: str,
                                   wall: float) -> None:
        now = self.clock()
        if not await self.marks.use_once(
                f"saml:{self.name}:{assertion.assertion_id}", now,
                now + max(0.0, assertion.not_on_or_after - wall) + 2 * CLOCK_SKEW_S):
            raise SamlRefused(
                "this sign-in response was already used; please start again", 403,
                f"assertion {assertion.assertion_id} replayed", reason="assertion replayed")
        # Taken, never written: the request is answered once, and a replica whose clock is
        # behind cannot find a mark that a refusal left behind.
        if not await self.marks.take_once(
                request_mark(self.name, assertion.request_id, nonce), now):
            raise SamlRefused(
                "this sign-in was not started in this browser, was completed already, or took "
                "longer than 10 minutes; please start again from the gateway's sign-in page",
                400, f"InResponseTo {assertion.request_id} is not a live request of this "
                "browser", reason="not a live request of this browser")
