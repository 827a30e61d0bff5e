"""Fixtures that start a real gateway on loopback ephemeral ports, in this test's loop."""

from __future__ import annotations

import itertools
import os
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway import speedups
from gateway.config.settings import Config, load_config
from gateway.model import Channel, Consent, ConsentKind
from gateway.server import Gateway
from tests.postgres_server import PostgresMissing, PostgresServer, find_binaries

DEMO_SECRET = "demo-secret-0123456789"
MANAGER_SECRET = "manager-secret-0123456789"
TOKEN_KEY = "k" * 40


def _speedups_asked() -> bool:
    """GATEWAY_SPEEDUPS=0 runs the tests on the libraries as they are (`make test` runs the
    parts that reach a speedup both ways)."""
    value = os.environ.get("GATEWAY_SPEEDUPS", "1")
    if value not in ("0", "1"):
        raise pytest.UsageError(f"GATEWAY_SPEEDUPS must be 0 or 1, not {value!r}")
    return value == "1"


SPEEDUPS = _speedups_asked()

BASE_CONFIG = """
[gateway]
data_dir = "var"
public_url = "https://gw.example.com"
unsubscribe_mailto = "unsubscribe@gw.example.com"
drain_timeout_s = 5
speedups = {speedups}

[smtp]
listen = "127.0.0.1:0"
max_message_bytes = 200000

[http]
listen = "127.0.0.1:0"

[store]
url = "sqlite:///var/gateway.db"

[sender]
name = "Example Corp"
postal_address = "548 Market St #12345, San Francisco, CA 94104, USA"
email = "privacy@example.com"
website = "https://example.com"

[[accounts]]
name = "demo"
secret = "{demo_secret}"
role = "rep"
sender_domains = ["example.com"]

[[accounts]]
name = "boss"
secret = "{manager_secret}"
role = "manager"
sender_domains = []

[tokens]
keys = {{ k1 = "{token_key}" }}
active = "k1"
"""


def crlf(text: str, charset: str = "utf-8") -> bytes:
    """A message written with LF line ends in a test, as it travels: CRLF."""
    return text.replace("\n", "\r\n").encode(charset)


def write_config(directory: Path, extra: str = "", **overrides: str) -> Path:
    values = {"demo_secret": DEMO_SECRET, "manager_secret": MANAGER_SECRET,
              "token_key": TOKEN_KEY, "speedups": str(SPEEDUPS).lower(), **overrides}
    path = directory / "gateway.toml"
    path.write_text(BASE_CONFIG.format(**values) + textwrap.dedent(extra))
    return path


@pytest.fixture(scope="session", autouse=True)
def libraries_as_the_gateway_leaves_them() -> Iterator[None]:
    """A gateway started in a test's process does not install the speedups (the
    process's start-up does, from `[gateway] speedups`): installed here, once, as asked."""
    speedups.install(SPEEDUPS)
    yield
    speedups.uninstall()


@pytest.fixture
def config_factory(tmp_path: Path) -> Callable[..., Config]:
    def make(extra: str = "") -> Config:
        return load_config(write_config(tmp_path, extra))

    return make


@pytest.fixture
async def start_gateway() -> AsyncIterator[Callable[..., Awaitable[Gateway]]]:
    """Starts a gateway on a configuration; every one it started is stopped afterwards."""
    started: list[Gateway] = []

    async def start(config: Config, **kwargs: object) -> Gateway:
        gateway = Gateway(config, **kwargs)  # type: ignore[arg-type]
        await gateway.start()
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        await gateway.stop()


@pytest.fixture
async def gateway_factory(
    config_factory: Callable[..., Config], start_gateway: Callable[..., Awaitable[Gateway]]
) -> Callable[..., Awaitable[Gateway]]:
    async def start(extra: str = "", **kwargs: object) -> Gateway:
        return await start_gateway(config_factory(extra), **kwargs)

    return start


@pytest.fixture
async def gateway(gateway_factory: Callable[..., object]) -> Gateway:
    return await gateway_factory()  # type: ignore[misc]


# Numbers the tests place lawful marketing calls and texts to: every marketing contact of an
# AI agent needs prior express written consent (FCC 24-17), recorded before it is made.
CONSENTED_NUMBERS = (
    "+12125550123", "+13055550123", "+12025550123", "+14155550123", "+12125550199",
    "+12125550100", "+16892000000", "+14165550123",
)


def written_consents(numbers: Iterable[str] = CONSENTED_NUMBERS) -> list[Consent]:
    obtained = datetime(2020, 1, 1, tzinfo=UTC)
    return [
        Consent(number, channel, ConsentKind.EXPRESS_WRITTEN, obtained, None, "test fixture")
        for number in numbers
        for channel in (Channel.CALL, Channel.SMS)
    ]


async def record_written_consents(gateway: Gateway, numbers: Iterable[str] = CONSENTED_NUMBERS
                                  ) -> None:
    await gateway.services.store.add_consents(written_consents(numbers))


def outbox_messages(gateway: Gateway) -> list[bytes]:
    directory = gateway.config.data_dir / "outbox" / "email"
    if not directory.exists():
        return []
    return [p.read_bytes() for p in sorted(directory.glob("*.eml"))]


# --- PostgreSQL -------------------------------------------------------------------------

_postgres_skipped: list[str] = []
_schema_numbers = itertools.count(1)


def start_postgres_server() -> PostgresServer:
    """A started throwaway server, or a skip that says what is missing."""
    try:
        server = PostgresServer(find_binaries())
    except PostgresMissing as exc:
        _postgres_skipped.append(str(exc))
        pytest.skip(f"PostgreSQL tests skipped: {exc}")
    server.start()
    return server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One server for the whole session, with a database `tests` for the contract tests."""
    server = start_postgres_server()
    server.sql("CREATE DATABASE tests")
    yield server
    server.destroy()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty schema for this test alone (first on the search path), dropped
    afterwards: creating a whole database per test would take most of the suite's time."""
    schema = f"test_{next(_schema_numbers)}"
    postgres_server.sql(f"CREATE SCHEMA {schema}", "tests")
    yield f"{postgres_server.url('tests')}?search_path={schema}"
    postgres_server.sql(f"DROP SCHEMA {schema} CASCADE", "tests")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say it loudly when the PostgreSQL backend went untested."""
    if _postgres_skipped:
        terminalreporter.section("PostgreSQL", sep="!", yellow=True, bold=True)
        terminalreporter.write_line(
            f"PostgreSQL tests were SKIPPED: {_postgres_skipped[0]}", yellow=True, bold=True
        )
