"""A real SAML 2.0 identity provider for the tests, on loopback: pysaml2's IdP.

The responses are made and signed by pysaml2's `saml2.server.Server` (the IdP that SATOSA is
built on), which signs with Debian's `xmlsec1`, with a key and certificate generated for each
IdP. It is served over HTTP on 127.0.0.1 and an ephemeral port by a thread of its own, so a
gateway on the test's event loop can talk to it while the test waits on it:

- `GET /metadata`: the IdP's metadata (entity id, signing certificate, SSO endpoints);
- `GET /sso/redirect` and `POST /sso/post`: the HTTP-Redirect and HTTP-POST bindings of
  single sign-on. The AuthnRequest's issuer must be an SP the IdP trusts (`trust_sp` with its
  metadata) and its AssertionConsumerServiceURL one that metadata lists, as with a real IdP.
  The IdP answers with a page that posts the signed Response to that ACS URL by itself (a
  browser submits it; `SamlPost.from_page` reads it for an HTTP client). Who is signed in is
  chosen by the test (`sign_in_as`); with nobody chosen the IdP shows a one-field sign-in form
  (label "Email", button "Sign in") for the users added with `add_user`, which Playwright fills.

For the bad cases: `issue` makes a response with chosen faults (audience, recipient,
destination, the IdP's clock, unsigned parts), still signed by the IdP's key; `tamper` and
`strip_signatures` change a signed response afterwards; every response issued is kept in
`responses` for replay; a second `SamlIdP` given the first one's `entity_id` signs with another
key (a forged response).
"""

from __future__ import annotations

import base64
import copy
import html
import logging
import re
import secrets
import shutil
import tempfile
import threading
import warnings
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from lxml import etree

NS = {
    "samlp": "urn:oasis:names:tc:SAML:2.0:protocol",
    "saml": "urn:oasis:names:tc:SAML:2.0:assertion",
    "ds": "http://www.w3.org/2000/09/xmldsig#",
    "md": "urn:oasis:names:tc:SAML:2.0:metadata",
}
BINDING_HTTP_REDIRECT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
BINDING_HTTP_POST = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
NAMEID_EMAIL = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
NAMEID_PERSISTENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"
NAME_FORMAT_BASIC = "urn:oasis:names:tc:SAML:2.0:attrname-format:basic"
SIG_RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
DIGEST_SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"

# The attribute names the IdP sends a user's email, display name and groups under (basic name
# format, as Okta and OneLogin send them when configured so).
ATTR_EMAIL = "email"
ATTR_NAME = "displayName"
ATTR_GROUPS = "groups"

_TIME_ATTRIBUTES = ("IssueInstant", "AuthnInstant", "NotBefore", "NotOnOrAfter",
                    "SessionNotOnOrAfter")

log = logging.getLogger(__name__)


class IdPMissing(Exception):
    """What is missing to run the IdP here; the message is the skip reason."""


def find_xmlsec1() -> str:
    path = shutil.which("xmlsec1")
    if path is None:
        raise IdPMissing("xmlsec1 is missing (apt-get install xmlsec1; `make saml-idp`)")
    return path


@dataclass(frozen=True)
class KeyPair:
    key_pem: bytes
    cert_pem: bytes

    @property
    def cert_base64(self) -> str:
        """The certificate as metadata and KeyInfo carry it: base64 DER on one line."""
        der = x509.load_pem_x509_certificate(self.cert_pem).public_bytes(serialization.Encoding.DER)
        return base64.b64encode(der).decode()


