"""Sealing, blind indexes and search signatures (gateway/store/sealing.py), table-tested."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

from gateway.store.sealing import (
    NONCE_BYTES,
    NONCES_PER_DRAW,
    PLAIN,
    SEALED_PREFIX,
    DataCipher,
    DataKeyring,
    NoncePool,
    SealedDataError,
    sealed_key_id,
    trigrams,
)


def cipher(
    keys: dict[str, bytes] | None = None, active: str = "k1", index: bytes = b""
) -> DataCipher:
    keys = keys or {"k1": os.urandom(32)}
    return DataCipher(DataKeyring(keys, active, index or os.urandom(32)))


def test_a_sealed_value_opens_to_its_plaintext_and_shows_none_of_it() -> None:
    c = cipher()
    sealed = c.seal("Bob.Lead@Example.com", "decisions.recipient")
    assert sealed.startswith(SEALED_PREFIX) and sealed_key_id(sealed) == "k1"
    assert "bob" not in sealed.lower() and "example" not in sealed.lower()
    assert c.open(sealed, "decisions.recipient", "decision 1") == "Bob.Lead@Example.com"


def test_an_empty_value_stays_empty_as_the_sealing_pass_leaves_it() -> None:
    c = cipher()
    assert c.seal("", "decisions.subject") == ""
    assert c.open("", "decisions.subject", "decision 1") == ""
    assert c.seal(" ", "decisions.subject").startswith(SEALED_PREFIX)


def test_a_blind_index_is_the_same_asked_again_and_differs_between_values() -> None:
    """Remembered (one message asks for its recipient's in several tables), never mixed
    up: every value keeps its own."""
    c = cipher()
    values = [f"+1212555{n:04d}" for n in range(5000)]  # more than the cipher remembers
    first = [c.blind(v) for v in values]
    assert len(set(first)) == len(values)
    assert [c.blind(v) for v in reversed(values)] == first[::-1]


def test_sealing_the_same_value_twice_gives_two_ciphertexts() -> None:
    c = cipher()
    assert c.seal("+15551234567", "t.c") != c.seal("+15551234567", "t.c")


def test_threads_sealing_at_once_never_share_a_nonce() -> None:
    """Nonces come from a pool refilled a block at a time; threads drawing across refills
    (several blocks' worth each) must still each get their own. The switch interval is cut
    so that the threads interleave inside `take` instead of running one after another."""
    pool = NoncePool()
    drawn: list[list[bytes]] = [[] for _ in range(8)]
    start = threading.Barrier(len(drawn))

    def draw(into: list[bytes]) -> None:
        start.wait()
        into.extend(pool.take() for _ in range(5 * NONCES_PER_DRAW))

    threads = [threading.Thread(target=draw, args=(into,)) for into in drawn]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    every = [nonce for into in drawn for nonce in into]
    assert {len(nonce) for nonce in every} == {NONCE_BYTES}
    assert len(set(every)) == len(every) == 8 * 5 * NONCES_PER_DRAW


FORKED_SEALS = r"""
import ctypes, json, os, sys
from gateway.store import sealing

cipher = sealing.DataCipher(sealing.DataKeyring({"k1": bytes(32)}, "k1", bytes(32)))
def nonce(text):
    return sealing._decode(cipher.seal(text, "t.c").partition(":")[2])[:sealing.NONCE_BYTES].hex()

sealing._NONCES.forget()
nonce("before the fork")  # the parent now holds a block of undrawn nonces
parent_pid = os.getpid()
reader, writer = os.pipe()
child = ctypes.CDLL(None).fork() if sys.argv[1] == "c-fork" else os.fork()
if child == 0:
    try:
        os.close(reader)
        if sys.argv[1] == "same-pid":
            os.getpid = lambda: parent_pid
        os.write(writer, json.dumps([nonce(f"child {n}") for n in range(50)]).encode())
    finally:
        os._exit(0)
os.close(writer)
parent = [nonce(f"parent {n}") for n in range(50)]
with os.fdopen(reader) as pipe:
    from_child = json.loads(pipe.read())
os.waitpid(child, 0)
print(json.dumps({"parent": parent, "child": from_child}))
"""


@pytest.mark.parametrize("fork", ["python-fork", "same-pid", "c-fork"])
def test_a_forked_process_never_seals_with_a_nonce_its_parent_uses(fork: str) -> None:
    """The parent has drawn a block of nonces before the fork: a child that took from the
    same block would seal under the same key with the same nonces. Also for a child that
    has the pid its parent had (pid reuse after the parent died, emulated) and for a fork
    Python's fork hooks never saw (libc's, through ctypes). Run in a fresh process: this
    one has threads, and a forked copy of them can hang."""
    done = subprocess.run([sys.executable, "-c", FORKED_SEALS, fork], capture_output=True,
                          text=True, timeout=60, check=True)
    seals = json.loads(done.stdout)
    parent, child = set(seals["parent"]), set(seals["child"])
    assert len(parent) == len(child) == 50
    assert not parent & child


def test_a_ciphertext_moved_to_another_column_does_not_open() -> None:
    c = cipher()
    sealed = c.seal("secret subject", "decisions.subject")
    with pytest.raises(SealedDataError) as caught:
        c.open(sealed, "decisions.recipient", "decision 7")
    assert caught.value.record == "decision 7"
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize(
    "damage",
    [
        lambda s: s[:-5],  # truncated tag
        lambda s: s[: len(SEALED_PREFIX) + 3 + 10],  # truncated below nonce + tag
        lambda s: s[:-9] + ("A" if s[-9] != "A" else "B") + s[-8:],  # one character changed
        lambda s: s.replace(":", ":!", 1),  # not base64
        lambda s: s.replace("k1:", "k9:", 1),  # a key id nobody holds
        lambda s: s.replace("k1:", "k1", 1),  # no separator
    ],
)
def test_a_damaged_ciphertext_is_an_error_naming_the_record(damage) -> None:  # type: ignore[no-untyped-def]
    c = cipher()
    sealed = c.seal("alice@example.org", "suppressions.address")
    with pytest.raises(SealedDataError) as caught:
        c.open(damage(sealed), "suppressions.address", "suppressions row ~x")
    assert caught.value.record == "suppressions row ~x"
    assert "alice" not in str(caught.value)


def test_bodies_are_sealed_in_standard_base64_and_bodies_sealed_in_base64url_still_open() -> None:
    """Values sealed before the body became standard base64 (unpadded base64url) stay in
    stores until a rotation reseals them."""
    c = cipher()
    bodies = [c.seal(f"lead{n}@example.org", "t.c").partition(":")[2] for n in range(60)]
    assert not any("-" in body or "_" in body for body in bodies)
    assert any("+" in body or "/" in body for body in bodies)
    assert all(len(body) % 4 == 0 for body in bodies)
    earlier = 0
    for n in range(60):
        sealed = c.seal(f"lead{n}@example.org", "t.c")
        head, _, body = sealed.partition(":")
        url_safe = body.translate(str.maketrans("+/", "-_")).rstrip("=")
        earlier += url_safe != body.rstrip("=")
        assert c.open(f"{head}:{url_safe}", "t.c", "row") == f"lead{n}@example.org"
    assert earlier > 0


def test_a_value_written_before_encryption_reads_as_it_is() -> None:
    assert cipher().open("carol@example.com", "decisions.recipient", "decision 1") == (
        "carol@example.com"
    )


def test_every_configured_key_opens_and_only_the_active_one_seals() -> None:
    old, new = os.urandom(32), os.urandom(32)
    index = os.urandom(32)
    before = cipher({"k1": old}, "k1", index)
    sealed = before.seal("dave@example.com", "t.c")
    after = cipher({"k1": old, "k2": new}, "k2", index)
    assert after.open(sealed, "t.c", "r") == "dave@example.com"
    assert sealed_key_id(after.seal("x", "t.c")) == "k2"
    with pytest.raises(SealedDataError):
        cipher({"k2": new}, "k2", index).open(sealed, "t.c", "r")


def test_a_blind_index_is_stable_per_index_key_and_reveals_nothing() -> None:
    index = os.urandom(32)
    one, same = cipher(index=index), cipher(index=index)
    other = cipher()
    value = "erin@example.com"
    assert one.blind(value) == same.blind(value)
    assert one.blind(value) != other.blind(value)
    assert one.blind(value) != one.blind("erin@example.co")
    assert "erin" not in one.blind(value) and one.blind(value).startswith("~")


@pytest.mark.parametrize(
    ("text", "term", "found"),
    [
        ("Frank.Lead@Example.COM", "example.com", True),
        ("Frank.Lead@Example.COM", "LEAD@", True),
        ("Quarterly pricing update", "pricing", True),
        ("Quarterly pricing update", "PRICING UP", True),
        ("Quarterly pricing update", "xyz", False),
        ("+15551234567", "555123", True),
    ],
)
def test_a_searched_part_finds_every_text_holding_it(text: str, term: str, found: bool) -> None:
    """A text containing the term always has the term's bits (no false negative); the
    candidates are decrypted and compared, so only a missing text may also pass."""
    c = cipher()
    mask = c.search_mask(term)
    has_bits = c.signature(text) & mask == mask
    if found:
        assert has_bits
    assert 0 <= c.signature(text) < 2**63


def test_a_term_shorter_than_three_characters_makes_every_row_a_candidate() -> None:
    assert cipher().search_mask("ab") == 0
    assert trigrams("AbC") == {"abc"}


def test_without_encryption_nothing_is_changed_and_nothing_sealed_opens() -> None:
    assert PLAIN.seal("x@example.com", "t.c") == "x@example.com"
    assert PLAIN.blind("x@example.com") == "x@example.com"
    sealed = cipher().seal("x@example.com", "t.c")
    with pytest.raises(SealedDataError):
        PLAIN.open(sealed, "t.c", "r")


def test_blind_indexes_and_signatures_stay_what_stored_rows_hold() -> None:
    """Known answers, computed before the keyed HMACs were copied instead of re-keyed and
    the trigram bits remembered (per cipher: another index key gives other bits):
    a stored blind index or signature that changed would stop every row from being found.
    Each value after another, so a keyed state that kept earlier input would show."""
    c = DataCipher(DataKeyring({"k1": bytes(32)}, "k1", bytes(range(32))))
    for _ in range(2):
        assert c.blind("erin@example.com") == "~4rzG3njietJGsDbqnsjx_g"
        assert c.blind("+15551234567") == "~iiDZQSkPpWR_tdOLtdw7fg"
        assert c.signature("Quarterly pricing update") == 463628955615272
        assert c.signature("Frank.Lead@Example.COM") == 1783475480220940556
        assert c.search_mask("pricing") == 554117955592
    other_index = DataCipher(DataKeyring({"k1": bytes(32)}, "k1", bytes(32)))
    assert other_index.signature("Quarterly pricing update") != 463628955615272
