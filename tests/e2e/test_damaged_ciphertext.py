"""A sealed value that no longer opens (truncated or altered in the store) is a fact the store
cannot give: the send that needs it fails closed with a temporary failure naming no content,
the views that show it answer 503 (never a 500 or a traceback), and the gateway goes on
serving everything else. Real HTTP against a running gateway, the official Twilio SDK."""

from __future__ import annotations

import sqlite3

import aiohttp

from gateway.server import Gateway
from gateway.web.people_sign_in import SESSION_COOKIE
from tests.conftest import MANAGER_SECRET
from tests.ingress.test_twilio import FL, NY, outbox, refused, sdk, send_sms, start
from tests.web.test_console_activity import decision_links

SOURCE_MARK = "signed web form"


def truncate(gateway: Gateway, table: str, column: str, key_column: str, key: object) -> None:
    """Cuts the sealed value short, as a damaged page or a bad restore would."""
    with sqlite3.connect(gateway.config.data_dir / "gateway.db") as database:
        changed = database.execute(
            f"UPDATE {table} SET {column} = substr({column}, 1, length({column}) - 12)"
            f" WHERE {key_column} = ? AND {column} LIKE char(30) || '%'",
            (key,),
        ).rowcount
    assert changed >= 1, f"no sealed {table}.{column} to damage"


async def test_a_damaged_consent_fails_the_text_closed_and_others_still_send(
    gateway_factory,  # type: ignore[no-untyped-def]
) -> None:
    gateway = await start(gateway_factory)
    subject = gateway.services.data_keys.cipher.blind(NY)
    truncate(gateway, "consents", "source", "subject", subject)

    error = await refused(send_sms(sdk(gateway), to=NY))
    assert (error.status, error.code) == (503, 20503)
    assert "STORE_UNAVAILABLE" in error.msg and SOURCE_MARK not in error.msg
    assert outbox(gateway) == []

    await send_sms(sdk(gateway), to=FL)
    assert [text["To"] for text in outbox(gateway)] == [FL]


async def test_a_damaged_decision_is_a_503_page_never_a_500(
    gateway_factory,  # type: ignore[no-untyped-def]
) -> None:
    gateway = await start(gateway_factory)
    await send_sms(sdk(gateway), to=NY)
    await send_sms(sdk(gateway), to=FL)
    base = f"http://127.0.0.1:{gateway.http_port}"
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/review/login", data={"secret": MANAGER_SECRET},
                             headers={"Origin": base}, allow_redirects=False) as signed_in:
            assert signed_in.status == 303
            cookie = signed_in.cookies[SESSION_COOKIE].value
        http.headers["Cookie"] = f"{SESSION_COOKIE}={cookie}"
        async with http.get(f"{base}/review") as activity:
            ids = decision_links(await activity.text())
        assert len(ids) == 2
        truncate(gateway, "decisions", "recipient", "id", int(ids[0]))
        for path in ("/review", f"/review/decisions/{ids[0]}", "/v1/decisions?format=json"):
            async with http.get(base + path) as page:
                text = await page.text()
                assert page.status == 503, (path, page.status)
                assert "Traceback" not in text and NY not in text and FL not in text
        async with http.get(f"{base}/review/decisions/{ids[1]}") as intact:
            assert intact.status == 200 and NY in await intact.text()


async def test_a_recipient_forged_in_clear_is_a_503_page_never_shown(
    gateway_factory,  # type: ignore[no-untyped-def]
) -> None:
    """Someone who can write the database puts text of their choosing where a sealed value
    was: once the start-up pass has sealed everything, that is damage, not a record."""
    gateway = await start(gateway_factory)
    await gateway._reseal_task  # the start-up pass, to its end
    await send_sms(sdk(gateway), to=NY)
    base = f"http://127.0.0.1:{gateway.http_port}"
    forged = "+13055550100"
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/review/login", data={"secret": MANAGER_SECRET},
                             headers={"Origin": base}, allow_redirects=False) as signed_in:
            http.headers["Cookie"] = f"{SESSION_COOKIE}={signed_in.cookies[SESSION_COOKIE].value}"
        async with http.get(f"{base}/review") as activity:
            (decision_id,) = decision_links(await activity.text())
        with sqlite3.connect(gateway.config.data_dir / "gateway.db") as database:
            database.execute("UPDATE decisions SET recipient = ? WHERE id = ?",
                             (forged, int(decision_id)))
        for path in ("/review", f"/review/decisions/{decision_id}", "/v1/decisions?format=json"):
            async with http.get(base + path) as page:
                text = await page.text()
                assert page.status == 503, (path, page.status)
                assert forged not in text and "Traceback" not in text