def generate_keypair(common_name: str = "tests.saml IdP") -> KeyPair:
    """A fresh RSA-2048 key and a self-signed certificate for it, valid for a day."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return KeyPair(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption()),
        cert.public_bytes(serialization.Encoding.PEM),
    )


@dataclass(frozen=True)
class SamlUser:
    """A person at the IdP. The NameID is `name_id` (default: the email, in the emailAddress
    format); the attributes are email, displayName and groups, plus `attributes`."""

    email: str
    name: str = ""
    groups: Sequence[str] = ()
    name_id: str | None = None
    name_id_format: str = NAMEID_EMAIL
    attributes: Mapping[str, Sequence[str]] = field(default_factory=dict)

    def identity(self) -> dict[str, list[str]]:
        values = {ATTR_EMAIL: [self.email], ATTR_NAME: [self.name or self.email],
                  ATTR_GROUPS: list(self.groups)}
        values.update({key: list(value) for key, value in self.attributes.items()})
        return {key: value for key, value in values.items() if value}


@dataclass(frozen=True)
class SamlPost:
    """A Response as the IdP's page posts it to the SP: the form's action and fields."""

    acs_url: str
    saml_response: str  # base64, as posted
    relay_state: str | None = None

    @property
    def xml(self) -> str:
        return base64.b64decode(self.saml_response).decode()

    def form(self) -> dict[str, str]:
        fields = {"SAMLResponse": self.saml_response}
        if self.relay_state is not None:
            fields["RelayState"] = self.relay_state
        return fields

    @classmethod
    def from_page(cls, page: str) -> SamlPost:
        """Reads the IdP's self-submitting page, as an HTTP client posts it on."""
        action = re.search(r'<form[^>]*\baction="([^"]*)"', page)
        fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page))
        if action is None or "SAMLResponse" not in fields:
            raise ValueError(f"not a SAML response page: {page[:300]!r}")
        relay_state = fields.get("RelayState")
        return cls(html.unescape(action.group(1)), html.unescape(fields["SAMLResponse"]),
                   None if relay_state is None else html.unescape(relay_state))

    def with_xml(self, xml: bytes | str) -> SamlPost:
        raw = xml.encode() if isinstance(xml, str) else xml
        return SamlPost(self.acs_url, base64.b64encode(raw).decode(), self.relay_state)

    def root(self) -> etree._Element:
        return _parse(self.xml.encode())


@dataclass(frozen=True)
class AuthnRequestSeen:
    """An AuthnRequest the IdP accepted: what a test may want to check the SP sent."""

    id: str
    sp_entity_id: str
    acs_url: str
    binding: str
    relay_state: str | None
    xml: str


def _parse(xml: bytes) -> etree._Element:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, remove_blank_text=False)
    return etree.fromstring(xml, parser)


def _with_time_shift(root: etree._Element, shift: timedelta) -> None:
    for element in root.iter():
        for name in _TIME_ATTRIBUTES:
            value = element.get(name)
            if value:
                when = datetime.fromisoformat(value.replace("Z", "+00:00")) + shift
                element.set(name, when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))


