"""A call's TwiML may do only what the gateway can see (issue 18, item 3): table tests over
verbs, attributes, nesting, case, namespaces, entities and encodings, the TwiML URLs, and a
property test that no Twiml makes the form check fail any other way than with a refusal.

The cases run through `check_form`, what the Twilio-shaped API runs on every call.
"""

from __future__ import annotations

from xml.dom import expatbuilder, minidom

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twilio.twiml.voice_response import Dial, VoiceResponse

from gateway.ingress.twilio import FormProblem, check_form
from gateway.ingress.twiml import ATTRIBUTES, CHILDREN
from gateway.model import Channel

NY = "+12125550123"
FROM = "+14155550100"
HOSTS = frozenset({"twiml.example.com", "127.0.0.1", "::1"})


def call(**parameters: str) -> list[tuple[str, str]]:
    return [("To", NY), ("From", FROM), *parameters.items()]


def refusal(form: list[tuple[str, str]], hosts: frozenset[str] = HOSTS) -> FormProblem | None:
    try:
        check_form(Channel.CALL, form, None, hosts)
    except FormProblem as problem:
        return problem
    return None


def twiml_refusal(twiml: str) -> FormProblem | None:
    return refusal(call(Twiml=twiml))


# --- verbs --------------------------------------------------------------------------------

