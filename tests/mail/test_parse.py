"""parse_email: what it extracts, and a specific problem for each way a message can be unusable;
to_bytes: what it writes back."""

import copy

import pytest

from gateway.mail.parse import (
    MAX_FOOTED_PARTS,
    MIME_POLICY,
    mailbox_subject,
    parse_email,
    to_bytes,
)
from tests.conftest import crlf

HEADERS = (
    "From: Katie Agent <katie@Example.COM>\n"
    "To: bob@customer.test\n"
    "Subject: Quick question\n"
    "Message-ID: <1@example.com>\n"
    "MIME-Version: 1.0\n"
)

GOOD_MESSAGES = {
    "plain": crlf(HEADERS + "Content-Type: text/plain\n\nHi\n"),
    "bare LF": (HEADERS + "Content-Type: text/plain\n\nHi\n").encode(),
    "no MIME headers": crlf("From: katie@example.com\nSubject: hi\n\nHi\n"),
    "alternative": crlf(
        HEADERS + 'Content-Type: multipart/alternative; boundary="b"\n\n'
        "--b\nContent-Type: text/plain; charset=utf-8\n\nHi\n"
        "--b\nContent-Type: text/html; charset=utf-8\n\n<p>Hi</p>\n--b--\n"
    ),
    "missing close boundary": crlf(
        HEADERS + 'Content-Type: multipart/mixed; boundary="b"\n\n--b\n\nHi\n'
    ),
    "problems inside closed parts are not ours": crlf(
        HEADERS + 'Content-Type: multipart/mixed; boundary="b"\n\n'
        "--b\nContent-Type: text/plain\n\nHi\n"
        "--b\nContent-Type: text/plain; charset=x-foo\nContent-Disposition: attachment\n\nx\n"
        "--b\nContent-Type: message/rfc822\n\n"
        "From: a@b.test\nContent-Type: text/plain; charset=x-bar\n"
        "Content-Transfer-Encoding: x-weird\n\nx\n"
        '--b\nContent-Type: multipart/signed; boundary="s"\n\n'
        "--s\nContent-Type: text/plain; charset=x-baz\n\nx\n"
        "--s\nContent-Type: application/pgp-signature\n\nsig\n--s--\n"
        "--b--\n"
    ),
    "8-bit body": crlf(
        HEADERS + "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
        "Grüße\n"
    ),
}


@pytest.mark.parametrize("raw", GOOD_MESSAGES.values(), ids=GOOD_MESSAGES.keys())
def test_good_message_has_no_problems(raw: bytes) -> None:
    content = parse_email(raw)
    assert content.problems == ()
    assert content.mime is not None
    assert content.size == len(raw)


def test_extracts_sender_subject_and_ids() -> None:
    raw = crlf(
        'From: "Katie, Agent" <Katie.Agent@Sales.Example.COM>\n'
        "Subject: =?utf-8?q?Stra=C3=9Fe?= und =?iso-8859-1?b?S/Zsbg==?=\n"
        "Message-ID:   <abc.123@example.com>  \n"
        "In-Reply-To: <prev@customer.test>\n\nHi\n"
    )
    content = parse_email(raw)
    assert content.problems == ()
    assert content.from_addresses == ("Katie.Agent@sales.example.com",)
    assert content.subject == "Straße und Köln"
    assert content.message_id == "<abc.123@example.com>"
    assert content.is_reply


def test_several_from_addresses_and_quoted_local_part() -> None:
    content = parse_email(crlf('From: a@X.test, "b c"@Y.TEST\n\nHi\n'))
    assert content.from_addresses == ("a@x.test", '"b c"@y.test')


@pytest.mark.parametrize(
    ("headers", "is_reply"),
    [
        ("References: <a@b> <c@d>\n", True),
        ("In-Reply-To: <a@b>\n", True),
        ("In-Reply-To:   \n", False),
        ("", False),
    ],
)
def test_is_reply(headers: str, is_reply: bool) -> None:
    assert parse_email(crlf(f"From: a@b.test\n{headers}\nHi\n")).is_reply is is_reply


def test_absent_subject_and_message_id_are_empty() -> None:
    content = parse_email(crlf("From: a@b.test\n\nHi\n"))
    assert (content.subject, content.message_id, content.problems) == ("", "", ())


