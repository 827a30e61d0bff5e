"""Fixtures that start a real OpenID Provider (tests/sso/oidc_provider.py).

    oidc_provider          a provider for this test alone, with the ACCOUNTS people and no
                           static client: register one with `add_client(redirect_uris)` once
                           the redirect URI's port is known
    start_oidc_provider    a factory for this test's providers with their own static clients or
                           accounts: `start_oidc_provider(clients=[OidcClient(...)], accounts=...)`
    oidc_provider_session  one provider for the whole run (ACCOUNTS, no static client), for tests
                           that only sign in: its keys cannot be rotated, and it must not be
                           stopped by a test

A provider starts in about 0.7 s (Node.js loads oidc-provider and generates an RSA key), so a
test that rotates keys, stops the provider or needs its own clients gets its own; each is
stopped after its test (or run). Where Node.js or the pinned oidc-provider is missing the tests
skip, and the run's summary says so loudly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest

from tests.sso.oidc_provider import (
    ACCOUNTS,
    OidcAccount,
    OidcClient,
    OidcProvider,
    OidcProviderMissing,
    find_node,
    oidc_skips,
    skip_oidc,
)


def node_or_skip() -> str:
    try:
        return find_node()
    except OidcProviderMissing as exc:
        skip_oidc(str(exc))


@pytest.fixture
def start_oidc_provider(tmp_path: Path) -> Iterator[Callable[..., OidcProvider]]:
    node = node_or_skip()
    started: list[OidcProvider] = []

    def start(clients: Iterable[OidcClient] = (),
              accounts: Iterable[OidcAccount] = ACCOUNTS) -> OidcProvider:
        provider = OidcProvider(node, tmp_path / f"oidc-provider-{len(started) + 1}",
                                list(clients), tuple(accounts))
        started.append(provider)
        return provider.start()

    yield start
    for provider in started:
        provider.stop()


@pytest.fixture
def oidc_provider(start_oidc_provider: Callable[..., OidcProvider]) -> OidcProvider:
    return start_oidc_provider()


@pytest.fixture(scope="session")
def oidc_provider_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    provider = OidcProvider(node_or_skip(), tmp_path_factory.mktemp("oidc-provider"), shared=True)
    yield provider.start()
    provider.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say it loudly when OpenID Connect went untested (as tests/conftest.py does for
    PostgreSQL)."""
    if oidc_skips:
        terminalreporter.section("OpenID Connect", sep="!", yellow=True, bold=True)
        for reason in oidc_skips:
            terminalreporter.write_line(f"OIDC tests were SKIPPED: {reason}",
                                        yellow=True, bold=True)
