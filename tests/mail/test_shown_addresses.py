"""Issue 18 items 6 and 7: every address a reader may take for the sender, or for where a
reply goes, is found as the reader sees it — in the Sender and Reply-To headers, and written
into the display names and comments of From, Sender and Reply-To, however disguised."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.lookalikes import DEFAULT_IGNORABLES, fold
from gateway.mail.parse import fields_content, parse_email, sender_identities
from gateway.model import EmailFields, ShownAddress


def message(*headers: str) -> bytes:
    lines = ["To: bob@client.example.net", "Subject: hello", *headers, "", "Hi Bob", ""]
    return "\r\n".join(lines).encode()


def shown_by(*headers: str) -> tuple[ShownAddress, ...]:
    content = parse_email(message(*headers))
    assert content.problems == ()
    return content.other_identities


# What a reader sees in each display name or comment is the address ceo@bank.example.
DISGUISES = {
    "plain comment": "From: katie@example.com (ceo@bank.example)",
    "encoded comment": "From: katie@example.com (=?utf-8?q?ceo=40bank=2Eexample?=)",
    "zero-width joiner": 'From: "ceo@ba\u200dnk.example" <katie@example.com>',
    "combining grapheme joiner": 'From: "ceo@ba\u034fnk.example" <katie@example.com>',
    "Hangul filler": 'From: "ceo@\u3164bank.example" <katie@example.com>',
    "variation selector": 'From: "ceo@bank\ufe0f.example" <katie@example.com>',
    "tag character": 'From: "ceo@bank.\U000e0041example" <katie@example.com>',
    "full-width at sign": 'From: "ceo\uff20bank.example" <katie@example.com>',
    "small commercial at": 'From: "ceo\ufe6bbank.example" <katie@example.com>',
    "one dot leader": 'From: "ceo@bank\u2024example" <katie@example.com>',
    "ideographic full stop": 'From: "ceo@bank\u3002example" <katie@example.com>',
    "full-width full stop": 'From: "ceo@bank\uff0eexample" <katie@example.com>',
    "halfwidth ideographic full stop": 'From: "ceo@bank\uff61example" <katie@example.com>',
    "Vai full stop": 'From: "ceo@bank\ua60eexample" <katie@example.com>',
    "encoded display name with a look-alike dot":
        "From: =?utf-8?q?ceo=40bank=E2=80=A4example?= <katie@example.com>",
}


@pytest.mark.parametrize("header", DISGUISES.values(), ids=DISGUISES.keys())
def test_a_disguised_address_beside_the_sender_is_found_as_the_reader_reads_it(header) -> None:
    [found] = shown_by(header)
    assert found.address == "ceo@bank.example"
    assert found.where in ("From display name", "From comment")


def test_look_alike_letters_are_quoted_as_written() -> None:
    """A Cyrillic a is read as "a" but the address is another domain: it is named as it is."""
    [found] = shown_by('From: "support@p\u0430ypal.com" <katie@example.com>')
    assert found == ShownAddress("support@p\u0430ypal.com", "From display name")
    assert fold(found.address) == fold("support@paypal.com")


def test_an_accented_address_is_found_whole() -> None:
    [found] = shown_by('From: "caf\u00e9@bank.example" <katie@example.com>')
    assert found.address == "caf\u00e9@bank.example"


def test_reply_to_and_sender_are_named_with_their_display_names_and_comments() -> None:
    found = shown_by(
        'From: "Katie" <katie@example.com>',
        'Sender: "ops@\u200bvendor.example" <relay@vendor.example>',
        'Reply-To: "ceo\uff20bank\u3002example" <replies@elsewhere.example> (boss@corp.example)',
    )
    assert found == (
        ShownAddress("relay@vendor.example", "Sender"),
        ShownAddress("ops@vendor.example", "Sender display name"),
        ShownAddress("replies@elsewhere.example", "Reply-To"),
        ShownAddress("ceo@bank.example", "Reply-To display name"),
        ShownAddress("boss@corp.example", "Reply-To comment"),
    )


def test_every_reply_to_address_of_a_list_or_group_is_found() -> None:
    found = shown_by("From: katie@example.com",
                     "Reply-To: a@one.example, team: b@two.example, c@three.example;")
    assert [f.address for f in found] == ["a@one.example", "b@two.example", "c@three.example"]
    assert {f.where for f in found} == {"Reply-To"}


def test_ordinary_names_show_no_address() -> None:
    assert shown_by('From: "Katie Ng (Sales)" <katie@example.com>',
                    'Reply-To: "Ren\u00e9e \u041f\u0435\u0442\u0440\u043e\u0432\u0430" '
                    "<katie@example.com>") == (ShownAddress("katie@example.com", "Reply-To"),)


@pytest.mark.parametrize("reply_to", [
    "Reply-To: not an address", "Reply-To: katie@", "Reply-To: <@example.com>",
])
def test_a_reply_to_that_cannot_be_read_is_malformed(reply_to: str) -> None:
    content = parse_email(message("From: katie@example.com", reply_to))
    assert any("Reply-To" in p for p in content.problems), content.problems


def test_fields_read_reply_to_as_a_parsed_message_does() -> None:
    fields = EmailFields(
        sender='"ceo@b\u200bank.example" <katie@example.com>', to="bob@client.example.net",
        cc="", reply_to="Replies <replies@elsewhere.example> (x\uff20y\u2024example)",
        subject="hello", text_body="Hi", html_body="", message_id="<m@example.com>", date="",
    )
    content = fields_content(fields, 100)
    assert content.problems == ()
    assert content.other_identities == (
        ShownAddress("ceo@bank.example", "From display name"),
        ShownAddress("replies@elsewhere.example", "Reply-To"),
        ShownAddress("x@y.example", "Reply-To comment"),
    )
    assert sender_identities(fields.sender, "not an address")[1] == (
        "Reply-To header is not a valid address list: 'not an address'",
    )


INVISIBLE = sorted(c for c in DEFAULT_IGNORABLES if c.isprintable() or ord(c) > 0xFF)


@given(
    st.lists(st.tuples(st.integers(0, 16), st.sampled_from(INVISIBLE)), max_size=4),
    st.sampled_from(["@", "\uff20", "\ufe6b"]),
    st.sampled_from([".", "\u2024", "\u3002", "\uff0e", "\uff61", "\ua60e"]),
)
def test_any_invisible_characters_and_separator_look_alikes(inserted, at, dot) -> None:
    """However many characters drawn as nothing go wherever in the display name, with any
    look-alike of "@" and ".", the reader's address is found and named plainly."""
    text = f"ceo{at}bank{dot}example"
    for position, char in sorted(inserted, reverse=True):
        text = text[:position] + char + text[position:]
    encoded = text.replace("\\", "\\\\").replace('"', '\\"')
    header = f'From: "{encoded}" <katie@example.com>'
    assert [f.address for f in shown_by(header)] == ["ceo@bank.example"]
