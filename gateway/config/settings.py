"""Load and validate the TOML configuration.

Every problem stops start-up with one `ConfigError` naming the key, so an operator never
runs a gateway that silently ignored part of its configuration. Any string value written as
`"${NAME}"` is read from the environment variable NAME, which keeps secrets out of files.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.addresses import InvalidAddress, normalized_email
from gateway.config.errors import ConfigError
from gateway.config.sso import SsoConfig, is_loopback_host, read_sso
from gateway.config.toml_reader import TomlTable
from gateway.model import (
    AGENT_KEY_PREFIX,
    Account,
    Channel,
    DkimKey,
    Purpose,
    Role,
    SenderIdentity,
)

PACKAGE_RULES_DIR = Path(__file__).resolve().parents[2] / "rules"
ACCOUNT_SID = re.compile(r"^AC[0-9a-fA-F]{32}$")
TOKEN_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,16}$")
# What `gateway_key_age_seconds{kind}` reports on; `[keys]` sets a maximum age for each.
KEY_KINDS = ("token", "agent", "dkim", "session", "data")
DEFAULT_KEY_MAX_AGE_DAYS = 90
KNOWN_SECTIONS = {
    "gateway", "smtp", "http", "store", "sender", "accounts", "upstream", "tokens", "policy",
    "encryption",
    "webhooks", "retention", "privacy", "dkim", "twilio", "keys", "sso", "scim",
}
# RFC 6376 §3.1: a selector is one or more DNS labels.
DNS_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
DKIM_SELECTOR = re.compile(rf"(?i)^{DNS_LABEL}(?:\.{DNS_LABEL})*$")
DOMAIN = re.compile(r"(?i)^[a-z0-9-]+(\.[a-z0-9-]+)+$")
# A host name as a URL carries it: DNS labels (no underscore: Twilio refuses them in URLs),
# no trailing dot; one label (`localhost`) too.
HOSTNAME = re.compile(rf"(?i)^(?=.{{1,253}}$){DNS_LABEL}(?:\.{DNS_LABEL})*$")
# RFC 8301 §3.2: verifiers must not accept RSA keys under 1024 bits.
MIN_DKIM_KEY_BITS = 1024
# A bearer token anyone who can reach /metrics may try: long enough not to be guessed.
MIN_METRICS_TOKEN_CHARS = 32




@dataclass(frozen=True)
class ListenAddress:
    host: str
    port: int

    @property
    def is_loopback(self) -> bool:
        return is_loopback_host(self.host)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class TrustedProxies:
    """`trusted_proxies` of [http] or [smtp]: the proxies and load balancers whose word about
    the client's address is taken (X-Forwarded-For, the PROXY protocol header). Anyone else
    could name any address, so their word is never read; empty trusts nobody."""

    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    def trusts(self, address: str) -> bool:
        """Whether `address` (an IPv4-mapped IPv6 address as its IPv4 one) is a trusted
        proxy; anything that is not an IP address is not."""
        if not self.networks:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.networks)


@dataclass(frozen=True)
class SmtpConfig:
    listen: ListenAddress = ListenAddress("127.0.0.1", 2525)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_message_bytes: int = 26_214_400
    max_recipients: int = 50
    allow_insecure_auth: bool = False
    hostname: str = "compliance-gateway"
    # Under attack (README, "[smtp] and [http]"): connections in all and per client
    # address, time to say EHLO, what a session without AUTH may send (the unsubscribe
    # mailbox), and how many parts of one message may be given the footer.
    max_connections: int = 1000
    max_connections_per_client: int = 100
    first_command_timeout_s: float = 10.0
    max_unauthenticated_bytes: int = 65_536
    max_footed_parts: int = 100
    # Connections from these begin with a PROXY protocol header naming the client.
    trusted_proxies: TrustedProxies = TrustedProxies()


@dataclass(frozen=True)
class LoginLimitsConfig:
    """Failed sign-ins with an account secret, on every ingress (SMTP AUTH, the HTTP APIs,
    `/review`); read from the `[smtp]` keys of the same names, where they were first."""

    max_failed_logins: int = 5
    failed_login_window_s: float = 600.0
    login_lockout_s: float = 900.0
    max_failed_keys_per_prefix: int = 50


@dataclass(frozen=True)
class HttpConfig:
    listen: ListenAddress = ListenAddress("127.0.0.1", 8080)
    max_connections: int = 1000
    max_connections_per_client: int = 100
    first_request_timeout_s: float = 10.0
    max_copies_per_request: int = 1000
    # Requests from these name the client in X-Forwarded-For.
    trusted_proxies: TrustedProxies = TrustedProxies()
    # Both set: every HTTP listener serves HTTPS only (gateway.runtime.tls).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Set: `listen` serves only the public paths (gateway.web.access) and this one all.
    internal_listen: ListenAddress | None = None
    # Set: GET /metrics needs `Authorization: Bearer <metrics_token>`.
    metrics_token: str = field(default="", repr=False)


@dataclass(frozen=True)
class EmailUpstreamConfig:
    kind: str = "outbox"
    host: str = ""
    port: int = 587
    username: str = ""
    password: str = field(default="", repr=False)
    starttls: bool = True
    timeout_s: float = 30.0
    pool_size: int = 4
    server_token: str = field(default="", repr=False)
    base_url: str = "https://api.postmarkapp.com"
    message_stream: str = ""


@dataclass(frozen=True)
class PostmarkWebhookConfig:
    """Basic-auth credentials Postmark's webhooks must present (set in Postmark's URL)."""

    username: str = ""
    password: str = field(default="", repr=False)


@dataclass(frozen=True)
class TwilioUpstreamConfig:
    kind: str = "outbox"
    account_sid: str = "AC00000000000000000000000000000000"
    auth_token: str = field(default="", repr=False)
    base_url: str = "https://api.twilio.com"
    timeout_s: float = 30.0


@dataclass(frozen=True)
class TwilioConfig:
    """`twiml_hosts`: hosts whose TwiML the operator vouches for. A call's `Url` or
    `FallbackUrl` is forwarded only on one of them (the gateway cannot see what it serves);
    kept lower case, IP addresses in their short form."""

    twiml_hosts: frozenset[str] = frozenset()


@dataclass(frozen=True)
class TokenKeys:
    """Unsubscribe-token signing keys by id; `active` signs, every key verifies."""

    keys: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    active: str = ""


@dataclass(frozen=True)
class EncryptionConfig:
    """`[encryption]`: AES-256 data keys by id (32 bytes each); `active` encrypts, every key
    decrypts. No keys means one generated into data_dir (`services.data_keys`). On by
    default; `enabled = false` is for a store that has never held ciphertext (turning it
    off later is refused: no process writes plaintext beside ciphertext)."""

    keys: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    active: str = ""
    enabled: bool = True


@dataclass(frozen=True)
class RetentionConfig:
    """How long each kind of record is kept; the retention job runs every `interval_s`."""

    block_metadata_days: int = 30
    blocks_days: int = 365
    outbox_hours: int = 24
    audit_days: int = 365
    interval_s: int = 3600
    decision_days: int = 400


@dataclass(frozen=True)
class PrivacyConfig:
    """`erasure_key` keys the hash that keeps an erased person's opt-out; empty means a
    key generated into data_dir. Replicas must share one, and it must never change, or
    erased opt-outs stop matching."""

    erasure_key: str = field(default="", repr=False)


@dataclass(frozen=True)
class Config:
    source: Path | None
    data_dir: Path
    rules_dir: Path
    public_url: str
    unsubscribe_mailto: str
    smtp: SmtpConfig
    http: HttpConfig
    store_url: str
    sender: SenderIdentity
    accounts: tuple[Account, ...]
    email_upstream: EmailUpstreamConfig
    twilio_upstream: TwilioUpstreamConfig
    tokens: TokenKeys
    twilio: TwilioConfig = TwilioConfig()
    drain_timeout_s: float = 30.0
    metrics_refresh_s: int = 30
    workers: int = 1
    speedups: bool = True
    require_consent: frozenset[Channel] = frozenset()
    postmark_webhook: PostmarkWebhookConfig = PostmarkWebhookConfig()
    retention: RetentionConfig = RetentionConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    login_limits: LoginLimitsConfig = LoginLimitsConfig()
    dkim: tuple[DkimKey, ...] = ()
    # `[keys] max_age_days` (every kind) and `<kind>_max_age_days`: keys older than this are
    # due for rotation (a metric and an alert say so; nothing is refused).
    key_max_age_days: Mapping[str, int] = field(
        default_factory=lambda: dict.fromkeys(KEY_KINDS, DEFAULT_KEY_MAX_AGE_DAYS)
    )
    sso: SsoConfig = field(default_factory=SsoConfig)
    encryption: EncryptionConfig = EncryptionConfig()

    def account(self, name: str) -> Account | None:
        return next((a for a in self.accounts if a.name == name), None)


def find_config_file(explicit: str | None) -> Path | None:
    """`--config`, then `$GATEWAY_CONFIG`, then `./gateway.toml`, else built-in defaults."""
    if explicit:
        return Path(explicit)
    if os.environ.get("GATEWAY_CONFIG"):
        return Path(os.environ["GATEWAY_CONFIG"])
    local = Path("gateway.toml")
    return local if local.exists() else None


def config_search_path() -> str:
    """Every place `find_config_file` looked, for the operator of a command that needs a
    file when none was found (the local file by its full path: the directory matters)."""
    local = Path("gateway.toml").resolve()
    return f"--config (not given), $GATEWAY_CONFIG (not set), {local} (no such file)"


def load_config(path: Path | None) -> Config:
    if path is None:
        return build_config({}, source=None, base_dir=Path.cwd())
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError("--config", f"file not found: {path}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("--config", f"cannot read {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("--config", f"{path} is not valid TOML: {exc}") from exc
    return build_config(raw, source=path.resolve(), base_dir=path.resolve().parent)


def _section(raw: Any, prefix: str, known: set[str]) -> TomlTable:
    """A configuration table: unknown keys refused up front, `${ENV}` values resolved."""
    return TomlTable(raw, ConfigError, prefix, known=known, environment=True)


def _path(section: TomlTable, name: str, base_dir: Path, default: str = "") -> Path | None:
    value = section.string(name, default)
    if not value:
        return None
    path = Path(value)
    return path if path.is_absolute() else base_dir / path


def _listen(section: TomlTable, name: str, default: ListenAddress) -> ListenAddress:
    return _optional_listen(section, name) or default


def _optional_listen(section: TomlTable, name: str) -> ListenAddress | None:
    value = section.string(name, "")
    if not value:
        return None
    match = re.match(r"^(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:]+)):(?P<port>\d{1,5})$", value)
    if not match or not 0 <= int(match.group("port")) <= 65535:
        raise ConfigError(section.key(name), "must be HOST:PORT (IPv6 as [::1]:PORT)")
    return ListenAddress(match.group("v6") or match.group("host"), int(match.group("port")))


def build_config(raw: dict[str, Any], *, source: Path | None, base_dir: Path) -> Config:
    for section in raw:
        if section not in KNOWN_SECTIONS:
            raise ConfigError(section, "unknown section")
    gateway = _section(
        raw.get("gateway"),
        "gateway",
        {
            "data_dir", "public_url", "rules_dir", "unsubscribe_mailto", "drain_timeout_s",
            "metrics_refresh_s", "workers", "speedups",
        },
    )
    data_dir = _path(gateway, "data_dir", base_dir, "var")
    assert data_dir is not None
    rules_dir = _path(gateway, "rules_dir", base_dir) or PACKAGE_RULES_DIR
    if not rules_dir.is_dir():
        raise ConfigError("gateway.rules_dir", f"not a directory: {rules_dir}")
    public_url = gateway.string("public_url", "http://127.0.0.1:8080").rstrip("/")
    parts = urlsplit(public_url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError("gateway.public_url", "must be an http(s) origin such as https://host")

    sender = _sender(_section(
        raw.get("sender"), "sender", {"name", "postal_address", "email", "phone", "website"}
    ))
    mailto_default = f"unsubscribe@{sender.email.rpartition('@')[2]}" if sender.email else ""
    unsubscribe_mailto = gateway.string("unsubscribe_mailto", mailto_default)
    if unsubscribe_mailto:
        unsubscribe_mailto = _email(unsubscribe_mailto, "gateway.unsubscribe_mailto")

    upstream = _section(raw.get("upstream"), "upstream", {"email", "twilio"})
    smtp = _smtp_section(raw.get("smtp"))
    smtp_config, http_config = _smtp(smtp, base_dir), _http(raw.get("http"), base_dir)
    _listeners_apart(smtp_config.listen, http_config.listen)
    if http_config.internal_listen is not None:
        _internal_listener_apart(smtp_config.listen, http_config)
    accounts = _accounts(raw.get("accounts"), sender)
    sso = read_sso(
        _section(raw.get("sso"), "sso", {"oidc", "saml", "break_glass"}),
        _section(raw.get("scim"), "scim", {"token", "roles", "provider"}),
        base_dir,
        {a.secret for a in accounts},
    )
    if sso.configured and parts.scheme != "https" and not is_loopback_host(parts.hostname or ""):
        raise ConfigError(
            "gateway.public_url",
            "must be https with single sign-on configured (session cookies travel on it)",
        )
    return Config(
        source=source,
        data_dir=data_dir,
        rules_dir=rules_dir,
        public_url=public_url,
        unsubscribe_mailto=unsubscribe_mailto,
        smtp=smtp_config,
        login_limits=_login_limits(smtp),
        key_max_age_days=_key_max_age_days(raw.get("keys")),
        http=http_config,
        store_url=_store_url(_section(raw.get("store"), "store", {"url"}), base_dir),
        sender=sender,
        accounts=accounts,
        sso=sso,
        email_upstream=_email_upstream(upstream.get("email")),
        twilio_upstream=_twilio_upstream(upstream.get("twilio")),
        twilio=_twilio(_section(raw.get("twilio"), "twilio", {"twiml_hosts"})),
        tokens=_tokens(raw.get("tokens")),
        encryption=_encryption(raw.get("encryption")),
        drain_timeout_s=gateway.number("drain_timeout_s", 30.0),
        metrics_refresh_s=gateway.integer("metrics_refresh_s", 30, minimum=1, maximum=3600),
        workers=gateway.integer("workers", 1, minimum=1, maximum=64),
        speedups=gateway.boolean("speedups", True),
        require_consent=_require_consent(
            _section(raw.get("policy"), "policy", {"require_consent"})
        ),
        postmark_webhook=_postmark_webhook(
            _section(raw.get("webhooks"), "webhooks", {"postmark"}).get("postmark")
        ),
        retention=_retention(raw.get("retention")),
        privacy=_privacy(raw.get("privacy")),
        dkim=_dkim_keys(raw.get("dkim"), base_dir),
    )


def _email(value: str, key: str) -> str:
    try:
        return normalized_email(value)
    except InvalidAddress as exc:
        raise ConfigError(key, f"not a valid email address: {exc}") from exc


def _sender(section: TomlTable) -> SenderIdentity:
    email = section.string("email", "")
    if email:
        email = _email(email, section.key("email"))
    website = section.string("website", "")
    if website and urlsplit(website).scheme not in ("http", "https"):
        raise ConfigError(section.key("website"), "must be an http(s) URL")
    phone = section.string("phone", "")
    if phone and not re.fullmatch(r"\+[1-9]\d{6,14}", phone):
        raise ConfigError(section.key("phone"), "must be an E.164 number such as +14155550100")
    return SenderIdentity(
        name=section.string("name", "").strip(),
        postal_address=section.string("postal_address", "").strip(),
        email=email,
        phone=phone,
        website=website,
    )


def _login_limits(section: TomlTable) -> LoginLimitsConfig:
    return LoginLimitsConfig(
        max_failed_logins=section.integer("max_failed_logins", 5, minimum=1, maximum=1000),
        failed_login_window_s=section.number("failed_login_window_s", 600.0, minimum=1.0),
        login_lockout_s=section.number("login_lockout_s", 900.0, minimum=1.0),
        max_failed_keys_per_prefix=section.integer(
            "max_failed_keys_per_prefix", 50, minimum=1, maximum=100_000
        ),
    )


def _smtp_section(raw: Any) -> TomlTable:
    return _section(
        raw,
        "smtp",
        {
            "listen", "tls_cert", "tls_key", "max_message_bytes", "max_recipients",
            "allow_insecure_auth", "hostname", "max_failed_logins", "failed_login_window_s",
            "login_lockout_s", "max_failed_keys_per_prefix", "max_connections",
            "max_connections_per_client", "first_command_timeout_s",
            "max_unauthenticated_bytes", "max_footed_parts", "trusted_proxies",
        },
    )


def _tls_files(section: TomlTable, base_dir: Path) -> tuple[Path | None, Path | None]:
    """`tls_cert` and `tls_key` of [smtp] or [http]: both or neither, each an existing file
    (whether they make a usable pair is `gateway.runtime.tls`'s check, at start-up)."""
    tls_cert = _path(section, "tls_cert", base_dir)
    tls_key = _path(section, "tls_key", base_dir)
    if bool(tls_cert) != bool(tls_key):
        raise ConfigError(
            section.key("tls_key" if tls_cert else "tls_cert"), "set both or neither"
        )
    for name, path in (("tls_cert", tls_cert), ("tls_key", tls_key)):
        if path is not None and not path.is_file():
            raise ConfigError(section.key(name), f"file not found: {path}")
    return tls_cert, tls_key


def _smtp(section: TomlTable, base_dir: Path) -> SmtpConfig:
    tls_cert, tls_key = _tls_files(section, base_dir)
    config = SmtpConfig(
        listen=_listen(section, "listen", SmtpConfig().listen),
        tls_cert=tls_cert,
        tls_key=tls_key,
        max_message_bytes=section.integer("max_message_bytes", 26_214_400, minimum=1024),
        max_recipients=section.integer("max_recipients", 50, minimum=1, maximum=1000),
        allow_insecure_auth=section.boolean("allow_insecure_auth", False),
        hostname=section.string("hostname", "compliance-gateway"),
        **_connection_caps(section, "first_command_timeout_s"),
        max_unauthenticated_bytes=section.integer(
            "max_unauthenticated_bytes", SmtpConfig.max_unauthenticated_bytes, minimum=1024
        ),
        max_footed_parts=section.integer(
            "max_footed_parts", SmtpConfig.max_footed_parts, minimum=1, maximum=10_000
        ),
        trusted_proxies=_trusted_proxies(section),
    )
    if not config.listen.is_loopback and not config.tls_cert and not config.allow_insecure_auth:
        raise ConfigError(
            "smtp.listen",
            f"{config.listen} is not loopback and no tls_cert is set: passwords would cross "
            "the network in clear (set smtp.tls_cert/tls_key, or allow_insecure_auth = true)",
        )
    return config


def _http(raw: Any, base_dir: Path) -> HttpConfig:
    section = _section(raw, "http", {
        "listen", "max_connections", "max_connections_per_client", "first_request_timeout_s",
        "max_copies_per_request", "trusted_proxies", "tls_cert", "tls_key", "internal_listen",
        "metrics_token",
    })
    tls_cert, tls_key = _tls_files(section, base_dir)
    metrics_token = section.string("metrics_token", "")
    if metrics_token and len(metrics_token) < MIN_METRICS_TOKEN_CHARS:
        raise ConfigError(section.key("metrics_token"),
                          f"must be at least {MIN_METRICS_TOKEN_CHARS} characters")
    return HttpConfig(
        listen=_listen(section, "listen", HttpConfig().listen),
        tls_cert=tls_cert,
        tls_key=tls_key,
        internal_listen=_optional_listen(section, "internal_listen"),
        metrics_token=metrics_token,
        **_connection_caps(section, "first_request_timeout_s"),
        # At least one message to Postmark's 50 recipients; at most a full batch.
        max_copies_per_request=section.integer(
            "max_copies_per_request", HttpConfig.max_copies_per_request, minimum=50,
            maximum=25_000,
        ),
        trusted_proxies=_trusted_proxies(section),
    )


def _trusted_proxies(section: TomlTable) -> TrustedProxies:
    """Addresses (`10.0.0.7`, `::1`) and networks (`10.0.0.0/8`); a network with host bits
    set (`10.0.0.7/8`) is refused, as it more likely names the wrong range than the right."""
    networks = []
    for value in section.strings("trusted_proxies", allow_empty=True):
        try:
            networks.append(ipaddress.ip_network(value.strip()))
        except ValueError as exc:
            raise ConfigError(
                section.key("trusted_proxies"),
                f"not an IP address or network: {value!r} ({exc})",
            ) from exc
    return TrustedProxies(tuple(networks))


def _internal_listener_apart(smtp: ListenAddress, http: HttpConfig) -> None:
    """`http.internal_listen` on the public or the SMTP address would either fail at the
    second bind or, on one port, serve internal paths to the public: refused at load."""
    internal = http.internal_listen
    assert internal is not None
    for key, other in (("http.listen", http.listen), ("smtp.listen", smtp)):
        if _same_port(internal, other):
            raise ConfigError(
                "http.internal_listen",
                f"{internal} takes the port of {key} ({other}): give each listener its own",
            )


def _same_port(one: ListenAddress, other: ListenAddress) -> bool:
    """A wildcard host (`0.0.0.0`, `::`) takes the port on every address of its family, so
    it meets any host of that family on the same port; port 0 is a fresh one each time."""
    if one.port == 0 or one.port != other.port or (":" in one.host) != (":" in other.host):
        return False
    return one.host == other.host or _is_wildcard(one.host) or _is_wildcard(other.host)


def _listeners_apart(smtp: ListenAddress, http: ListenAddress) -> None:
    """SMTP and HTTP on one address would fail only at start-up, at the second bind: said
    at load time, naming both settings."""
    if _same_port(smtp, http):
        raise ConfigError(
            "http.listen",
            f"{http} takes the port of smtp.listen ({smtp}): give SMTP and HTTP one each",
        )


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _connection_caps(section: TomlTable, timeout_name: str) -> dict[str, Any]:
    """`max_connections`, `max_connections_per_client` and the time a client has to
    begin, shared by [smtp] and [http]."""
    total = section.integer("max_connections", 1000, minimum=1, maximum=1_000_000)
    per_client = section.integer("max_connections_per_client", 100, minimum=1)
    if per_client > total:
        raise ConfigError(section.key("max_connections_per_client"),
                          f"is more than {section.key('max_connections')} ({total})")
    timeout = section.number(timeout_name, 10.0, minimum=0.1)
    if timeout > 300:
        raise ConfigError(section.key(timeout_name), "must be at most 300 seconds")
    return {"max_connections": total, "max_connections_per_client": per_client,
            timeout_name: timeout}


def _store_url(section: TomlTable, base_dir: Path) -> str:
    url = section.string("url", "sqlite:///var/gateway.db")
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not str(path) or str(path) == ".":
            raise ConfigError("store.url", "sqlite URL names no file")
        if not path.is_absolute():
            path = base_dir / path
        return f"sqlite:///{path}"
    if url.startswith(("postgresql://", "postgres://")):
        return url
    raise ConfigError("store.url", "must start with sqlite:/// or postgresql://")


def _optional_entries(raw: Any, name: str, known: set[str]) -> list[TomlTable]:
    """An optional array of tables (`[[name]]`): none when absent."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError(name, f"must be an array of tables ([[{name}]])")
    return [_section(entry, f"{name}[{index}]", known) for index, entry in enumerate(raw)]


def _accounts(raw: Any, sender: SenderIdentity) -> tuple[Account, ...]:
    accounts: list[Account] = []
    for section in _optional_entries(
        raw, "accounts", {"name", "secret", "role", "sender_domains", "purpose"}
    ):
        name = section.string("name", "", required=True)
        if not re.fullmatch(r"[A-Za-z0-9._@+-]{1,64}", name):
            raise ConfigError(section.key("name"), "use 1-64 letters, digits or ._@+-")
        if any(a.name == name for a in accounts):
            raise ConfigError(section.key("name"), f"duplicate account name {name!r}")
        secret = section.string("secret", "", required=True)
        if len(secret) < 12:
            raise ConfigError(section.key("secret"), "must be at least 12 characters")
        if any(a.secret == secret for a in accounts):
            raise ConfigError(section.key("secret"), "is shared with another account")
        if secret.startswith(AGENT_KEY_PREFIX):
            raise ConfigError(
                section.key("secret"),
                f"must not start with {AGENT_KEY_PREFIX!r}, which marks agent keys "
                "(`keys create`); give the key to the agent instead",
            )
        role = section.choice("role", "rep", tuple(r.name.lower() for r in Role))
        domains = section.get("sender_domains")
        if domains is None:
            domains = []
        if not isinstance(domains, list) or not all(isinstance(d, str) for d in domains):
            raise ConfigError(section.key("sender_domains"), "must be a list of domains")
        for domain in domains:
            if domain != "*" and not DOMAIN.fullmatch(domain):
                raise ConfigError(section.key("sender_domains"), f"not a domain: {domain!r}")
        purpose = section.choice("purpose", "marketing", tuple(p.value for p in Purpose))
        accounts.append(
            Account(
                name=name,
                secret=secret,
                role=Role[role.upper()],
                sender_domains=tuple(d.lower() for d in domains),
                purpose=Purpose(purpose),
                identity=sender,
            )
        )
    return tuple(accounts)


def _email_upstream(raw: Any) -> EmailUpstreamConfig:
    section = _section(
        raw,
        "upstream.email",
        {
            "kind", "host", "port", "username", "password", "starttls", "timeout_s",
            "pool_size", "server_token", "base_url", "message_stream",
        },
    )
    kind = section.choice("kind", "outbox", ("outbox", "smtp", "postmark"))
    server_token = section.string("server_token", "", required=kind == "postmark")
    username = section.string("username", "") or server_token
    config = EmailUpstreamConfig(
        kind=kind,
        host=section.string("host", "", required=kind == "smtp"),
        port=section.integer("port", 587, minimum=1, maximum=65535),
        username=username,
        password=section.string("password", "") or server_token,
        starttls=section.boolean("starttls", True),
        timeout_s=section.number("timeout_s", 30.0, minimum=0.1),
        pool_size=section.integer("pool_size", 4, minimum=1, maximum=64),
        server_token=server_token,
        base_url=section.string("base_url", EmailUpstreamConfig.base_url).rstrip("/"),
        message_stream=section.string("message_stream", ""),
    )
    if urlsplit(config.base_url).scheme not in ("http", "https"):
        raise ConfigError("upstream.email.base_url", "must be an http(s) URL")
    if bool(config.username) != bool(config.password):
        raise ConfigError("upstream.email.password", "set username and password together")
    if config.username and not config.starttls and not ListenAddress(config.host, 0).is_loopback:
        raise ConfigError(
            "upstream.email.starttls",
            f"is false while a password is set for {config.host}: it would cross the network "
            "in clear text",
        )
    return config


def _twilio_upstream(raw: Any) -> TwilioUpstreamConfig:
    section = _section(
        raw, "upstream.twilio", {"kind", "account_sid", "auth_token", "base_url", "timeout_s"}
    )
    kind = section.choice("kind", "outbox", ("outbox", "twilio"))
    config = TwilioUpstreamConfig(
        kind=kind,
        account_sid=section.string("account_sid", TwilioUpstreamConfig.account_sid),
        auth_token=section.string("auth_token", "", required=kind == "twilio"),
        base_url=section.string("base_url", TwilioUpstreamConfig.base_url).rstrip("/"),
        timeout_s=section.number("timeout_s", 30.0, minimum=0.1),
    )
    if not ACCOUNT_SID.match(config.account_sid):
        raise ConfigError("upstream.twilio.account_sid", "must be AC followed by 32 hex digits")
    if urlsplit(config.base_url).scheme not in ("http", "https"):
        raise ConfigError("upstream.twilio.base_url", "must be an http(s) URL")
    return config


def _twilio(section: TomlTable) -> TwilioConfig:
    hosts: set[str] = set()
    for host in section.strings("twiml_hosts", allow_empty=True):
        hosts.add(_twiml_host(host, section.key("twiml_hosts")))
    return TwilioConfig(twiml_hosts=frozenset(hosts))


def _twiml_host(value: str, key: str) -> str:
    """A host name or IP address alone, as a URL's host is compared with it."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    if not HOSTNAME.fullmatch(value):
        raise ConfigError(
            key, f"not a host name: {value!r} (a name such as twiml.example.com or an IP "
            "address, without scheme, port, path, brackets, wildcard or trailing dot)",
        )
    return value.lower()


def _require_consent(section: TomlTable) -> frozenset[Channel]:
    """The operator's own requirement beyond the law's consent rules (which always apply):
    every marketing contact on these channels needs a recorded, unexpired consent."""
    value = section.get("require_consent")
    if value is None:
        return frozenset()
    channels = {c.value for c in Channel}
    if not isinstance(value, list) or not all(v in channels for v in value):
        raise ConfigError(
            "policy.require_consent", f"must be a list of channels from {sorted(channels)}"
        )
    return frozenset(Channel(v) for v in value)


def _postmark_webhook(raw: Any) -> PostmarkWebhookConfig:
    section = _section(raw, "webhooks.postmark", {"username", "password"})
    config = PostmarkWebhookConfig(
        username=section.string("username", ""), password=section.string("password", "")
    )
    if bool(config.username) != bool(config.password):
        raise ConfigError("webhooks.postmark.password", "set username and password together")
    if config.password and len(config.password) < 12:
        raise ConfigError("webhooks.postmark.password", "must be at least 12 characters")
    return config


def _tokens(raw: Any) -> TokenKeys:
    section = _section(raw, "tokens", {"keys", "active"})
    keys_raw = section.get("keys")
    if keys_raw is None:
        return TokenKeys()
    if not isinstance(keys_raw, dict) or not keys_raw:
        raise ConfigError("tokens.keys", "must be a table of key id = secret")
    keys: dict[str, bytes] = {}
    key_section = _section(keys_raw, "tokens.keys", set(keys_raw))
    for key_id in keys_raw:
        secret = key_section.string(key_id, required=True)
        if not TOKEN_KEY_ID.match(key_id):
            raise ConfigError(f"tokens.keys.{key_id}", "key ids use 1-16 letters, digits, _ or -")
        if len(secret) < 32:
            raise ConfigError(f"tokens.keys.{key_id}", "must be at least 32 characters")
        keys[key_id] = secret.encode()
    active = section.string("active", next(iter(keys)))
    if active not in keys:
        raise ConfigError("tokens.active", f"names no key in tokens.keys: {active!r}")
    return TokenKeys(keys=keys, active=active)


def _encryption(raw: Any) -> EncryptionConfig:
    section = _section(raw, "encryption", {"keys", "active", "enabled"})
    enabled = section.boolean("enabled", True)
    keys_raw = section.get("keys")
    if keys_raw is None:
        if section.get("active") is not None:
            raise ConfigError("encryption.active", "names a key, but encryption.keys is not set")
        return EncryptionConfig(enabled=enabled)
    if not isinstance(keys_raw, dict) or not keys_raw:
        raise ConfigError("encryption.keys", "must be a table of key id = base64 of 32 bytes")
    key_section = _section(keys_raw, "encryption.keys", set(keys_raw))
    keys: dict[str, bytes] = {}
    for key_id in keys_raw:
        name = f"encryption.keys.{key_id}"
        if not TOKEN_KEY_ID.match(key_id):
            raise ConfigError(name, "key ids use 1-16 letters, digits, _ or -")
        written = key_section.string(key_id, required=True).strip()
        try:
            key = base64.b64decode(written, validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != 32:
            raise ConfigError(name, "must be the base64 of 32 random bytes (an AES-256 key)")
        keys[key_id] = key
    active = section.string("active", next(iter(keys)))
    if active not in keys:
        raise ConfigError("encryption.active", f"names no key in encryption.keys: {active!r}")
    return EncryptionConfig(keys=keys, active=active, enabled=enabled)


def _retention(raw: Any) -> RetentionConfig:
    """Every period is at least 1: a zero would delete records the moment they are made."""
    section = _section(
        raw,
        "retention",
        {
            "block_metadata_days", "blocks_days", "outbox_hours", "audit_days", "interval_s",
            "decision_days",
        },
    )
    defaults = RetentionConfig()
    config = RetentionConfig(
        block_metadata_days=section.integer(
            "block_metadata_days", defaults.block_metadata_days, minimum=1, maximum=36_500
        ),
        blocks_days=section.integer("blocks_days", defaults.blocks_days, minimum=1, maximum=36_500),
        outbox_hours=section.integer(
            "outbox_hours", defaults.outbox_hours, minimum=1, maximum=876_000
        ),
        audit_days=section.integer("audit_days", defaults.audit_days, minimum=1, maximum=36_500),
        interval_s=section.integer("interval_s", defaults.interval_s, minimum=1, maximum=86_400),
        decision_days=section.integer(
            "decision_days", defaults.decision_days, minimum=1, maximum=36_500
        ),
    )
    if config.block_metadata_days > config.blocks_days:
        raise ConfigError(
            "retention.block_metadata_days",
            f"is longer than retention.blocks_days ({config.blocks_days}): the blocks go first",
        )
    return config


def _privacy(raw: Any) -> PrivacyConfig:
    section = _section(raw, "privacy", {"erasure_key"})
    key = section.string("erasure_key", "")
    if key and len(key) < 32:
        raise ConfigError("privacy.erasure_key", "must be at least 32 characters")
    return PrivacyConfig(erasure_key=key)


def _key_max_age_days(raw: Any) -> dict[str, int]:
    """`max_age_days` for every kind, `<kind>_max_age_days` for one (a DKIM key published in
    DNS may be meant to live longer than a signing key the gateway alone holds)."""
    section = _section(raw, "keys", {"max_age_days", *(f"{k}_max_age_days" for k in KEY_KINDS)})
    every = section.integer("max_age_days", DEFAULT_KEY_MAX_AGE_DAYS, minimum=1, maximum=3650)
    return {
        kind: section.integer(f"{kind}_max_age_days", every, minimum=1, maximum=3650)
        for kind in KEY_KINDS
    }


def _dkim_keys(raw: Any, base_dir: Path) -> tuple[DkimKey, ...]:
    """`[[dkim]]`: each key is read and checked at start-up, so a gateway never starts that
    would send unsigned mail its operator asked to be signed."""
    keys: list[DkimKey] = []
    for section in _optional_entries(raw, "dkim", {"domain", "selector", "private_key"}):
        domain = section.string("domain", required=True).lower().rstrip(".")
        if not DOMAIN.fullmatch(domain):
            raise ConfigError(section.key("domain"), f"not a domain: {domain!r}")
        if any(k.domain == domain for k in keys):
            raise ConfigError(section.key("domain"), f"{domain!r} has two [[dkim]] entries")
        selector = section.string("selector", required=True)
        if not DKIM_SELECTOR.fullmatch(selector):
            raise ConfigError(f"dkim.{domain}.selector", "must be one or more DNS labels")
        written = section.string("private_key", required=True)
        keys.append(DkimKey(domain, selector.lower(), _dkim_private_key(
            written, base_dir, f"dkim.{domain}.private_key"
        )))
    return tuple(keys)


def _dkim_private_key(written: str, base_dir: Path, key: str) -> bytes:
    """A PEM given inline (from the environment) or as a file relative to the config;
    any RSA PEM form in, PKCS#1 out (what dkimpy reads)."""
    if written.lstrip().startswith("-----BEGIN"):
        pem = written.encode("ascii", "replace")
    else:
        path = Path(written) if Path(written).is_absolute() else base_dir / written
        try:
            pem = path.read_bytes()
        except OSError as exc:
            raise ConfigError(key, f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        private = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(key, "is not an unencrypted PEM private key") from exc
    if not isinstance(private, rsa.RSAPrivateKey):
        raise ConfigError(key, "must be an RSA key (the algorithm every verifier knows)")
    if private.key_size < MIN_DKIM_KEY_BITS:
        raise ConfigError(key, f"is {private.key_size} bits; RFC 8301 asks for at least 1024 "
                               "(2048 recommended)")
    return private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
