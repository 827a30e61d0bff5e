"""Logs name nobody while encryption at rest is on: every `recipient` field, at any depth
(a decision the store could not take is logged whole), is its keyed pseudonym, and so is
every address or number quoted in a line's free text (a provider's refusal, a store error,
a request path, a traceback), whoever logged it. Logs are shipped to systems the store's
encryption does not cover."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import sys
from collections.abc import Iterator
from types import MappingProxyType

import pytest

from gateway.runtime.logs import (
    JsonLineFormatter,
    configure_logging,
    log_event,
    use_pseudonyms,
)
from gateway.store.sealing import (
    LOG_PSEUDONYM_PREFIX,
    DataCipher,
    DataKeyring,
    pseudonym_form,
)

ADDRESS = "Ann.Lead+news@Client.Example.NET"
NUMBER = "+12125550142"


def cipher() -> DataCipher:
    return DataCipher(DataKeyring({"k1": os.urandom(32)}, "k1", os.urandom(32)))


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    """What a logger writes, as the gateway formats it; pseudonyms off again afterwards."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLineFormatter())
    logger = logging.getLogger("tests.log_pseudonyms")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        use_pseudonyms(None)


def logged(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def log_a_send_and_a_lost_decision() -> None:
    logger = logging.getLogger("tests.log_pseudonyms")
    log_event(logger, "delivered", gateway_id="g1", account="demo", recipient=ADDRESS)
    log_event(logger, "decisions-not-recorded", gateway_id="g2", decisions=[
        {"recipient": NUMBER, "outcome": "allowed", "upstream": {"id": "SM1"}},
        {"recipient": "", "outcome": "blocked"},
    ])


def test_with_pseudonyms_no_line_names_the_recipient_at_any_depth(lines: io.StringIO) -> None:
    keys = cipher()
    use_pseudonyms(keys.log_pseudonym)
    log_a_send_and_a_lost_decision()
    text = lines.getvalue()
    assert "Client.Example" not in text and "5550142" not in text
    delivered, lost = logged(lines)
    assert delivered["recipient"] == keys.log_pseudonym(ADDRESS)
    assert delivered["recipient"].startswith(LOG_PSEUDONYM_PREFIX)
    assert (delivered["gateway_id"], delivered["account"]) == ("g1", "demo")
    first, empty = lost["decisions"]
    assert first == {"recipient": keys.log_pseudonym(NUMBER), "outcome": "allowed",
                     "upstream": {"id": "SM1"}}
    assert empty == {"recipient": "", "outcome": "blocked"}  # nobody: nothing to hide


def test_without_pseudonyms_the_log_names_the_recipient_as_it_is(lines: io.StringIO) -> None:
    use_pseudonyms(None)
    log_a_send_and_a_lost_decision()
    delivered, lost = logged(lines)
    assert delivered["recipient"] == ADDRESS
    assert lost["decisions"][0]["recipient"] == NUMBER


def test_a_pseudonym_is_one_per_person_in_any_case_and_keyed() -> None:
    keys, other = cipher(), cipher()
    assert keys.log_pseudonym(ADDRESS) == keys.log_pseudonym(ADDRESS.lower())
    assert keys.log_pseudonym(ADDRESS) != keys.log_pseudonym("bo@client.example.net")
    assert keys.log_pseudonym(NUMBER) != other.log_pseudonym(NUMBER)
    assert NUMBER.removeprefix("+") not in keys.log_pseudonym(NUMBER)


@pytest.mark.parametrize(("spelling", "other_spelling"), [
    ("jörg@müller.example", "JÖRG@xn--mller-kva.example"),  # the domain's IDNA ASCII form
    ("j\u00f6rg@m\u00fcller.example", "jo\u0308rg@mu\u0308ller.example"),  # composed or not
    ("ann@bücher.example", "Ann@BÜCHER.example"),
])
def test_an_internationalised_address_has_one_pseudonym_in_each_of_its_forms(
    spelling: str, other_spelling: str
) -> None:
    """A provider's refusal may quote the domain as `xn--…` where the agent wrote it in
    Unicode, and text from another system may carry letters decomposed: one person."""
    keys = cipher()
    assert keys.log_pseudonym(spelling) == keys.log_pseudonym(other_spelling)
    assert keys.log_pseudonym(spelling) != keys.log_pseudonym("jorg@muller.example")


def test_a_domain_that_is_no_valid_idn_still_gets_a_pseudonym() -> None:
    keys = cipher()
    odd = "ann@bü_cher..example"
    assert keys.log_pseudonym(odd) == keys.log_pseudonym(odd.upper())
    assert keys.log_pseudonym(odd) != keys.log_pseudonym("ann@bücher.example")


def test_greek_letters_folded_from_either_form_are_one_person() -> None:
    """Case folding decomposes some letters (U+0390 and U+03AA U+0301 fold apart)."""
    keys = cipher()
    assert keys.log_pseudonym("\u0390@x.example") == keys.log_pseudonym("\u03aa\u0301@x.example")


def test_a_value_no_address_could_be_is_only_case_folded() -> None:
    """Normalisation takes quadratic time on a long run of combining marks, and a recipient
    field holds whatever an agent or a webhook sent."""
    long = "a@b" + "\u0301\u0316" * 2000
    assert pseudonym_form(long) == long.casefold()


def test_a_lone_surrogate_still_gets_a_pseudonym(lines: io.StringIO) -> None:
    keys = cipher()
    use_pseudonyms(keys.log_pseudonym)
    log_event(logging.getLogger("tests.log_pseudonyms"), "delivered", recipient="\ud800@x.example")
    (line,) = logged(lines)
    assert line["recipient"] == keys.log_pseudonym("\ud800@x.example")


@pytest.mark.parametrize(("quoted", "person"), [
    ("jo\u0308rg@mu\u0308ller.example", "jörg@müller.example"),  # decomposed letters
    ("user@\u0938\u0930\u0915\u093e\u0930.\u092d\u093e\u0930\u0924", None),  # vowel signs (Mc)
    ("\u0905\u0928\u093f\u0932@example.in", None),  # a vowel sign in the local part
    ("ana\u200d\u0dca@example.lk", None),  # a zero-width joiner inside a name
    ("anna@col\u00b7legi.cat", None),  # a Catalan middle dot
    ("pau\u00b7la@example.cat", None),
    ("dan@\u05e6\u05d4\u05f4\u05dc.example", None),  # a Hebrew gershayim
    ("jorg@b\u00fc\u00adcher.example", None),  # a soft hyphen
    ("\U0001f600@example.com", None),  # an emoji local part
    ("taro@\u4f8b\u3048\u3002\u30c6\u30b9\u30c8", "taro@\u4f8b\u3048.\u30c6\u30b9\u30c8"),
    ("taro@\u4f8b\u3048\uff0ejp", "taro@\u4f8b\u3048.jp"),  # a fullwidth full stop
])
def test_an_address_beyond_ascii_quoted_in_text_names_nobody(
    lines: io.StringIO, quoted: str, person: str | None
) -> None:
    """`\\w` matches no combining mark, joiner, middle dot, gershayim, soft hyphen or
    emoji, and a domain's dot may be a wide one: the scan ended such an address there and
    left the rest in clear (two attack reviews' findings)."""
    keys = cipher()
    use_pseudonyms(keys.log_pseudonym)
    log_event(logging.getLogger("tests.log_pseudonyms"), "upstream-refused",
              error=f"550 5.1.1 <{quoted}>: no such user")
    (line,) = logged(lines)
    assert line["error"] == f"550 5.1.1 <{keys.log_pseudonym(person or quoted)}>: no such user"


@pytest.mark.parametrize(("line", "people"), [
    ("\u201ebob@example.com\u201c", ["bob@example.com"]),  # quotation marks
    ("bob@example.com\u2019s mailbox", ["bob@example.com"]),
    ("\u5b9b\u5148\uff08bob@example.com\uff09\u306b\u9001\u4fe1", ["bob@example.com"]),
    ("\u9001\u4fe1\u5148\uff1abob@example.com", ["bob@example.com"]),  # a fullwidth colon
    ("\u3010j\u00f6rg@b\u00fccher.example\u3011", ["j\u00f6rg@b\u00fccher.example"]),
    ("bob@example.com\u2014mailbox full", ["bob@example.com"]),  # an em dash
    ("\u5b9b\u5148 bob@example.com\u3001alice@example.org",  # an ideographic comma
     ["bob@example.com", "alice@example.org"]),
    ("bob@example.com\u548calice@example.org", None),  # a letter as the separator
    ("bob@example.com\u3002\u3002alice@example.org",  # two wide full stops
     ["bob@example.com", "alice@example.org"]),
    ("\u5b9b\u5148 o'brien@example.ie", ["o'brien@example.ie"]),  # an apostrophe inside
])
def test_an_address_ends_at_punctuation_beyond_ascii_as_at_ascii_punctuation(
    lines: io.StringIO, line: str, people: list[str] | None
) -> None:
    """Each address gives the pseudonym `keys log-pseudonym` prints for it, and none is
    left in clear, not even a domain whose local part a letter-separator took."""
    keys = cipher()
    use_pseudonyms(keys.log_pseudonym)
    log_event(logging.getLogger("tests.log_pseudonyms"), "upstream-refused", error=line)
    (logged_line,) = logged(lines)
    assert "example" not in logged_line["error"] and "cher" not in logged_line["error"]
    for person in people or []:
        assert keys.log_pseudonym(person) in logged_line["error"]


@pytest.mark.parametrize("after", ["", " \u2014 \u00e9"], ids=["ascii", "beyond-ascii"])
def test_a_quoted_local_part_is_taken_whole(lines: io.StringIO, after: str) -> None:
    """The gateway accepts `"john doe"@example.com`: a refusal quoting it named him."""
    keys = cipher()
    use_pseudonyms(keys.log_pseudonym)
    person = '"john doe"@example.com'
    log_event(logging.getLogger("tests.log_pseudonyms"), "upstream-refused",
              error=f"550 5.1.1 <{person}>: unknown{after}")
    (line,) = logged(lines)
    assert line["error"] == f"550 5.1.1 <{keys.log_pseudonym(person)}>: unknown{after}"


@pytest.mark.parametrize(("line", "person"), [
    ("550 <o'brien@example.ie>: unknown", "o'brien@example.ie"),  # an apostrophe inside
    ("KeyError('bob@example.com')", "bob@example.com"),  # a repr's quotes around
    ("to='bob@example.com'", "bob@example.com"),
])
def test_an_apostrophe_is_part_of_an_address_only_inside_it(
    lines: io.StringIO, line: str, person: str
) -> None:
    keys = cipher()
    use_pseudonyms(keys.log_pseudonym)
    log_event(logging.getLogger("tests.log_pseudonyms"), "upstream-refused", error=line)
    (logged_line,) = logged(lines)
    assert logged_line["error"] == line.replace(person, keys.log_pseudonym(person))


def test_a_line_that_cannot_be_formatted_is_one_line_naming_nobody(
    lines: io.StringIO,
) -> None:
    """Logging's own report of a failing formatter prints the record raw on stderr."""
    def broken(value: str) -> str:
        raise RuntimeError(f"cannot name {value}")

    use_pseudonyms(broken)
    log_event(logging.getLogger("tests.log_pseudonyms"), "delivered", recipient=ADDRESS)
    (line,) = logged(lines)
    assert (line["event"], line["error"]) == ("log-line-unformattable", "RuntimeError")
    assert "client" not in lines.getvalue().lower()


def test_addresses_and_numbers_quoted_in_free_text_are_pseudonyms_too(
    lines: io.StringIO,
) -> None:
    """Whatever the field, the library or the shape: a provider's refusal, an admin path, a
    store error naming a row, a traceback, a mapping that is not a dict, a list of them."""
    keys = cipher()
    use_pseudonyms(keys.log_pseudonym)
    logger = logging.getLogger("tests.log_pseudonyms")
    log_event(logger, "decisions-not-recorded", decisions=[{"upstream": {
        "code": 550, "error": f"5.1.1 <{ADDRESS}>: Recipient address rejected"}}])
    log_event(logger, "admin-store-unavailable", path=f"/v1/privacy/{ADDRESS}",
              error=f"consents row {NUMBER} (sms): written past the gateway")
    log_event(logger, "several", recipients=(ADDRESS, "212 555-0142 x7"),
              decision=MappingProxyType({"recipient": "212 555-0142 x7"}))
    try:
        raise KeyError(ADDRESS)
    except KeyError:
        logger.exception("unexpected error for %s", NUMBER)
    text = lines.getvalue()
    for clear in ("Client.Example", "client.example", "5550142", "555-0142"):
        assert clear not in text
    refused, admin, several, crashed = logged(lines)
    assert refused["decisions"][0]["upstream"] == {
        "code": 550, "error": f"5.1.1 <{keys.log_pseudonym(ADDRESS)}>: Recipient address rejected"}
    assert admin["path"] == f"/v1/privacy/{keys.log_pseudonym(ADDRESS)}"
    assert keys.log_pseudonym(NUMBER) in admin["error"]
    assert several["recipients"] == [keys.log_pseudonym(ADDRESS),
                                     keys.log_pseudonym("212 555-0142 x7")]
    assert several["decision"] == {"recipient": keys.log_pseudonym("212 555-0142 x7")}
    assert crashed["event"] == f"unexpected error for {keys.log_pseudonym(NUMBER)}"
    assert keys.log_pseudonym(ADDRESS) in crashed["exception"]
    assert "pseudonym:pseudonym" not in text  # a pseudonym is never taken for an address


@pytest.mark.parametrize("before", ["\n", "\t", "\r", "\x1b", "\\", '"', "<", "mailto:",
                                    "/v1/privacy/", "SRS0=HHH=TT=client.example.net="])
def test_whatever_comes_before_an_address_the_line_stays_json_and_names_nobody(
    lines: io.StringIO, before: str
) -> None:
    """JSON escapes a line break as two characters: a scan of the finished line would take
    its letter for the address's first, and leave an invalid escape behind. A rewriting
    scheme (SRS) puts the person's domain in the local part of another address."""
    keys = cipher()
    use_pseudonyms(keys.log_pseudonym)
    log_event(logging.getLogger("tests.log_pseudonyms"), "upstream-refused",
              error=f"550 5.1.1 rejected:{before}{ADDRESS.lower()}")
    (line,) = logged(lines)  # json.loads: still one valid JSON object
    assert "client.example" not in lines.getvalue().lower()
    if not before.startswith("SRS0"):  # the address itself, as `keys log-pseudonym` names it
        assert line["error"] == f"550 5.1.1 rejected:{before}{keys.log_pseudonym(ADDRESS)}"


def test_ids_a_provider_is_searched_by_stay_as_they_are(lines: io.StringIO) -> None:
    """A relay that gives no queue id answers with the Message-ID, which holds an '@'."""
    use_pseudonyms(cipher().log_pseudonym)
    upstream_id = "250 2.6.0 <a1b2c3@mail.prod.outlook.com> Queued mail for delivery"
    log_event(logging.getLogger("tests.log_pseudonyms"), "delivered", gateway_id="g+1234567",
              upstream_id=upstream_id, recipient=ADDRESS)
    (line,) = logged(lines)
    assert (line["gateway_id"], line["upstream_id"]) == ("g+1234567", upstream_id)
    assert line["recipient"].startswith(LOG_PSEUDONYM_PREFIX)


def test_a_line_stderr_refuses_is_dropped_without_logging_s_own_report(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Logging reports a failed write on stderr, the record's arguments raw in it."""

    class Refusing(io.StringIO):
        def write(self, text: str) -> int:
            raise BlockingIOError(errno.EAGAIN, "the pipe is full")

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    monkeypatch.setattr(sys, "stderr", Refusing())
    report = io.StringIO()
    try:
        configure_logging()
        monkeypatch.setattr(sys, "stderr", report)
        logging.getLogger("tests.log_pseudonyms").warning("no answer from %s", ADDRESS)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert report.getvalue() == ""
