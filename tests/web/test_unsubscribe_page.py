"""The unsubscribe page over real HTTP (issue 20, item 3): it names the sender, says "already
unsubscribed" on a later visit, and "I unsubscribed by mistake" lifts only the opt-out this
link's page or one-click POST recorded — never a STOP text, a complaint, an operator's or an
import's suppression, a mailto opt-out, an older one-click entry, another spelling's, or one
from another sender's link — audited, from this origin only. RFC 8058 unchanged: GET never
unsubscribes, nothing redirects."""

from __future__ import annotations

import html
import re
import weakref
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
import aiosmtplib
import pytest

from gateway.model import Channel
from gateway.server import Gateway
from gateway.services.unsubscribe import UNDO_ACTOR, UNDO_WINDOW, link_id, one_click_source
from gateway.store import open_store
from gateway.web.webhooks.twilio import KEYWORD_SOURCE
from tests.conftest import DEMO_SECRET, outbox_messages
from tests.e2e.test_unsubscribe_flow import local
from tests.fakes.clock import SteppingClock
from tests.fakes.store import FlakyStore
from tests.ingress.smtp.test_submission import client, first_touch, parsed
from tests.web.test_twilio_webhook import inbound, post
from tests.web.test_twilio_webhook import start as start_with_twilio

BOB = "bob@client.example.net"
ONE_CLICK = {"List-Unsubscribe": "One-Click"}
PAGE_FORM = {**ONE_CLICK, "via": "page"}
_jars: weakref.WeakKeyDictionary[Gateway, dict[str, str]] = weakref.WeakKeyDictionary()


def jar(gateway: Gateway) -> dict[str, str]:
    """The recipient's browser's cookies for this gateway."""
    return _jars.setdefault(gateway, {})


@dataclass
class Page:
    status: int
    text: str
    headers: Mapping[str, str]

    @property
    def title(self) -> str:
        found = re.search(r"<h1>(.*?)</h1>", self.text)
        return html.unescape(found.group(1)) if found else ""

    @property
    def offers_undo(self) -> bool:
        return "I unsubscribed by mistake" in self.text

    @property
    def offers_unsubscribe(self) -> bool:
        return 'name="List-Unsubscribe" value="One-Click"' in self.text


async def request(
    gateway: Gateway, method: str, url: str, *, data: object = None,
    origin: str | None = "self", browser: bool = True,
) -> Page:
    """As the recipient's browser on the page sends it: the form posts carry this origin,
    and its cookies go along and are kept. `browser=False`: someone holding only the link
    (no cookies sent, none kept)."""
    headers = {}
    if origin == "self":
        headers["Origin"] = f"http://127.0.0.1:{gateway.http_port}"
    elif origin is not None:
        headers["Origin"] = origin
    cookies = jar(gateway) if browser else {}
    if cookies:
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, local(gateway, url), data=data, headers=headers,
                     allow_redirects=False) as response,
    ):
        if browser:
            for name, morsel in response.cookies.items():
                if morsel["max-age"] == "0" or not morsel.value:
                    cookies.pop(name, None)
                else:
                    cookies[name] = morsel.value
        return Page(response.status, await response.text(), response.headers)


async def link(gateway: Gateway, to: str = BOB, sender: str = "katie@example.com") -> str:
    """The https link of a real message's List-Unsubscribe."""
    smtp = await client(gateway)
    await smtp.send_message(first_touch(to=to, sender=sender))
    await smtp.quit()
    header = parsed(outbox_messages(gateway)[-1])["List-Unsubscribe"]
    return re.findall(r"<(https://[^>]+)>", header)[0]


def token_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


async def unsubscribe(gateway: Gateway, url: str) -> Page:
    """The recipient presses the page's button in their browser."""
    page = await request(gateway, "POST", url, data=PAGE_FORM)
    assert page.status == 200, page.text
    return page


async def one_click(gateway: Gateway, url: str) -> Page:
    """A mail client's RFC 8058 POST: no Origin, no browser, no page field."""
    page = await request(gateway, "POST", url, data=ONE_CLICK, origin=None, browser=False)
    assert page.status == 200, page.text
    return page


async def undo(
    gateway: Gateway, url: str, origin: str | None = "self", browser: bool = True
) -> Page:
    return await request(gateway, "POST", url + "/undo", origin=origin, browser=browser)


async def suppressed(gateway: Gateway, address: str = BOB) -> bool:
    keys = gateway.services.suppressions.lookup_keys([address])
    return bool(await gateway.services.store.suppressed(keys))


async def sources(gateway: Gateway, address: str = BOB) -> list[str]:
    keys = gateway.services.suppressions.lookup_keys([address])
    return sorted(e.source for e in await gateway.services.store.suppression_entries(keys))


