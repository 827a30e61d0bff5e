"""Personal data sealed at rest: AES-256-GCM ciphertext, keyed blind indexes and keyed
substring signatures, shared by every store backend.

A sealed value names its key id, so keys rotate (`keys rotate-data` re-seals under the
active key while every configured key still opens). The column a sealed value sits in is
its associated data: a ciphertext copied into another column does not open.

Lookups never decrypt. A blind index is a truncated HMAC-SHA256 of the normalised value
under the index key, so an equality lookup stays one indexed read; it tells a reader of
the raw file which rows share a value, never the value. The index key is random, kept in
the store only wrapped (sealed) under a data key, so rotating data keys does not move a
single index entry.

Partial search uses a 63-bit signature per text: one bit per keyed hash of each trigram of
its case-folded form. A search ANDs its own trigrams' bits against the column, and only the
candidates that pass are decrypted and compared. The leak, traded for speed: rows whose
texts share trigrams share bits, so the raw file shows which rows are alike.
"""

from __future__ import annotations

import binascii
import contextlib
import functools
import hashlib
import hmac
import json
import os
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import idna
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.store.errors import StoreUnavailable

SEALED_PREFIX = "\x1e"
"""Starts every sealed value: a control character no address or stored subject starts with,
so a row written before encryption reads as what it is."""

ERASED_PREFIX = "erased:"
"""Starts the keyed hash an erased person's suppression is kept under: it cannot begin a
real key (an email local part has no unquoted ':' and E.164 starts with '+')."""

LOG_PSEUDONYM_PREFIX = "pseudonym:"
"""Starts the value a log carries for a person (`DataCipher.log_pseudonym`)."""
LOG_PSEUDONYM_BYTES = 8
"""64 bits: enough to tell people apart in a log, and nothing to invert without the key."""

BLIND_PREFIX = "~"
"""Starts every blind index. An address may start with it too ('~' is atext), so only
`is_blind_index` tells the two apart."""

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
BLIND_BYTES = 16
SIGNATURE_BITS = 63
"""Bits of a search signature: a signed 64-bit integer column on both stores, sign bit
unused."""
NUMBER_TEXT = re.compile(r"\+?[0-9]+")
"""A phone number as recipients are stored (E.164), or a search for a part of one."""
BLIND_INDEXES_CACHED = 4_096
"""Values whose blind index a cipher remembers: one message looks its recipient up in half a
dozen tables, each asking for the same index."""
NONCES_PER_DRAW = 341
"""Nonces drawn from the OS in one call (4 KB): `os.urandom` gives up the GIL on every
call, and with a store thread runnable the event loop then waits to get it back (86 µs a
call timed so, against 0.32 µs alone)."""
TRIGRAM_BITS_CACHED = 16_384
"""Trigrams whose signature bit a cipher remembers (a few MB): a campaign's subjects and
bodies repeat theirs, and a text's body has ~70 of them, each an HMAC otherwise."""


class SealedDataError(StoreUnavailable):
    """A stored value that does not open: truncated, altered, or sealed under a key this
    process does not hold. Names the record, never its content. A fact the store cannot
    give: the send path fails closed on it (a temporary failure), as on a store that does
    not answer, and so does every view (503, never a 500)."""

    def __init__(self, record: str, problem: str) -> None:
        super().__init__(f"{record}: {problem}")
        self.record = record
        self.problem = problem


@dataclass(frozen=True)
class DataKeyring:
    """The data keys by id, the one that seals, and the key blind indexes are made with."""

    keys: Mapping[str, bytes] = field(repr=False)
    active: str
    index_key: bytes = field(repr=False)


_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")


def _encode(raw: bytes) -> str:
    """Unpadded base64url, the form blind indexes are stored and compared in; binascii
    directly, at half the cost of `base64`'s wrappers (a message indexes a dozen values)."""
    return binascii.b2a_base64(raw, newline=False).translate(_TO_URLSAFE).rstrip(b"=").decode(
        "ascii"
    )


def _encode_sealed(raw: bytes) -> str:
    """A sealed value's body: standard base64, padded. A text's decision seals a 2 KB
    evidence document, and mapping every byte to the URL-safe alphabet was a tenth of
    what encryption adds to its instructions; nothing puts a sealed value in a URL."""
    return binascii.b2a_base64(raw, newline=False).decode("ascii")


