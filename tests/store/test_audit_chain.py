"""The audit log with encryption on, on both backends: entries are hashed under a key
(gateway/store/audit_chain.py), while a chain begun before that (entries in clear, sealed
later with their unkeyed hashes) keeps verifying through pruning and data key rotation, and
an edited keyed entry is found; and a privacy export holds exactly the entries naming the
person (gateway/store/erasure.py names_key), sealed or not."""

from __future__ import annotations

import base64
import os
import re
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from gateway.services.data_rotation import reseal_store
from gateway.store import open_store
from gateway.store.audit_chain import KEYED_PREFIX, entry_hash, keyed_entry_hash
from gateway.store.base import AuditProblem
from gateway.store.erasure import names_key
from gateway.store.sealing import PLAIN, SEALED_PREFIX, DataCipher, DataKeyring
from tests.conftest import write_config
from tests.store.test_sealed_lookup_tables import Sealed, execute_raw, new_cipher, raw_rows
from tests.store.test_store import T0, audit_event, backend_url
from tests.test_cli import cli

INDEX_KEY = os.urandom(32)
K1, K2 = os.urandom(32), os.urandom(32)
UNKEYED = re.compile(r"[0-9a-f]{64}")


def keyed(active: str = "k1", **keys: bytes) -> DataCipher:
    return DataCipher(DataKeyring(keys or {"k1": K1}, active, INDEX_KEY))


@pytest.fixture(params=["sqlite", "postgres"])
async def sealed(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Sealed]:
    """A store with data key k1; a test writes as a store without encryption by giving it
    PLAIN first."""
    url = backend_url(request, tmp_path)
    store = open_store(url)
    await store.open()
    await store.use_data_cipher(keyed())
    path = tmp_path / "data" / "gateway.db" if request.param == "sqlite" else None
    yield Sealed(store, keyed(), request.param, url, path)
    await store.close()


# --- a chain begun before keyed hashes ------------------------------------------------------


async def test_a_chain_of_unkeyed_then_keyed_entries_verifies_through_pruning_and_rotation(
    sealed: Sealed,
) -> None:
    store = sealed.store
    await store.use_data_cipher(PLAIN)  # a store written before encryption
    for n in range(3):
        await store.append_audit(audit_event(n))
    await store.use_data_cipher(keyed())
    await reseal_store(store, "k1")  # the sealing pass seals them, keeping their hashes
    for n in range(3, 6):
        await store.append_audit(audit_event(n))

    entries = await store.audit_events()
    assert [UNKEYED.fullmatch(e.hash) is not None for e in entries] == [True] * 3 + [False] * 3
    assert [e.hash.startswith(KEYED_PREFIX) for e in entries] == [False] * 3 + [True] * 3
    assert entries[3].prev_hash == entries[2].hash
    assert all(e.hash == entry_hash(e.prev_hash, e) for e in entries[:3])
    stored = await raw_rows(sealed, "SELECT subject FROM audit")
    assert all(str(subject).startswith(SEALED_PREFIX) for (subject,) in stored)
    chain = await store.check_audit()
    assert (chain.problem, chain.entries) == (None, 6)

    # The anchor holds an unkeyed hash, the first entry left a keyed one, then both keyed.
    await store.prune_audit(T0 + timedelta(seconds=3))
    chain = await store.check_audit()
    assert (chain.problem, chain.entries, chain.anchor_entry_id) == (None, 3, entries[2].id)
    await store.prune_audit(T0 + timedelta(seconds=4))
    chain = await store.check_audit()
    assert (chain.problem, chain.entries, chain.anchor_entry_id) == (None, 2, entries[3].id)

    # Re-sealing under a new data key rewrites no hash: the index key stays.
    await store.use_data_cipher(keyed("k2", k1=K1, k2=K2))
    report = await reseal_store(store, "k2")
    assert report.resealed["audit"] == 2
    await store.use_data_cipher(keyed("k2", k2=K2))
    await store.append_audit(audit_event(6))
    assert [e.hash for e in (await store.audit_events())[:2]] == [e.hash for e in entries[4:]]
    chain = await store.check_audit()
    assert (chain.problem, chain.entries) == (None, 3)


async def test_a_keyed_hash_needs_the_index_key_and_no_data_key(sealed: Sealed) -> None:
    """What a copy holder can compute (SHA-256 of the entry, or an HMAC under a key of
    their own) is not the hash; the same index key under other data keys gives it."""
    appended = await sealed.store.append_audit(audit_event(0))
    content = (appended.prev_hash, appended)

    assert appended.hash == keyed_entry_hash(*content, keyed("k2", k2=K2))
    assert appended.hash.removeprefix(KEYED_PREFIX) != entry_hash(*content)
    assert appended.hash != keyed_entry_hash(*content, new_cipher())


EDITS = {
    "action in clear": (
        "UPDATE audit SET action = 'suppression.remove' WHERE id = $1", False
    ),
    "sealed subject of another entry": (
        "UPDATE audit SET subject = (SELECT o.subject FROM audit o WHERE o.id = $1 + 1)"
        " WHERE id = $2", True
    ),
    "sealed details of another entry": (
        "UPDATE audit SET details_json = (SELECT o.details_json FROM audit o"
        " WHERE o.id = $1 + 1) WHERE id = $2", True
    ),
    "hash without its prefix": (
        f"UPDATE audit SET hash = substr(hash, {len(KEYED_PREFIX) + 1}) WHERE id = $1", False
    ),
}