async def deliverable(gateway: Gateway, to: str = BOB) -> bool:
    smtp = await client(gateway)
    try:
        await smtp.send_message(first_touch(to=to))
    except aiosmtplib.SMTPRecipientsRefused:
        return False
    finally:
        await smtp.quit()
    return True


async def removals(gateway: Gateway) -> list[dict]:
    return [
        {"actor": e.actor, "subject": e.subject, **e.details}
        for e in await gateway.services.store.audit_events()
        if e.action == "suppression.remove"
    ]


# --- the page --------------------------------------------------------------------------


async def test_the_page_names_the_sender_and_the_address(gateway: Gateway) -> None:
    url = await link(gateway)
    page = await request(gateway, "GET", url)
    assert page.status == 200
    assert page.title == "Unsubscribe"
    assert "<strong>Example Corp</strong>" in page.text  # [sender] name
    assert "sent by katie@example.com" in page.text
    assert BOB in page.text and page.offers_unsubscribe and not page.offers_undo
    assert f'action="/u/{token_of(url)}"' in page.text
    assert not await suppressed(gateway)


async def test_the_page_has_no_script_no_framing_and_keeps_the_link_to_itself(
    gateway: Gateway,
) -> None:
    page = await request(gateway, "GET", await link(gateway))
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'none'" in policy and "default-src 'none'" in policy
    assert "frame-ancestors 'none'" in policy and "form-action 'self'" in policy
    assert "<script" not in page.text.lower()
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["Referrer-Policy"] == "same-origin"
    assert page.headers["Cache-Control"] == "no-store"
    assert '<html lang="en">' in page.text and "<main>" in page.text


async def test_the_sender_named_is_the_one_the_link_was_issued_with(gateway: Gateway) -> None:
    """The link carries the footer's name, signed: a later change of [sender] name does not
    change who the recipient is told they heard from; a link without one shows the
    configured name."""
    tokens, now = gateway.services.unsubscribe.tokens, gateway.clock.now()
    named = tokens.issue(BOB, "katie@example.com", Channel.EMAIL, now, "Old Name & Sons")
    plain = tokens.issue(BOB, "katie@example.com", Channel.EMAIL, now)
    base = "https://gw.example.com/u/"
    named_page = await request(gateway, "GET", base + named)
    assert "<strong>Old Name &amp; Sons</strong>" in named_page.text
    assert "Example Corp" not in named_page.text
    assert "<strong>Example Corp</strong>" in (await request(gateway, "GET", base + plain)).text
    claims = tokens.verify(token_of(await link(gateway)))
    assert claims is not None and claims.sender_name == "Example Corp"


async def test_html_in_the_link_claims_is_shown_as_text(gateway: Gateway) -> None:
    tokens, now = gateway.services.unsubscribe.tokens, gateway.clock.now()
    token = tokens.issue(BOB, "<script>x</script>@example.com", Channel.EMAIL, now,
                         "<img src=x onerror=alert(1)>")
    page = await request(gateway, "GET", "https://gw.example.com/u/" + token)
    assert "<img" not in page.text and "<script>" not in page.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in page.text


# --- already unsubscribed ----------------------------------------------------------------


async def test_after_unsubscribing_the_page_offers_the_undo_and_a_later_visit_says_so(
    gateway: Gateway,
) -> None:
    url = await link(gateway)
    done = await unsubscribe(gateway, url)
    assert done.title == "You are unsubscribed"
    assert "<strong>Example Corp</strong>" in done.text
    assert done.offers_undo and f'action="/u/{token_of(url)}/undo"' in done.text
    assert await suppressed(gateway)
    again = await request(gateway, "GET", url)
    assert again.status == 200
    assert again.title == "You are already unsubscribed"
    assert "already unsubscribed" in again.text
    assert again.offers_undo and not again.offers_unsubscribe
    # The entry names its link (a digest of it, never the link itself).
    assert await sources(gateway) == [one_click_source(token_of(url))]
    assert token_of(url) not in str(await gateway.services.store.list_suppressions())
    # The counter keeps one label for every link.
    registry = gateway.services.metrics.registry
    assert registry.get_sample_value("gateway_unsubscribes_total", {"source": "one-click"}) == 1


async def test_already_unsubscribed_another_way_shows_no_undo(gateway: Gateway) -> None:
    url = await link(gateway)
    await gateway.services.suppressions.add([BOB], source="cli", reason="asked by phone",
                                            actor="operator")
    page = await request(gateway, "GET", url)
    assert page.title == "You are already unsubscribed"
    assert not page.offers_undo and not page.offers_unsubscribe