def _decode(text: str) -> bytes:
    """Strict: a character outside the alphabet is damage, not something to skip. Bodies
    sealed before `_encode_sealed` are unpadded base64url: the two alphabets share all but
    two characters, so a body holding '-' or '_' is read as base64url (in one mixing both,
    each character still means one value, and the tag decides)."""
    padded = (text + "=" * (-len(text) % 4)).encode("ascii")
    if "-" in text or "_" in text:
        padded = padded.translate(_FROM_URLSAFE)
    return binascii.a2b_base64(padded, strict_mode=True)


BLIND_CHARS = len(_encode(bytes(BLIND_BYTES)))
_BASE64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def is_blind_index(stored: str) -> bool:
    """Whether a lookup column's value is a blind index, by its exact shape: the prefix and
    BLIND_CHARS base64url characters. No lookup value in clear has that shape: an address
    holds '@' and a number starts with '+', even one starting with '~'."""
    return (
        len(stored) == len(BLIND_PREFIX) + BLIND_CHARS
        and stored.startswith(BLIND_PREFIX)
        and _BASE64URL.issuperset(stored[len(BLIND_PREFIX):])
    )


def row_label(stored: str) -> str:
    """How an error names a row by its lookup value: a blind index or an erased row's hash
    as stored, never a value in clear (one written before encryption, or past the
    gateway), since the error reaches logs, API answers and the command line."""
    return stored if is_blind_index(stored) or stored.startswith(ERASED_PREFIX) else "(in clear)"


def is_sealed(stored: str) -> bool:
    return stored.startswith(SEALED_PREFIX)


def sealed_key_id(stored: str) -> str | None:
    """The key id a sealed value was made with (None for plaintext): rotation finds the
    rows still under an old key by it."""
    if not is_sealed(stored):
        return None
    return stored[1:].partition(":")[0]


def search_folded(text: str) -> str:
    """How a text and a search for part of it are compared: case-folded."""
    return text.casefold()


PSEUDONYM_FORM_MAX = 1024
"""No address is longer (idna refuses more): a longer value is only case-folded, as Unicode
normalisation takes quadratic time on a long run of combining marks."""


def pseudonym_form(value: str) -> str:
    """Case-folded; beyond ASCII also composed (NFC, again after folding, which may
    decompose) and with the domain in its IDNA ASCII form, so `Bob@Bücher.example`,
    `bob@xn--bcher-kva.example` and a `ü` written as `u` and a combining mark are one
    person's spellings. A domain that is not a valid internationalised name stays as
    written."""
    if value.isascii() or len(value) > PSEUDONYM_FORM_MAX:
        return value.casefold()
    local, at, domain = unicodedata.normalize("NFC", value).rpartition("@")
    if at and not domain.isascii():
        with contextlib.suppress(idna.IDNAError, UnicodeError):
            domain = idna.encode(domain, uts46=True).decode("ascii")
    return unicodedata.normalize("NFC", f"{local}{at}{domain}".casefold())


def trigrams(text: str) -> set[str]:
    folded = search_folded(text)
    return {folded[i : i + 3] for i in range(len(folded) - 2)}


class NoncePool:
    """Random AES-GCM nonces, drawn from the OS a block at a time and each handed out once.
    One nonce used twice under a key reveals both plaintexts' difference and lets GCM tags
    be forged, so: threads share the pool safely (`list.pop` is atomic, and the owner and
    its list are one attribute, never seen half replaced); a forked child starts empty,
    emptied by the fork hook below and, for a fork made outside Python's knowledge, by the
    owner's pid (the hook also covers a child given a pid its dead parent had)."""

    def __init__(self) -> None:
        self._state: tuple[int, list[bytes]] = (os.getpid(), [])

    def forget(self) -> None:
        self._state = (os.getpid(), [])

    def take(self) -> bytes:
        owner, nonces = self._state
        if owner == os.getpid():
            with contextlib.suppress(IndexError):
                return nonces.pop()
        block = os.urandom(NONCE_BYTES * NONCES_PER_DRAW)
        drawn = [block[i : i + NONCE_BYTES] for i in range(0, len(block), NONCE_BYTES)]
        nonce = drawn.pop()
        self._state = (os.getpid(), drawn)
        return nonce


_NONCES = NoncePool()
os.register_at_fork(after_in_child=_NONCES.forget)


def _written_past_the_gateway(column: str, record: str) -> SealedDataError:
    return SealedDataError(
        record, f"{column} is in clear, though every value here was sealed: written past "
        "the gateway"
    )


def _derived_key(index_key: bytes, use: bytes) -> bytes:
    """A key of its own for one use, derived from the index key."""
    return hmac.digest(index_key, use, "sha256")


def _derived_mac(index_key: bytes, use: bytes) -> hmac.HMAC:
    return hmac.new(_derived_key(index_key, use), digestmod=hashlib.sha256)


