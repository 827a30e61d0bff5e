"""`people list|deactivate|activate` as an operator runs them: real processes, a real store
shared with the gateway's sessions."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.auth.sessions import Sessions
from gateway.config.settings import load_config
from gateway.model import Role
from gateway.runtime.clock import Clock
from gateway.services.people import Identity, People
from gateway.store import open_store
from tests.conftest import write_config
from tests.test_cli import cli

ROLES = {"compliance-managers": Role.MANAGER}


async def signed_in_person(config_path: Path) -> str:
    """Katie signs in (as single sign-on would record her) and holds a session."""
    store = open_store(load_config(config_path).store_url)
    await store.open()
    try:
        sessions = Sessions(store, Clock())
        person, _ = await People(store, sessions, Clock()).signed_in(
            Identity("Katie@Acme.example", "okta|1", "Katie", ("compliance-managers",)), ROLES)
        return await sessions.open(role="manager", method="oidc:okta", person_id=person.person_id)
    finally:
        await store.close()


async def session_alive(config_path: Path, token: str) -> bool:
    store = open_store(load_config(config_path).store_url)
    await store.open()
    try:
        return await Sessions(store, Clock()).current(token) is not None
    finally:
        await store.close()


def test_deactivating_a_person_ends_their_session_and_is_audited(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    assert cli(config, "migrate").returncode == 0
    token = asyncio.run(signed_in_person(config))

    listed = cli(config, "people", "list")
    assert listed.returncode == 0, listed.stderr
    assert "katie@acme.example" in listed.stdout and "manager" in listed.stdout
    assert "active" in listed.stdout

    done = cli(config, "people", "deactivate", "KATIE@acme.example", "--actor", "hr")
    assert done.returncode == 0, done.stderr
    assert not asyncio.run(session_alive(config, token))
    assert "inactive" in cli(config, "people", "list").stdout
    assert cli(config, "people", "activate", "katie@acme.example").returncode == 0

    audit = cli(config, "audit", "list").stdout
    assert '"person.deactivated"' in audit and '"hr"' in audit
    assert '"person.activated"' in audit

    unknown = cli(config, "people", "deactivate", "nobody@acme.example")
    assert unknown.returncode == 2 and "nobody with the user name" in unknown.stderr
    look_alike = cli(config, "people", "deactivate", "\u212aatie@acme.example")
    assert look_alike.returncode == 2 and "is not a user name" in look_alike.stderr