async def test_a_mailbox_spelling_suppressed_counts_as_already_unsubscribed(
    gateway: Gateway,
) -> None:
    url = await link(gateway, to="bob+news@client.example.net")
    await gateway.services.suppressions.add([BOB], source="cli", reason="r", actor="operator")
    page = await request(gateway, "GET", url)
    assert page.title == "You are already unsubscribed" and not page.offers_undo


# --- the undo ------------------------------------------------------------------------------


async def test_the_undo_lifts_this_links_opt_out_audited_and_mail_flows_again(
    gateway: Gateway,
) -> None:
    url = await link(gateway)
    await unsubscribe(gateway, url)
    assert not await deliverable(gateway)
    page = await undo(gateway, url)
    assert page.status == 200, page.text
    assert page.title == "You are subscribed again"
    assert page.offers_unsubscribe and f'action="/u/{token_of(url)}"' in page.text
    assert not await suppressed(gateway)
    assert await deliverable(gateway)
    [removal] = await removals(gateway)
    assert removal["actor"] == UNDO_ACTOR == "recipient via /u"
    assert removal["subject"] == BOB
    assert removal["link"] == link_id(token_of(url))
    assert removal["sender"] == "katie@example.com"
    assert "mistake" in removal["why"]
    [entry] = removal["removed"]
    assert (entry["address"], entry["source"], entry["actor"]) == (
        BOB, one_click_source(token_of(url)), "recipient"
    )
    assert entry["reason"] == "unsubscribed (link for sender katie@example.com)"
    assert await gateway.services.store.verify_audit() is None
    # The pass was spent (its cookie deleted): a second undo is refused.
    again = await undo(gateway, url)
    assert again.status == 403 and again.title == "Your unsubscribe stands"
    assert len(await removals(gateway)) == 1
    # And the link still unsubscribes.
    await unsubscribe(gateway, url)
    assert await suppressed(gateway)


async def test_unsubscribe_undo_unsubscribe_undo_again(gateway: Gateway) -> None:
    url = await link(gateway)
    for _ in range(2):
        await unsubscribe(gateway, url)
        assert (await request(gateway, "GET", url)).offers_undo
        assert (await undo(gateway, url)).status == 200
        assert not await suppressed(gateway)
    assert len(await removals(gateway)) == 2


@pytest.mark.parametrize(
    ("source", "actor"),
    [
        ("cli", "operator"),
        ("api", "boss"),
        ("import:list.csv", "operator"),
        ("postmark:spam-complaint", "postmark"),
        ("postmark:hard-bounce", "postmark"),
        ("one-click", "recipient"),  # recorded before links were named in their entries
    ],
)
async def test_the_undo_leaves_every_other_source_in_force(
    gateway: Gateway, source: str, actor: str
) -> None:
    url = await link(gateway)
    await gateway.services.suppressions.add([BOB], source=source, reason="r", actor=actor)
    await unsubscribe(gateway, url)
    page = await undo(gateway, url)
    assert page.status == 200
    assert page.title == "Your unsubscribe was undone"
    assert "stays unsubscribed because of another request" in page.text
    assert await suppressed(gateway) and not await deliverable(gateway)
    assert await sources(gateway) == [source]
    [removal] = await removals(gateway)
    assert [e["source"] for e in removal["removed"]] == [one_click_source(token_of(url))]


async def test_the_undo_cannot_lift_what_this_link_did_not_record(gateway: Gateway) -> None:
    url = await link(gateway)
    await gateway.services.suppressions.add([BOB], source="cli", reason="r", actor="operator")
    page = await undo(gateway, url)
    assert page.status == 403 and page.title == "Your unsubscribe stands"
    assert await sources(gateway) == ["cli"] and await removals(gateway) == []


async def test_an_opt_out_lifted_meanwhile_leaves_nothing_to_undo(gateway: Gateway) -> None:
    """The pass is valid but the link's entry is gone (an operator lifted the mailbox)."""
    url = await link(gateway)
    await unsubscribe(gateway, url)
    await gateway.services.suppressions.remove([BOB], actor="operator")
    page = await undo(gateway, url)
    assert page.status == 409 and page.title == "Nothing to undo" and page.offers_unsubscribe
    assert len(await removals(gateway)) == 1  # the operator's


