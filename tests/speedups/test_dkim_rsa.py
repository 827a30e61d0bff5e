"""OpenSSL's RSA signature is dkimpy's, byte for byte (PKCS#1 v1.5 is deterministic)."""

from __future__ import annotations

from types import SimpleNamespace
from unittest import mock

import dkim
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.model import DkimKey
from gateway.rewrite.dkim import sign
from gateway.speedups import dkim_rsa
from tests.rewrite.test_dkim import GATEWAY_KEY, MESSAGE, dkimpy_verifies, rsa_pem
from tests.speedups import switched

SMALL_KEY = DkimKey("example.com", "k1024", rsa_pem(1024))


def test_installed_in_dkim_and_removed_again() -> None:
    with switched(dkim_rsa.SPEEDUP, True):
        assert dkim.RSASSA_PKCS1_v1_5_sign is dkim_rsa.openssl_sign
        dkim_rsa.SPEEDUP.uninstall()
        assert dkim.RSASSA_PKCS1_v1_5_sign is dkim_rsa.DKIMPY_SIGN


@settings(max_examples=40, deadline=None)
@given(
    body=st.binary(max_size=300).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"\r\n")),
    key=st.sampled_from([GATEWAY_KEY, SMALL_KEY]),
)
def test_signatures_are_dkimpys_byte_for_byte(body: bytes, key: DkimKey) -> None:
    message = MESSAGE + body
    with mock.patch.object(dkim, "time", SimpleNamespace(time=lambda: 1_780_000_000)):
        with switched(dkim_rsa.SPEEDUP, False):
            by_dkimpy = sign(message, key)
        with switched(dkim_rsa.SPEEDUP, True):
            by_openssl = sign(message, key)
    assert by_openssl == by_dkimpy
    assert dkimpy_verifies(by_openssl) or key is SMALL_KEY


def test_skipped_when_dkimpy_signs_differently(monkeypatch) -> None:
    monkeypatch.setattr(dkim_rsa, "DKIMPY_SIGN_SOURCE", "something else")
    assert "RSASSA_PKCS1_v1_5_sign" in dkim_rsa.SPEEDUP.skip_reason()
