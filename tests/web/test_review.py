"""Signing in to the /review console and the session it opens, over HTTP (the Activity page
itself: test_console_activity)."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer

from gateway.auth.agent_keys import AgentKeys
from gateway.auth.authenticate import Authenticator
from gateway.auth.login_limits import LoginLimiter
from gateway.auth.sessions import Sessions
from gateway.config.settings import Config
from gateway.config.sso import OidcProvider, SsoConfig
from gateway.model import (
    Account,
    BlockRecord,
    Channel,
    DecisionOutcome,
    DecisionRecord,
    Purpose,
    Reason,
    Role,
)
from gateway.rules.ruleset import RuleSet
from gateway.runtime.clock import Clock
from gateway.runtime.metrics import Metrics
from gateway.services.people import Identity, People
from gateway.store.base import Store
from gateway.web.console import Console
from gateway.web.people_sign_in import SESSION_COOKIE, PeopleSignIn
from gateway.web.review import ReviewRoutes
from tests.conftest import DEMO_SECRET, MANAGER_SECRET
from tests.fakes.clock import SteppingClock
from tests.web.console_helpers import csrf_of

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def block(
    hours_ago: float,
    recipient: str,
    *codes: str,
    channel: Channel = Channel.EMAIL,
    account: str = "demo",
    subject: str = "Spring offer",
) -> BlockRecord:
    return BlockRecord(
        time=NOW - timedelta(hours=hours_ago),
        channel=channel,
        account=account,
        sender="sales@example.com" if channel is Channel.EMAIL else "+14155550100",
        recipient=recipient,
        reasons=tuple(Reason(c, f"{c.lower()} applies", f"rule.{c.lower()}") for c in codes),
        rules_version="rules-2026-03",
        message_id="<m1@example.com>",
        subject=subject,
        size=1234,
        gateway_id="gw-1",
    )


def decision(
    hours_ago: float,
    recipient: str,
    *codes: str,
    channel: Channel = Channel.EMAIL,
    account: str = "demo",
    sender: str = "",
    subject: str = "Spring offer",
    upstream_id: str | None = None,
    gateway_id: str = "gw-1",
    evidence: dict[str, object] | None = None,
) -> DecisionRecord:
    """A decision as the pipeline records it; `codes` empty means allowed."""
    email = channel is Channel.EMAIL
    rules = [{"id": f"rule.{c.lower()}", "citation": f"Citation for {c}", "confidence": "high"}
             for c in codes]
    return DecisionRecord(
        time=NOW - timedelta(hours=hours_ago),
        channel=channel,
        account=account,
        sender=sender or ("sales@example.com" if email else "+14155550100"),
        recipient=recipient,
        purpose=Purpose.MARKETING,
        outcome=DecisionOutcome.BLOCKED if codes else DecisionOutcome.ALLOWED,
        reasons=tuple(Reason(c, f"{c.lower()} applies", f"rule.{c.lower()}") for c in codes),
        rules_version="rules-2026-03",
        upstream_id=None if codes else (upstream_id or f"up-{recipient}"),
        subject=subject if email else "",
        gateway_id=gateway_id,
        evidence=evidence if evidence is not None else {
            "ingress": "smtp" if email else "twilio", "zones": [], "rules": rules,
            "consent": None, "suppression": [], "rewrites": [], "upstream": None,
        },
    )


def review_app(
    store: Store, config: Config, secure_cookies: bool = False, clock: Clock | None = None,
    accounts: Callable[[], tuple[Account, ...]] | None = None, sso: SsoConfig | None = None,
    rules: Callable[[], RuleSet] | None = None,
) -> web.Application:
    app = web.Application()
    clock = clock or Clock(NOW)
    accounts = accounts or (lambda: config.accounts)
    limits = LoginLimiter(config.login_limits, clock, Metrics(), store, store.append_audit)
    authenticator = Authenticator(accounts, AgentKeys(store, clock), limits)
    sessions = Sessions(store, clock)
    sign_in = PeopleSignIn(
        store, People(store, sessions, clock), sessions, clock, accounts,
        lambda: sso or SsoConfig(), secure_cookies,
    )
    sign_in.register(app)
    ReviewRoutes(Console(sign_in), authenticator, rules).register(app)
    return app


@pytest.fixture
async def client(
    store: Store, config_factory: Callable[..., Config]
) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(review_app(store, config_factory()))) as test_client:
        yield test_client


async def sign_in(client: TestClient, secret: str = MANAGER_SECRET) -> None:
    response = await client.post("/review/login", data={"secret": secret}, allow_redirects=False)
    assert response.status == 303, await response.text()


async def sign_out(client: TestClient) -> ClientResponse:
    page = await (await client.get("/review")).text()
    return await client.post(
        "/auth/logout", data={"csrf": csrf_of(page)}, allow_redirects=False
    )


def block_links(page: str) -> list[str]:
    return re.findall(r'href="/review/blocks/(\d+)"', page)


def assert_protected(response: object) -> None:
    headers = response.headers  # type: ignore[attr-defined]
    assert headers["Cache-Control"] == "no-store"
    assert "script-src 'none'" in headers["Content-Security-Policy"]
    assert "default-src 'none'" in headers["Content-Security-Policy"]


async def test_signed_out_visitor_gets_the_sign_in_form(client: TestClient) -> None:
    response = await client.get("/review")
    page = await response.text()
    assert response.status == 200
    assert '<label for="secret">Account secret</label>' in page
    assert 'action="/review/login"' in page
    assert "<script" not in page
    assert_protected(response)


async def test_rep_is_refused_and_audited(client: TestClient, store: Store) -> None:
    response = await client.post("/review/login", data={"secret": DEMO_SECRET})
    assert response.status == 403
    assert "manager role" in await response.text()
    assert SESSION_COOKIE not in response.cookies
    assert_protected(response)
    events = [e for e in await store.audit_events() if e.action == "review.signin_failed"]
    assert [e.actor for e in events] == ["demo"]
    assert DEMO_SECRET not in json.dumps([e.details for e in events])


async def test_wrong_secret_is_refused_without_recording_it(
    client: TestClient, store: Store
) -> None:
    response = await client.post("/review/login", data={"secret": "guess-0123456789"})
    assert response.status == 401
    assert "does not match" in await response.text()
    events = [e for e in await store.audit_events() if e.action.startswith("review.")]
    assert [(e.action, e.actor) for e in events] == [("review.signin_failed", "unknown")]
    assert "guess-0123456789" not in json.dumps(events[0].details)


async def test_manager_signs_in_with_a_lax_http_only_cookie(
    client: TestClient, store: Store
) -> None:
    response = await client.post(
        "/review/login", data={"secret": MANAGER_SECRET}, allow_redirects=False
    )
    assert response.status == 303
    assert response.headers["Location"] == "/review"
    assert_protected(response)
    cookie = response.cookies[SESSION_COOKIE]
    assert cookie["httponly"] is True
    # Lax: the identity provider's redirect back is cross-site; forms carry a CSRF token
    assert cookie["samesite"] == "Lax"
    assert cookie["path"] == "/"
    assert cookie["max-age"] == str(8 * 3600)
    assert not cookie["secure"]
    assert MANAGER_SECRET not in cookie.value
    assert "boss" not in cookie.value  # a random token; the store knows whose

    page = await (await client.get("/review")).text()
    assert "<h1>Activity</h1>" in page
    assert "Signed in as <strong>boss</strong>" in page
    events = [e for e in await store.audit_events() if e.action == "review.signin"]
    assert [e.actor for e in events] == ["boss"]
    assert MANAGER_SECRET not in json.dumps(events[0].details)


async def test_secure_flag_follows_the_setting(
    store: Store, config_factory: Callable[..., Config]
) -> None:
    app = review_app(store, config_factory(), secure_cookies=True)
    async with TestClient(TestServer(app)) as secure_client:
        response = await secure_client.post(
            "/review/login", data={"secret": MANAGER_SECRET}, allow_redirects=False
        )
        set_cookie = response.headers["Set-Cookie"]
    assert "Secure" in set_cookie
    assert "HttpOnly" in set_cookie
    assert "SameSite=Lax" in set_cookie


def flipped(token: str) -> str:
    return token[:-1] + ("A" if token[-1] != "A" else "B")


async def assert_signed_out(client: TestClient, token: str) -> None:
    headers = {"Cookie": f"{SESSION_COOKIE}={token}"}
    client.session.cookie_jar.clear()
    page = await (await client.get("/review", headers=headers)).text()
    assert '<label for="secret">Account secret</label>' in page
    assert "a@example.org" not in page
    for path in ("/review", "/review/decisions/1"):
        response = await client.get(path, headers=headers, allow_redirects=False)
        assert response.status == 303 and response.headers["Location"] == "/review/login"
        assert "a@example.org" not in await response.text()


def session_token(client: TestClient) -> str:
    return client.session.cookie_jar.filter_cookies(client.make_url("/review"))[
        SESSION_COOKIE
    ].value


@pytest.mark.parametrize("changed", [flipped, lambda token: "garbage", lambda token: ""])
async def test_a_token_the_store_does_not_know_opens_nothing(
    client: TestClient, store: Store, changed: Callable[[str], str]
) -> None:
    await store.record_decisions([decision(1, "a@example.org", "SUPPRESSED")])
    await sign_in(client)
    await assert_signed_out(client, changed(session_token(client)))


@pytest.fixture
async def clocked(
    store: Store, config_factory: Callable[..., Config]
) -> AsyncIterator[tuple[TestClient, SteppingClock, list[tuple[Account, ...]]]]:
    """A review page whose clock the test moves and whose accounts it can change."""
    clock = SteppingClock(NOW)
    config = config_factory()
    accounts = [config.accounts]
    app = review_app(store, config, clock=clock, accounts=lambda: accounts[0])
    async with TestClient(TestServer(app)) as test_client:
        yield test_client, clock, accounts


async def test_a_session_ends_at_sign_out_after_idling_and_after_eight_hours(
    clocked, store: Store
) -> None:
    client, clock, _ = clocked
    await store.record_decisions([decision(1, "a@example.org", "SUPPRESSED")])
    await sign_in(client)
    token = session_token(client)
    signed_out = await sign_out(client)
    assert signed_out.status == 303
    await assert_signed_out(client, token)

    await sign_in(client)
    token = session_token(client)
    clock.advance(29 * 60)
    assert "a@example.org" in await (await client.get("/review")).text()  # in use: kept
    clock.advance(30 * 60 + 1)
    await assert_signed_out(client, token)

    await sign_in(client)
    token = session_token(client)
    for _ in range(17):  # used every 29 minutes: never idle, still over at 8 hours
        clock.advance(29 * 60)
        cookie = {"Cookie": f"{SESSION_COOKIE}={token}"}
        await client.get("/review", headers=cookie)
    await assert_signed_out(client, token)


async def test_an_account_demoted_or_removed_keeps_no_session(clocked, store: Store) -> None:
    client, _, accounts = clocked
    await store.record_decisions([decision(1, "a@example.org", "SUPPRESSED")])
    await sign_in(client)
    token = session_token(client)
    boss = next(a for a in accounts[0] if a.name == "boss")
    others = tuple(a for a in accounts[0] if a.name != "boss")
    accounts[0] = (*others, dataclasses.replace(boss, role=Role.REP))
    await assert_signed_out(client, token)
    accounts[0] = tuple(a for a in accounts[0] if a.name != "boss")
    await assert_signed_out(client, token)


async def test_the_cookie_holds_a_token_the_store_keeps_only_hashed(
    client: TestClient, store: Store, db_path: Path
) -> None:
    await sign_in(client)
    token = session_token(client)
    assert len(token) >= 43 and "boss" not in token
    assert token.encode() not in db_path.read_bytes()


@pytest.mark.parametrize("origin", ["https://evil.example", "null"])
async def test_cross_origin_sign_in_is_refused(client: TestClient, origin: str) -> None:
    response = await client.post(
        "/review/login",
        data={"secret": MANAGER_SECRET},
        headers={"Origin": origin},
        allow_redirects=False,
    )
    assert response.status == 403
    assert SESSION_COOKIE not in response.cookies


async def test_same_origin_sign_in_is_accepted(client: TestClient) -> None:
    origin = f"http://{client.host}:{client.port}"
    response = await client.post(
        "/review/login",
        data={"secret": MANAGER_SECRET},
        headers={"Origin": origin},
        allow_redirects=False,
    )
    assert response.status == 303


async def test_sign_out_clears_the_session(client: TestClient) -> None:
    await sign_in(client)
    response = await sign_out(client)
    assert response.status == 303
    assert response.headers["Location"] == "/review/login"
    assert_protected(response)
    set_cookie = response.headers["Set-Cookie"]
    assert f"{SESSION_COOKIE}=" in set_cookie
    assert "Max-Age=0" in set_cookie
    page = await (await client.get("/review")).text()
    assert "Account secret" in page


@pytest.mark.parametrize("csrf", [None, "0" * 32])
async def test_sign_out_needs_the_sessions_csrf_token(
    client: TestClient, csrf: str | None
) -> None:
    await sign_in(client)
    data = {} if csrf is None else {"csrf": csrf}
    response = await client.post("/auth/logout", data=data, allow_redirects=False)
    assert response.status == 403
    assert "Signed in as" in await (await client.get("/review")).text()  # still signed in


async def test_cross_site_sign_out_is_refused(client: TestClient) -> None:
    await sign_in(client)
    page = await (await client.get("/review")).text()
    response = await client.post(
        "/auth/logout", data={"csrf": csrf_of(page)},
        headers={"Origin": "https://evil.example"}, allow_redirects=False,
    )
    assert response.status == 403
    assert "Signed in as" in await (await client.get("/review")).text()


OWNER_SECRET = "owner-secret-0123456789"
SSO = SsoConfig(oidc=(OidcProvider("okta", "https://okta.example", "id", "s",
                                   {"admins": Role.ADMIN}),))


def with_owner(config: Config) -> tuple[Account, ...]:
    owner = dataclasses.replace(config.accounts[0], name="root", secret=OWNER_SECRET,
                                role=Role.OWNER)
    return (*config.accounts, owner)


async def test_with_single_sign_on_secret_sign_in_is_off_and_audited(
    store: Store, config_factory: Callable[..., Config]
) -> None:
    config = config_factory()
    app = review_app(store, config, accounts=lambda: with_owner(config), sso=SSO)
    async with TestClient(TestServer(app)) as client:
        page = await (await client.get("/review/login")).text()
        assert 'href="/auth/oidc/okta/login"' in page
        assert 'name="secret"' not in page
        for secret in (MANAGER_SECRET, OWNER_SECRET):
            response = await client.post("/review/login", data={"secret": secret},
                                         allow_redirects=False)
            assert response.status == 403
            assert SESSION_COOKIE not in response.cookies
    refused = [e for e in await store.audit_events() if e.action == "review.signin_failed"]
    assert [e.details["method"] for e in refused] == ["break-glass", "break-glass"]


async def test_break_glass_lets_owners_only_sign_in_with_their_secret(
    store: Store, config_factory: Callable[..., Config]
) -> None:
    config = config_factory()
    sso = dataclasses.replace(SSO, break_glass=True)
    app = review_app(store, config, accounts=lambda: with_owner(config), sso=sso)
    async with TestClient(TestServer(app)) as client:
        assert 'name="secret"' in await (await client.get("/review/login")).text()
        manager = await client.post("/review/login", data={"secret": MANAGER_SECRET},
                                    allow_redirects=False)
        assert manager.status == 403
        assert "owner role" in await manager.text()
        await sign_in(client, OWNER_SECRET)
        assert "Signed in as <strong>root</strong> (owner)" in await (
            await client.get("/review")).text()
    signed_in = [e for e in await store.audit_events() if e.action == "review.signin"]
    assert [(e.actor, e.details["method"]) for e in signed_in] == [("root", "break-glass")]


async def test_a_persons_session_ends_with_the_provider_that_opened_it(
    store: Store, config_factory: Callable[..., Config]
) -> None:
    clock = Clock(NOW)
    sessions = Sessions(store, clock)
    person, _ = await People(store, sessions, clock).signed_in(
        Identity("ann@acme.example", "okta|1", "Ann", ("admins",)), {"admins": Role.ADMIN})
    tokens = {method: await sessions.open(role="admin", method=method,
                                          person_id=person.person_id)
              for method in ("oidc:okta", "oidc:partner")}
    app = review_app(store, config_factory(), clock=clock, sso=SSO)  # okta only now
    async with TestClient(TestServer(app)) as client:
        for method, signed_in in (("oidc:okta", True), ("oidc:partner", False)):
            page = await (await client.get(
                "/review", headers={"Cookie": f"{SESSION_COOKIE}={tokens[method]}"})).text()
            assert ("Signed in as <strong>Ann</strong> (admin)" in page) is signed_in, method