def test_utf8_headers_are_read_as_written_with_or_without_smtputf8() -> None:
    """RFC 6532: the policy sees the addresses and subject as the reader will."""
    raw = crlf("From: Jürgen <jürgen@BÜCHER.example>\nSubject: Grüße\n\nHi\n")
    content = parse_email(raw)
    assert content.problems == ()
    assert content.from_addresses == ("jürgen@bücher.example",)
    assert content.subject == "Grüße"


def nested_multiparts(levels: int) -> bytes:
    opening = "".join(
        f'--b{i}\nContent-Type: multipart/mixed; boundary="b{i + 1}"\n\n' for i in range(levels)
    )
    closing = "".join(f"\n--b{i}--\n" for i in reversed(range(levels)))
    return crlf(
        'From: a@b.test\nContent-Type: multipart/mixed; boundary="b0"\n\n'
        f"{opening}--b{levels}\n\nHi\n--b{levels}--\n{closing}"
    )


def test_fifty_levels_of_nesting_are_allowed() -> None:
    assert parse_email(nested_multiparts(49)).problems == ()


@pytest.mark.parametrize("levels", [50, 2000])
def test_deeper_nesting_is_a_problem(levels: int) -> None:
    assert parse_email(nested_multiparts(levels)).problems == (
        "MIME nesting deeper than 50 levels",
    )


PROBLEMS = {
    "no From": (b"Subject: hi\r\n\r\nHi\r\n", "missing From header"),
    "two From": (
        crlf("From: a@b.test\nFrom: c@d.test\n\nHi\n"),
        "more than one From header",
    ),
    "From without address": (
        crlf("From: undisclosed-recipients:;\n\nHi\n"),
        "From header is not a valid address list: 'undisclosed-recipients:;'",
    ),
    "From with a guessed address": (
        crlf("From: Katie Agent katie@example.com\n\nHi\n"),
        "From header is not a valid address list: 'Katie Agent katie@example.com'",
    ),
    "From with empty local part": (
        crlf('From: ""@example.com\n\nHi\n'),
        "From address '@example.com' has an empty local part or domain",
    ),
    "From that raises": (crlf("From: a@\n\nHi\n"), "header 'From' cannot be parsed"),
    "Message-ID that raises": (
        crlf("From: a@b.test\nMessage-ID: <\n\nHi\n"),
        "header 'Message-ID' cannot be parsed",
    ),
    "part header that raises": (
        crlf(
            'From: a@b.test\nContent-Type: multipart/mixed; boundary="b"\n\n'
            "--b\n\nHi\n--b\nContent-Disposition: \t?=-]'?=x;.-*\n\nx\n--b--\n"
        ),
        "header 'Content-Disposition' of MIME part 2 cannot be parsed",
    ),
    "Content-Type that breaks the parser": (
        crlf("From: a@b.test\nContent-Type: )b[b?=%*b;.a*\n\nHi\n"),
        "header 'Content-Type' cannot be parsed",
    ),
    "part Content-Type that breaks the parser": (
        crlf(
            'From: a@b.test\nContent-Type: multipart/mixed; boundary="b"\n\n'
            "--b\nContent-Type: )b[b?=%*b;.a*\n\nHi\n--b--\n"
        ),
        "header 'Content-Type' of MIME part 1 cannot be parsed",
    ),
    "line that is not a header": (
        crlf("From: a@b.test\nthis line has no colon\nSubject: hi\n\nHi\n"),
        "header block of the message has a line that is not a header field",
    ),
    "continuation first": (
        crlf(" folded\nFrom: a@b.test\n\nHi\n"),
        "header block of the message starts with a continuation line",
    ),
    "envelope line among headers": (
        crlf("From: a@b.test\nFrom katie Tue Mar  5 10:00:00 2024\nSubject: x\n\nHi\n"),
        "header block of the message contains a 'From ' envelope line",
    ),
    "header without name": (
        crlf("From: a@b.test\n: nameless\n\nHi\n"),
        "header block of the message has a line with no header name",
    ),
    "part header block broken": (
        crlf(
            'From: a@b.test\nContent-Type: multipart/mixed; boundary="b"\n\n'
            "--b\n\nHi\n--b\nContent-Type: application/pdf\nnot a header\n\nx\n--b--\n"
        ),
        "header block of MIME part 2 has a line that is not a header field",
    ),
    "two Subject headers": (
        crlf("From: a@b.test\nSubject: Invoice\nSubject: Re: your order\n\nHi\n"),
        "more than one Subject header",
    ),
    "two Sender headers": (
        crlf("From: a@b.test\nSender: a@b.test\nSender: ceo@bank.test\n\nHi\n"),
        "more than one Sender header",
    ),
    "bad base64 encoded word": (
        crlf("From: a@b.test\nSubject: =?utf-8?b?a?=\n\nHi\n"),
        "Subject has an encoded word with invalid base64",
    ),
    "unknown encoded-word charset": (
        crlf("From: a@b.test\nSubject: =?x-unknown?q?hi?=\n\nHi\n"),
        "Subject has an encoded word in unknown charset 'x-unknown'",
    ),
    "undecodable encoded word": (
        crlf("From: a@b.test\nSubject: =?utf-8?q?bad=FF?=\n\nHi\n"),
        "Subject has an encoded word that is not valid 'utf-8'",
    ),
    "unknown charset": (
        crlf(
            'From: a@b.test\nContent-Type: multipart/alternative; boundary="b"\n\n'
            "--b\n\nHi\n--b\nContent-Type: text/html; charset=x-foo\n\nHi\n--b--\n"
        ),
        "unknown charset 'x-foo' in text/html part 2",
    ),
    "unknown transfer encoding": (
        crlf("From: a@b.test\nContent-Transfer-Encoding: x-uuencode\n\nHi\n"),
        "unsupported Content-Transfer-Encoding 'x-uuencode' in top-level text/plain",
    ),
    "charset that cannot decode": (
        crlf("From: a@b.test\nContent-Type: text/plain; charset=undefined\n\nHi\n"),
        "top-level text/plain cannot be decoded as 'undefined'",
    ),
    "charset that is not a text encoding": (
        crlf("From: a@b.test\nContent-Type: text/plain; charset=base64\n\nHi\n"),
        "top-level text/plain cannot be decoded as 'base64'",
    ),
    "Content-Type with a vertical tab, a line break to Python": (
        b"From: a@b.test\r\nContent-Type: text/plain\x0b;format=flowed\r\n\r\nHi\r\n",
        "header 'Content-Type' contains a line break (U+000B) other than CRLF, where some "
        "readers would start a new header",
    ),
    "part Content-Type with invalid 8-bit bytes": (
        b'From: a@b.test\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/html; \x80charset=iso-8859-1\r\n\r\nHi\r\n--b--\r\n",
        "Content-Type header of text/html part 1 cannot take a new charset",
    ),
    "multipart without boundary": (
        crlf("From: a@b.test\nContent-Type: multipart/mixed\n\n--b\n\nHi\n--b--\n"),
        "top-level multipart/mixed has no boundary parameter",
    ),
    "boundary never used": (
        crlf('From: a@b.test\nContent-Type: multipart/mixed; boundary="b1"\n\n--b2\n\nHi\n'),
        "boundary 'b1' of top-level multipart/mixed never appears in its body",
    ),
    "nested multipart without boundary": (
        crlf(
            'From: a@b.test\nContent-Type: multipart/mixed; boundary="b"\n\n'
            "--b\nContent-Type: multipart/alternative\n\nHi\n--b--\n"
        ),
        "multipart/alternative part 1 has no boundary parameter",
    ),
}


