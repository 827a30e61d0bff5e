"""The compliance footer, end to end and from the rendered page: hostile and ordinary HTML
bodies go through the running gateway (SMTP as multipart/alternative, and Postmark's API
through the `postmarker` SDK), and what the fake upstream received is loaded in a real
Chromium (JavaScript off). The postal address and the unsubscribe link must be visible,
have a size, sit inside the page and contrast with their background, the link must be
this recipient's unsubscribe URL and take a click, and both must be drawn, pixel for pixel,
as the footer alone in an empty page draws them (so that nothing covers, clips, fades or
restyles them, whether or not it takes the mouse); what the gateway cannot protect is
refused with FOOTER_NOT_VISIBLE and reaches no upstream.

The HTML comes from tests/rewrite/test_html_footer.py (imported, not copied), which checks
the same tables on `footed_html` alone. Each ingress goes to the fake upstream the existing
end-to-end tests pair it with: SMTP to an SMTP sink (the HTML part of the MIME it got), the
Postmark API to a fake Postmark (the HtmlBody it got).

One Chromium serves the whole module. Playwright's objects belong to the event loop they
were made in and every test here runs in a loop of its own (the gateway fixtures are
function-scoped), so the browser lives in a thread of its own and is driven through
Playwright's sync API there; a test hands each page to that thread and awaits the answer.
"""

from __future__ import annotations

import asyncio
import html as html_text
import itertools
import re
import smtplib
import struct
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from postmarker.exceptions import ClientError

from gateway.server import Gateway
from tests.browser import browser_missing, launch_options
from tests.conftest import DEMO_SECRET
from tests.e2e.test_postmark_upstream import postmark_upstream
from tests.fakes.postmark import FakePostmark
from tests.fakes.smtp_sink import SmtpSink
from tests.ingress.smtp.test_submission import SMTP_UPSTREAM, parsed
from tests.ingress.test_postmark import send as postmark_send
from tests.rewrite.test_html_footer import BLOCKED, FOOTED
from tests.rewrite.test_html_footer import ORDINARY as ORDINARY_STYLES

RECIPIENT = "bob@client.example.net"
SENDER = "katie@example.com"
SUBJECT = "Fleet maintenance costs"
TEXT = "Hi Bob,\n\nWould a 15 minute call next week work?\n\nKatie\n"
LINK_NAME = "unsubscribe here"  # rules/footers/commercial.html
REFUSAL = "FOOTER_NOT_VISIBLE"
INGRESSES = ["smtp", "postmark"]

# What agents ordinarily send: each must be footed, and the footer seen, like the hostile ones.
ORDINARY = {
    "newsletter with a table layout": (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Fleet news</title></head>"
        "<body style='margin:0;padding:0;background:#f4f4f4'>"
        "<table width='100%' cellpadding='0' cellspacing='0' border='0'><tr><td align='center'>"
        "<table width='600' cellpadding='20' cellspacing='0' border='0' "
        "style='background:#ffffff;font-family:Arial,sans-serif'>"
        "<tr><td><h1 style='font-size:22px'>Fleet maintenance, June</h1></td></tr>"
        "<tr><td><p>Hi Bob,</p><p>Three ways to cut maintenance costs this quarter.</p>"
        "<p><a href='https://example.com/fleet' style='background:#0a6;color:#fff;"
        "padding:10px 16px;text-decoration:none'>Read more</a></p></td></tr>"
        "<tr><td style='font-size:11px;color:#999'>Example Corp</td></tr>"
        "</table></td></tr></table></body></html>"
    ),
    "style element and a dark background": (
        "<html><head><style>body { background:#111111; color:#eeeeee; margin:0; "
        "font-family: Georgia, serif } p { color:#eeeeee; line-height:1.6 } "
        "a { color:#8ab4f8 }</style></head><body><div style='padding:24px'>"
        "<p>Hi Bob,</p><p>Would a 15 minute call next week work?</p><p>Katie</p>"
        "</div></body></html>"
    ),
    "fragment without html or body": (
        "<p>Hi Bob,</p><p>Would a <b>15 minute</b> call next week work?</p><p>Katie</p>"
    ),
}
SHOWN = {**FOOTED, **ORDINARY, **ORDINARY_STYLES}
REFUSED = {name: markup for name, (markup, _) in BLOCKED.items()}


