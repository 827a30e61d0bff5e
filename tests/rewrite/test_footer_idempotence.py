"""A footer counts as present only when the whole footer for this recipient is visible."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes, policy

import pytest

from gateway.auth.unsubscribe_tokens import UnsubscribeTokens
from gateway.config.settings import PACKAGE_RULES_DIR
from gateway.mail.parse import parse_email, to_bytes
from gateway.model import Channel, SenderIdentity
from gateway.rewrite.footer import render_footer
from gateway.rewrite.mime import add_footer
from gateway.rules.loader import load_rules
from gateway.services.unsubscribe import TokenMatcher

RULES = load_rules(PACKAGE_RULES_DIR)
IDENTITY = SenderIdentity("Example Corp", "548 Market St #12345, San Francisco", "p@example.com")
TOKENS = UnsubscribeTokens({"k1": b"k" * 40}, "k1")
PREFIX = "https://gw.example.com/u/"
BOB = "bob@client.example.net"
NOW = datetime(2026, 11, 27, tzinfo=UTC)


def footer_for(recipient: str = BOB):
    url = PREFIX + TOKENS.issue(recipient, "katie@example.com", Channel.EMAIL, NOW)
    return render_footer(RULES, IDENTITY, url, PREFIX, TokenMatcher(TOKENS, recipient))


def rewrite(raw: bytes, recipient: str = BOB) -> str:
    content = parse_email(raw)
    assert content.problems == ()
    return to_bytes(add_footer(content.mime, footer_for(recipient))).decode()


def shown(raw: str) -> str:
    """The body as a reader's client decodes it (transfer encoding undone)."""
    message = message_from_bytes(raw.encode(), policy=policy.default)
    return message.get_body(preferencelist=("html", "plain")).get_content()


def plain(body: str) -> bytes:
    return (
        "From: katie@example.com\r\nTo: bob@client.example.net\r\nSubject: x\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n" + body
    ).encode()


def html_message(body: str) -> bytes:
    return (
        "From: katie@example.com\r\nTo: bob@client.example.net\r\nSubject: x\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + body
    ).encode()


def test_rewriting_twice_adds_one_footer() -> None:
    once = rewrite(plain("Hello Bob\r\n"))
    twice = rewrite(once.encode())
    assert once.count("548 Market St") == 1
    assert twice.count("548 Market St") == 1


def test_a_planted_link_for_the_recipient_does_not_replace_the_footer() -> None:
    link = footer_for().text.splitlines()[-1].split(": ", 1)[1]
    out = rewrite(plain(f"Hello Bob\r\n{link}\r\n"))
    assert "548 Market St" in out


def test_a_footer_for_someone_else_does_not_count() -> None:
    forwarded = rewrite(plain("Hello Ann\r\n"), recipient="ann@client.example.net")
    out = rewrite(forwarded.encode(), recipient=BOB)
    assert out.count("548 Market St") == 2


def test_resending_the_gateways_html_output_keeps_one_footer() -> None:
    once = rewrite(html_message("<html><body><p>Hi</p></body></html>"))
    twice = rewrite(once.encode())
    assert shown(once).count("548 Market St") == 1
    assert shown(twice).count("548 Market St") == 1


@pytest.mark.parametrize(
    "hiding",
    ['<div style="display:none">{}</div><p>Hi</p>', "<p>Hi</p><template>{}</template>",
     '<p>Hi</p><div hidden>{}</div>'],
)
def test_a_footer_copied_into_html_is_never_taken_for_the_gateways(hiding: str) -> None:
    """Only the footer the gateway placed last in the body counts: a copy the agent wrote
    (for this very recipient) could be hidden, so a visible one is placed after it."""
    out = shown(rewrite(html_message(hiding.format(footer_for().html))))
    assert out.count("548 Market St") == 2
    assert out.rindex("data-compliance-footer") > out.rindex("<p>Hi</p>")


def test_a_copy_dressed_as_the_gateways_footer_is_replaced_by_a_real_one() -> None:
    markup = f"<p>Hi</p><div data-compliance-footer hidden>{footer_for().html}</div>"
    out = shown(rewrite(html_message(markup)))
    assert out.count("548 Market St") == 1
    assert " hidden" not in out[out.index("data-compliance-footer"):]


def test_the_gateways_html_footer_for_someone_else_does_not_count() -> None:
    forwarded = rewrite(html_message("<p>Hello Ann</p>"), recipient="ann@client.example.net")
    assert shown(rewrite(forwarded.encode(), recipient=BOB)).count("548 Market St") == 2


def test_a_footer_inside_an_html_comment_does_not_count() -> None:
    hidden = footer_for().html
    out = shown(rewrite(html_message(f"<html><body><p>Hi</p><!-- {hidden} --></body></html>")))
    assert out.count("548 Market St") == 2
    assert out.rindex("548 Market St") < out.rindex("</body>")


def test_body_end_tag_inside_a_comment_is_not_the_insertion_point() -> None:
    out = shown(rewrite(html_message("<html><body><p>Hi</p></body></html><!-- </body> -->")))
    footer_at = out.index("548 Market St")
    assert footer_at < out.index("</body></html>")


def test_footer_never_lands_in_an_unterminated_comment() -> None:
    out = shown(rewrite(html_message("<p>Hi</p><!-- never closed")))
    assert out.index("<!-- never closed-->") < out.index("548 Market St"), "closed before it"