@pytest.mark.parametrize(("raw", "problem"), PROBLEMS.values(), ids=PROBLEMS.keys())
def test_each_problem_is_named(raw: bytes, problem: str) -> None:
    assert parse_email(raw).problems == (problem,)


def test_8bit_header_in_another_charset_is_a_problem() -> None:
    """Latin-1 or UTF-8? Guessing could show the reader a different subject."""
    raw = b"From: a@b.test\r\nSubject: Gr\xfc\xdfe\r\n\r\nHi\r\n"
    assert parse_email(raw).problems == (
        "header 'Subject' contains 8-bit bytes that are not valid UTF-8",
    )


def test_round_trip_is_byte_identical() -> None:
    raw = crlf(
        "From:katie@example.com\n"
        "To:   bob@customer.test,\n\tcarol@customer.test\n"
        "Subject: folded\n   oddly  \n"
        "X-Note:\n next line\n"
        'Content-Type: multipart/mixed; boundary="b"\n\n'
        "preamble\n"
        "--b\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
        "Grüße \n"
        "--b\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n"
        "AAECAwQF\n"
        "--b--\n"
        "epilogue\n"
    )
    assert to_bytes(parse_email(raw).mime) == raw


def test_to_bytes_writes_crlf() -> None:
    raw = b"From: a@b.test\nSubject: x\n  folded\n\nline 1\nline 2\n"
    assert to_bytes(parse_email(raw).mime) == raw.replace(b"\n", b"\r\n")