class SamlIdP:
    """pysaml2's IdP on 127.0.0.1 and an ephemeral port; `start()` it (or use it as a context
    manager) and `stop()` it. `url_host` is the host name its URLs carry (default 127.0.0.1;
    "localhost" makes it another site than a gateway on 127.0.0.1, as a real IdP is, so a
    browser applies SameSite rules to the POST to the ACS)."""

    def __init__(self, *, keypair: KeyPair | None = None, entity_id: str | None = None,
                 url_host: str = "127.0.0.1", lifetime: timedelta = timedelta(minutes=5),
                 sign_assertion: bool = True, sign_response: bool = False) -> None:
        self._xmlsec1 = find_xmlsec1()
        self.keypair = keypair or generate_keypair()
        self.lifetime = lifetime
        self.sign_assertion = sign_assertion
        self.sign_response = sign_response
        self._entity_id = entity_id
        self._url_host = url_host
        self._lock = threading.RLock()
        self._users: dict[str, SamlUser] = {}
        self._chosen: SamlUser | None = None
        self._pending: dict[str, tuple[AuthnRequestSeen, dict[str, object]]] = {}
        self._trusted: list[str] = []
        self.responses: list[SamlPost] = []
        self.requests: list[AuthnRequestSeen] = []
        self.refusals: list[str] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self.base_url = ""
        self.server: object = None  # saml2.server.Server once started

    # -- life --------------------------------------------------------------------------

    def start(self) -> SamlIdP:
        idp = self

        class Handler(_Handler):
            owner = idp

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.base_url = f"http://{self._url_host}:{self._httpd.server_address[1]}"
        self._dir = tempfile.TemporaryDirectory(prefix="saml-idp-")
        self.server = self._make_server(Path(self._dir.name))
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                        name="saml-idp", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> SamlIdP:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _make_server(self, directory: Path) -> object:
        with warnings.catch_warnings():
            # pysaml2 7.5.5 names cryptography's CFB mode where 50 deprecates it (for
            # encryption, which these tests do not use)
            warnings.filterwarnings("ignore", message="CFB has been moved")
            from saml2 import attribute_converter, saml
            from saml2.config import IdPConfig
            from saml2.server import Server

        key_file = directory / "idp.key"
        cert_file = directory / "idp.crt"
        key_file.write_bytes(self.keypair.key_pem)
        cert_file.write_bytes(self.keypair.cert_pem)
        config = IdPConfig()
        config.load({
            "entityid": self.entity_id,
            "service": {"idp": {
                "name": "tests.saml IdP",
                "endpoints": {"single_sign_on_service": [
                    (self.sso_redirect_url, BINDING_HTTP_REDIRECT),
                    (self.sso_post_url, BINDING_HTTP_POST),
                ]},
                "name_id_format": [NAMEID_EMAIL, NAMEID_PERSISTENT],
                "want_authn_requests_signed": False,
                "signing_algorithm": SIG_RSA_SHA256,
                "digest_algorithm": DIGEST_SHA256,
                "sign_response": self.sign_response,
                "sign_assertion": self.sign_assertion,
                "policy": {"default": {
                    "lifetime": {"seconds": int(self.lifetime.total_seconds())},
                    "attribute_restrictions": None,
                    "name_form": NAME_FORMAT_BASIC,
                }},
            }},
            "key_file": str(key_file),
            "cert_file": str(cert_file),
            "xmlsec_binary": self._xmlsec1,
            "delete_tmpfiles": True,
            "metadata": {},
        })

        class Verbatim(attribute_converter.AttributeConverter):
            """Attribute names sent as given (pysaml2's maps would rename email to
            urn:mace:dir:attribute-def:email)."""

            def to_(self, attrvals: Mapping[str, Sequence[str]]) -> list[object]:
                return [
                    attribute_converter.factory(
                        saml.Attribute, name=key, name_format=NAME_FORMAT_BASIC,
                        attribute_value=attribute_converter.do_ava(value))
                    for key, value in attrvals.items()
                ]

        config.attribute_converters = [Verbatim(NAME_FORMAT_BASIC),
                                       *(config.attribute_converters or [])]
        return Server(config=config)

    # -- where -------------------------------------------------------------------------

    @property
    def entity_id(self) -> str:
        return self._entity_id or f"{self.base_url}/metadata"

    @property
    def metadata_url(self) -> str:
        return f"{self.base_url}/metadata"

    @property
    def sso_redirect_url(self) -> str:
        return f"{self.base_url}/sso/redirect"

    @property
    def sso_post_url(self) -> str:
        return f"{self.base_url}/sso/post"

    def metadata_xml(self) -> str:
        from saml2.metadata import create_metadata_string

        with self._lock:
            return create_metadata_string(None, config=self.server.config, valid=24).decode()

    # -- who ---------------------------------------------------------------------------

    def trust_sp(self, metadata_xml: str | bytes) -> str:
        """Trusts an SP by its metadata (as the gateway serves it); returns its entity id."""
        text = metadata_xml.decode() if isinstance(metadata_xml, bytes) else metadata_xml
        entity_id = _parse(text.encode()).get("entityID")
        if not entity_id:
            raise ValueError("SP metadata without an entityID")
        with self._lock:
            self.server.metadata.load("inline", text)
            self._trusted.append(entity_id)
        return entity_id

    def add_user(self, user: SamlUser) -> SamlUser:
        """A user the sign-in form knows by email."""
        with self._lock:
            self._users[user.email.lower()] = user
        return user

    def sign_in_as(self, user: SamlUser | None) -> None:
        """Who the SSO endpoints sign in without asking, until changed; None: ask with the
        sign-in form."""
        with self._lock:
            self._chosen = user
            if user is not None:
                self._users[user.email.lower()] = user

    # -- SSO ---------------------------------------------------------------------------

    def receive(self, saml_request: str, *, binding: str = BINDING_HTTP_REDIRECT,
                relay_state: str | None = None, sigalg: str | None = None,
                signature: str | None = None) -> tuple[AuthnRequestSeen, dict[str, object]]:
        """Parses and checks an AuthnRequest as the SSO endpoint does (raises on one the IdP
        refuses): its issuer must be trusted and its ACS URL in that SP's metadata."""
        from saml2.s_utils import UnknownSystemEntity

        with self._lock:
            parsed = self.server.parse_authn_request(
                saml_request, binding, relay_state=relay_state, sigalg=sigalg,
                signature=signature)
            message = parsed.message
            issuer = message.issuer.text if message.issuer is not None else None
            if issuer not in self._trusted:
                raise UnknownSystemEntity(f"AuthnRequest from an SP not trusted: {issuer!r}")
            # pysaml2 answers only at an ACS URL of the SP's metadata (SAMLError otherwise)
            args = self.server.response_args(message, [BINDING_HTTP_POST])
            seen = AuthnRequestSeen(message.id, issuer, str(args["destination"]), binding,
                                    relay_state, parsed.xmlstr.decode()
                                    if isinstance(parsed.xmlstr, bytes) else parsed.xmlstr)
            self.requests.append(seen)
            return seen, args

    def respond(self, request: str, user: SamlUser | None = None, *,
                binding: str = BINDING_HTTP_REDIRECT, relay_state: str | None = None,
                **faults: object) -> SamlPost:
        """The IdP's answer to an AuthnRequest for `user` (default: the one chosen with
        `sign_in_as`), without HTTP. `request` is the SP's redirect URL (HTTP-Redirect) or the
        SAMLRequest value; `faults` as for `issue`."""
        sigalg = signature = None
        if binding == BINDING_HTTP_REDIRECT and request.startswith(("http://", "https://")):
            query = {k: v[0] for k, v in parse_qs(urlsplit(request).query).items()}
            request = query["SAMLRequest"]
            relay_state = query.get("RelayState", relay_state)
            sigalg, signature = query.get("SigAlg"), query.get("Signature")
        seen, args = self.receive(request, binding=binding, relay_state=relay_state,
                                  sigalg=sigalg, signature=signature)
        user = user or self._chosen
        if user is None:
            raise ValueError("no user chosen (sign_in_as) and none given")
        return self.issue(seen.sp_entity_id, user, in_response_to=seen.id,
                          acs_url=seen.acs_url, relay_state=relay_state,
                          name_id_policy=args.get("name_id_policy"), **faults)  # type: ignore[arg-type]

    def issue(
        self, sp_entity_id: str, user: SamlUser, *, in_response_to: str | None = None,
        acs_url: str | None = None, relay_state: str | None = None,
        audience: str | None = None, recipient: str | None = None,
        destination: str | None = None, clock: datetime | None = None,
        sign_assertion: bool | None = None, sign_response: bool | None = None,
        edit: Callable[[etree._Element], None] | None = None,
        name_id_policy: object = None,
    ) -> SamlPost:
        """A signed Response for `user` to the SP `sp_entity_id` (trusted with `trust_sp`),
        kept in `responses`. Unsolicited when `in_response_to` is None. The ACS URL defaults
        to the SP metadata's first HTTP-POST one. Faults, each still signed by the IdP:
        `audience`, `recipient` (SubjectConfirmationData), `destination` (Response) in place
        of the SP's; `clock`: the IdP's time when it issued it (every instant and validity
        shifted, e.g. an hour ago for an expired assertion); `sign_assertion` /
        `sign_response` (default: the IdP's setting, assertion signed, response not);
        `edit`: any change to the Response's XML tree before signing."""
        from saml2 import saml
        from saml2.s_utils import sid

        sign_assertion = self.sign_assertion if sign_assertion is None else sign_assertion
        sign_response = self.sign_response if sign_response is None else sign_response
        faults = audience or recipient or destination or clock or edit
        with self._lock:
            if acs_url is None:
                services = self.server.metadata.assertion_consumer_service(
                    sp_entity_id, BINDING_HTTP_POST)
                if not services:
                    raise ValueError(f"no HTTP-POST ACS for {sp_entity_id!r} (trust_sp first)")
                acs_url = services[0]["location"]
            name_id = saml.NameID(format=user.name_id_format,
                                  text=user.name_id or user.email)
            made = self.server.create_authn_response(
                user.identity(), in_response_to, acs_url, sp_entity_id,
                name_id_policy=name_id_policy, name_id=name_id,
                authn={"class_ref": saml.AUTHN_PASSWORD_PROTECTED,
                       "authn_auth": self.entity_id},
                sign_assertion=sign_assertion and not faults,
                sign_response=sign_response and not faults,
                session_not_on_or_after=None, sign_alg=SIG_RSA_SHA256,
                digest_alg=DIGEST_SHA256,
            )
            xml = str(made).encode()
            if faults:
                xml = self._faulty(xml, audience=audience, recipient=recipient,
                                   destination=destination, clock=clock, edit=edit,
                                   sign_assertion=sign_assertion,
                                   sign_response=sign_response, sid=sid)
            post = SamlPost(acs_url, base64.b64encode(xml).decode(), relay_state)
            self.responses.append(post)
            return post

    def _faulty(self, xml: bytes, *, audience: str | None, recipient: str | None,
                destination: str | None, clock: datetime | None,
                edit: Callable[[etree._Element], None] | None, sign_assertion: bool,
                sign_response: bool, sid: Callable[[], str]) -> bytes:
        from saml2 import class_name, samlp
        from saml2.saml import Assertion
        from saml2.sigver import pre_signature_part

        root = _parse(xml)
        if audience is not None:
            for element in root.iterfind(".//saml:Audience", NS):
                element.text = audience
        if recipient is not None:
            for element in root.iterfind(".//saml:SubjectConfirmationData", NS):
                element.set("Recipient", recipient)
        if destination is not None:
            root.set("Destination", destination)
        if clock is not None:
            _with_time_shift(root, clock.astimezone(UTC) - datetime.now(UTC))
        if edit is not None:
            edit(root)

        def template(element: etree._Element) -> str:
            ident = element.get("ID") or sid()
            element.set("ID", ident)
            signature = pre_signature_part(ident, self.keypair.cert_base64,
                                           sign_alg=SIG_RSA_SHA256, digest_alg=DIGEST_SHA256)
            issuer = element.find("saml:Issuer", NS)
            place = 0 if issuer is None else list(element).index(issuer) + 1
            element.insert(place, _parse(str(signature).encode()))
            return ident

        assertion = root.find("saml:Assertion", NS)
        assertion_id = template(assertion) if sign_assertion and assertion is not None else None
        response_id = template(root) if sign_response else None
        text = etree.tostring(root, xml_declaration=True, encoding="UTF-8").decode()
        if assertion_id:
            text = self.server.sec.sign_statement(text, class_name(Assertion()),
                                                  node_id=assertion_id)
        if response_id:
            text = self.server.sec.sign_statement(text, class_name(samlp.Response()),
                                                  node_id=response_id)
        return text.encode() if isinstance(text, str) else text

    # -- over HTTP ---------------------------------------------------------------------

    def _sso(self, fields: Mapping[str, str], binding: str) -> tuple[int, str]:
        try:
            seen, args = self.receive(
                fields.get("SAMLRequest", ""), binding=binding,
                relay_state=fields.get("RelayState"), sigalg=fields.get("SigAlg"),
                signature=fields.get("Signature"))
        except Exception as error:
            self.refusals.append(f"{type(error).__name__}: {error}")
            return HTTPStatus.BAD_REQUEST, _page("Request refused", f"<p>{html.escape(str(error))}"
                                                 "</p>")
        with self._lock:
            chosen = self._chosen
            if chosen is None:
                key = secrets.token_urlsafe(16)
                self._pending[key] = (seen, args)
                return HTTPStatus.OK, _login_form(key)
        return HTTPStatus.OK, self._answer(seen, args, chosen)

    def _login(self, fields: Mapping[str, str]) -> tuple[int, str]:
        with self._lock:
            pending = self._pending.pop(fields.get("key", ""), None)
            user = self._users.get(fields.get("username", "").strip().lower())
        if pending is None:
            return HTTPStatus.BAD_REQUEST, _page("Sign-in expired", "<p>Start again.</p>")
        if user is None:
            self.refusals.append(f"unknown user {fields.get('username')!r}")
            return HTTPStatus.UNAUTHORIZED, _page("Unknown user", "<p>No such user.</p>")
        return HTTPStatus.OK, self._answer(*pending, user)

    def _answer(self, seen: AuthnRequestSeen, args: Mapping[str, object],
                user: SamlUser) -> str:
        post = self.issue(seen.sp_entity_id, user, in_response_to=seen.id,
                          acs_url=seen.acs_url, relay_state=seen.relay_state,
                          name_id_policy=args.get("name_id_policy"))
        return autopost_page(post)