# --- the browser, in a thread of its own ---------------------------------------------------

# Where the footer's text and link are found, and what makes them visible to a reader.
# Run in the page by Playwright (a utility world: it works with the page's JavaScript off).
READ_ELEMENT = """
e => {
  e.scrollIntoView({block: 'center', inline: 'nearest'});
  const rect = e.getBoundingClientRect();
  const hit = document.elementFromPoint(rect.left + rect.width / 2, rect.top + rect.height / 2);
  window.scrollTo(0, 0);
  let opacity = 1;
  for (let node = e; node && node.nodeType === 1; node = node.parentElement) {
    opacity *= parseFloat(getComputedStyle(node).opacity);
  }
  const footer = e.closest('[data-compliance-footer]');
  return {
    colour: getComputedStyle(e).color,
    background: footer ? getComputedStyle(footer).backgroundColor : null,
    opacity: opacity,
    onTop: hit !== null && (e === hit || e.contains(hit)),
    viewportWidth: document.documentElement.clientWidth,
  };
}
"""


# Where the footer is and what it is, to draw it again alone: at the same fraction of a
# pixel, in the same language and compatibility mode, faded as much as its ancestors fade it
# (which READ_ELEMENT bounds).
READ_FOOTER = """
e => {
  const footer = e.closest('[data-compliance-footer]');
  const box = footer.getBoundingClientRect();
  const style = getComputedStyle(footer);
  let fade = 1;
  for (let node = footer.parentElement; node; node = node.parentElement) {
    fade *= parseFloat(getComputedStyle(node).opacity);
  }
  const speaking = footer.closest('[lang]');
  return {
    x: box.left + window.scrollX, y: box.top + window.scrollY, width: box.width,
    marginTop: parseFloat(style.marginTop), marginLeft: parseFloat(style.marginLeft),
    marginRight: parseFloat(style.marginRight), html: footer.outerHTML, fade: fade,
    lang: speaking ? speaking.getAttribute('lang') : '',
    quirks: document.compatMode !== 'CSS1Compat',
  };
}
"""
# Compositing a faded layer can round a colour channel by one or two.
CHANNEL_TOLERANCE = 2


def _launch() -> tuple[Any, Any, Any]:
    """Playwright, Chromium, and the one page every body is shown in (JavaScript off, and
    nothing loads from the network)."""
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    browser = playwright.chromium.launch(**launch_options())
    context = browser.new_context(java_script_enabled=False)
    context.route("**/*", lambda route: route.abort())
    return playwright, browser, context.new_page()


def _close(playwright: Any, browser: Any) -> None:
    browser.close()
    playwright.stop()


def _render(page: Any, html: str, address: str, href: str, screenshot: Path) -> list[str]:
    page.set_content(html)
    problems: list[str] = []
    found = {
        "postal address": page.get_by_text(address, exact=False),
        "unsubscribe link": page.get_by_role("link", name=LINK_NAME),
    }
    drawn: dict[str, bytes] = {}
    footer = None
    for label, locator in found.items():
        count = locator.count()
        if count != 1:
            problems.append(f"{label} found {count} times in the page")
            continue
        seen = _element_problems(label, locator)
        if label == "unsubscribe link":
            if locator.get_attribute("href") != href:
                seen.append(f"unsubscribe link goes to {locator.get_attribute('href')!r},"
                            f" not {href!r}")
            seen += _click_problems(locator)
        if not seen:
            drawn[label] = locator.screenshot(animations="disabled", caret="hide")
            footer = footer or locator.evaluate(READ_FOOTER)
        problems += seen
    if footer is not None and not problems:
        page.set_content(_alone(footer))
        for label, image in drawn.items():
            alone = found[label].screenshot(animations="disabled", caret="hide")
            difference = _difference(image, alone)
            if difference:
                problems.append(f"{label} is not drawn as the footer alone draws it "
                                f"({difference}): something covers, clips, fades or "
                                "restyles it")
                screenshot.with_suffix(f".{label.split()[-1]}-seen.png").write_bytes(image)
                screenshot.with_suffix(f".{label.split()[-1]}-alone.png").write_bytes(alone)
        if problems:
            page.set_content(html)
    if problems:
        page.screenshot(path=str(screenshot), full_page=True)
    return problems


