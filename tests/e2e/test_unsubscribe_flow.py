"""The unsubscribe link end to end: issued in a real message, followed over real HTTP."""

from __future__ import annotations

import re
from urllib.parse import unquote

import aiohttp
import aiosmtplib
import pytest

from gateway.server import Gateway
from gateway.store.base import BlockQuery
from tests.conftest import outbox_messages
from tests.ingress.smtp.test_submission import client, first_touch, parsed


async def send_and_get_links(
    gateway: Gateway, to: str = "bob@client.example.net"
) -> tuple[str, str]:
    smtp = await client(gateway)
    await smtp.send_message(first_touch(to=to))
    await smtp.quit()
    header = parsed(outbox_messages(gateway)[-1])["List-Unsubscribe"]
    https, mailto = re.findall(r"<([^>]+)>", header)
    return https, mailto


def local(gateway: Gateway, url: str) -> str:
    """The public URL is https://gw.example.com; the test talks to the loopback listener."""
    return url.replace("https://gw.example.com", f"http://127.0.0.1:{gateway.http_port}")


async def suppressed(gateway: Gateway, address: str) -> bool:
    return bool(await gateway.services.store.suppressed([address]))


async def test_get_and_head_show_a_page_and_never_unsubscribe(gateway: Gateway) -> None:
    https, _ = await send_and_get_links(gateway)
    async with aiohttp.ClientSession() as http:
        async with http.get(local(gateway, https), allow_redirects=False) as response:
            page = await response.text()
            assert response.status == 200
            assert "bob@client.example.net" in page
            assert 'method="post"' in page
            assert 'name="List-Unsubscribe" value="One-Click"' in page
        async with http.head(local(gateway, https), allow_redirects=False) as response:
            assert response.status == 200
    assert not await suppressed(gateway, "bob@client.example.net")


async def test_one_click_post_urlencoded_unsubscribes_without_redirect(gateway: Gateway) -> None:
    https, _ = await send_and_get_links(gateway)
    async with aiohttp.ClientSession() as http:
        async with http.post(
            local(gateway, https),
            data={"List-Unsubscribe": "One-Click"},
            allow_redirects=False,
        ) as response:
            assert response.status == 200
            assert "unsubscribed" in (await response.text()).lower()
    assert await suppressed(gateway, "bob@client.example.net")
    smtp = await client(gateway)
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
        await smtp.send_message(first_touch())
    await smtp.quit()
    assert "SUPPRESSED" in refused.value.recipients[0].message
    events = [e.action for e in await gateway.services.store.audit_events()]
    assert "suppression.add" in events


async def test_one_click_post_multipart(gateway: Gateway) -> None:
    https, _ = await send_and_get_links(gateway)
    form = aiohttp.FormData()
    form.add_field("List-Unsubscribe", "One-Click")
    form.add_field("extra", b"ignored", filename="x.bin")
    async with aiohttp.ClientSession() as http:
        async with http.post(local(gateway, https), data=form, allow_redirects=False) as response:
            assert response.status == 200
    assert await suppressed(gateway, "bob@client.example.net")


async def test_post_without_one_click_body_changes_nothing(gateway: Gateway) -> None:
    https, _ = await send_and_get_links(gateway)
    async with aiohttp.ClientSession() as http:
        async with http.post(local(gateway, https), data={"x": "y"}) as response:
            assert response.status == 400
    assert not await suppressed(gateway, "bob@client.example.net")


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),
        lambda t: t[:8] + ("A" if t[8] != "A" else "B") + t[9:],
        lambda t: "k9." + t.split(".", 1)[1],
        lambda t: "garbage",
    ],
    ids=["ciphertext", "tag", "unknown-key", "garbage"],
)
async def test_tampered_token_is_404_and_changes_nothing(gateway: Gateway, tamper) -> None:
    https, _ = await send_and_get_links(gateway)
    token = https.rsplit("/", 1)[1]
    bad = https.rsplit("/", 1)[0] + "/" + tamper(token)
    async with aiohttp.ClientSession() as http:
        async with http.get(local(gateway, bad)) as response:
            assert response.status == 404
        async with http.post(local(gateway, bad), data={"List-Unsubscribe": "One-Click"}) as r:
            assert r.status == 404
    assert await gateway.services.store.list_suppressions() == []


async def test_mailto_unsubscribe_over_smtp_without_auth(gateway: Gateway) -> None:
    _, mailto = await send_and_get_links(gateway)
    address, _, query = mailto.removeprefix("mailto:").partition("?subject=")
    smtp = await client(gateway, login=False)
    raw = (
        f"From: bob@client.example.net\r\nTo: {address}\r\n"
        f"Subject: {unquote(query)}\r\n\r\nplease stop\r\n"
    ).encode()
    errors, reply = await smtp.sendmail("bob@client.example.net", [address], raw)
    await smtp.quit()
    assert errors == {}
    assert "unsubscribed" in reply
    assert await suppressed(gateway, "bob@client.example.net")
    assert await gateway.services.store.query_blocks(BlockQuery()) == []


async def test_mailto_with_bad_token_is_refused(gateway: Gateway) -> None:
    smtp = await client(gateway, login=False)
    raw = b"From: x@client.example.net\r\nSubject: unsubscribe k1.abcd.efgh\r\n\r\nstop\r\n"
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await smtp.sendmail("x@client.example.net", ["unsubscribe@gw.example.com"], raw)
    await smtp.quit()
    assert refused.value.code == 550
    assert await gateway.services.store.list_suppressions() == []


async def test_footer_link_in_body_matches_header(gateway: Gateway) -> None:
    https, _ = await send_and_get_links(gateway)
    body = parsed(outbox_messages(gateway)[-1]).get_content()
    assert https in body


async def test_store_outage_during_unsubscribe_is_a_retry_not_a_loss(config_factory) -> None:
    from gateway.store import open_store
    from tests.ingress.smtp.test_submission import FlakyStore

    config = config_factory()
    store = FlakyStore(open_store(config.store_url))
    gateway = Gateway(config, store=store)  # type: ignore[arg-type]
    await gateway.start()
    try:
        https, mailto = await send_and_get_links(gateway)
        store.down = True
        async with aiohttp.ClientSession() as http:
            async with http.post(
                local(gateway, https), data={"List-Unsubscribe": "One-Click"}
            ) as response:
                assert response.status == 503
                assert response.headers["Retry-After"] == "60"
        address, _, query = mailto.removeprefix("mailto:").partition("?subject=")
        smtp = await client(gateway, login=False)
        raw = f"From: bob@client.example.net\r\nSubject: {unquote(query)}\r\n\r\nstop\r\n"
        with pytest.raises(aiosmtplib.SMTPDataError) as deferred:
            await smtp.sendmail("bob@client.example.net", [address], raw.encode())
        assert deferred.value.code == 451
        store.down = False
        errors, reply = await smtp.sendmail("bob@client.example.net", [address], raw.encode())
        await smtp.quit()
        assert errors == {}
        assert "unsubscribed" in reply
        assert await suppressed(gateway, "bob@client.example.net")
    finally:
        await gateway.stop()