@pytest.mark.parametrize("edit", EDITS)
async def test_an_edited_keyed_entry_is_found(sealed: Sealed, edit: str) -> None:
    entries = [await sealed.store.append_audit(audit_event(n)) for n in range(3)]
    middle = entries[1].id
    sql, twice = EDITS[edit]
    await execute_raw(sealed, sql, *((middle, middle) if twice else (middle,)))

    chain = await sealed.store.check_audit()

    assert (chain.problem, chain.entries) == (
        AuditProblem(middle, "content does not match its hash"), 1
    )


async def test_an_entry_forged_under_another_key_is_found(sealed: Sealed) -> None:
    """Someone who can write the store but holds no key cannot rehash what they changed."""
    entries = [await sealed.store.append_audit(audit_event(n)) for n in range(2)]
    forged = replace(entries[1], actor="someone else")
    await execute_raw(
        sealed, "UPDATE audit SET actor = $1, hash = $2 WHERE id = $3",
        forged.actor, keyed_entry_hash(forged.prev_hash, forged, new_cipher()), forged.id,
    )

    chain = await sealed.store.check_audit()

    assert chain.problem == AuditProblem(forged.id, "content does not match its hash")


async def test_the_last_entry_rewritten_with_an_unkeyed_hash_is_found(sealed: Sealed) -> None:
    """Someone without the key rewrites the newest entry and hashes it the old, unkeyed
    way: no later entry's link betrays it, the rule that keyed entries stay keyed does."""
    entries = [await sealed.store.append_audit(audit_event(n)) for n in range(2)]
    forged = replace(entries[1], actor="someone else")
    await execute_raw(
        sealed, "UPDATE audit SET actor = $1, hash = $2 WHERE id = $3",
        forged.actor, entry_hash(forged.prev_hash, forged), forged.id,
    )

    chain = await sealed.store.check_audit()

    assert chain.problem == AuditProblem(forged.id, "is not keyed though an earlier entry is")


def test_audit_verify_checks_a_chain_begun_with_encryption_off(tmp_path: Path) -> None:
    """The command an operator runs, on a store that turned encryption on midway."""
    off = write_config(tmp_path, "[encryption]\nenabled = false\n")
    assert cli(off, "suppress", "add", "a@x.example.net").returncode == 0
    key = base64.b64encode(K1).decode()
    on = write_config(
        tmp_path, f'[encryption]\nenabled = true\nkeys = {{ k1 = "{key}" }}\nactive = "k1"\n'
    )
    assert cli(on, "suppress", "add", "b@x.example.net").returncode == 0
    with sqlite3.connect(tmp_path / "var" / "gateway.db") as connection:
        hashes = [h for (h,) in connection.execute("SELECT hash FROM audit ORDER BY id")]
    assert UNKEYED.fullmatch(hashes[0]) and hashes[-1].startswith(KEYED_PREFIX)

    ok = cli(on, "audit", "verify")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "chain intact" in ok.stdout

    with sqlite3.connect(tmp_path / "var" / "gateway.db") as connection:
        (last,) = connection.execute("SELECT max(id) FROM audit").fetchone()
        connection.execute("UPDATE audit SET actor = 'someone else' WHERE id = ?", (last,))
    tampered = cli(on, "audit", "verify")
    assert tampered.returncode == 1
    assert f"entry {last}" in tampered.stdout


# --- which entries an export holds ----------------------------------------------------------

SUBJECTS = {
    "al@example.com": True,
    "sal@example.com": False,
    "al@example.com.evil": False,
    "bob@x.example.net,al@example.com": True,
    "bob@x.example.net, al@example.com": True,
    "suppression of al@example.com": True,
    "data key k1": False,
    "": False,
}
"""Audit subjects as the gateway writes them (one key, keys joined by ',', words then a
key), and whether exporting al@example.com holds the entry."""


@pytest.mark.parametrize("encryption", ["on", "off"])
async def test_an_export_holds_exactly_the_entries_naming_the_person(
    sealed: Sealed, encryption: str
) -> None:
    """Without encryption the store picks the subjects containing the key in SQL; with it,
    it opens every subject: the exact test after either is the same."""
    await sealed.store.use_data_cipher(keyed() if encryption == "on" else PLAIN)
    for n, subject in enumerate(SUBJECTS):
        await sealed.store.append_audit(replace(audit_event(n), subject=subject))

    data = await sealed.store.personal_data("al@example.com")

    assert [e.subject for e in data.audit] == [s for s, named in SUBJECTS.items() if named]


def test_a_subject_names_a_key_only_whole() -> None:
    assert [names_key(subject, "al@example.com") for subject in SUBJECTS] == list(
        SUBJECTS.values()
    )
    assert names_key("+14155550100,+14155550101", "+14155550101")
    assert not names_key("+141555501010", "+14155550101")
