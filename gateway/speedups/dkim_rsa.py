"""dkimpy's RSA signature computed by OpenSSL (through `cryptography`) instead of in Python.

dkimpy signs with two Python `pow` calls on 1024-bit numbers: about 6 ms per message with
a 2048-bit key, more than everything else the gateway does to a message. RSASSA-PKCS1-v1_5
is deterministic (RFC 8017 §8.2), so OpenSSL's signature over the same digest with the same
key is the same bytes; the tests compare them. The key dkimpy parsed is rebuilt from its
numbers once per key and kept.
"""

from __future__ import annotations

import functools
from typing import Any

import dkim
import dkim.crypto
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from gateway.speedups.base import Patch, Speedup, source_digest

# dkimpy 1.1.8's RSASSA_PKCS1_v1_5_sign, which the stand-in replaces.
DKIMPY_SIGN = dkim.crypto.RSASSA_PKCS1_v1_5_sign
DKIMPY_SIGN_SOURCE = "88352188b2ba2ad9476ce53da0b1644df622ac5b0b9e97292384b954853af766"
_HASHES: dict[str, hashes.HashAlgorithm] = {"sha256": hashes.SHA256(), "sha1": hashes.SHA1()}


def openssl_sign(digest: Any, private_key: dict[str, int]) -> bytes:
    """What `dkim.crypto.RSASSA_PKCS1_v1_5_sign(digest, private_key)` returns; a hash it
    does not know goes to dkimpy."""
    algorithm = _HASHES.get(digest.name.lower())
    if algorithm is None:
        return DKIMPY_SIGN(digest, private_key)
    key = _openssl_key(*(private_key[n] for n in _NUMBERS))
    return key.sign(digest.digest(), padding.PKCS1v15(), utils.Prehashed(algorithm))


_NUMBERS = ("prime1", "prime2", "privateExponent", "exponent1", "exponent2", "coefficient",
            "publicExponent", "modulus")


@functools.lru_cache(maxsize=16)
def _openssl_key(
    p: int, q: int, d: int, dmp1: int, dmq1: int, iqmp: int, e: int, n: int
) -> rsa.RSAPrivateKey:
    return rsa.RSAPrivateNumbers(p, q, d, dmp1, dmq1, iqmp, rsa.RSAPublicNumbers(e, n)) \
        .private_key()


def _library_changed() -> str | None:
    if source_digest(DKIMPY_SIGN) != DKIMPY_SIGN_SOURCE:
        return "dkimpy's RSASSA_PKCS1_v1_5_sign is not the function stood in for"
    if vars(dkim).get("RSASSA_PKCS1_v1_5_sign") is not DKIMPY_SIGN:
        return "dkim.RSASSA_PKCS1_v1_5_sign is not dkim.crypto's"
    return None


SPEEDUP = Speedup(
    name="dkim_rsa",
    checked_versions={"dkimpy": ("1.1.8",)},
    patches=(Patch(dkim, "RSASSA_PKCS1_v1_5_sign", openssl_sign),),
    library_changed=_library_changed,
)
