"""What a call's TwiML may do: only what the gateway can see, to the callee it checked.

The calling rules are decided for one callee, at the moment the call is placed. TwiML that
connects the call to anyone else (`<Dial>`, `<Connect>`, `<Refer>`, `<Enqueue>`) or that
makes Twilio fetch more TwiML (`<Redirect>`, a `<Gather>` or `<Record>` `action`) hands the
call to instructions the gateway never sees, which may dial anyone at any hour. So a call's
`Twiml` is read as XML and allowed only when every element and attribute is on the lists
below; anything else, however spelled, is refused. TwiML names are case-sensitive (Twilio:
"using <say> instead of <Say> will result in an error"), so only the exact names pass, and a
prefixed (`x:Dial`) or namespaced name is not one of them.

The parser is the standard library's expat, without namespace processing, and with every
declaration refused: a DOCTYPE (and so every entity but the five predefined ones, which
closes entity expansion and external entities), processing instructions, and an encoding
other than UTF-8 in the XML declaration (the text arrives as a form field; a document
claiming another encoding could be read differently by Twilio). Malformed XML is refused.

`Url` and `FallbackUrl` are TwiML the gateway cannot read when it forwards the call (Twilio
fetches it later, maybe different): they are accepted only on hosts the operator vouches for
in `[twilio] twiml_hosts`, over https (http only to a loopback host). `ApplicationSid` is
refused: the application's Voice URL is set at Twilio, outside the gateway.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from urllib.parse import urlsplit
from xml.parsers import expat

SSML = frozenset({
    "break", "emphasis", "lang", "p", "phoneme", "prosody", "s", "say-as", "sub", "w",
    "amazon:effect", "amazon:domain",
})
SPOKEN = frozenset({"Say", "Play", "Pause"})

# Each element the gateway accepts, with the attributes it may carry. Nothing here fetches a
# URL or connects anyone: no `action`, `url`, `*Callback`; Play's text is an audio file.
ATTRIBUTES: Mapping[str, frozenset[str]] = {
    "Response": frozenset(),
    "Say": frozenset({"voice", "language", "loop"}),
    "Play": frozenset({"loop", "digits"}),
    "Pause": frozenset({"length"}),
    "Hangup": frozenset(),
    "Reject": frozenset({"reason"}),
    # Without `action`, Twilio posts the result to "the current document URL": an inline
    # Twiml's own call, where Url and Twiml are mutually exclusive, so nothing the agent
    # named. The other attributes only shape what is collected.
    "Gather": frozenset({
        "input", "finishOnKey", "timeout", "speechTimeout", "maxSpeechTime",
        "profanityFilter", "numDigits", "language", "hints", "bargeIn", "debug",
        "actionOnEmptyResult", "speechModel", "enhanced", "method",
    }),
    "Record": frozenset({
        "timeout", "finishOnKey", "maxLength", "playBeep", "trim", "transcribe", "method",
    }),
    "break": frozenset({"strength", "time"}),
    "emphasis": frozenset({"level"}),
    "lang": frozenset({"xml:lang"}),
    "p": frozenset(),
    "phoneme": frozenset({"alphabet", "ph"}),
    "prosody": frozenset({"pitch", "rate", "volume"}),
    "s": frozenset(),
    "say-as": frozenset({"interpret-as", "format"}),
    "sub": frozenset({"alias"}),
    "w": frozenset({"role"}),
    "amazon:effect": frozenset({"name"}),
    "amazon:domain": frozenset({"name"}),
}
# Which elements may stand inside which (None: the document itself).
CHILDREN: Mapping[str | None, frozenset[str]] = {
    None: frozenset({"Response"}),
    "Response": frozenset({"Say", "Play", "Pause", "Hangup", "Reject", "Gather", "Record"}),
    "Gather": SPOKEN,
    "Say": SSML,
    **{name: SSML for name in SSML},
}
# Where text may stand: what is said, and the audio URL Play plays.
TEXT = frozenset({"Say", "Play", *SSML})

# Named in refusals: what these do that the gateway cannot follow.
CONNECTING = frozenset({
    "Dial", "Number", "Client", "Conference", "Queue", "Sip", "Sim", "Application",
    "WhatsApp", "Connect", "Refer", "Enqueue", "Sms", "Message", "Stream", "Room",
    "ConversationRelay", "VirtualAgent", "Autopilot", "AiSession", "Conversation",
})
FETCHING = frozenset({"Redirect", "Pay", "Start", "Leave"})
FETCHING_ATTRIBUTES = frozenset({
    "action", "url", "statusCallback", "partialResultCallback",
    "recordingStatusCallback", "transcribeCallback", "waitUrl", "referUrl",
})

LOOPBACK_NAMES = frozenset({"localhost"})


class TwimlRefused(ValueError):
    """TwiML, or a TwiML URL, the gateway will not forward; the message says why."""


def check_twiml(text: str) -> None:
    """Raise TwimlRefused unless `text` is TwiML made only of what ATTRIBUTES lists."""
    checker = _Checker()
    parser = expat.ParserCreate(encoding="UTF-8")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.XmlDeclHandler = checker.declaration
    parser.StartDoctypeDeclHandler = checker.doctype
    parser.EntityDeclHandler = checker.entity
    parser.ExternalEntityRefHandler = checker.external_entity
    parser.ProcessingInstructionHandler = checker.processing_instruction
    parser.StartElementHandler = checker.start
    parser.EndElementHandler = checker.end
    parser.CharacterDataHandler = checker.text
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise TwimlRefused(f"Twiml is not valid text: {exc.reason}") from exc
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        raise TwimlRefused(
            f"Twiml is not well-formed XML: {expat.ErrorString(exc.code)} "
            f"(line {exc.lineno}, column {exc.offset + 1})"
        ) from exc
    except RecursionError as exc:  # defensive: expat itself does not recurse in Python
        raise TwimlRefused("Twiml nests too deeply") from exc


class _Checker:
    def __init__(self) -> None:
        self.open: list[str] = []

    def declaration(self, version: str | None, encoding: str | None, standalone: int) -> None:
        if encoding is not None and encoding.strip().lower().replace("_", "-") not in (
            "utf-8", "utf8"
        ):
            raise TwimlRefused(
                f"Twiml declares the encoding {encoding!r}: it travels as UTF-8 text, so the "
                "gateway accepts only encoding=\"UTF-8\" (or none)"
            )

    def doctype(self, *_: object) -> None:
        raise TwimlRefused(
            "Twiml with a DOCTYPE is not accepted: TwiML needs none, and its entities could "
            "expand into something other than what the gateway checked"
        )

    def entity(self, *_: object) -> None:
        raise TwimlRefused("Twiml entity declarations are not accepted")

    def external_entity(self, *_: object) -> int:
        raise TwimlRefused("Twiml external entities are not accepted")

    def processing_instruction(self, target: str, _data: str) -> None:
        raise TwimlRefused(f"Twiml processing instructions (<?{target} ...?>) are not accepted")

    def start(self, name: str, attributes: dict[str, str]) -> None:
        parent = self.open[-1] if self.open else None
        if name not in CHILDREN.get(parent, frozenset()):
            raise TwimlRefused(_element_refusal(name, parent))
        allowed = ATTRIBUTES[name]
        for attribute in attributes:
            if attribute not in allowed:
                raise TwimlRefused(_attribute_refusal(name, attribute))
        self.open.append(name)

    def end(self, _name: str) -> None:
        self.open.pop()

    def text(self, data: str) -> None:
        if data.strip() and (not self.open or self.open[-1] not in TEXT):
            where = f"<{self.open[-1]}>" if self.open else "the document"
            raise TwimlRefused(
                f"Twiml has text directly inside {where}: only <Say> (and its SSML) and "
                "<Play> take text"
            )


def _element_refusal(name: str, parent: str | None) -> str:
    where = f"inside <{parent}>" if parent else "as the document's root"
    if parent is None and name != "Response":
        return f"Twiml must be one <Response> document, not <{name}>"
    if name in CONNECTING:
        why = "it connects the call to someone other than the checked callee"
    elif name in FETCHING:
        why = "it hands the call to more TwiML the gateway cannot see"
    elif name in ATTRIBUTES:
        why = "it does not belong there"
    else:
        why = (
            "it is not one of the verbs the gateway can check (TwiML names are "
            "case-sensitive; prefixed or namespaced names are not accepted)"
        )
    allowed = ", ".join(f"<{child}>" for child in sorted(CHILDREN.get(parent, ())))
    return (
        f"Twiml <{name}> {where} is not accepted: {why}. Accepted there: {allowed or 'nothing'}"
    )


def _attribute_refusal(name: str, attribute: str) -> str:
    if attribute in FETCHING_ATTRIBUTES or attribute.lower().endswith(("url", "callback")):
        why = "it makes Twilio fetch a URL the gateway cannot check (more TwiML, or a callback)"
    elif attribute == "xmlns" or attribute.startswith("xmlns:"):
        why = "namespaces are not accepted in TwiML"
    else:
        why = "it is not one the gateway accepts on this verb (names are case-sensitive)"
    allowed = ", ".join(sorted(ATTRIBUTES[name])) or "none"
    return f"Twiml <{name} {attribute}> is not accepted: {why}. Accepted: {allowed}"


def check_twiml_url(parameter: str, url: str, hosts: frozenset[str]) -> None:
    """Raise TwimlRefused unless `url` is an absolute https URL (http only to a loopback
    host) whose host is exactly, ignoring case, one of `hosts` (lower case, as the
    configuration keeps them), with no user name or password."""
    if not hosts:
        raise TwimlRefused(
            f"{parameter} is not accepted: the gateway cannot see the TwiML it returns, and "
            "no [twilio] twiml_hosts are configured. Send the call's Twiml instead"
        )
    if any(c <= " " or c in "\\\x7f" or not c.isascii() for c in url):
        raise TwimlRefused(f"{parameter} has characters a URL may not have unencoded")
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - a malformed port raises here
    except ValueError as exc:
        raise TwimlRefused(f"{parameter} is not a valid URL: {exc}") from exc
    if "@" in parts.netloc:
        raise TwimlRefused(f"{parameter} may not carry a user name or password")
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http") or not host:
        raise TwimlRefused(f"{parameter} must be an absolute https URL")
    if scheme == "http" and not is_loopback(host):
        raise TwimlRefused(f"{parameter} must use https (http only to a loopback host)")
    if normalized_host(host) not in hosts:
        raise TwimlRefused(
            f"{parameter} host {host!r} is not in [twilio] twiml_hosts: the gateway cannot "
            "see the TwiML it returns, which may dial anyone at any hour"
        )


def normalized_host(host: str) -> str:
    """A host as `twiml_hosts` keeps it: lower case, an IP address in its short form."""
    host = host.lower()
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
