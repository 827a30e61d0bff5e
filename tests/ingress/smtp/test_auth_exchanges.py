"""AUTH PLAIN and LOGIN as a client may really send them (RFC 4954, 4616): with an initial
response or after a challenge, cancelled with `*`, with bad base64 or a badly split value.
Each exchange ends in exactly one final reply, and the session can sign in afterwards.
Spoken byte for byte over a real socket, so nothing a client library tidies up hides a case.
"""

from __future__ import annotations

import base64

import pytest

from gateway.server import Gateway
from tests.conftest import DEMO_SECRET
from tests.e2e.test_hostile_input import RawSmtp


def b64(text: str) -> bytes:
    return base64.b64encode(text.encode())


PLAIN = b64(f"\0demo\0{DEMO_SECRET}")

# (what the client writes, line by line; the code of each reply it gets)
EXCHANGES = {
    "plain, initial response": ([b"AUTH PLAIN " + PLAIN], [235]),
    "plain, after the challenge": ([b"AUTH PLAIN", PLAIN], [334, 235]),
    "plain, authorization identity given": (
        [b"AUTH PLAIN " + b64(f"demo\0demo\0{DEMO_SECRET}")], [235]),
    "plain, wrong password": ([b"AUTH PLAIN " + b64("\0demo\0not-the-secret")], [535]),
    "plain, bad base64": ([b"AUTH PLAIN %%%"], [501]),
    "plain, one NUL only": ([b"AUTH PLAIN " + b64(f"demo\0{DEMO_SECRET}")], [501]),
    "plain, three NULs": ([b"AUTH PLAIN " + b64(f"\0demo\0{DEMO_SECRET}\0")], [501]),
    "plain, cancelled": ([b"AUTH PLAIN", b"*"], [334, 501]),
    "plain, challenge answered with bad base64": ([b"AUTH PLAIN", b"%%%"], [334, 501]),
    "login, user in the command": ([b"AUTH LOGIN " + b64("demo"), b64(DEMO_SECRET)], [334, 235]),
    "login, both after challenges": ([b"AUTH LOGIN", b64("demo"), b64(DEMO_SECRET)],
                                     [334, 334, 235]),
    "login, cancelled at the password": ([b"AUTH LOGIN", b64("demo"), b"*"], [334, 334, 501]),
    "login, cancelled at the user": ([b"AUTH LOGIN", b"*"], [334, 501]),
    "login, bad base64 user": ([b"AUTH LOGIN %%%"], [501]),
    "login, wrong password": ([b"AUTH LOGIN " + b64("demo"), b64("not-the-secret")], [334, 535]),
    "login, another account's name": ([b"AUTH LOGIN " + b64("boss"), b64(DEMO_SECRET)],
                                      [334, 535]),
}


@pytest.mark.parametrize("name", EXCHANGES)
async def test_each_auth_exchange_ends_in_one_reply_and_the_session_goes_on(
    gateway: Gateway, name: str
) -> None:
    lines, expected = EXCHANGES[name]
    client = await RawSmtp.open(gateway, login=False)
    try:
        codes = [int((await client.command(line))[:3]) for line in lines]
        assert codes == expected
        if expected[-1] != 235:
            assert (await client.command(b"AUTH PLAIN " + PLAIN)).startswith(b"235 ")
        assert (await client.command(b"NOOP")).startswith(b"250 ")
    finally:
        await client.close()


async def test_an_auth_response_longer_than_a_line_may_be_is_refused(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    """Past the reader's limit the line is refused; what of it comes after the limit is
    read as a command of its own (and refused as one); the session goes on."""
    client = await RawSmtp.open(gateway, login=False)
    try:
        assert (await client.command(b"AUTH LOGIN")).startswith(b"334 ")
        refused = await client.command(b"A" * 70_000)
        assert refused.startswith(b"500 5.5.6 AUTH response line too long")
        replies = [await client.command(b"NOOP")]
        if not replies[0].startswith(b"250"):
            replies.append(await client.reply())
        assert replies[-1].startswith(b"250 ") and len(replies) <= 2
        assert (await client.command(b"AUTH PLAIN " + PLAIN)).startswith(b"235 ")
    finally:
        await client.close()
    assert not [r for r in caplog.records if r.exc_info], "no traceback logged"
