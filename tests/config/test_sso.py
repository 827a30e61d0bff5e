"""`[[sso.oidc]]`, `[[sso.saml]]`, `[sso]` and `[scim]`: what loads, and every mistake refused
with the key named."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.settings import ConfigError, load_config
from gateway.model import Role
from tests.conftest import write_config

OKTA = """
[[sso.oidc]]
name = "okta"
issuer = "https://acme.okta.com/oauth2/default/"
client_id = "0oa1"
client_secret = "${OIDC_SECRET}"
roles = { "compliance-managers" = "manager", "gateway-admins" = "admin" }
"""
METADATA = """<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata"
 entityID="https://idp.example"/>"""


def test_providers_load_with_secrets_from_the_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("OIDC_SECRET", "s3cret-value")
    (tmp_path / "idp.xml").write_text(METADATA)
    config = load_config(write_config(tmp_path, OKTA + """
        [[sso.saml]]
        name = "entra"
        idp_metadata = "idp.xml"
        role_attribute = "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups"
        roles = { "0b1c" = "owner", "compliance-managers" = "admin" }

        [sso]
        break_glass = true

        [scim]
        token = "SCIM_TOKEN"
        """.replace("SCIM_TOKEN", "t" * 40)))
    [okta], [entra] = config.sso.oidc, config.sso.saml
    assert okta.issuer == "https://acme.okta.com/oauth2/default/"  # as written: iss is exact
    assert okta.client_secret == "s3cret-value" and "s3cret" not in repr(config)
    assert okta.role_claim == "groups" and okta.client_auth == "client_secret_basic"
    assert entra.idp_metadata_xml == METADATA and entra.idp_metadata_url == ""
    assert config.sso.break_glass and config.sso.scim.token == "t" * 40
    # SCIM groups map through every provider's roles; the higher one where two disagree
    assert config.sso.scim_roles() == {"compliance-managers": Role.ADMIN,
                                       "gateway-admins": Role.ADMIN, "0b1c": Role.OWNER}


@pytest.mark.parametrize(("extra", "key"), [
    (OKTA.replace("https://acme.okta.com", "http://acme.okta.com"), "sso.oidc[0].issuer"),
    (OKTA.replace('"manager"', '"boss"'), "sso.oidc[0].roles"),
    (OKTA.replace('roles = {', 'roles = {}\n#'), "sso.oidc[0].roles"),
    (OKTA.replace('name = "okta"', 'name = "Okta Prod"'), "sso.oidc[0].name"),
    (OKTA + OKTA, "sso.oidc[1].name"),
    (OKTA.replace('client_id = "0oa1"', 'client_id = ""'), "sso.oidc[0].client_id"),
    (OKTA + 'scope = "x"\n', "sso.oidc[0].scope"),
    (OKTA.replace("roles", 'client_auth = "private_key_jwt"\nroles'), "sso.oidc[0].client_auth"),
    ('[[sso.saml]]\nname = "x"\nidp_metadata = "missing.xml"\nroles = { "a" = "owner" }\n',
     "sso.saml[0].idp_metadata"),
    ('[[sso.saml]]\nname = "x"\nidp_metadata = "ftp://idp/md"\nroles = { "a" = "owner" }\n',
     "sso.saml[0].idp_metadata"),
    ("[sso]\nbreak_glass = true\n", "sso.break_glass"),
    ('[scim]\ntoken = "short"\n', "scim.token"),
    ('[scim]\ntoken = "demo-secret-0123456789"\n', "scim.token"),
    ("[sso]\noidc = 1\n", "sso.oidc"),
])
def test_a_mistake_names_its_key(tmp_path: Path, monkeypatch, extra: str, key: str) -> None:
    monkeypatch.setenv("OIDC_SECRET", "s3cret-value")
    with pytest.raises(ConfigError) as refused:
        load_config(write_config(tmp_path, extra))
    assert refused.value.key == key


def test_a_metadata_url_may_carry_a_query_an_issuer_may_not(tmp_path: Path,
                                                             monkeypatch) -> None:
    monkeypatch.setenv("OIDC_SECRET", "s3cret-value")
    url = "https://login.microsoftonline.com/t/federationmetadata/2007-06/x.xml?appid=a1"
    saml = f'[[sso.saml]]\nname = "entra"\nidp_metadata = "{url}"\nroles = {{ "g" = "owner" }}\n'
    assert load_config(write_config(tmp_path, saml)).sso.saml[0].idp_metadata_url == url
    with pytest.raises(ConfigError) as refused:
        load_config(write_config(tmp_path, OKTA.replace("/default/", "/default?x=1")))
    assert refused.value.key == "sso.oidc[0].issuer"


def test_scim_provider_names_whose_sub_is_the_external_id(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("OIDC_SECRET", "s3cret-value")
    two = OKTA + OKTA.replace('name = "okta"', 'name = "partner"')
    config = load_config(write_config(tmp_path, two))
    # two providers and no [scim] provider: every sub is scoped by its provider
    assert config.sso.external_id("okta", "00u1") == "okta|00u1"
    config = load_config(write_config(tmp_path, two + '[scim]\nprovider = "okta"\n'))
    assert config.sso.external_id("okta", "00u1") == "00u1"
    assert config.sso.external_id("partner", "00u1") == "partner|00u1"
    one = load_config(write_config(tmp_path, OKTA))
    assert one.sso.external_id("okta", "00u1") == "00u1"  # the only provider: SCIM's
    with pytest.raises(ConfigError) as refused:
        load_config(write_config(tmp_path, two + '[scim]\nprovider = "google"\n'))
    assert refused.value.key == "scim.provider"


def test_single_sign_on_needs_an_https_public_url_off_loopback(tmp_path: Path,
                                                              monkeypatch) -> None:
    monkeypatch.setenv("OIDC_SECRET", "s3cret-value")
    path = write_config(tmp_path, OKTA)
    text = path.read_text()
    path.write_text(text.replace("https://gw.example.com", "http://gw.example.com"))
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert refused.value.key == "gateway.public_url"
    path.write_text(text.replace("https://gw.example.com", "http://127.0.0.1:8080"))
    assert load_config(path).sso.configured
