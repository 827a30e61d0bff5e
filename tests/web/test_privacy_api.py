"""Data-subject rights and purge through the admin API, checked against the real pipeline."""

from __future__ import annotations

import aiosmtplib
import pytest

from gateway.store.base import StoreUnavailable
from tests.ingress.smtp.test_submission import client, first_touch
from tests.web.test_admin import ADMIN_SECRET, OWNER_SECRET, call, start

BOB = "bob@client.example.net"


async def test_export_then_erase_keeps_the_opt_out(gateway_factory) -> None:
    gateway = await start(gateway_factory)
    await gateway.services.suppressions.add([BOB], source="one-click", reason="u", actor="r")
    smtp = await client(gateway)
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
        await smtp.send_message(first_touch(to=BOB))
    exported = await call(gateway, "GET", f"/v1/privacy/{BOB}", ADMIN_SECRET)
    assert exported.status == 200
    document = exported.json()
    assert [s["source"] for s in document["suppressions"]] == ["one-click"]
    assert len(document["blocks"]) == 1
    erased = await call(gateway, "DELETE", f"/v1/privacy/{BOB}", OWNER_SECRET)
    assert erased.status == 200
    assert erased.json()["opt_out_kept"] is True
    after = (await call(gateway, "GET", f"/v1/privacy/{BOB}", ADMIN_SECRET)).json()
    assert after["suppressions"] == [] and after["blocks"] == []
    assert after["erased_suppression"] is True
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
        await smtp.send_message(first_touch(to=BOB))
    await smtp.quit()
    assert "SUPPRESSED" in refused.value.recipients[0].message
    audit = [e for e in await gateway.services.store.audit_events() if e.action == "privacy.erase"]
    assert audit and BOB not in audit[0].subject


async def test_purge_needs_the_confirmation_and_leaves_a_verifiable_log(gateway_factory) -> None:
    gateway = await start(gateway_factory)
    await gateway.services.suppressions.add([BOB], source="cli", reason="x", actor="op")
    refused = await call(gateway, "POST", "/v1/purge", OWNER_SECRET, body={"confirm": "yes"})
    assert refused.status == 400
    assert await gateway.services.store.suppressed([BOB])
    done = await call(gateway, "POST", "/v1/purge", OWNER_SECRET,
                      body={"confirm": "purge workspace"})
    assert done.status == 200
    # The opt-out survives, as a keyed hash: a purge must not make anyone reachable again.
    assert await gateway.services.store.suppressed([BOB]) == {BOB}
    assert [s.source for s in await gateway.services.store.list_suppressions()] == ["erased"]
    events = await gateway.services.store.audit_events()
    assert [e.action for e in events] == ["workspace.purge"]
    assert await gateway.services.store.verify_audit() is None


async def test_erasing_a_stored_hash_is_refused_and_the_opt_out_stays(gateway_factory) -> None:
    gateway = await start(gateway_factory)
    await gateway.services.suppressions.add([BOB], source="one-click", reason="u", actor="r")
    assert (await call(gateway, "DELETE", f"/v1/privacy/{BOB}", OWNER_SECRET)).status == 200
    [hashed] = [s.address for s in await gateway.services.store.list_suppressions()]
    assert hashed.startswith("erased:")
    again = await call(gateway, "DELETE", f"/v1/privacy/{hashed}", OWNER_SECRET)
    assert again.status == 400
    assert await gateway.services.store.suppressed([BOB]) == {BOB}
    unparseable = await call(gateway, "DELETE", "/v1/privacy/4155550100", OWNER_SECRET)
    assert unparseable.status == 400


async def test_lifting_an_opt_out_is_audited_in_the_same_transaction(gateway_factory):
    """The removal and its audit entry (naming what was removed) are one transaction: a
    store failure leaves the opt-out in force and no entry, never a lift without a record."""
    gateway = await start(gateway_factory)
    store = gateway.services.store
    await gateway.services.suppressions.add([BOB], source="cli", reason="x", actor="op")
    original = store.remove_suppressions

    async def failing(keys, audit=None):
        raise StoreUnavailable("injected")

    store.remove_suppressions = failing
    try:
        reply = await call(gateway, "DELETE", f"/v1/suppressions/{BOB}", ADMIN_SECRET)
    finally:
        store.remove_suppressions = original
    assert reply.status == 503
    assert "injected" not in reply.text  # the store's own error text stays in the log
    assert await store.suppressed([BOB]) == {BOB}
    assert "suppression.remove" not in [e.action for e in await store.audit_events()]

    reply = await call(gateway, "DELETE", f"/v1/suppressions/{BOB}", ADMIN_SECRET)
    assert reply.status == 200
    (removal,) = [e for e in await store.audit_events() if e.action == "suppression.remove"]
    assert [(r["address"], r["source"]) for r in removal.details["removed"]] == [(BOB, "cli")]