class DataCipher:
    """Seals, opens and indexes with one keyring. Everything is per value and pure but for
    the random nonce, so the store's row encoders call it inline."""

    enabled = True
    _clear_is_damage = False

    def __init__(self, keyring: DataKeyring) -> None:
        if keyring.active not in keyring.keys:
            raise ValueError(f"active data key {keyring.active!r} is not among the keys")
        self._aead = {key_id: AESGCM(key) for key_id, key in keyring.keys.items()}
        self._active = keyring.active
        # Keyed once and copied per value: keying an HMAC costs as much as the rest of it.
        self._blind_mac = hmac.new(keyring.index_key, digestmod=hashlib.sha256)
        self._signature_mac = _derived_mac(keyring.index_key, b"search-signature")
        self._digest_mac = _derived_mac(keyring.index_key, b"keyed-digest")
        self._log_key = _derived_key(keyring.index_key, b"log-pseudonym")
        self._trigram_bit = functools.lru_cache(maxsize=TRIGRAM_BITS_CACHED)(self._keyed_bit)
        self._blind_index = functools.lru_cache(maxsize=BLIND_INDEXES_CACHED)(self._keyed_index)

    def refuse_clear_values(self) -> None:
        """Once a sealing pass has finished, no sealed column holds a value in clear unless
        someone wrote it past the gateway: from then on `open` refuses one, where it would
        show text of the writer's choosing as a genuine recipient, reason or evidence."""
        self._clear_is_damage = True

    @property
    def refuses_clear_values(self) -> bool:
        return self._clear_is_damage

    @property
    def active_key_id(self) -> str:
        return self._active

    def seal(self, plaintext: str, column: str) -> str:
        """An empty value stays empty, as the sealing pass leaves it: a ciphertext's length
        gives the plaintext's away anyway, and a text has no subject to seal."""
        if not plaintext:
            return ""
        nonce = _NONCES.take()
        sealed = self._aead[self._active].encrypt(nonce, plaintext.encode(), column.encode())
        return f"{SEALED_PREFIX}{self._active}:{_encode_sealed(nonce + sealed)}"

    def open(self, stored: str, column: str, record: str) -> str:
        """The plaintext of a sealed value; a value stored before encryption is returned as
        it is (an existing database is sealed in the background,
        gateway/services/data_rotation.py) until `refuse_clear_values`. Only an empty value
        is never sealed."""
        if not is_sealed(stored):
            if self._clear_is_damage and stored:
                raise _written_past_the_gateway(column, record)
            return stored
        return self._opened(stored, column, record)

    def unsealed(self, stored: str, column: str, record: str) -> str:
        """A lookup column's own value, shown where its row has no sealed copy: an erased
        row's keyed hash, a blind index, or (until `refuse_clear_values`) a value written
        before encryption."""
        if (self._clear_is_damage and stored and not is_blind_index(stored)
                and not stored.startswith(ERASED_PREFIX)):
            raise _written_past_the_gateway(column, record)
        return stored

    def open_any(self, stored: str, column: str, record: str) -> str:
        """`open`, taking a value in clear as it is: for the sealing pass, whose work that
        is (a replica of an earlier release, or one with encryption off, may have written
        it)."""
        return stored if not is_sealed(stored) else self._opened(stored, column, record)

    def _opened(self, stored: str, column: str, record: str) -> str:
        key_id, separator, body = stored[1:].partition(":")
        aead = self._aead.get(key_id)
        if not separator or aead is None:
            raise SealedDataError(record, f"{column} is sealed under data key {key_id!r}, "
                                  "which this gateway does not hold")
        try:
            raw = _decode(body)
        except (binascii.Error, ValueError):
            raise SealedDataError(record, f"{column} is not valid ciphertext") from None
        if len(raw) < NONCE_BYTES + TAG_BYTES:
            raise SealedDataError(record, f"{column} is truncated")
        try:
            plain = aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], column.encode())
        except InvalidTag:
            raise SealedDataError(record, f"{column} was altered or truncated") from None
        return plain.decode()

    def open_json(self, stored: str, column: str, record: str) -> Any:
        """A sealed JSON document, parsed. A value that is neither (a ciphertext that lost
        its first byte reads as text from before encryption) is damage, not a crash."""
        try:
            return json.loads(self.open(stored, column, record))
        except ValueError:
            raise SealedDataError(record, f"{column} is neither sealed nor JSON") from None

    def blind(self, value: str) -> str:
        """The blind index of an already-normalised value (callers normalise as the column
        always has: an address key, an E.164 number)."""
        return self._blind_index(value)

    def _keyed_index(self, value: str) -> str:
        mac = self._blind_mac.copy()
        mac.update(value.encode())
        return BLIND_PREFIX + _encode(mac.digest()[:BLIND_BYTES])

    def digest(self, text: str, purpose: str) -> str:
        """A keyed SHA-256 of `text` (hex), for a hash kept beside sealed values that must
        not let a copy holder confirm a guess of them (the audit chain). Under the index
        key, so rotating data keys never changes it; `purpose` keeps one use's digests
        apart from another's."""
        mac = self._digest_mac.copy()
        mac.update(purpose.encode() + b"\x00" + text.encode())
        return mac.hexdigest()

    def log_pseudonym(self, value: str) -> str:
        """How logs name a person: a keyed digest of the value in its `pseudonym_form`, so
        each spelling of an address the gateway logs gives one pseudonym, the same in every
        replica (the index key is shared through the store), and one nobody can confirm a
        guess of without the key. Logs leave for systems the store's encryption does not
        cover."""
        keyed = hashlib.blake2b(  # a keyed hash in one call: an HMAC costs twice as much
            # A lone surrogate (from a field nobody validated) must not drop the line.
            pseudonym_form(value).encode("utf-8", "surrogatepass"),
            key=self._log_key, digest_size=LOG_PSEUDONYM_BYTES,
        )
        return LOG_PSEUDONYM_PREFIX + keyed.hexdigest()

    def signature(self, text: str) -> int:
        """The search signature of a stored text (0 for one shorter than three characters)."""
        return self._bits(trigrams(text))

    def recipient_signature(self, recipient: str) -> int:
        """None (0) for a phone number. A signature is the OR of one keyed bit per trigram,
        so whoever holds a copy and the numbers of their own rows learns each digit
        trigram's bit, and a number has few enough candidates to try every one against
        another row's signature. A number's exact lookups use its blind index; a search for
        part of one reads every row without a signature (`core.NUMBER_SEARCH`)."""
        return 0 if NUMBER_TEXT.fullmatch(recipient) else self.signature(recipient)

    def search_mask(self, term: str) -> int:
        """The bits every row containing `term` has; 0 (every row a candidate) for a term
        shorter than three characters."""
        return self._bits(trigrams(term))

    def _bits(self, grams: set[str]) -> int:
        bits = 0
        for gram in grams:
            bits |= self._trigram_bit(gram)
        return bits

    def _keyed_bit(self, gram: str) -> int:
        mac = self._signature_mac.copy()
        mac.update(gram.encode())
        return 1 << (int.from_bytes(mac.digest()[:4], "big") % SIGNATURE_BITS)