def test_parsed_header_values_are_unfolded_and_stripped() -> None:
    raw = crlf("From: a@b.test\nContent-Transfer-Encoding: base64 \nX-Note:\n  spaced  \n\naGk=\n")
    message = parse_email(raw).mime
    assert message["X-Note"] == "spaced"
    assert message.get_payload(decode=True) == b"hi"


def test_sender_header_and_addresses_in_display_names_are_reported() -> None:
    raw = (
        b'From: "ceo@bank.example.org" <katie@example.com>\r\n'
        b"Sender: relay@other.example.net\r\nTo: b@c.example.net\r\nSubject: x\r\n\r\nhi\r\n"
    )
    content = parse_email(raw)
    assert content.from_addresses == ("katie@example.com",)
    assert content.other_identities == (
        ("ceo@bank.example.org", "From display name"), ("relay@other.example.net", "Sender"),
    )


def test_a_copied_message_shares_the_policy_but_not_its_parts() -> None:
    """A copy with a policy of its own would miss every cached header parse."""
    original = parse_email(GOOD_MESSAGES["alternative"]).mime
    duplicate = copy.deepcopy(original)
    assert duplicate.policy is MIME_POLICY
    duplicate.get_payload()[0].set_payload("changed")
    assert original.get_payload()[0].get_payload() == "Hi"


def test_html_parts_that_would_hide_the_footer_are_named() -> None:
    raw = (
        b"From: katie@example.com\r\nTo: bob@client.example.net\r\nSubject: x\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
        b"--b\r\nContent-Type: text/html\r\n\r\n<style>body{display:none}</style><p>hi</p>\r\n"
        b"--b--\r\n"
    )
    content = parse_email(raw)
    assert content.problems == ()
    [problem] = content.footer_problems
    assert problem.startswith("text/html part 2: ") and "display: none" in problem
    ordinary = raw.replace(b"<style>body{display:none}</style>", b"")
    assert parse_email(ordinary).footer_problems == ()


AMBIGUOUS_TOP = "From: katie@example.com\r\nTo: bob@client.example.net\r\nSubject: x\r\n"


@pytest.mark.parametrize(("headers", "says"), [
    ("Content-Type: text/plain\r\nContent-Type: text/html\r\n", "2 content-type headers"),
    ("Content-Type: text/plain\r\nContent-Transfer-Encoding: 7bit\r\n"
     "Content-Transfer-Encoding: base64\r\n", "2 content-transfer-encoding headers"),
    ('Content-Type: text/plain; charset="utf-8"; charset="iso-8859-1"\r\n',
     "charset parameter 2 times"),
    ("Content-Type: text/plain\r\nContent-Disposition: inline\r\n"
     "Content-Disposition: attachment\r\n", "2 content-disposition headers"),
])
def test_a_structural_header_or_parameter_given_twice_is_refused(headers, says) -> None:
    """The gateway would read one value and a reader's client possibly the other."""
    content = parse_email((AMBIGUOUS_TOP + "MIME-Version: 1.0\r\n" + headers + "\r\nhi\r\n")
                          .encode())
    assert any(says in problem for problem in content.problems), content.problems


def test_two_boundaries_are_refused_and_rfc_2231_sections_are_one() -> None:
    two = (AMBIGUOUS_TOP + 'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="a"; '
           'boundary="b"\r\n\r\n--a\r\nContent-Type: text/plain\r\n\r\nhi\r\n--a--\r\n')
    assert any("boundary parameter 2 times" in p for p in parse_email(two.encode()).problems)
    sections = (AMBIGUOUS_TOP + "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; "
                'boundary*0="a"; boundary*1="b"\r\n\r\n--ab\r\nContent-Type: text/plain\r\n\r\n'
                "hi\r\n--ab--\r\n")
    assert parse_email(sections.encode()).problems == ()


@pytest.mark.parametrize(
    "from_line",
    [
        "From: \"support@p\u0430ypal.com\" <katie@example.com>",  # raw UTF-8, Cyrillic a
        "From: =?utf-8?q?support=40p=D0=B0ypal=2Ecom?= <katie@example.com>",
        "From: \"ceo@ba\u200dnk.example\" <katie@example.com>",  # zero-width joiner
        "From: \"ceo\uff20bank.example\" <katie@example.com>",  # full-width at sign
        "From: katie@example.com (ceo@bank.example)",  # a comment
        "From: katie@example.com (=?utf-8?q?ceo=40bank=2Eexample?=)",
    ],
)
def test_an_address_a_reader_sees_beside_the_sender_is_found_however_written(
    from_line: str,
) -> None:
    """What the reader's client shows: decoded, folded, invisible characters gone."""
    content = parse_email(crlf(f"{from_line}\nSubject: hi\n\nHi\n"))
    assert content.problems == ()
    assert len(content.other_identities) == 1
    assert content.other_identities[0].address.replace("\u0430", "a") in (
        "support@paypal.com", "ceo@bank.example")