def _click_problems(link: Any) -> list[str]:
    """Playwright's checks before a click (visible, stable, enabled, and the element that
    would receive the click is the link), without clicking."""
    from playwright.sync_api import Error

    try:
        link.click(trial=True, timeout=2_000)
    except Error as refused:
        return [f"unsubscribe link cannot be clicked: {str(refused).splitlines()[0]}"]
    return []


def _alone(footer: dict[str, Any]) -> str:
    """An empty page holding only the footer, where it is drawn as in the received page."""
    left = 16 + footer["x"] % 1 - footer["marginLeft"]
    top = 16 + footer["y"] % 1 - footer["marginTop"]
    width = footer["width"] + footer["marginLeft"] + footer["marginRight"]
    doctype = "" if footer["quirks"] else "<!DOCTYPE html>"
    return (
        f'{doctype}<html lang="{html_text.escape(footer["lang"], quote=True)}">'
        f'<body style="margin:0"><div style="position:absolute;left:{left}px;top:{top}px;'
        f'width:{width}px;opacity:{footer["fade"]}">{footer["html"]}</div></body></html>'
    )


def _difference(seen: bytes, alone: bytes) -> str:
    """How two screenshots differ, or nothing when they are the same image."""
    if seen == alone:
        return ""
    (width, height, seen_rows), (alone_width, alone_height, alone_rows) = (
        _pixels(seen), _pixels(alone))
    if (width, height) != (alone_width, alone_height):
        return f"{width}x{height} pixels, alone {alone_width}x{alone_height}"
    most = max(max(abs(a - b) for a, b in zip(row, other, strict=True))
               for row, other in zip(seen_rows, alone_rows, strict=True))
    return "" if most <= CHANNEL_TOLERANCE else f"colours differ by up to {most} of 255"


