"""Assemble the gateway and run SMTP and HTTP on one event loop.

`Gateway` is what `serve` runs and what the tests start in-process on ephemeral ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import logging
import signal
import socket
from dataclasses import fields, replace
from pathlib import Path

from aiohttp import web

from gateway.auth.agent_keys import AgentKeys
from gateway.auth.authenticate import Authenticator
from gateway.auth.login_limits import LoginLimiter
from gateway.auth.sessions import Sessions
from gateway.auth.unsubscribe_tokens import UnsubscribeTokens
from gateway.config.settings import Config, ConfigError, load_config
from gateway.ingress.postmark import PostmarkRoutes
from gateway.ingress.smtp.handler import AccountAuthenticator, SubmissionHandler
from gateway.ingress.smtp.protocol import SessionTracker, start_smtp_server
from gateway.ingress.twilio import TwilioRoutes
from gateway.model import Account, AuditEvent, Channel
from gateway.pipeline.email_egress import EmailEgress
from gateway.pipeline.process import Pipeline
from gateway.pipeline.twilio_egress import TwilioEgress
from gateway.policy.callee import load_location_data
from gateway.rewrite.dkim import DkimSigner
from gateway.rules.loader import load_rules
from gateway.rules.ruleset import RuleSet
from gateway.runtime.client_address import TRUSTED_PROXIES
from gateway.runtime.clock import Clock
from gateway.runtime.connections import (
    DESCRIPTOR_RESERVE,
    Listener,
    make_room_for_descriptors,
)
from gateway.runtime.logs import log_event, use_pseudonyms
from gateway.runtime.metrics import Metrics
from gateway.runtime.processes import (
    ListenError,
    bind_configured_listener,
    configured_listeners,
    inherited_listeners,
    is_first_worker,
)
from gateway.runtime.tls import ReloadableTls
from gateway.services.data_key_use import SealingBeat
from gateway.services.data_keys import DataKeys, data_keys
from gateway.services.data_rotation import (
    any_pass_finished,
    refuse_clear_values_once_a_pass_finishes,
    reseal_in_background,
)
from gateway.services.key_ages import HeldKeys
from gateway.services.people import People
from gateway.services.privacy import Privacy, purge
from gateway.services.retention import run_retention_periodically
from gateway.services.shared_keys import shared_keys, with_adopted_keys
from gateway.services.store_gauges import StoreGauges
from gateway.services.suppressions import Suppressions
from gateway.services.unsubscribe import Unsubscribe
from gateway.speedups import install as install_speedups
from gateway.store import open_store
from gateway.store.base import Store, StoreUnavailable
from gateway.store.sealing import PLAIN
from gateway.upstream.base import EmailUpstream
from gateway.upstream.outbox import OutboxEmailUpstream
from gateway.upstream.postmark import PostmarkEmailUpstream
from gateway.upstream.smtp import SmtpEmailUpstream
from gateway.upstream.twilio import (
    OutboxTwilioUpstream,
    RestTwilioUpstream,
    TwilioUpstream,
)
from gateway.web.access import ListenerAccess
from gateway.web.admin import AdminRoutes
from gateway.web.audit_page import AuditLogPage
from gateway.web.consents_page import ConsentsPage
from gateway.web.console import Console, console_errors
from gateway.web.decisions import DecisionRoutes
from gateway.web.health import HealthRoutes
from gateway.web.inflight import InFlightRequests
from gateway.web.listener import start_http_listener
from gateway.web.oidc_routes import OidcRoutes
from gateway.web.people_sign_in import PeopleSignIn
from gateway.web.review import ReviewRoutes
from gateway.web.saml_routes import SamlRoutes
from gateway.web.suppressions_page import SuppressionsPage
from gateway.web.unsubscribe_page import UnsubscribeRoutes
from gateway.web.webhooks.postmark import PostmarkWebhookRoutes
from gateway.web.webhooks.twilio import TwilioWebhookRoutes

log = logging.getLogger("gateway.server")
# Postmark's batch limit (50 MB of JSON) plus room for base64; every route checks
# credentials before reading a body.
MAX_HTTP_BODY_BYTES = 64 * 1024 * 1024
# After the drain deadline, how long closing waits for work it has just cut off to unwind.
CUT_OFF_GRACE_S = 0.25
# An idle HTTP keep-alive connection is closed after this long (aiohttp's own default for
# a runner is an hour).
HTTP_KEEPALIVE_S = 75.0


def build_email_upstream(config: Config) -> EmailUpstream:
    if config.email_upstream.kind == "smtp":
        return SmtpEmailUpstream(config.email_upstream)
    if config.email_upstream.kind == "postmark":
        return PostmarkEmailUpstream(config.email_upstream)
    return OutboxEmailUpstream(config.data_dir / "outbox" / "email")


def build_twilio_upstream(config: Config, clock: Clock) -> TwilioUpstream:
    if config.twilio_upstream.kind == "twilio":
        return RestTwilioUpstream(config.twilio_upstream)
    return OutboxTwilioUpstream(
        config.data_dir / "outbox" / "twilio", config.twilio_upstream, clock
    )


def configured_rules(config: Config) -> RuleSet:
    """The rule data with the operator's policy switches (which channels need consent)."""
    ruleset = load_rules(config.rules_dir)
    return replace(
        ruleset, calling=replace(ruleset.calling, require_consent=config.require_consent)
    )