class PlainCipher(DataCipher):
    """No encryption: `[encryption] enabled = false` (the benchmarks' baseline), and a store
    used directly by tests. Refuses to open what a keyed gateway sealed."""

    enabled = False

    def __init__(self) -> None:
        self._active = ""
        self._aead = {}

    def seal(self, plaintext: str, column: str) -> str:
        return plaintext

    def blind(self, value: str) -> str:
        return value

    def signature(self, text: str) -> int:
        """None: the text is stored in clear, and searched there."""
        return 0

    def search_mask(self, term: str) -> int:
        return 0


PLAIN = PlainCipher()


def generate_key() -> bytes:
    return os.urandom(KEY_BYTES)


class SealedColumns:
    """The cipher a store seals and indexes with; `PLAIN` until the gateway gives it its
    keys (`services.data_keys`), which it does before serving anything."""

    _cipher: DataCipher = PLAIN

    async def use_data_cipher(self, cipher: DataCipher) -> None:
        self._cipher = cipher

    def _lookup_forms(self, values: Iterable[str]) -> dict[str, str]:
        return lookup_forms(self._cipher, values)


def lookup_forms(cipher: DataCipher, values: Iterable[str]) -> dict[str, str]:
    """Stored form -> the caller's value, for looking `values` up in a blind-indexed column:
    the blind index, and while encryption is on the value itself too, since a row written
    before encryption holds it in clear until the sealing pass reaches it. Under PLAIN both
    forms are one. Blank values name nothing and are left out.

    The clear form is kept after the sealing pass (gateway/services/data_rotation.py) has
    finished, though it costs a lookup more than the blind index alone: a finished pass
    does not prove that no row was written in clear since (a replica of an earlier release
    during an upgrade), and a lookup that missed such a row would send to someone who
    opted out."""
    forms: dict[str, str] = {}
    for value in values:
        if value:
            forms.setdefault(cipher.blind(value), value)
            forms.setdefault(value, value)
    return forms
