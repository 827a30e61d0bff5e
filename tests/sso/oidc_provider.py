"""A real OpenID Provider for the SSO tests: panva's oidc-provider (OpenID Certified), pinned in
tests/tools/oidc_provider and installed there by `make oidc-provider`, run by the machine's
Node.js on 127.0.0.1 with a free port. What it offers (code flow with PKCE S256, the sign-in
form, `groups` in the ID token, key rotation) is written at the top of its server.js.

Used through the fixtures in tests/sso/conftest.py; `sign_in_over_http` drives its sign-in
page without a browser, for tests where Chromium is not the point.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urljoin

import aiohttp
import pytest
from yarl import URL

TOOL_DIR = Path(__file__).resolve().parents[1] / "tools" / "oidc_provider"
SERVER_JS = TOOL_DIR / "server.js"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0
MIN_NODE_MAJOR = 18  # oidc-provider 8 (server.js says why not 9)
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy


# Why OIDC tests skipped in this run: tests/sso/conftest.py's summary says it loudly.
oidc_skips: list[str] = []


def skip_oidc(reason: str) -> NoReturn:
    """Skip this test, and have the run's summary say that OIDC went (partly) untested."""
    if reason not in oidc_skips:
        oidc_skips.append(reason)
    pytest.skip(f"OIDC tests skipped: {reason}")


class OidcProviderMissing(Exception):
    """What is missing to run the provider here; the message is the skip reason."""


@dataclass(frozen=True)
class OidcAccount:
    """A person at the provider; signs in with `sub` or `email` typed in the login form."""

    sub: str
    email: str
    name: str
    groups: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {"sub": self.sub, "email": self.email, "name": self.name,
                "groups": list(self.groups)}


@dataclass(frozen=True)
class OidcClient:
    client_id: str
    client_secret: str
    redirect_uris: tuple[str, ...]
    token_endpoint_auth_method: str = "client_secret_basic"

    def as_json(self) -> dict[str, Any]:
        return {"client_id": self.client_id, "client_secret": self.client_secret,
                "redirect_uris": list(self.redirect_uris),
                "token_endpoint_auth_method": self.token_endpoint_auth_method}


# The people the `oidc_provider` fixture knows, for roles like issue 19's example mapping
# ("compliance-managers" = manager, "gateway-admins" = admin, "security" = owner).
ACCOUNTS = (
    OidcAccount("alice", "alice@example.com", "Alice Manager", ("compliance-managers", "staff")),
    OidcAccount("bob", "bob@example.com", "Bob Admin", ("gateway-admins",)),
    OidcAccount("olga", "olga@example.com", "Olga Owner", ("security", "gateway-admins")),
    OidcAccount("nina", "nina@example.com", "Nina Nogroup", ()),
    OidcAccount("sam", "sam@example.com", "Sam Sales", ("sales",)),
)


def find_node() -> str:
    """The `node` to run server.js with, or OidcProviderMissing saying what to do."""
    node = shutil.which("node")
    if node is None:
        raise OidcProviderMissing(
            "`node` is not on PATH (Debian: apt-get install nodejs npm; `make oidc-provider`)"
        )
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=False,
                             timeout=30).stdout.strip()
    match = re.fullmatch(r"v(\d+)\..*", version)
    if match is None or int(match.group(1)) < MIN_NODE_MAJOR:
        raise OidcProviderMissing(
            f"{node} is Node.js {version or '(no version)'}; oidc-provider needs "
            f"{MIN_NODE_MAJOR} or newer"
        )
    locked = json.loads((TOOL_DIR / "package-lock.json").read_text())["packages"]
    wanted = locked["node_modules/oidc-provider"]["version"]
    installed_json = TOOL_DIR / "node_modules" / "oidc-provider" / "package.json"
    if not installed_json.is_file():
        raise OidcProviderMissing(
            f"{TOOL_DIR.relative_to(TOOL_DIR.parents[2])}/node_modules is not installed "
            "(`make oidc-provider`, or `npm ci --omit=dev` there)"
        )
    installed = json.loads(installed_json.read_text())["version"]
    if installed != wanted:
        raise OidcProviderMissing(
            f"oidc-provider {installed} is installed but package-lock.json pins {wanted} "
            "(`make oidc-provider`)"
        )
    return node