REFUSED_TWIML = [
    # verbs that connect the call elsewhere or hand it to more TwiML
    ("dial", "<Response><Dial>+13055550199</Dial></Response>", "<Dial>"),
    ("dial-number", "<Response><Dial><Number>+13055550199</Number></Dial></Response>", "<Dial>"),
    ("connect-stream", '<Response><Connect><Stream url="wss://a.example.com/s"/></Connect>'
     "</Response>", "<Connect>"),
    ("connect-relay", '<Response><Connect><ConversationRelay url="wss://a.example.com"/>'
     "</Connect></Response>", "<Connect>"),
    ("refer", "<Response><Refer><Sip>sip:bob@x.example.com</Sip></Refer></Response>", "<Refer>"),
    ("enqueue", "<Response><Enqueue>support</Enqueue></Response>", "<Enqueue>"),
    ("redirect", "<Response><Redirect>https://agent.example.com/next</Redirect></Response>",
     "<Redirect>"),
    ("redirect-relative", "<Response><Redirect>/next</Redirect></Response>", "<Redirect>"),
    ("pay", '<Response><Pay action="https://a.example.com/paid"/></Response>', "<Pay>"),
    ("pay-without-action", "<Response><Pay/></Response>", "<Pay>"),
    ("start-stream", '<Response><Start><Stream url="wss://a.example.com"/></Start></Response>',
     "<Start>"),
    ("sms", "<Response><Sms to=\"+13055550199\">hi</Sms></Response>", "<Sms>"),
    ("message", "<Response><Message>hi</Message></Response>", "<Message>"),
    ("leave", "<Response><Leave/></Response>", "<Leave>"),
    ("echo", "<Response><Echo/></Response>", "<Echo>"),
    ("client", "<Response><Client>bob</Client></Response>", "<Client>"),
    ("conference", "<Response><Conference>room</Conference></Response>", "<Conference>"),
    # attributes that fetch TwiML or call back
    ("gather-action", '<Response><Gather action="https://a.example.com/g" numDigits="1">'
     "<Say>Press 1</Say></Gather></Response>", "<Gather action>"),
    ("gather-action-relative", '<Response><Gather action="/g"/></Response>', "<Gather action>"),
    ("gather-partial-callback", '<Response><Gather input="speech" '
     'partialResultCallback="https://a.example.com/p"/></Response>', "partialResultCallback"),
    ("record-action", '<Response><Record action="https://a.example.com/r"/></Response>',
     "<Record action>"),
    ("record-status-callback", '<Response><Record recordingStatusCallback='
     '"https://a.example.com/s"/></Response>', "recordingStatusCallback"),
    ("record-transcribe-callback", '<Response><Record transcribe="true" '
     'transcribeCallback="https://a.example.com/t"/></Response>', "transcribeCallback"),
    ("say-with-url", '<Response><Say url="https://a.example.com">hi</Say></Response>',
     "<Say url>"),
    ("play-action", '<Response><Play action="https://a.example.com">a.mp3</Play></Response>',
     "<Play action>"),
    # nested anywhere
    ("in-gather", "<Response><Gather><Dial>+13055550199</Dial></Gather></Response>", "<Dial>"),
    ("redirect-in-gather", "<Response><Gather><Say>x</Say><Redirect>/x</Redirect></Gather>"
     "</Response>", "<Redirect>"),
    ("in-say", "<Response><Say>Hello<Dial>+13055550199</Dial></Say></Response>", "<Dial>"),
    ("in-ssml", "<Response><Say><p><s><Redirect>/x</Redirect></s></p></Say></Response>",
     "<Redirect>"),
    ("in-play", "<Response><Play><Redirect>/x</Redirect></Play></Response>", "<Redirect>"),
    ("in-hangup", "<Response><Hangup><Dial>1</Dial></Hangup></Response>", "<Dial>"),
    ("gather-in-gather", "<Response><Gather><Gather/></Gather></Response>", "<Gather>"),
    ("response-in-response", "<Response><Response><Dial>1</Dial></Response></Response>",
     "<Response>"),
    ("after-hangup", "<Response><Hangup/><Redirect>/x</Redirect></Response>", "<Redirect>"),
    # case, prefixes and namespaces
    ("lowercase-dial", "<Response><dial>+13055550199</dial></Response>", "<dial>"),
    ("uppercase-dial", "<Response><DIAL>+13055550199</DIAL></Response>", "<DIAL>"),
    ("lowercase-redirect", "<Response><redirect>/x</redirect></Response>", "<redirect>"),
    ("lowercase-response", "<response><Say>hi</Say></response>", "<response>"),
    ("lowercase-attribute", '<Response><Gather Action="/g"/></Response>', "<Gather Action>"),
    ("prefixed-dial", '<Response xmlns:t="urn:twiml"><t:Dial>1</t:Dial></Response>', "xmlns"),
    ("prefixed-dial-undeclared", "<Response><t:Dial>1</t:Dial></Response>", "<t:Dial>"),
    ("default-namespace", '<Response xmlns="http://www.twilio.com/twiml"><Say>hi</Say>'
     "</Response>", "xmlns"),
    ("prefixed-response", '<t:Response xmlns:t="urn:t"><Say>x</Say></t:Response>',
     "<t:Response>"),
    ("prefixed-attribute", '<Response><Gather t:action="/g" xmlns:t="urn:t"/></Response>',
     "<Gather t:action>"),
    ("whitespace-in-name", "<Response><Dial >1</Dial ></Response>", "<Dial>"),
    # entities, declarations and encodings
    ("entity-expanding-to-dial", '<!DOCTYPE Response [<!ENTITY d "<Dial>+1305</Dial>">]>'
     "<Response>&d;</Response>", "DOCTYPE"),
    ("billion-laughs", '<!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">'
     "]><Response><Say>&b;</Say></Response>", "DOCTYPE"),
    ("external-entity", '<!DOCTYPE r [<!ENTITY x SYSTEM "https://a.example.com/x.xml">]>'
     "<Response>&x;</Response>", "DOCTYPE"),
    ("external-dtd", '<!DOCTYPE Response SYSTEM "https://a.example.com/twiml.dtd">'
     "<Response/>", "DOCTYPE"),
    ("undefined-entity", "<Response><Say>&d;</Say></Response>", "not well-formed"),
    ("utf-16-declared", '<?xml version="1.0" encoding="UTF-16"?><Response/>', "encoding"),
    ("utf-7-declared", '<?xml version="1.0" encoding="UTF-7"?><Response>+ADw-Dial+AD4-1'
     "+ADw-/Dial+AD4-</Response>", "encoding"),
    ("processing-instruction", '<?xml-stylesheet href="https://a.example.com/x.xsl"?>'
     "<Response/>", "processing instruction"),
    # malformed or not TwiML
    ("unclosed", "<Response><Say>hi</Response>", "not well-formed"),
    ("two-roots", "<Response/><Response><Dial>1</Dial></Response>", "not well-formed"),
    ("text-outside", "+13055550199", "not well-formed"),
    ("other-root", "<Dial>+13055550199</Dial>", "<Response>"),
    ("text-in-response", "<Response>+13055550199</Response>", "text"),
    ("text-in-gather", "<Response><Gather>say this</Gather></Response>", "text"),
    ("nul", "<Response><Say>a\x00b</Say></Response>", "not well-formed"),
    ("mismatched-case-close", "<Response><Say>hi</say></Response>", "not well-formed"),
]