def _pixels(png: bytes) -> tuple[int, int, list[bytes]]:
    """A PNG's width, height and rows of 8-bit channels, as Chromium writes screenshots
    (RGB or RGBA, not interlaced)."""
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    at, data = 8, b""
    width = height = channels = 0
    while at < len(png):
        length, kind = struct.unpack(">I4s", png[at:at + 8])
        chunk = png[at + 8:at + 8 + length]
        at += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
            assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour)
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            data += chunk
    raw = zlib.decompress(data)
    stride = width * channels
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, row = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            left = row[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                row[i] = (row[i] + left) & 0xFF
            elif kind == 2:
                row[i] = (row[i] + up) & 0xFF
            elif kind == 3:
                row[i] = (row[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                guess = left + up - corner
                nearest = min((abs(guess - left), 0, left), (abs(guess - up), 1, up),
                              (abs(guess - corner), 2, corner))[2]
                row[i] = (row[i] + nearest) & 0xFF
        rows.append(bytes(row))
        previous = row
    return width, height, rows


def _element_problems(label: str, locator: Any) -> list[str]:
    """The existing unit test's checks (visible, a size, x >= 0, colour unlike the footer's
    background), for the text and the link alike; and that it lies within the page's width
    as first shown, is not faded by its ancestors, and that nothing that takes the mouse
    covers or clips it (the element at its centre is itself or inside it: what lets the
    mouse through is found by comparing with the footer drawn alone, in `_render`)."""
    if not locator.is_visible():
        return [f"{label} is not visible"]
    seen = locator.evaluate(READ_ELEMENT)  # leaves the page scrolled to its top left
    box = locator.bounding_box()
    if not box or box["width"] <= 0 or box["height"] <= 0:
        return [f"{label} has no size ({box})"]
    problems = []
    if box["x"] < 0 or box["x"] + box["width"] > seen["viewportWidth"]:
        problems.append(f"{label} lies outside the page horizontally ({box}, page "
                        f"{seen['viewportWidth']}px wide)")
    if seen["background"] is None:
        problems.append(f"{label} is not inside the gateway's footer element")
    elif seen["colour"] == seen["background"]:
        problems.append(f"{label} is {seen['colour']} on a {seen['background']} footer")
    if seen["opacity"] < 0.5:
        problems.append(f"{label} is faded to opacity {seen['opacity']}")
    if not seen["onTop"]:
        problems.append(f"{label} is covered or clipped by another element")
    return problems


class Chromium:
    """One browser for the module, driven from one thread (Playwright's sync API)."""

    def __init__(self) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chromium")
        self._playwright, self._browser, self._page = self._thread.submit(_launch).result()

    async def render(self, html: str, address: str, href: str, screenshot: Path) -> list[str]:
        """What keeps a reader from seeing `address` and a link to `href` in the page
        (nothing when the footer is seen); a full-page screenshot when there is any."""
        return await asyncio.get_running_loop().run_in_executor(
            self._thread, _render, self._page, html, address, href, screenshot
        )

    def close(self) -> None:
        try:
            self._thread.submit(_close, self._playwright, self._browser).result()
        finally:
            self._thread.shutdown()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Chromium]:
    reason = browser_missing()
    if reason:
        print(f"browser test skipped: {reason}")
        pytest.skip(f"browser test skipped: {reason}")
    browser = Chromium()
    yield browser
    browser.close()


# --- sending through the gateway, and what the fake upstream received ------------------------

@dataclass
class Received:
    """One copy as the fake upstream got it: its HTML body and its List-Unsubscribe header."""

    html: str
    list_unsubscribe: str


class Route:
    """An ingress and the fake upstream the existing end-to-end tests pair it with."""

    def __init__(self, ingress: str, gateway: Gateway, upstream: SmtpSink | FakePostmark):
        self.ingress, self.gateway, self.upstream = ingress, gateway, upstream
        self._numbers = itertools.count(1)

    def arrivals(self) -> int:
        """How many times the upstream was handed something (refused by it or not)."""
        if isinstance(self.upstream, SmtpSink):
            return self.upstream.mail_commands + len(self.upstream.messages)
        return len(self.upstream.requests)

    async def send(self, html: str) -> str | None:
        """Send `html` as a commercial email; None when the gateway took it, else its
        refusal as the agent saw it (an SMTP reply, or the Postmark API's error)."""
        if self.ingress == "smtp":
            return await asyncio.to_thread(self._smtp_send, self._mime(html))
        try:
            await postmark_send(self.gateway, HtmlBody=html, TextBody=TEXT)
        except ClientError as refused:
            response = getattr(refused.__cause__, "response", None)
            status = getattr(response, "status_code", None)
            return f"HTTP {status} ErrorCode {refused.error_code}: {refused}"
        return None

    def _mime(self, html: str) -> EmailMessage:
        message = EmailMessage()
        message["From"] = f"Katie <{SENDER}>"
        message["To"] = RECIPIENT
        message["Subject"] = SUBJECT
        message["Message-ID"] = f"<footer-rendering-{next(self._numbers)}@example.com>"
        message.set_content(TEXT)
        message.add_alternative(html, subtype="html")
        return message

    def _smtp_send(self, message: EmailMessage) -> str | None:
        with smtplib.SMTP("127.0.0.1", self.gateway.smtp_port, timeout=30) as smtp:
            smtp.login("demo", DEMO_SECRET)
            try:
                smtp.send_message(message)
            except smtplib.SMTPResponseException as refused:
                return f"SMTP {refused.smtp_code} {refused.smtp_error.decode(errors='replace')}"
            except smtplib.SMTPRecipientsRefused as refused:
                return f"SMTP recipients refused {refused.recipients}"
        return None

    def last_received(self) -> Received:
        if isinstance(self.upstream, SmtpSink):
            copy = parsed(self.upstream.accepted[-1].data)
            html = copy.get_body(preferencelist=("html",))
            assert html is not None, "the SMTP sink got no text/html part"
            return Received(html.get_content(), copy["List-Unsubscribe"] or "")
        request = self.upstream.accepted[-1]
        headers = {h["Name"].lower(): h["Value"] for h in request.get("Headers") or []}
        return Received(request.get("HtmlBody") or "", headers.get("list-unsubscribe", ""))

    def refusal_problem(self, refusal: str | None) -> str | None:
        """What is wrong with how the gateway refused a body it cannot foot visibly."""
        if refusal is None:
            return "was sent, not refused"
        if REFUSAL not in refusal:
            return f"refused without {REFUSAL}: {refusal}"
        if self.ingress == "smtp" and not re.match(r"SMTP 5\d\d ", refusal):
            return f"refused, but not with a 5xx reply: {refusal}"
        if self.ingress == "postmark" and not refusal.startswith("HTTP 422 "):
            return f"refused, but not with a 422: {refusal}"
        return None


async def open_route(ingress: str, gateway_factory, upstream: SmtpSink | FakePostmark) -> Route:
    if isinstance(upstream, SmtpSink):
        gateway = await gateway_factory(SMTP_UPSTREAM.format(port=upstream.port))
    else:
        gateway = await gateway_factory(postmark_upstream(upstream))
    return Route(ingress, gateway, upstream)


def fake_upstream(ingress: str) -> SmtpSink | FakePostmark:
    return SmtpSink() if ingress == "smtp" else FakePostmark()


def unsubscribe_url(route: Route, received: Received) -> tuple[str, str | None]:
    """The gateway's unsubscribe URL for RECIPIENT, as List-Unsubscribe carries it (under
    the configured public URL, a token signed for RECIPIENT), or a problem with it."""
    prefix = f"{route.gateway.config.public_url}/u/"
    links = [link for link in re.findall(r"<([^>]+)>", received.list_unsubscribe)
             if link.startswith(prefix)]
    if len(links) != 1:
        return "", f"List-Unsubscribe has no one link under {prefix}: {received.list_unsubscribe}"
    claims = route.gateway.services.unsubscribe.tokens.verify(links[0].removeprefix(prefix))
    if claims is None or claims.recipient != RECIPIENT:
        return links[0], f"{links[0]} is not a valid unsubscribe token for {RECIPIENT}"
    return links[0], None


def screenshot_name(ingress: str, case: str) -> str:
    return f"{ingress}-{re.sub(r'[^a-z0-9]+', '-', case.lower()).strip('-')}.png"


# --- the tests -------------------------------------------------------------------------------

@pytest.mark.parametrize("ingress", INGRESSES)
async def test_html_that_would_hide_the_footer_is_refused_and_never_sent(
    gateway_factory, ingress: str
) -> None:
    async with fake_upstream(ingress) as upstream:
        route = await open_route(ingress, gateway_factory, upstream)
        failures = []
        for name, markup in REFUSED.items():
            before = route.arrivals()
            problem = route.refusal_problem(await route.send(markup))
            if problem is None and route.arrivals() != before:
                problem = "refused, but the upstream received something"
            if problem is not None:
                failures.append(f"{name}: {problem}")
        assert failures == [], f"{ingress}: " + "\n".join(failures)


@pytest.mark.parametrize("ingress", INGRESSES)
async def test_chromium_shows_the_footer_the_upstream_received(
    gateway_factory, chromium: Chromium, ingress: str, tmp_path: Path
) -> None:
    """From the rendered page of what reached the upstream, not from the source."""
    screenshots = tmp_path / "screenshots"
    screenshots.mkdir()
    async with fake_upstream(ingress) as upstream:
        route = await open_route(ingress, gateway_factory, upstream)
        address = route.gateway.config.sender.postal_address
        failures = []
        for name, markup in SHOWN.items():
            before = len(upstream.accepted)
            refusal = await route.send(markup)
            if refusal is not None or len(upstream.accepted) != before + 1:
                failures.append(f"{name}: not delivered once ({refusal})")
                continue
            received = route.last_received()
            href, problem = unsubscribe_url(route, received)
            screenshot = screenshots / screenshot_name(ingress, name)
            problems = await chromium.render(received.html, address, href, screenshot)
            problems += [problem] if problem is not None else []
            if problems:
                failures.append(f"{name}: {'; '.join(problems)}")
        assert failures == [], (
            f"{ingress}: the footer was not seen in {len(failures)} case(s):\n"
            + "\n".join(failures) + f"\nscreenshots in {screenshots}"
        )