async def test_a_mailto_opt_out_with_the_same_link_stays(gateway: Gateway) -> None:
    """The mailto address in List-Unsubscribe is another request: it is not undone here."""
    url = await link(gateway)
    token = token_of(url)
    smtp = await client(gateway, login=False)
    raw = (f"From: {BOB}\r\nTo: unsubscribe@gw.example.com\r\n"
           f"Subject: unsubscribe {token}\r\n\r\nstop\r\n").encode()
    await smtp.sendmail(BOB, ["unsubscribe@gw.example.com"], raw)
    await smtp.quit()
    await unsubscribe(gateway, url)
    assert (await undo(gateway, url)).title == "Your unsubscribe was undone"
    assert await sources(gateway) == ["mailto"]
    assert await suppressed(gateway)


async def test_another_senders_link_keeps_its_own_opt_out(gateway: Gateway) -> None:
    """Two messages, two senders, two links, two unsubscribes: undoing one leaves the other."""
    katie = await link(gateway, sender="katie@example.com")
    sam = await link(gateway, sender="sam@example.com")
    await unsubscribe(gateway, katie)
    await unsubscribe(gateway, sam)
    assert len(await sources(gateway)) == 2
    page = await undo(gateway, sam)
    assert page.title == "Your unsubscribe was undone"
    assert await sources(gateway) == [one_click_source(token_of(katie))]
    assert await suppressed(gateway)
    # sam's pass is spent; katie's stays in force.
    assert (await undo(gateway, sam)).status == 403
    assert await suppressed(gateway)
    assert (await undo(gateway, katie)).title == "You are subscribed again"
    assert not await suppressed(gateway)


async def test_the_undo_never_lifts_another_spelling_of_the_mailbox(gateway: Gateway) -> None:
    tagged = await link(gateway, to="bob+news@client.example.net")
    plain = await link(gateway, to=BOB)
    await unsubscribe(gateway, plain)
    await unsubscribe(gateway, tagged)
    assert (await undo(gateway, tagged)).title == "Your unsubscribe was undone"
    assert await suppressed(gateway, "bob+news@client.example.net")
    assert await sources(gateway) == [one_click_source(token_of(plain))]


async def test_a_stop_text_is_not_lifted(gateway_factory) -> None:
    """A number's opt-out by STOP (the webhook, signed as Twilio signs) stays when a link
    for that number is unsubscribed and undone."""
    gateway, _ = await start_with_twilio(gateway_factory)
    number = "+12125550123"
    status, _ = await post(gateway, inbound("STOP", sender=number))
    assert status == 200
    tokens = gateway.services.unsubscribe.tokens
    url = "https://gw.example.com/u/" + tokens.issue(
        number, "katie@example.com", Channel.SMS, gateway.clock.now()
    )
    assert (await request(gateway, "GET", url)).title == "You are already unsubscribed"
    await unsubscribe(gateway, url)
    assert (await undo(gateway, url)).title == "Your unsubscribe was undone"
    assert await sources(gateway, number) == [KEYWORD_SOURCE]
    assert await suppressed(gateway, number)


# --- who may undo ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin", ["https://evil.example", "null", "http://127.0.0.1:1"],
    ids=["other-site", "opaque", "other-port"],
)
async def test_an_undo_from_another_origin_changes_nothing(gateway: Gateway, origin: str) -> None:
    url = await link(gateway)
    await unsubscribe(gateway, url)
    page = await undo(gateway, url, origin=origin)
    assert page.status == 403
    assert await suppressed(gateway) and await removals(gateway) == []


async def test_an_undo_without_a_valid_link_changes_nothing(gateway: Gateway) -> None:
    url = await link(gateway)
    await unsubscribe(gateway, url)
    token = token_of(url)
    forged = token[:-1] + ("A" if token[-1] != "A" else "B")
    page = await undo(gateway, url.replace(token, forged))
    assert page.status == 403
    # Another recipient's link lifts nothing of bob's.
    carol = await link(gateway, to="carol@client.example.net")
    assert (await undo(gateway, carol)).status == 403
    assert await suppressed(gateway) and await removals(gateway) == []