def autopost_page(post: SamlPost) -> str:
    """The page that posts a Response to the SP by itself (and with a button, without
    scripts)."""
    fields = "".join(
        f'<input type="hidden" name="{html.escape(name)}" value="{html.escape(value)}">'
        for name, value in post.form().items()
    )
    return _page(
        "Signing you in",
        f'<form method="post" action="{html.escape(post.acs_url)}">{fields}'
        '<button type="submit">Continue</button></form>'
        "<script>document.forms[0].submit()</script>",
    )


def _login_form(key: str) -> str:
    return _page(
        "Sign in",
        '<form method="post" action="/login">'
        '<label for="username">Email</label> <input id="username" name="username" '
        'autocomplete="off"> '
        f'<input type="hidden" name="key" value="{html.escape(key)}">'
        '<button type="submit">Sign in</button></form>',
    )


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
            f"</title></head><body><h1>{html.escape(title)}</h1>{body}</body></html>")


class _Handler(BaseHTTPRequestHandler):
    owner: SamlIdP

    def log_message(self, format: str, *args: object) -> None:
        log.debug("saml idp: " + format, *args)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        fields = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/metadata":
            self._send(HTTPStatus.OK, self.owner.metadata_xml(), "application/samlmetadata+xml")
        elif url.path == "/sso/redirect":
            self._send(*self.owner._sso(fields, BINDING_HTTP_REDIRECT))
        else:
            self._send(HTTPStatus.NOT_FOUND, _page("Not found", ""))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace")
        fields = {k: v[0] for k, v in parse_qs(body).items()}
        path = urlsplit(self.path).path
        if path == "/sso/post":
            self._send(*self.owner._sso(fields, BINDING_HTTP_POST))
        elif path == "/login":
            self._send(*self.owner._login(fields))
        else:
            self._send(HTTPStatus.NOT_FOUND, _page("Not found", ""))

    def _send(self, status: int, body: str, content_type: str = "text/html; charset=utf-8"
              ) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)


