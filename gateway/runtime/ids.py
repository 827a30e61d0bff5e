"""Identifiers that must be unique but need not be secret: gateway ids, file names, MIME
boundaries, provider-style sids of the outbox.

`uuid4` and `secrets` make a system call per id, and each one gives up the GIL: under load
the event loop then waits for a worker thread to hand it back. A Mersenne Twister seeded once
from the OS gives the same 128 bits of uniqueness without either. Tokens that guard anything
(unsubscribe links, sessions, keys) keep using `secrets`.
"""

from __future__ import annotations

import random

_generator = random.Random()  # seeded from os.urandom


def unique_hex(bits: int = 128) -> str:
    """`bits` random bits as lower-case hex, zero-padded."""
    return f"{_generator.getrandbits(bits):0{bits // 4}x}"
