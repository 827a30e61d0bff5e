"""The `saml_idp` fixture: a real SAML IdP (pysaml2's, signing with xmlsec1) on loopback."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest

from tests.saml.idp import IdPMissing, KeyPair, SamlIdP, find_xmlsec1, generate_keypair


def idp_missing() -> str | None:
    """Why the IdP cannot run here, or None."""
    if importlib.util.find_spec("saml2") is None:
        return "pysaml2 is not installed (pip install -e '.[test]')"
    try:
        find_xmlsec1()
    except IdPMissing as missing:
        return str(missing)
    return None


@pytest.fixture(scope="session")
def saml_idp_keypair() -> KeyPair:
    """The IdP's signing key, made once per session (a forger makes its own)."""
    return generate_keypair()


@pytest.fixture
def saml_idp(saml_idp_keypair: KeyPair) -> Iterator[SamlIdP]:
    """pysaml2's IdP on 127.0.0.1 and an ephemeral port, stopped after the test. Trust the SP
    with `saml_idp.trust_sp(metadata_xml)`; choose who signs in with `saml_idp.sign_in_as`."""
    reason = idp_missing()
    if reason:
        print(f"*** SAML IdP test SKIPPED: {reason} ***")
        pytest.skip(f"SAML IdP test skipped: {reason}")
    with SamlIdP(keypair=saml_idp_keypair) as idp:
        yield idp