# -- changing a response after it was signed -------------------------------------------


def tamper(post: SamlPost, attribute: str = ATTR_GROUPS,
           values: Iterable[str] = ("gateway-admins",)) -> SamlPost:
    """The same signed Response with one attribute's values changed, signatures untouched:
    what an attacker who holds a response for an ordinary user would try."""
    root = post.root()
    found = [a for a in root.iterfind(".//saml:Attribute", NS) if a.get("Name") == attribute]
    if not found:
        raise ValueError(f"no attribute {attribute!r} in the response")
    olds = found[0].findall("saml:AttributeValue", NS)
    for old in olds:
        found[0].remove(old)
    for value in values:
        element = copy.deepcopy(olds[0])  # keeps the xmlns:xs its xsi:type="xs:string" needs
        element.text = value
        found[0].append(element)
    return post.with_xml(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def strip_signatures(post: SamlPost) -> SamlPost:
    """The same Response with every signature removed (unsigned)."""
    root = post.root()
    for signature in root.findall(".//ds:Signature", NS):
        signature.getparent().remove(signature)
    return post.with_xml(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def redirect_request(url: str) -> str:
    """The AuthnRequest XML an HTTP-Redirect URL carries (deflated, base64)."""
    value = parse_qs(urlsplit(url).query)["SAMLRequest"][0]
    return zlib.decompress(base64.b64decode(value), -15).decode()