def config_digest(config: Config) -> str:
    """Identifies the configuration file in the audit log without recording its secrets."""
    if config.source is None:
        return "built-in defaults"
    return hashlib.sha256(Path(config.source).read_bytes()).hexdigest()[:16]


class Services:
    """The parts every entry point needs: store, rules, pipeline pieces. No listeners."""

    def __init__(self, config: Config, clock: Clock, store: Store | None = None) -> None:
        self.config = config
        self.clock = clock
        self.metrics = Metrics()
        self.store = store or open_store(config.store_url)
        # Read from the store (or checked against it) by `open`.
        self.erasure_key = b""
        self.data_keys = DataKeys(PLAIN, {})
        self.sealing: SealingBeat | None = None
        self._sealing_task: asyncio.Task[None] | None = None
        self.tokens = UnsubscribeTokens()
        self.agent_keys = AgentKeys(self.store, clock)
        self.sessions = Sessions(self.store, clock)
        self.people = People(self.store, self.sessions, clock)
        self.ruleset: RuleSet = configured_rules(config)
        self.suppressions = Suppressions(
            self.store, clock, self.metrics, lambda: self.ruleset.mailboxes
        )
        self.login_limits = LoginLimiter(
            config.login_limits, clock, self.metrics, self.store, self.store.append_audit
        )
        self.unsubscribe = Unsubscribe(
            self.tokens,
            self.suppressions,
            clock,
            config.public_url,
            config.unsubscribe_mailto,
            self._reload_token_keys,
        )
        self.email_upstream = build_email_upstream(config)
        self.twilio_upstream = build_twilio_upstream(config, clock)
        telephony = TwilioEgress(self.twilio_upstream)
        self.pipeline = Pipeline(
            self.store,
            self.rules,
            {
                Channel.EMAIL.value: EmailEgress(
                    self.email_upstream, self.unsubscribe, DkimSigner(config.dkim),
                    config.smtp.max_message_bytes,
                ),
                Channel.SMS.value: telephony,
                Channel.CALL.value: telephony,
            },
            clock,
            self.metrics,
            self.suppressions,
            template_check=(
                self.email_upstream.template_uses
                if isinstance(self.email_upstream, PostmarkEmailUpstream)
                else None
            ),
        )

    def rules(self) -> RuleSet:
        return self.ruleset

    async def _reload_token_keys(self) -> None:
        """The keys this replica holds, with any old key a peer adopted since it started."""
        self.tokens.use_keys(
            await with_adopted_keys(self.tokens.keys, self.store), self.tokens.active_key_id
        )

    async def open(self) -> None:
        """The store, and the keys shared through it; a replica whose keys disagree with
        its peers' stops here (ConfigError naming the key), the store closed again."""
        await self.store.open()
        try:
            self.data_keys = await data_keys(self.config, self.store, self.clock.now())
            if self.data_keys.cipher.enabled:
                # Before anything is sealed, and until `close`, in every process that may
                # seal (a gateway, a long import): no pass may retire the key under it.
                self.sealing = SealingBeat(self.store, self.data_keys.cipher.active_key_id)
                await self.sealing.beat()
                self._sealing_task = asyncio.create_task(self.sealing.run())
            await self.store.use_data_cipher(self.data_keys.cipher)
            # Kept after `close`: a line logged while shutting down must not name anyone.
            use_pseudonyms(
                self.data_keys.cipher.log_pseudonym if self.data_keys.cipher.enabled else None
            )
            keys = await shared_keys(
                self.config, self.store, self.clock.now(), self.data_keys.cipher
            )
            self.tokens.use_keys(keys.token_keys, keys.active_token_key)
            self.agent_keys.use_pepper(keys.agent_key_pepper)
            self.erasure_key = keys.erasure_key
            await self.store.use_erasure_key(self.erasure_key)
            await self.suppressions.fold_stored()
            if self.data_keys.cipher.enabled and await any_pass_finished(self.store):
                self.data_keys.cipher.refuse_clear_values()
        except BaseException:
            await self._stop_sealing_beat()
            await self.store.close()
            raise

    def privacy(self) -> Privacy:
        return Privacy(
            self.store, self.clock, self.erasure_key, lambda: self.ruleset.mailboxes
        )

    async def start_upstreams(self) -> None:
        await self.email_upstream.start()
        await self.twilio_upstream.start()

    async def close(self) -> None:
        """The upstreams first: closing them cuts off the sends still running, which then
        record or release their delivery claims (`pipeline.background`) while the store is
        still open. A claim left pending would refuse the agent's retry for 10 minutes."""
        await self.email_upstream.close()
        await self.twilio_upstream.close()
        await self.login_limits.flush()
        await self.pipeline.background.flush()
        await self._stop_sealing_beat()  # after the last write it sealed
        await self.store.close()

    async def _stop_sealing_beat(self) -> None:
        if self._sealing_task is not None:
            self._sealing_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sealing_task
        if self.sealing is not None:
            await self.sealing.stop()


