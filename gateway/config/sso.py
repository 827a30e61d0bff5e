"""Single sign-on and provisioning settings: `[[sso.oidc]]`, `[[sso.saml]]`, `[sso]`, `[scim]`.

Each identity provider maps the groups it reports to the gateway's roles; a person whose
groups map to none has no access. A provider is named in its routes
(`/auth/oidc/{name}/…`), so names are unique across both kinds.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gateway.config.errors import ConfigError
from gateway.config.toml_reader import TomlTable
from gateway.model import Role

PROVIDER_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
CLIENT_AUTH_METHODS = ("client_secret_basic", "client_secret_post")
MIN_SCIM_TOKEN_CHARS = 32


@dataclass(frozen=True)
class OidcProvider:
    name: str
    issuer: str
    client_id: str
    client_secret: str = field(repr=False)
    roles: Mapping[str, Role]
    role_claim: str = "groups"
    client_auth: str = "client_secret_basic"


@dataclass(frozen=True)
class SamlProvider:
    """`idp_metadata` is a file (read now, so a missing one stops start-up) or an https
    URL (fetched when the gateway starts)."""

    name: str
    roles: Mapping[str, Role]
    idp_metadata_xml: str = field(default="", repr=False)
    idp_metadata_url: str = ""
    role_attribute: str = "groups"
    email_attribute: str = ""


@dataclass(frozen=True)
class ScimConfig:
    token: str = field(default="", repr=False)
    # Group display name -> role; empty means the union of every provider's `roles`.
    roles: Mapping[str, Role] = field(default_factory=dict)
    # The OIDC provider whose `sub` SCIM's externalId is ("" with one OIDC provider: it).
    provider: str = ""


@dataclass(frozen=True)
class SsoConfig:
    oidc: tuple[OidcProvider, ...] = ()
    saml: tuple[SamlProvider, ...] = ()
    scim: ScimConfig = ScimConfig()
    # `[sso] break_glass`: owner accounts may still sign in to /review with their secret
    # while single sign-on is configured (without single sign-on, managers and up may).
    break_glass: bool = False

    @property
    def configured(self) -> bool:
        return bool(self.oidc or self.saml)

    def external_id(self, provider: str, subject: str) -> str:
        """The person's external id for an OIDC `sub`: as is for the provider SCIM's
        externalId speaks for, else scoped by the provider's name, since a `sub` is unique
        only at its own issuer (another provider's user must not become this one's)."""
        linked = self.scim.provider or (self.oidc[0].name if len(self.oidc) == 1 else "")
        return subject if provider == linked else f"{provider}|{subject}"

    def scim_roles(self) -> dict[str, Role]:
        """The roles SCIM groups map to: `[scim] roles`, else every provider's mapping (a
        group two providers map differently gets the higher role)."""
        if self.scim.roles:
            return dict(self.scim.roles)
        merged: dict[str, Role] = {}
        for provider in (*self.oidc, *self.saml):
            for group, role in provider.roles.items():
                merged[group] = max(role, merged.get(group, role))
        return merged


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _https_url(
    section: TomlTable, name: str, *, loopback_http: bool, query: bool = False
) -> str:
    """An https URL (http only to a loopback host, where a test or sidecar provider runs),
    as written: an OIDC issuer is compared exactly, trailing slash and all. A query only
    where one is expected (Entra ID's metadata URL carries `?appid=`)."""
    value = section.string(name, "", required=True)
    parts = urlsplit(value)
    if not parts.hostname or (parts.query and not query) or parts.fragment:
        allowed = "without fragment" if query else "without query or fragment"
        raise section.error(name, f"must be an https URL {allowed}")
    if parts.scheme == "http" and loopback_http and is_loopback_host(parts.hostname):
        return value
    if parts.scheme != "https":
        raise section.error(name, "must be an https URL (http only on a loopback host)")
    return value


def _roles(section: TomlTable, name: str) -> dict[str, Role]:
    value = section.get(name)
    if not isinstance(value, dict) or not value:
        raise section.error(name, 'must be a table of group = role, e.g. { "admins" = "admin" }')
    names = tuple(r.name.lower() for r in Role)
    roles: dict[str, Role] = {}
    for group, role in value.items():
        if not group or not isinstance(role, str) or role not in names:
            raise section.error(name, f"{group!r} must map to one of {', '.join(names)}")
        roles[group] = Role[role.upper()]
    return roles


def _claim_name(section: TomlTable, name: str) -> str:
    value = section.string(name, "groups")
    if not value.strip():
        raise section.error(name, "must not be empty")
    return value


def _name(section: TomlTable, taken: set[str]) -> str:
    name = section.string("name", "", required=True)
    if not PROVIDER_NAME.fullmatch(name):
        raise section.error("name", "use 1-32 lower-case letters, digits or -, first not -")
    if name in taken:
        raise section.error("name", f"{name!r} names another identity provider")
    taken.add(name)
    return name


def _oidc(section: TomlTable, taken: set[str]) -> OidcProvider:
    return OidcProvider(
        name=_name(section, taken),
        issuer=_https_url(section, "issuer", loopback_http=True),
        client_id=section.string("client_id", "", required=True),
        client_secret=section.string("client_secret", "", required=True),
        roles=_roles(section, "roles"),
        role_claim=_claim_name(section, "role_claim"),
        client_auth=section.choice("client_auth", "client_secret_basic", CLIENT_AUTH_METHODS),
    )


def _saml(section: TomlTable, taken: set[str], base_dir: Path) -> SamlProvider:
    name = _name(section, taken)
    where = section.string("idp_metadata", "", required=True)
    xml, url = "", ""
    if where.startswith(("https://", "http://")):
        url = _https_url(section, "idp_metadata", loopback_http=True, query=True)
    else:
        path = Path(where) if Path(where).is_absolute() else base_dir / where
        try:
            xml = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise section.error("idp_metadata", f"cannot read {path}: {exc}") from None
        if "EntityDescriptor" not in xml:
            raise section.error("idp_metadata", f"{path} is not SAML metadata")
    return SamlProvider(
        name=name,
        roles=_roles(section, "roles"),
        idp_metadata_xml=xml,
        idp_metadata_url=url,
        role_attribute=_claim_name(section, "role_attribute"),
        email_attribute=section.string("email_attribute", ""),
    )


def _scim(section: TomlTable, account_secrets: set[str]) -> ScimConfig:
    token = section.string("token", "")
    if token and len(token) < MIN_SCIM_TOKEN_CHARS:
        raise section.error("token", f"must be at least {MIN_SCIM_TOKEN_CHARS} characters")
    if token in account_secrets:
        raise section.error("token", "is an account's secret; give SCIM a token of its own")
    roles = _roles(section, "roles") if section.get("roles") is not None else {}
    return ScimConfig(token=token, roles=roles, provider=section.string("provider", ""))


def read_sso(
    sso: TomlTable, scim: TomlTable, base_dir: Path, account_secrets: set[str]
) -> SsoConfig:
    taken: set[str] = set()
    config = SsoConfig(
        oidc=tuple(_oidc(entry, taken) for entry in _entries(sso, "oidc")),
        saml=tuple(_saml(entry, taken, base_dir) for entry in _entries(sso, "saml")),
        scim=_scim(scim, account_secrets),
        break_glass=sso.boolean("break_glass", False),
    )
    if config.scim.provider and config.scim.provider not in {p.name for p in config.oidc}:
        raise ConfigError("scim.provider", "must name an [[sso.oidc]] provider")
    if config.break_glass and not config.configured:
        raise ConfigError(
            "sso.break_glass", "only means something with [[sso.oidc]] or [[sso.saml]]"
        )
    return config


def _entries(section: TomlTable, name: str) -> list[TomlTable]:
    raw: Any = section.get(name)
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise section.error(name, f"must be an array of tables ([[{section.key(name)}]])")
    known = {
        "oidc": {"name", "issuer", "client_id", "client_secret", "role_claim", "roles",
                 "client_auth"},
        "saml": {"name", "idp_metadata", "role_attribute", "email_attribute", "roles"},
    }[name]
    return [
        TomlTable(entry, ConfigError, f"{section.key(name)}[{index}]", known=known,
                  environment=True)
        for index, entry in enumerate(raw)
    ]