@pytest.mark.parametrize(("twiml", "names"), [(t, n) for _, t, n in REFUSED_TWIML],
                         ids=[i for i, _, _ in REFUSED_TWIML])
def test_twiml_that_could_reach_anyone_else_is_refused(twiml: str, names: str) -> None:
    problem = twiml_refusal(twiml)
    assert problem is not None, "accepted"
    assert problem.code == 20001
    assert names.lower() in problem.message.lower()


ACCEPTED_TWIML = [
    ("say", "<Response><Say>Hello from Example Corp.</Say></Response>"),
    ("declaration", '<?xml version="1.0" encoding="UTF-8"?><Response><Say>Hi</Say></Response>'),
    ("declaration-lowercase-utf8", "<?xml version='1.0' encoding='utf-8'?><Response/>"),
    ("empty", "<Response/>"),
    ("say-attributes", '<Response><Say voice="Polly.Joanna" language="en-US" loop="2">Hi'
     "</Say></Response>"),
    ("play-pause-hangup", '<Response><Play loop="1">https://media.example.com/a.mp3</Play>'
     '<Pause length="2"/><Hangup/></Response>'),
    ("play-digits", '<Response><Play digits="wwww3"/></Response>'),
    ("reject", '<Response><Reject reason="busy"/></Response>'),
    ("gather-without-action", '<Response><Gather input="dtmf speech" numDigits="1" '
     'timeout="5"><Say>Press 1 to hear more.</Say><Pause length="1"/></Gather>'
     "<Say>Goodbye.</Say></Response>"),
    ("record-without-action", '<Response><Record maxLength="30" playBeep="true"/></Response>'),
    ("ssml", '<Response><Say voice="Polly.Joanna">Hi <break time="1s"/><emphasis '
     'level="strong">now</emphasis><lang xml:lang="fr-FR">bonjour</lang><prosody rate="slow">'
     '<s>x</s></prosody><say-as interpret-as="telephone">+14155550100</say-as>'
     '<amazon:effect name="whispered">psst</amazon:effect></Say></Response>'),
    ("comments", "<!-- a note --><Response><!-- <Dial>1</Dial> --><Say>Hi</Say></Response>"),
    ("escaped-text", "<Response><Say>&lt;Dial&gt; is a word here &amp; spoken</Say></Response>"),
    ("cdata-text", "<Response><Say><![CDATA[<Dial>1</Dial> read aloud]]></Say></Response>"),
    ("character-references", "<Response><Say>&#72;&#x69;</Say></Response>"),
    ("whitespace-and-bom", "\ufeff\n  <Response>\n  <Say>Hi</Say>\n</Response>\n"),
]


@pytest.mark.parametrize("twiml", [t for _, t in ACCEPTED_TWIML],
                         ids=[i for i, _ in ACCEPTED_TWIML])
def test_twiml_that_stays_on_the_checked_call_is_accepted(twiml: str) -> None:
    assert twiml_refusal(twiml) is None