def alternatives(*parts: tuple[str, str]) -> bytes:
    body = "".join(f"--b\r\nContent-Type: {kind}\r\n\r\n{text}\r\n" for kind, text in parts)
    return (
        "From: katie@example.com\r\nTo: bob@client.example.net\r\nSubject: x\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n"
        f"{body}--b--\r\n"
    ).encode()


@pytest.mark.parametrize(
    "kind", ["text/x-amp-html", "text/watch-html", "text/enriched", "TEXT/RICHTEXT"]
)
def test_an_alternative_that_cannot_carry_the_footer_is_removed_and_the_removal_named(
    kind: str,
) -> None:
    """Gmail shows the AMP part and a watch the watch-html part instead of the HTML, and
    enriched/richtext can hide what follows an unclosed `<param>` or `<comment>`: with them
    gone, every alternative left carries the footer."""
    raw = alternatives(("text/plain", "hi"), (kind, "<comment>hidden from here on"),
                       ("text/html", "<p>hi</p>"))
    content = parse_email(raw)
    assert content.problems == ()
    assert content.repairs == (
        f"{kind.lower()} part 2 removed: a footer cannot be written into it",
    )
    message = message_from_bytes(rewrite(raw).encode(), policy=policy.default)
    left = list(message.iter_parts())
    assert [p.get_content_type() for p in left] == ["text/plain", "text/html"]
    assert all("548 Market St" in p.get_content() for p in left)


def test_an_enriched_body_on_its_own_gets_the_footer_as_a_part_of_its_own() -> None:
    raw = (
        b"From: katie@example.com\r\nTo: bob@client.example.net\r\nSubject: x\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/enriched\r\n\r\n<param>never closed\r\n"
    )
    message = message_from_bytes(rewrite(raw).encode(), policy=policy.default)
    assert message.get_content_type() == "multipart/mixed"
    first, footer = message.iter_parts()
    assert "<param>never closed" in first.get_content()
    assert [p.get_content_type() for p in footer.iter_parts()] == ["text/plain", "text/html"]
    assert all("548 Market St" in p.get_content() for p in footer.iter_parts())


RELATED = "multipart/related; boundary=r"
SIGNED = 'multipart/signed; protocol="application/pgp-signature"; boundary=s'


@pytest.mark.parametrize(
    ("second", "body", "problem"),
    [
        ("image/png", "iVBORw0KGgo=", "image/png part 2 is an alternative that cannot carry "
                                       "the footer"),
        (RELATED, "--r\r\nContent-Type: text/calendar\r\n\r\nBEGIN:VCALENDAR\r\n--r--",
         "multipart/related part 2 is an alternative that cannot carry the footer"),
        (RELATED, "--r\r\nContent-Type: text/enriched\r\n\r\n<param>x\r\n--r--",
         "multipart/related part 2 would be left empty once its parts that cannot carry the "
         "footer are removed"),
        (SIGNED, "--s\r\nContent-Type: text/html\r\n\r\n<p>signed</p>\r\n"
                 "--s\r\nContent-Type: application/pgp-signature\r\n\r\nSIG\r\n--s--",
         "multipart/signed part 2 is an alternative that cannot carry the footer"),
    ],
    ids=["image", "related calendar", "related enriched", "signed html"],
)
def test_an_alternative_showing_no_footable_text_blocks(
    second: str, body: str, problem: str
) -> None:
    """Whatever the depth: the alternative a client picks must show the footer."""
    raw = alternatives(("text/plain", "hi"), (second, body))
    assert problem in parse_email(raw).problems


def test_alternatives_that_would_all_be_removed_block() -> None:
    raw = alternatives(("text/x-amp-html", "<html amp4email>"), ("text/enriched", "hi"))
    assert parse_email(raw).problems == (
        "top-level multipart/alternative would be left empty once its parts that cannot "
        "carry the footer are removed",
    )


@pytest.mark.parametrize("written", ["text/html (comment)", "text/html garbage", "text/"])
def test_a_content_type_a_client_may_read_differently_blocks(written: str) -> None:
    """`text/html (c)` reads as text/html to a client and as something else to a parser
    that keeps the comment: the footer rule must not depend on which."""
    raw = alternatives(("text/plain", "hi"), (written, "<p>hi</p>"))
    assert any("is not a plain type/subtype" in p for p in parse_email(raw).problems)


def test_an_unknown_text_alternative_still_blocks() -> None:
    """text/calendar may be what a client shows; nothing here can put a footer in it."""
    raw = alternatives(("text/plain", "hi"), ("text/calendar", "BEGIN:VCALENDAR"))
    assert parse_email(raw).problems == (
        "text/calendar part 2 is an alternative that cannot carry the footer",
    )


def test_an_html_alternative_marked_as_attachment_gets_the_footer() -> None:
    """Clients show the HTML alternative whatever its Content-Disposition."""
    raw = (
        b"From: katie@example.com\r\nTo: bob@client.example.net\r\nSubject: x\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
        b"--b\r\nContent-Type: text/html\r\nContent-Disposition: attachment\r\n\r\n"
        b"<p>hi</p>\r\n--b--\r\n"
    )
    out = rewrite(raw)
    message = message_from_bytes(out.encode(), policy=policy.default)
    plain, html = list(message.iter_parts())
    assert "548 Market St" in plain.get_content()
    assert "548 Market St" in html.get_content()