async def test_the_link_alone_does_not_undo(gateway: Gateway) -> None:
    """An agent that read the link in a quoted footer posts the undo itself, from the
    page's own origin even: without the browser's cookie the opt-out stands, and a send to
    the recipient is still blocked."""
    url = await link(gateway)
    done = await unsubscribe(gateway, url)
    cookie = done.headers["Set-Cookie"]
    assert f"undo-{link_id(token_of(url))}=" in cookie
    for attribute in ("HttpOnly", "SameSite=Strict", "Path=/u/", "Secure",
                      f"Max-Age={int(UNDO_WINDOW.total_seconds())}"):
        assert attribute in cookie, cookie
    page = await undo(gateway, url, browser=False)
    assert page.status == 403 and page.title == "Your unsubscribe stands"
    assert "remain unsubscribed" in page.text and "contact <strong>Example Corp</strong>" in (
        page.text)
    assert not page.offers_undo
    assert await suppressed(gateway) and await removals(gateway) == []
    smtp = await client(gateway)
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
        await smtp.send_message(first_touch(to=BOB))
    await smtp.quit()
    assert "SUPPRESSED" in str(refused.value)
    # Its own GET of the page offers it no undo either.
    assert not (await request(gateway, "GET", url, browser=False)).offers_undo
    # A pass for another link does not serve this one.
    other = "https://gw.example.com/u/" + gateway.services.unsubscribe.tokens.issue(
        BOB, "sam@example.com", Channel.EMAIL, gateway.clock.now())
    await unsubscribe(gateway, other)
    stolen = {k.replace(link_id(token_of(other)), link_id(token_of(url))): v
              for k, v in jar(gateway).items() if link_id(token_of(other)) in k}
    jar(gateway).clear()
    jar(gateway).update(stolen)
    assert (await undo(gateway, url)).status == 403
    assert await suppressed(gateway) and await removals(gateway) == []


async def test_posting_over_an_opt_out_in_force_gets_no_pass(gateway: Gateway) -> None:
    """Whoever posts the page's form again over the link's opt-out recorded nothing, so is
    handed nothing that could lift it."""
    url = await link(gateway)
    await one_click(gateway, url)
    again = await unsubscribe(gateway, url)
    assert "Set-Cookie" not in again.headers and not again.offers_undo
    assert (await undo(gateway, url)).status == 403
    assert await suppressed(gateway)


async def test_the_undo_closes_after_the_window(gateway_factory) -> None:
    clock = SteppingClock()
    gateway = await gateway_factory(clock=clock)
    url = await link(gateway)
    await unsubscribe(gateway, url)
    clock.advance(UNDO_WINDOW.total_seconds() - 5)
    assert (await request(gateway, "GET", url)).offers_undo
    clock.advance(10)
    assert not (await request(gateway, "GET", url)).offers_undo
    page = await undo(gateway, url)
    assert page.status == 403 and page.title == "Your unsubscribe stands"
    assert await suppressed(gateway) and await removals(gateway) == []
    assert not await deliverable(gateway)


async def test_a_one_click_unsubscribe_offers_no_undo(gateway: Gateway) -> None:
    """RFC 8058's POST comes from a mail client, not a browser: no pass, no undo button,
    and the undo is refused even from a browser that later opens the link."""
    url = await link(gateway)
    done = await one_click(gateway, url)
    assert done.title == "You are unsubscribed"
    assert not done.offers_undo and "Set-Cookie" not in done.headers
    later = await request(gateway, "GET", url)
    assert later.title == "You are already unsubscribed" and not later.offers_undo
    assert (await undo(gateway, url)).status == 403
    assert await suppressed(gateway) and await removals(gateway) == []


async def test_no_agent_credential_reaches_the_undo(gateway: Gateway) -> None:
    """The undo takes no credentials: an agent's secret as a bearer token or Basic auth on
    a made-up link is still a made-up link, and an agent's role may not lift suppressions
    through the admin API."""
    url = await link(gateway)
    await unsubscribe(gateway, url)
    async with aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{gateway.http_port}"
        async with http.post(f"{base}/u/anything/undo",
                             headers={"Authorization": f"Bearer {DEMO_SECRET}"}) as response:
            assert response.status == 403
        async with http.delete(f"{base}/v1/suppressions/{BOB}",
                               headers={"Authorization": f"Bearer {DEMO_SECRET}"}) as response:
            assert response.status == 403
    assert await suppressed(gateway) and await removals(gateway) == []


async def test_get_on_the_undo_changes_nothing_and_nothing_redirects(gateway: Gateway) -> None:
    url = await link(gateway)
    await unsubscribe(gateway, url)
    page = await request(gateway, "GET", url + "/undo")
    assert page.status == 405 and "Location" not in page.headers
    assert await suppressed(gateway)
    for method in ("GET", "HEAD"):
        assert "Location" not in (await request(gateway, method, url)).headers


async def test_a_store_outage_during_the_undo_is_a_retry(config_factory, start_gateway) -> None:
    config = config_factory()
    store = FlakyStore(open_store(config.store_url))
    gateway = await start_gateway(config, store=store)
    url = await link(gateway)
    await unsubscribe(gateway, url)
    store.down = True
    for page in (await undo(gateway, url), await request(gateway, "GET", url)):
        assert page.status == 503 and page.headers["Retry-After"] == "60"
    store.down = False
    assert await suppressed(gateway)
    assert (await undo(gateway, url)).title == "You are subscribed again"