# The SDK's own builders: what an agent writes with `VoiceResponse` is judged the same way.
SDK_REFUSED = {
    "dial": lambda r: r.dial("+13055550199"),
    "connect": lambda r: r.connect().stream(url="wss://a.example.com/s"),
    "refer": lambda r: r.refer().sip("sip:bob@x.example.com"),
    "enqueue": lambda r: r.enqueue("support"),
    "redirect": lambda r: r.redirect("https://agent.example.com/next"),
    "gather-action": lambda r: r.gather(action="https://agent.example.com/g"),
    "record-action": lambda r: r.record(action="https://agent.example.com/r"),
    "pay": lambda r: r.pay(),
    "start": lambda r: r.start().stream(url="wss://a.example.com/s"),
    "sms": lambda r: r.sms("hi", to="+13055550199"),
    "leave": lambda r: r.leave(),
    "queue-in-dial": lambda r: r.dial().queue("support"),
    "dial-in-gather": lambda r: r.gather().append(Dial("+13055550199")),
    "redirect-after-gather": lambda r: (r.gather().say("Press 1"), r.redirect("/again")),
}
SDK_ACCEPTED = {
    "say": lambda r: r.say("Hello", voice="Polly.Joanna"),
    "play-pause-hangup": lambda r: (r.play("https://m.example.com/a.mp3"), r.pause(length=1),
                                    r.hangup()),
    "reject": lambda r: r.reject(reason="rejected"),
    "gather": lambda r: r.gather(num_digits=1, input="dtmf").say("Press 1"),
    "record": lambda r: r.record(max_length=20, play_beep=True),
}


@pytest.mark.parametrize("build", SDK_REFUSED.values(), ids=SDK_REFUSED.keys())
def test_sdk_built_twiml_that_escapes_the_check_is_refused(build) -> None:
    response = VoiceResponse()
    build(response)
    assert twiml_refusal(str(response)) is not None, str(response)


@pytest.mark.parametrize("build", SDK_ACCEPTED.values(), ids=SDK_ACCEPTED.keys())
def test_sdk_built_twiml_that_stays_on_the_call_is_accepted(build) -> None:
    response = VoiceResponse()
    build(response)
    assert twiml_refusal(str(response)) is None, str(response)


# --- Url, FallbackUrl, ApplicationSid -----------------------------------------------------

URLS = [
    ("https://twiml.example.com/voice", None),
    ("https://TWIML.Example.COM/voice?x=1#rc=2", None),
    ("https://twiml.example.com:8443/voice", None),
    ("http://127.0.0.1:8080/voice", None),
    ("http://[::1]:8080/voice", None),
    ("http://twiml.example.com/voice", "https"),
    ("https://agent.example.com/voice", "twiml_hosts"),
    ("https://sub.twiml.example.com/voice", "twiml_hosts"),
    ("https://twiml.example.com.evil.example/voice", "twiml_hosts"),
    ("https://twiml.example.com./voice", "twiml_hosts"),
    ("https://evil.example@twiml.example.com/voice", "user name"),
    ("https://twiml.example.com@evil.example/voice", "user name"),
    ("https://evil.example\\@twiml.example.com/", "characters"),
    ("https://twiml.example.com /voice", "characters"),
    ("https://twiml.exämple.com/voice", "characters"),
    ("https://twiml%2Eexample.com/voice", "twiml_hosts"),
    ("https://[::1/voice", "not a valid URL"),
    ("https://twiml.example.com:99999/", "not a valid URL"),
    ("ftp://twiml.example.com/voice", "https"),
    ("//twiml.example.com/voice", "https"),
    ("/voice", "https"),
    ("javascript:alert(1)", "https"),
]


@pytest.mark.parametrize("name", ["Url", "FallbackUrl"])
@pytest.mark.parametrize(("url", "says"), URLS, ids=[u for u, _ in URLS])
def test_twiml_urls_only_on_hosts_the_operator_vouches_for(
    name: str, url: str, says: str | None
) -> None:
    form = call(Url="https://twiml.example.com/voice") if name == "FallbackUrl" else call()
    problem = refusal([*form, (name, url)])
    if says is None:
        assert problem is None
    else:
        assert problem is not None and problem.code == 20001
        assert name in problem.message and says in problem.message


def test_without_twiml_hosts_every_url_is_refused() -> None:
    problem = refusal(call(Url="https://twiml.example.com/voice"), hosts=frozenset())
    assert problem is not None and "twiml_hosts" in problem.message
    assert refusal(call(Twiml="<Response><Say>Hi</Say></Response>"), hosts=frozenset()) is None


def test_an_application_sid_is_refused_and_the_answer_says_why() -> None:
    problem = refusal(call(ApplicationSid="AP" + "0" * 32))
    assert problem is not None and problem.code == 20001
    assert "Voice URL" in problem.message and "outside the gateway" in problem.message