# Issue 18: amplification and line breaks ---------------------------------------------------

def text_parts(count: int) -> bytes:
    parts = "".join(f"--p\nContent-Type: text/plain\n\npart {n}\n" for n in range(count))
    return crlf(HEADERS + f'Content-Type: multipart/mixed; boundary="p"\n\n{parts}--p--\n')


def test_a_footer_for_every_part_up_to_the_cap() -> None:
    assert parse_email(text_parts(MAX_FOOTED_PARTS)).problems == ()
    assert parse_email(text_parts(3), max_footed_parts=3).problems == ()


@pytest.mark.parametrize(("count", "cap"), [(MAX_FOOTED_PARTS + 1, MAX_FOOTED_PARTS), (4, 3)])
def test_more_footed_parts_than_the_cap_is_malformed_naming_it(count: int, cap: int) -> None:
    assert parse_email(text_parts(count), max_footed_parts=cap).problems == (
        f"the footer would go into {count} parts; at most {cap} (smtp.max_footed_parts)",
    )


def test_parts_that_get_no_footer_do_not_count() -> None:
    """Attachments, sealed and attached messages, dropped alternatives are never footed."""
    attachments = "".join(
        f"--p\nContent-Type: text/plain\nContent-Disposition: attachment; filename=a{n}.txt"
        f"\n\nx\n" for n in range(5)
    )
    raw = crlf(HEADERS + 'Content-Type: multipart/mixed; boundary="p"\n\n'
               "--p\nContent-Type: text/plain\n\nbody\n" + attachments + "--p--\n")
    assert parse_email(raw, max_footed_parts=1).problems == ()


@pytest.mark.parametrize("separator", ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85",
                                       "\u2028", "\u2029"], ids=lambda s: f"U+{ord(s):04X}")
@pytest.mark.parametrize("where", ["Subject", "X-Campaign", "part"])
def test_a_line_break_other_than_crlf_in_any_header_is_malformed(
    separator: str, where: str
) -> None:
    value = f"Fleet{separator}Bcc: victim@client.example.net"
    if where == "part":
        raw = crlf(HEADERS + 'Content-Type: multipart/mixed; boundary="p"\n\n'
                   f"--p\nContent-Type: text/plain\nContent-Description: {value}\n\nHi\n"
                   "--p--\n")
        named = "header 'Content-Description' of MIME part 1"
    else:
        raw = crlf(HEADERS.replace("Subject: Quick question", f"{where}: {value}")
                   + "Content-Type: text/plain\n\nHi\n")
        if where == "X-Campaign":
            raw = crlf(HEADERS + f"X-Campaign: {value}\nContent-Type: text/plain\n\nHi\n")
        named = f"header {where!r}"
    problems = parse_email(raw).problems
    assert problems == (
        f"{named} contains a line break (U+{ord(separator):04X}) other than CRLF, where some "
        "readers would start a new header",
    )


def test_folded_headers_are_not_line_breaks() -> None:
    raw = crlf(HEADERS.replace("Subject: Quick question", "Subject: Quick\n  question")
               + "Content-Type: text/plain\n\nHi\n")
    assert parse_email(raw).problems == ()


@pytest.mark.parametrize(
    ("raw", "subject"),
    [
        (b"Subject: unsubscribe k1.abc\r\n\r\n" + b"--b\r\n" * 10_000, "unsubscribe k1.abc"),
        (b"From: a@b.test\nSubject: =?utf-8?q?unsubscribe_k1=2Eabc?=\n\nbody",
         "unsubscribe k1.abc"),
        (b"From: a@b.test\r\n\r\nSubject: unsubscribe k1.abc\r\n", ""),
        (b"Subject: \xff\xfe unsubscribe k1.abc\r\n\r\n", "\ufffd\ufffd unsubscribe k1.abc"),
        (b"", ""),
    ],
    ids=["body-ignored", "encoded-word", "subject-in-body", "8-bit", "empty"],
)
def test_the_mailbox_reads_the_subject_from_the_header_block_alone(
    raw: bytes, subject: str
) -> None:
    assert mailbox_subject(raw) == subject