class Gateway:
    def __init__(
        self, config: Config, clock: Clock | None = None, store: Store | None = None
    ) -> None:
        self.config = config
        self.clock = clock or Clock()
        self.services = Services(config, self.clock, store)
        # [[sso.saml]]: an IdP metadata file that is not usable stops start-up here
        self.saml = SamlRoutes.from_config(config, self.services.store, self.clock)
        self.authenticator = Authenticator(
            lambda: self.config.accounts, self.services.agent_keys, self.services.login_limits
        )
        self.sessions = SessionTracker(self.services.metrics)
        self.http_requests = InFlightRequests(self.services.metrics)
        # A certificate or key that cannot be used stops start-up here, naming its setting.
        self.tls = {
            name: ReloadableTls(section.tls_cert, section.tls_key,
                                f"{name}.tls_cert", f"{name}.tls_key")
            for name, section in (("http", config.http), ("smtp", config.smtp))
            if section.tls_cert is not None and section.tls_key is not None
        }
        self.access = ListenerAccess(
            split=config.http.internal_listen is not None,
            metrics_token=config.http.metrics_token,
        )
        self._smtp_server: Listener | None = None
        self._http_listener: Listener | None = None
        self._internal_listener: Listener | None = None
        self._http_runner: web.AppRunner | None = None
        self._retention_task: asyncio.Task[None] | None = None
        self._reseal_task: asyncio.Task[None] | None = None
        self._store_gauges_task: asyncio.Task[None] | None = None
        self._pass_watch_task: asyncio.Task[None] | None = None
        self.smtp_port = 0
        self.http_port = 0
        self.internal_port = 0

    def http_app(self) -> web.Application:
        services = self.services
        app = web.Application(
            client_max_size=MAX_HTTP_BODY_BYTES,
            middlewares=[self.http_requests.middleware, self.access.middleware, console_errors],
        )
        app[TRUSTED_PROXIES] = self.config.http.trusted_proxies
        sign_in = PeopleSignIn(
            services.store, services.people, services.sessions, self.clock,
            lambda: self.config.accounts, lambda: self.config.sso,
            secure_cookies=self.config.public_url.startswith("https://"),
        )
        UnsubscribeRoutes(services.unsubscribe, self.config.sender.name).register(app)
        HealthRoutes(services.store, services.rules, services.metrics).register(app)
        TwilioRoutes(
            services.pipeline,
            lambda: self.config.accounts,
            self.config.twilio_upstream.account_sid,
            services.rules,
            self.clock,
            self.authenticator,
            self.config.twilio.twiml_hosts,
        ).register(app)
        TwilioWebhookRoutes(
            self.config.twilio_upstream.auth_token,
            self.config.public_url,
            services.suppressions,
            services.store,
            services.rules,
            self.config.sender,
            self.clock,
            services.metrics,
        ).register(app)
        admin = AdminRoutes(
            services.pipeline,
            services.privacy(),
            lambda actor: purge(services.store, self.config, self.clock, actor=actor),
            self.authenticator,
            sign_in.viewer,
        )
        admin.register(app)
        DecisionRoutes(services.store, self.clock, admin.guarded).register(app)
        sign_in.register(app)
        console = Console(sign_in)
        ReviewRoutes(console, self.authenticator, services.rules).register(app)
        # The console's pages: one line each, below.
        AuditLogPage(console).register(app)
        SuppressionsPage(console, services.suppressions).register(app)
        ConsentsPage(console).register(app)
        self.saml.register(app, sign_in)
        if self.config.sso.oidc:
            OidcRoutes(
                self.config.sso.oidc, self.config.public_url, sign_in, services.store,
                self.clock, secure_cookies=self.config.public_url.startswith("https://"),
            ).register(app)
        if self.config.sso.scim.token:  # no token, no SCIM: /scim/v2 is a 404
            # Imported here: scim2's models take 0.6 s to import, which every gateway start
            # and every CLI command paid whether or not SCIM was configured.
            from gateway.services.scim.directory import ScimDirectory, scim_handler
            from gateway.web.scim import ScimRoutes

            directory = ScimDirectory(
                services.store, services.people, self.clock, self.config.sso.scim_roles
            )
            ScimRoutes(
                scim_handler(directory), self.config.sso.scim.token, self.config.public_url
            ).register(app)
        PostmarkRoutes(
            services.pipeline,
            lambda: self.config.accounts,
            self.clock,
            templates_supported=self.config.email_upstream.kind in ("postmark", "outbox"),
            authenticator=self.authenticator,
            max_copies_per_request=self.config.http.max_copies_per_request,
        ).register(app)
        PostmarkWebhookRoutes(
            self.config.postmark_webhook, services.suppressions, services.store,
            services.metrics,
        ).register(app)
        return app

    async def start(self) -> None:
        services = self.services
        load_location_data()
        await services.open()
        await services.start_upstreams()
        handler = SubmissionHandler(
            services.pipeline, services.unsubscribe, self.clock, self.config.smtp.max_recipients,
            self.config.smtp.max_footed_parts,
        )
        authenticator = AccountAuthenticator(self.authenticator)
        smtp_socket, http_socket, *internal_socket = (
            inherited_listeners() or await self._bind_listeners()
        )
        self._make_room_for_connections()
        smtp_tls = self.tls.get("smtp")
        self._smtp_server = start_smtp_server(
            self.config, handler, authenticator, self.sessions, smtp_socket, services.metrics,
            tls=smtp_tls.context if smtp_tls else None,
        )
        self.smtp_port = self._smtp_server.port
        self._http_runner = web.AppRunner(
            self.http_app(), access_log=None, shutdown_timeout=CUT_OFF_GRACE_S,
            keepalive_timeout=HTTP_KEEPALIVE_S,
        )
        await self._http_runner.setup()
        assert self._http_runner.server is not None
        http_tls = self.tls.get("http")
        self._http_listener = start_http_listener(
            self._http_runner.server, http_socket, self.config.http, services.metrics,
            tls=http_tls.context if http_tls else None,
        )
        self.http_port = self._http_listener.port
        if internal_socket:
            self._internal_listener = start_http_listener(
                self._http_runner.server, internal_socket[0], self.config.http,
                services.metrics, name="http_internal",
                tls=http_tls.context if http_tls else None,
                internal_connections=self.access.internal_connections,
            )
            self.internal_port = self._internal_listener.port
        http = self.config.http.listen
        if is_first_worker():
            self._retention_task = asyncio.create_task(
                run_retention_periodically(services.store, self.config, self.clock)
            )
            if services.data_keys.cipher.enabled:
                cipher = services.data_keys.cipher
                self._reseal_task = asyncio.create_task(reseal_in_background(
                    services.store, cipher.active_key_id, cipher.refuse_clear_values
                ))
            self._store_gauges_task = asyncio.create_task(
                StoreGauges(
                    services.metrics, services.store, clock=self.clock,
                    max_age_days=self.config.key_max_age_days,
                    key_sources=[
                        HeldKeys(
                            services.store, self.clock,
                            lambda: (tuple(services.tokens.keys), services.tokens.active_key_id),
                            lambda: self.config.dkim,
                        ),
                        services.data_keys.ages,
                    ],
                ).run(self.config.metrics_refresh_s)
            )
        cipher = services.data_keys.cipher
        if cipher.enabled and not cipher.refuses_clear_values:
            self._pass_watch_task = asyncio.create_task(
                refuse_clear_values_once_a_pass_finishes(services.store, cipher)
            )
        await services.store.append_audit(
            AuditEvent(
                time=self.clock.now(),
                actor="gateway",
                action="gateway.start",
                details={
                    "config": config_digest(self.config),
                    "rules_version": services.ruleset.version,
                    "clock_shifted": self.clock.shifted,
                },
            )
        )
        log_event(
            log,
            "listening",
            smtp=f"{self.config.smtp.listen.host}:{self.smtp_port}",
            http=f"{http.host}:{self.http_port}",
            http_internal=self.internal_listen_address(),
            https="http" in self.tls,
            rules_version=services.ruleset.version,
            store=self.config.store_url.split("://")[0],
            email_upstream=services.email_upstream.name,
        )

    def internal_listen_address(self) -> str:
        """`host:port` of the internal HTTP listener, empty when there is none."""
        internal = self.config.http.internal_listen
        return f"{internal.host}:{self.internal_port}" if internal else ""

    async def _bind_listeners(self) -> tuple[socket.socket, ...]:
        """Every listener or none. One that cannot be had (a ListenError naming its
        setting) closes what `start` opened before it, so nothing is left running."""
        try:
            with contextlib.ExitStack() as bound:
                sockets = tuple(
                    bound.enter_context(bind_configured_listener(key, address))
                    for key, address in configured_listeners(self.config)
                )
                bound.pop_all()
                return sockets
        except ListenError:
            await self.services.close()
            raise

    def _make_room_for_connections(self) -> None:
        """Every connection the caps allow needs a file descriptor: raise the soft limit
        where the hard one allows, and say so when the caps are still out of reach."""
        http_listeners = 1 if self.config.http.internal_listen is None else 2
        needed = (self.config.smtp.max_connections
                  + http_listeners * self.config.http.max_connections + DESCRIPTOR_RESERVE)
        available = make_room_for_descriptors(needed)
        if available < needed:
            log_event(
                log, "descriptor-limit-low", logging.WARNING, limit=available, needed=needed,
                hint="raise the hard limit (ulimit -Hn, LimitNOFILE=) or lower "
                     "smtp.max_connections and http.max_connections",
            )

    async def reload(self) -> None:
        """SIGHUP: the TLS certificates, the accounts from the configuration file, then the
        rules. Connections stay open; each part is swapped atomically and audited, and a
        broken file keeps what is running (logged and audited with the reason)."""
        await self.reload_tls()
        await self.reload_accounts()
        await self.reload_rules()

    async def reload_tls(self) -> None:
        """Re-read each configured certificate and key (a renewed certificate written over
        the old files): new connections get the new one, open ones keep theirs."""
        for name, tls in self.tls.items():
            try:
                tls.reload()
            except ConfigError as exc:
                await self._reload_failed(f"{name}_tls", str(exc))
                continue
            await self._reloaded(f"{name}_tls", {"setting": tls.setting})

    async def reload_accounts(self) -> None:
        if self.config.source is None:
            log_event(log, "accounts-reload-skipped", reason="no configuration file")
            return
        try:
            fresh = load_config(self.config.source)
        except ConfigError as exc:
            await self._reload_failed("accounts", str(exc))
            return
        restart_needed = sections_needing_restart(self.config, fresh)
        if restart_needed:
            log_event(log, "config-changes-need-restart", logging.WARNING, keys=restart_needed)
        # Accounts keep the running [sender] identity: only accounts change on reload.
        accounts = tuple(replace(a, identity=self.config.sender) for a in fresh.accounts)
        changes = account_changes(self.config.accounts, accounts)
        self.config = replace(self.config, accounts=accounts)
        await self._end_sessions_of(changes["removed"] + changes["changed"])
        await self._reloaded("accounts", {"config": config_digest(self.config), **changes})

    async def _end_sessions_of(self, accounts: list[str]) -> None:
        """A removed account, or one whose secret or role changed (perhaps because it
        leaked), keeps no /review session opened before."""
        for name in accounts:
            try:
                await self.services.sessions.end_account_sessions(name)
            except StoreUnavailable as exc:
                log_event(log, "sessions-not-ended", logging.ERROR, account=name, error=str(exc))

    async def reload_rules(self) -> None:
        """Swap in new rule data atomically; a broken file keeps the old rules."""
        try:
            ruleset = configured_rules(self.config)
        except Exception as exc:
            await self._reload_failed("rules", str(exc))
            return
        old = self.services.ruleset
        self.services.ruleset = ruleset
        await self._reloaded("rules", {"from": old.version, "to": ruleset.version})
        if ruleset.mailboxes.version != old.mailboxes.version:
            await self._fold_suppressions()

    async def _fold_suppressions(self) -> None:
        """New mailbox rules: the stored mailbox keys follow them. If the store cannot do it
        now, the next start does (the recorded rules' version still differs)."""
        try:
            await self.services.suppressions.fold_stored()
        except StoreUnavailable as exc:
            log_event(log, "suppressions-fold-failed", logging.ERROR, error=str(exc))

    async def _reloaded(self, kind: str, details: dict[str, object]) -> None:
        self.services.metrics.reloads.labels(kind, "ok").inc()
        log_event(log, f"{kind}-reloaded", **details)
        await self._audit(f"{kind}.reload", details)

    async def _reload_failed(self, kind: str, error: str) -> None:
        self.services.metrics.reloads.labels(kind, "failed").inc()
        log_event(log, f"{kind}-reload-failed", logging.ERROR, error=error)
        await self._audit(f"{kind}.reload_failed", {"error": error, "kept": "running " + kind})

    async def _audit(self, action: str, details: dict[str, object]) -> None:
        """A reload is not undone because its audit entry could not be written: logged."""
        try:
            await self.services.store.append_audit(
                AuditEvent(time=self.clock.now(), actor="operator", action=action,
                           details=details)
            )
        except StoreUnavailable as exc:
            log_event(log, "audit-write-failed", logging.ERROR, action=action, error=str(exc))

    async def stop(self) -> None:
        """Stop accepting, give SMTP transactions and HTTP requests in flight until
        `drain_timeout_s` to finish, cut off the rest (logged), then close everything, the
        store last, once the work cut off has unwound (`Services.close`)."""
        for task in (
            self._retention_task, self._store_gauges_task, self._reseal_task,
            self._pass_watch_task,
        ):
            if task is None:
                continue
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._stop_accepting()
        timeout = self.config.drain_timeout_s
        smtp_cut_off, http_cut_off = await asyncio.gather(
            self._drain_smtp(timeout), self.http_requests.wait_idle(timeout)
        )
        log_event(
            log, "drained", logging.WARNING if smtp_cut_off or http_cut_off else logging.INFO,
            smtp_cut_off=smtp_cut_off, http_cut_off=http_cut_off, drain_timeout_s=timeout,
        )
        if self._http_runner is not None:
            await self._http_runner.cleanup()
        await self.services.close()
        log_event(log, "stopped")

    async def _stop_accepting(self) -> None:
        """Close the listeners and idle HTTP keep-alive connections; a busy HTTP connection
        closes after its response, so no new request starts on it."""
        if self._smtp_server is not None:
            self._smtp_server.close()
        if self._http_listener is not None:
            self._http_listener.close()
        if self._internal_listener is not None:
            self._internal_listener.close()
        if self._http_runner is not None and self._http_runner.server is not None:
            self._http_runner.server.pre_shutdown()

    async def _drain_smtp(self, timeout: float) -> int:
        """Wait for transactions in DATA, then close every session; how many were cut off."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.sessions.idle.wait(), timeout)
        cut_off = len(self.sessions.busy)
        await self.sessions.drain(CUT_OFF_GRACE_S)
        return cut_off


def sections_needing_restart(running: Config, fresh: Config) -> list[str]:
    """Settings that differ in the file but only take effect at start-up."""
    return [
        f.name
        for f in fields(Config)
        if f.name not in ("source", "accounts")
        and getattr(running, f.name) != getattr(fresh, f.name)
    ]


def account_changes(
    old: tuple[Account, ...], new: tuple[Account, ...]
) -> dict[str, list[str]]:
    """Names only: what an auditor needs, never a secret."""
    before, after = {a.name: a for a in old}, {a.name: a for a in new}
    return {
        "added": sorted(after.keys() - before.keys()),
        "removed": sorted(before.keys() - after.keys()),
        "changed": sorted(n for n in before.keys() & after.keys() if before[n] != after[n]),
    }


async def serve_forever(gateway: Gateway) -> None:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    loop.add_signal_handler(
        signal.SIGHUP, lambda: loop.create_task(gateway.reload())
    )
    await gateway.start()
    # After the start, so a gateway that cannot start says only why. Each speedup behaves
    # exactly as the library it stands in for, so a session accepted a moment before
    # meets the same answers.
    install_speedups(gateway.config.speedups)
    # Start-up objects (rules, zone tables, libraries) never die: keep them out of every
    # collection, and collect young objects less often, which cuts GC pauses under load.
    gc.freeze()
    gc.set_threshold(20_000, 20, 50)
    print(
        f"compliance-gateway listening: SMTP {gateway.config.smtp.listen.host}:"
        f"{gateway.smtp_port}, HTTP {gateway.config.http.listen.host}:{gateway.http_port}"
        + (f", HTTP internal {gateway.internal_listen_address()}"
           if gateway.internal_port else ""),
        flush=True,
    )
    await stopping.wait()
    log_event(log, "stopping", reason="signal")
    await gateway.stop()