def test_twiml_is_checked_even_beside_a_url() -> None:
    """Twilio uses Url when both are given (warning 32019), but what is forwarded must all
    be what the gateway accepts."""
    form = call(Url="https://twiml.example.com/v", Twiml="<Response><Dial>1</Dial></Response>")
    assert refusal(form) is not None


# --- properties ---------------------------------------------------------------------------

NAMES = st.sampled_from([
    *ATTRIBUTES, "Dial", "Redirect", "Connect", "Refer", "Enqueue", "Number", "Stream", "Pay",
    "dial", "DIAL", "t:Dial", "say", "x", "Response",
])
ATTRIBUTE_NAMES = st.sampled_from([
    *sorted({a for names in ATTRIBUTES.values() for a in names}), "action", "url", "Action",
    "statusCallback", "xmlns", "xmlns:t", "t:action",
])
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)


@st.composite
def elements(draw, depth: int = 0) -> str:
    name = draw(NAMES)
    attributes = draw(st.dictionaries(ATTRIBUTE_NAMES, TEXT, max_size=2))
    written = "".join(
        f' {k}="{v.replace("&", "&amp;").replace("<", "&lt;").replace(chr(34), "&quot;")}"'
        for k, v in attributes.items()
    )
    children = draw(st.lists(elements(depth + 1), max_size=3)) if depth < 3 else []
    text = draw(st.sampled_from(["", "hi", "&amp;", "&d;", "<![CDATA[<Dial>]]>"]))
    return f"<{name}{written}>{text}{''.join(children)}</{name}>"


@st.composite
def mostly_twiml(draw, parent: str | None = None, depth: int = 0) -> str:
    """Documents built from what the gateway accepts, with now and then a name, an attribute
    or a text from anywhere: the refusals then come one at a time."""
    stray = draw(st.integers(0, 39)) == 0
    allowed = sorted(CHILDREN.get(parent, ()))
    name = draw(NAMES) if stray or not allowed else draw(st.sampled_from(allowed))
    known = sorted(ATTRIBUTES.get(name, ()))
    keys = ATTRIBUTE_NAMES if draw(st.integers(0, 39)) == 0 or not known else st.sampled_from(
        known)
    attributes = draw(st.dictionaries(keys, st.sampled_from(["1", "true", "en-US", "x"]),
                                      max_size=2))
    written = "".join(f' {k}="{v}"' for k, v in attributes.items())
    text = draw(st.sampled_from(["", "Hello", "&lt;Dial&gt;", "  "])) if (
        name in ("Say", "Play") or draw(st.integers(0, 14)) == 0) else ""
    children = (
        draw(st.lists(mostly_twiml(name, depth + 1), max_size=3)) if depth < 4 else []
    )
    return f"<{name}{written}>{text}{''.join(children)}</{name}>"


TWIML = st.one_of(
    mostly_twiml(),
    mostly_twiml(),
    elements(),
    elements().map(lambda e: f"<Response>{e}</Response>"),
    st.tuples(st.sampled_from(["", '<?xml version="1.0"?>', "<!DOCTYPE r>", "<!-- c -->"]),
              elements()).map("".join),
    st.text(max_size=60),
    st.text(alphabet="<>/!?&;=\"' DialResponseSay[]-x:", max_size=60),
)


def elements_of(twiml: str) -> list[minidom.Element]:
    """Every element, read by the DOM builder (names as written, no namespaces)."""
    document = expatbuilder.parseString(twiml.encode(), namespaces=False)
    return list(document.getElementsByTagName("*"))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TWIML)
def test_any_twiml_is_refused_with_a_code_or_holds_only_accepted_elements(twiml: str) -> None:
    """Never another exception (the API would answer 500); and whatever passes, a second
    reading (the DOM) finds only the accepted elements and attributes, where they go."""
    problem = twiml_refusal(twiml)
    if problem is not None:
        blank = not twiml.strip()  # no Twiml at all: Twilio's "Url parameter is required."
        assert problem.code == (21205 if blank else 20001) and problem.message
        return
    for element in elements_of(twiml):
        parent = element.parentNode
        parent_name = parent.tagName if isinstance(parent, minidom.Element) else None
        assert element.tagName in CHILDREN[parent_name]
        assert set(element.attributes.keys()) <= ATTRIBUTES[element.tagName]