@dataclass
class OidcProvider:
    """One provider process with its own clients and accounts; `start`, then `stop`."""

    node: str
    directory: Path
    clients: list[OidcClient] = field(default_factory=list)
    accounts: tuple[OidcAccount, ...] = ACCOUNTS
    shared: bool = False  # used by several tests: its keys are not to be rotated
    issuer: str = ""
    startup_s: float = 0.0
    _process: subprocess.Popen[bytes] | None = None
    _registration_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    _discovery: dict[str, Any] | None = None

    @property
    def log_path(self) -> Path:
        return self.directory / "oidc-provider.log"

    def log(self) -> str:
        """What the provider wrote to stderr so far (errors it saw, rotations)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> OidcProvider:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "oidc-provider.json"
        config.write_text(json.dumps({
            "clients": [c.as_json() for c in self.clients],
            "accounts": [a.as_json() for a in self.accounts],
            "registration_token": self._registration_token,
        }, indent=2))
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [self.node, str(SERVER_JS), "0", str(config), "--exit-on-stdin-close"],
                cwd=TOOL_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                env={**os.environ, "NODE_ENV": "test"},
            )
        line = self._first_line(START_TIMEOUT_S)
        if not line:
            exited = self._process.poll()
            self.stop()
            raise RuntimeError(
                "oidc-provider did not say `listening <issuer>` "
                + (f"(it exited with {exited})" if exited is not None
                   else f"within {START_TIMEOUT_S:.0f} s")
                + f"; its log:\n{self.log()}"
            )
        self.issuer = line.split(" ", 1)[1]
        self.startup_s = time.monotonic() - started
        return self

    def _first_line(self, timeout: float) -> str:
        """The `listening` line, or "" when none came in time or the process ended. Its
        stdout is read to the end in a thread (into the log), so it can never block on it."""
        assert self._process is not None and self._process.stdout is not None
        stdout = self._process.stdout
        found: list[str] = []
        ready = threading.Event()

        def read() -> None:
            with self.log_path.open("ab") as log:
                for raw in stdout:
                    line = raw.decode(errors="replace").strip()
                    if not found and line.startswith("listening "):
                        found.append(line)
                        ready.set()
                    else:
                        log.write(raw)
                        log.flush()
            stdout.close()
            ready.set()

        threading.Thread(target=read, daemon=True, name="oidc-provider-stdout").start()
        ready.wait(timeout)
        return found[0] if found else ""

    def stop(self) -> None:
        """SIGTERM, then SIGKILL past a few seconds. Later requests find nothing listening
        (an IdP that is down)."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdin is not None:
            process.stdin.close()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # --- what a relying party reads -------------------------------------------------------

    def discovery(self) -> dict[str, Any]:
        """The discovery document (/.well-known/openid-configuration), read once."""
        if self._discovery is None:
            self._discovery = self._request("GET", "/.well-known/openid-configuration")
        return self._discovery

    def endpoint(self, name: str) -> str:
        """`authorization_endpoint`, `token_endpoint`, `jwks_uri`, ... from discovery."""
        return str(self.discovery()[name])

    def jwks(self) -> dict[str, Any]:
        """The JWKS as published now (current signing key first)."""
        return self._request("GET", self.endpoint("jwks_uri"))

    def account(self, login: str) -> OidcAccount:
        """An account by its sub or email."""
        return next(a for a in self.accounts if login in (a.sub, a.email))

    # --- what a test changes ----------------------------------------------------------------

    def add_client(self, redirect_uris: list[str] | tuple[str, ...],
                   token_endpoint_auth_method: str = "client_secret_basic") -> OidcClient:
        """A new confidential client, registered through the provider's own Dynamic Client
        Registration (RFC 7591); the provider picks its id and secret."""
        answer = self._request("POST", self.endpoint("registration_endpoint"), {
            "redirect_uris": list(redirect_uris),
            "token_endpoint_auth_method": token_endpoint_auth_method,
            "response_types": ["code"],
            "grant_types": ["authorization_code"],
        }, token=self._registration_token)
        client = OidcClient(answer["client_id"], answer["client_secret"],
                            tuple(answer["redirect_uris"]), answer["token_endpoint_auth_method"])
        self.clients.append(client)
        return client

    def rotate_keys(self, retire: bool = False) -> str:
        """Sign with a new RSA key from now on; the kid of the new key. The earlier keys stay
        in the JWKS unless `retire`. Sessions, codes and tokens already issued are kept."""
        if self.shared:
            raise RuntimeError("a shared provider's keys are not rotated: use `oidc_provider`")
        answer = self._request("POST", "/__rotate" + ("?retire=1" if retire else ""), b"")
        return str(answer["kid"])

    def _request(self, method: str, path: str, body: dict[str, Any] | bytes | None = None,
                 token: str | None = None) -> dict[str, Any]:
        if not self.running:
            raise RuntimeError("the OpenID Provider is not running")
        headers = {"Accept": "application/json"}
        data = None
        if isinstance(body, dict):
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        elif body is not None:
            data = body
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(urljoin(self.issuer, path), data, headers,
                                         method=method)
        with _HTTP.open(request, timeout=10) as response:
            return json.loads(response.read())


def http_session() -> aiohttp.ClientSession:
    """An aiohttp session that keeps the provider's cookies (aiohttp's default jar refuses
    cookies of hosts written as IP addresses, like 127.0.0.1)."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def sign_in_over_http(session: aiohttp.ClientSession, url: str, login: str,
                            until: str, max_hops: int = 20) -> URL:
    """Follow redirects from `url` as a browser would, typing `login` into the provider's
    sign-in form when it shows, until a redirect goes to a URL starting with `until` (a
    redirect URI); that URL is returned, not fetched. A page that is neither a redirect nor
    the sign-in form is an AssertionError with its text."""
    current = URL(url)
    method, data = "GET", None
    for _ in range(max_hops):
        async with session.request(method, current, data=data, allow_redirects=False) as resp:
            text = await resp.text()
            location = resp.headers.get("Location")
        if location is not None:
            current = current.join(URL(location))
            if str(current).startswith(until):
                return current
            method, data = "GET", None
            continue
        form = re.search(r'<form method="post" action="([^"]+/login)"', text)
        assert form is not None and method == "GET", (
            f"{method} {current} answered {resp.status} with no redirect:\n{text[:2000]}"
        )
        current = current.join(URL(form.group(1)))
        method, data = "POST", {"login": login}
    raise AssertionError(f"more than {max_hops} redirects from {url}")
