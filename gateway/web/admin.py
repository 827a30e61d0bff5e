"""The admin API under /v1/: bearer-token access with the account's role deciding what.

`Authorization: Bearer <account secret>`. Without valid credentials the answer is 401 (with
`WWW-Authenticate`), for a role too low 403; every error is JSON `{"error", "status"}`, and
a bad parameter's error names it. Each role may do everything the roles below it may:

| Endpoint                             | rep | manager | admin | owner |
|--------------------------------------|-----|---------|-------|-------|
| `POST /v1/check`                     | yes | yes     | yes   | yes   |
| `GET /v1/blocks`                     |     | yes     | yes   | yes   |
| `GET /v1/blocks/{id}`                |     | yes     | yes   | yes   |
| `GET /v1/blocks/counts`              |     | yes     | yes   | yes   |
| `GET /v1/suppressions`               |     | yes     | yes   | yes   |
| `POST /v1/suppressions`              |     |         | yes   | yes   |
| `DELETE /v1/suppressions/{address}`  |     |         | yes   | yes   |
| `GET /v1/audit`                      |     |         | yes   | yes   |
| `POST /v1/consents`                  |     |         | yes   | yes   |
| `GET /v1/privacy/{subject}` (export) |     |         | yes   | yes   |
| `DELETE /v1/privacy/{subject}` (erase) |   |         |       | yes   |
| `POST /v1/purge` (`{"confirm": "purge workspace"}`) | | |     | yes   |

A person signed in at /review (single sign-on) may also read (GET) with that session and
their role; changes need a bearer token. Changes made here are audited with the account's
name as the actor.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from aiohttp import web
from multidict import MultiMapping

from gateway.addresses import InvalidAddress
from gateway.auth.authenticate import Authenticator
from gateway.auth.credentials import bearer_token
from gateway.auth.secret_check import account_or_refusal
from gateway.model import (
    Account,
    AuditEvent,
    Channel,
    Consent,
    Purpose,
    Role,
    Suppression,
)
from gateway.pipeline.dry_run import CheckError, CheckRequest, parse_time, parse_timezone, run_check
from gateway.pipeline.process import Pipeline, TemporaryFailure
from gateway.rules.ruleset import RuleSet
from gateway.runtime.input_limits import read_json
from gateway.runtime.logs import log_event
from gateway.services.block_reports import block_as_dict, write_blocks_csv
from gateway.services.consents import ConsentError, make_consent
from gateway.services.imports import validated_key
from gateway.services.privacy import Privacy
from gateway.store.base import AuditLog, AuditQuery, BlockQuery, Store, StoreUnavailable
from gateway.web.pages import Viewer

log = logging.getLogger("gateway.admin")
Handler = Callable[[web.Request, Account], Awaitable[web.StreamResponse]]
MAX_JSON_BYTES = 64 * 1024
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
API_SUPPRESSION_SOURCE = "api"
BLOCK_PARAMETERS = frozenset(
    ("since", "until", "reason", "channel", "account", "recipient", "limit", "cursor", "format")
)


class BodyTooLarge(Exception):
    """A body over MAX_JSON_BYTES: refused (413) before it is read."""


class ParameterError(ValueError):
    """A query parameter or body field the request got wrong; the message names it."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")


def json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message, "status": status}, status=status)


PURGE_CONFIRMATION = "purge workspace"


class AdminRoutes:
    def __init__(
        self,
        pipeline: Pipeline,
        privacy: Privacy,
        purge_workspace: Callable[[str], Awaitable[AuditEvent]],
        authenticator: Authenticator,
        viewer: Callable[[web.Request], Awaitable[Viewer | None]] | None = None,
    ) -> None:
        self.authenticator = authenticator
        self.viewer = viewer
        self.pipeline = pipeline
        self.privacy = privacy
        self.purge_workspace = purge_workspace

    @property
    def store(self) -> Store:
        return self.pipeline.store

    def register(self, app: web.Application) -> None:
        """`/v1/blocks/counts` before `/v1/blocks/{id}`; the id is digits only anyway."""
        router = app.router
        router.add_post("/v1/check", self.guarded(Role.REP, self.check))
        router.add_get("/v1/blocks", self.guarded(Role.MANAGER, self.blocks))
        router.add_get("/v1/blocks/counts", self.guarded(Role.MANAGER, self.block_counts))
        router.add_get(r"/v1/blocks/{block_id:\d{1,18}}", self.guarded(Role.MANAGER, self.block))
        router.add_get("/v1/suppressions", self.guarded(Role.MANAGER, self.suppressions))
        router.add_post("/v1/suppressions", self.guarded(Role.ADMIN, self.add_suppressions))
        router.add_delete(
            "/v1/suppressions/{address}", self.guarded(Role.ADMIN, self.remove_suppression)
        )
        router.add_get("/v1/audit", self.guarded(Role.ADMIN, self.audit))
        router.add_post("/v1/consents", self.guarded(Role.ADMIN, self.add_consent))
        router.add_get("/v1/privacy/{subject}", self.guarded(Role.ADMIN, self.export_person))
        router.add_delete("/v1/privacy/{subject}", self.guarded(Role.OWNER, self.erase_person))
        router.add_post("/v1/purge", self.guarded(Role.OWNER, self.purge))

    def guarded(self, minimum: Role, handler: Handler) -> Callable[[web.Request], Awaitable[Any]]:
        async def guarded_handler(request: web.Request) -> web.StreamResponse:
            account = await self._person_reading(request)
            if account is None:
                account = await account_or_refusal(
                    self.authenticator, request, "admin",
                    lambda status, why: json_error(status, f"bearer token not checked: {why}"),
                    bearer_token(request.headers.get("Authorization", "")),
                )
            if isinstance(account, web.Response):
                return account
            if account is None:
                response = json_error(401, "missing or invalid bearer token")
                response.headers["WWW-Authenticate"] = 'Bearer realm="compliance-gateway"'
                return response
            if account.role < minimum:
                return json_error(
                    403,
                    f"role {account.role.name.lower()} may not do this "
                    f"(needs {minimum.name.lower()} or higher)",
                )
            try:
                return await handler(request, account)
            except BodyTooLarge:
                return json_error(413, f"request body over {MAX_JSON_BYTES} bytes")
            except StoreUnavailable as exc:
                # The detail (paths, driver messages) goes to the log, not to the caller.
                log_event(log, "admin-store-unavailable", logging.ERROR, path=request.path,
                          error=str(exc))
                return json_error(503, "store unavailable: nothing was changed; retry")

        return guarded_handler

    async def _person_reading(self, request: web.Request) -> Account | web.Response | None:
        """A person signed in at /review may read (GET) with their session and role; a
        change needs a bearer token, as no form of ours carries its CSRF token here."""
        if (self.viewer is None or request.method not in ("GET", "HEAD")
                or "Authorization" in request.headers):
            return None
        try:
            viewer = await self.viewer(request)
        except StoreUnavailable:
            return json_error(503, "session not checked: the store is unavailable; retry")
        if viewer is None:
            return None
        if viewer.account is None and viewer.role < Role.MANAGER:
            # A rep's reading is scoped to its own account's records, and a person is no
            # account: named after them, they could read an account that bears their name.
            return json_error(403, "a person with the rep role reads nothing here; an agent "
                              "reads its own account's decisions with the account's key")
        return Account(name=viewer.actor, secret="", role=viewer.role, sender_domains=())

    async def check(self, request: web.Request, account: Account) -> web.Response:
        """The same decision the gateway would make right now, with nothing sent or recorded."""
        if (request.content_length or 0) > MAX_JSON_BYTES:
            return json_error(413, f"request body over {MAX_JSON_BYTES} bytes")
        try:
            body = read_json(await request.read())
            check = check_request(body)
        except (ValueError, CheckError) as exc:
            return json_error(400, str(exc))
        try:
            result = await run_check(self.pipeline, check, account)
        except CheckError as exc:
            return json_error(400, str(exc))
        except TemporaryFailure as exc:
            return json_error(503, f"{exc.reason}: {exc.text}")
        return web.json_response(result)

    async def blocks(self, request: web.Request, account: Account) -> web.StreamResponse:
        """One page of the block log, newest first, with the cursor of the next page.

        One record past the page is fetched to tell whether a next page exists, so the last
        page says so instead of sending the client for an empty one.
        """
        try:
            query = block_query(request.query, self.pipeline.clock.now())
            as_csv = wants_csv(request)
        except ParameterError as exc:
            return json_error(400, str(exc))
        found = await self.store.query_blocks(replace(query, limit=query.limit + 1))
        page = found[: query.limit]
        next_cursor = BLOCK_CURSOR.encode(page[-1].id) if len(found) > query.limit else None
        if as_csv:
            text = io.StringIO()
            write_blocks_csv(text, page)
            headers = {} if next_cursor is None else {"X-Next-Cursor": next_cursor}
            return web.Response(
                text=text.getvalue(), content_type="text/csv", charset="utf-8", headers=headers
            )
        return web.json_response(
            {"blocks": [block_as_dict(r) for r in page], "next_cursor": next_cursor}
        )

    async def block(self, request: web.Request, account: Account) -> web.Response:
        """The full record, with where each reason's rule comes from and how sure that is."""
        block_id = int(request.match_info["block_id"])
        record = await self.store.get_block(block_id)
        if record is None:
            return json_error(404, f"no block {block_id}")
        body = block_as_dict(record)
        rules = self.pipeline.rules()
        for detail in body["reason_details"]:
            detail.update(rule_source(rules, detail["rule"]))
        return web.json_response(body)

    async def block_counts(self, request: web.Request, account: Account) -> web.Response:
        """Counts of reasons: a block blocked for two reasons counts under each, so every
        view (by reason, by channel, by both) adds up to the same total."""
        try:
            only_parameters(request.query, {"since", "until"})
            now = self.pipeline.clock.now()
            since = optional_time(request.query, "since", now)
            until = optional_time(request.query, "until", now)
        except ParameterError as exc:
            return json_error(400, str(exc))
        rows = await self.store.block_counts(since, until)
        by_reason: dict[str, int] = {}
        by_channel: dict[str, int] = {}
        for channel, code, count in rows:
            by_reason[code] = by_reason.get(code, 0) + count
            by_channel[channel] = by_channel.get(channel, 0) + count
        return web.json_response(
            {
                "since": since.isoformat() if since else None,
                "until": until.isoformat() if until else None,
                "by_reason": by_reason,
                "by_channel": by_channel,
                "by_channel_and_reason": [
                    {"channel": channel, "reason": code, "count": count}
                    for channel, code, count in rows
                ],
            }
        )

    async def suppressions(self, request: web.Request, account: Account) -> web.Response:
        """Every entry (one per address and source), or only those of `?address=`."""
        try:
            only_parameters(request.query, {"address"})
            address = single(request.query, "address")
            key = None if address is None else address_key("address", address)
        except ParameterError as exc:
            return json_error(400, str(exc))
        keys = set() if key is None else set(self.pipeline.suppressions.lookup_keys([key]))
        entries = await self.store.list_suppressions()
        return web.json_response(
            {
                "suppressions": [
                    suppression_as_dict(e)
                    for e in entries
                    if key is None or e.address in keys or e.mailbox in keys
                ]
            }
        )

    async def add_suppressions(self, request: web.Request, account: Account) -> web.Response:
        try:
            body = await json_object(request, required={"addresses", "reason"})
            addresses, reason = body["addresses"], body["reason"]
            if not isinstance(addresses, list) or not addresses:
                raise ParameterError("addresses", "must be a non-empty list")
            if not isinstance(reason, str) or not reason.strip():
                raise ParameterError("reason", "must be a non-empty string")
            keys = [address_key("addresses", a) for a in addresses]
        except ParameterError as exc:
            return json_error(400, str(exc))
        added = await self.pipeline.suppressions.add(
            keys, source=API_SUPPRESSION_SOURCE, reason=reason, actor=account.name
        )
        return web.json_response({"suppressed": sorted(set(keys)), "new": added})

    async def remove_suppression(self, request: web.Request, account: Account) -> web.Response:
        """Lifts every entry that holds the address's mailbox, whatever source or spelling
        put it there; 404 (and nothing audited) if it had none."""
        try:
            key = address_key("address", request.match_info["address"])
        except ParameterError as exc:
            return json_error(400, str(exc))
        if not await self.store.suppressed(self.pipeline.suppressions.lookup_keys([key])):
            return json_error(404, f"{key} is not suppressed")
        await self.pipeline.suppressions.remove([key], actor=account.name)
        return web.json_response({"removed": key})

    async def export_person(self, request: web.Request, account: Account) -> web.Response:
        """Everything held about one address or number (audited, by keyed hash)."""
        try:
            document = await self.privacy.export(request.match_info["subject"], actor=account.name)
        except InvalidAddress as exc:
            return json_error(400, f"subject: {exc}")
        return web.json_response(document, dumps=lambda d: json.dumps(d, default=str))

    async def erase_person(self, request: web.Request, account: Account) -> web.Response:
        """Erase one person's data; their opt-out stays, as a keyed hash."""
        try:
            counts = await self.privacy.erase(request.match_info["subject"], actor=account.name)
        except InvalidAddress as exc:
            return json_error(400, f"subject: {exc}")
        return web.json_response({"erased": counts, "opt_out_kept": counts["suppressions"] > 0})

    async def purge(self, request: web.Request, account: Account) -> web.Response:
        """Erase the whole workspace; the explicit confirmation guards against a stray call."""
        try:
            body = await json_object(request, required={"confirm"})
        except BodyTooLarge:
            return json_error(413, f"request body over {MAX_JSON_BYTES} bytes")
        except ParameterError as exc:
            return json_error(400, str(exc))
        if body["confirm"] != PURGE_CONFIRMATION:
            return json_error(400, f'confirm: must be "{PURGE_CONFIRMATION}"')
        event = await self.purge_workspace(account.name)
        return web.json_response({"purged": True, "audit_entry": event.id})

    async def audit(self, request: web.Request, account: Account) -> web.Response:
        """One page of audit entries, newest first, with their chain hashes and the cursor
        of the next page (null on the last)."""
        try:
            query = audit_query(request.query, self.pipeline.clock.now())
        except ParameterError as exc:
            return json_error(400, str(exc))
        events, next_cursor = await audit_page(self.store, query)
        return web.json_response(
            {"events": [audit_as_dict(e) for e in events], "next_cursor": next_cursor}
        )

    async def add_consent(self, request: web.Request, account: Account) -> web.Response:
        """One consent, as `consent add` records it: stored, then audited."""
        try:
            body = await json_object(
                request,
                required={"subject", "channel", "kind", "obtained_at", "source"},
                optional={"evidence"},
            )
            for name, value in body.items():
                if not isinstance(value, str):
                    raise ParameterError(name, "must be a string")
            obtained_at = parse_field_time("obtained_at", body["obtained_at"], None)
            consent = make_consent(
                body["subject"],
                body["channel"],
                body["kind"],
                obtained_at,
                body["source"],
                body.get("evidence", ""),
            )
        except (ParameterError, ConsentError) as exc:
            return json_error(400, str(exc))
        added = await self.store.add_consents([consent])
        await self.store.append_audit(
            AuditEvent(
                time=self.pipeline.clock.now(),
                actor=account.name,
                action="consent.add",
                subject=consent.subject,
                details={"count": 1, "new": added},
            )
        )
        return web.json_response({"consent": consent_as_dict(consent), "new": added})


def only_parameters(query: Mapping[str, str], allowed: AbstractSet[str]) -> None:
    """A misspelt filter must not silently widen the answer."""
    unknown = sorted(set(query) - allowed)
    if unknown:
        raise ParameterError(unknown[0], "unknown parameter")


def single(query: MultiMapping[str], name: str) -> str | None:
    """`query` is aiohttp's MultiDict; a repeated filter is ambiguous, so it is refused."""
    values = query.getall(name, [])
    if len(values) > 1:
        raise ParameterError(name, "given more than once")
    return values[0] if values else None


def parse_field_time(name: str, value: str, now: datetime | None) -> datetime:
    try:
        return parse_time(value, now=now)
    except CheckError as exc:
        raise ParameterError(name, str(exc)) from None


def optional_time(query: MultiMapping[str], name: str, now: datetime) -> datetime | None:
    """ISO 8601 (naive means UTC) or a span back from now such as 24h or 7d."""
    value = single(query, name)
    return None if value is None else parse_field_time(name, value, now)


def time_window(
    query: MultiMapping[str], now: datetime
) -> tuple[datetime | None, datetime | None]:
    """`since` and `until` as `optional_time` reads them, `until` after `since` when both
    are given."""
    since = optional_time(query, "since", now)
    until = optional_time(query, "until", now)
    if since is not None and until is not None and until <= since:
        raise ParameterError("until", "must be later than since")
    return since, until


def page_limit(query: MultiMapping[str]) -> int:
    value = single(query, "limit")
    if value is None:
        return DEFAULT_LIMIT
    # int() of over 4300 digits is a ValueError (it was a 500): only short values reach it.
    digits = value.lstrip("0")
    if (not (value.isascii() and value.isdigit()) or len(digits) > len(str(MAX_LIMIT))
            or not 1 <= int(digits or "0") <= MAX_LIMIT):
        raise ParameterError("limit", f"must be a whole number from 1 to {MAX_LIMIT}")
    return int(digits)


def block_query(query: MultiMapping[str], now: datetime) -> BlockQuery:
    only_parameters(query, BLOCK_PARAMETERS)
    text: dict[str, str | None] = {}
    for name in ("reason", "account", "recipient"):
        value = single(query, name)
        if value == "":
            raise ParameterError(name, "must not be empty")
        text[name] = value
    channel = single(query, "channel")
    try:
        block_channel = None if channel is None else Channel(channel)
    except ValueError:
        raise ParameterError("channel", "must be one of email, sms, call") from None
    cursor = single(query, "cursor")
    return BlockQuery(
        since=optional_time(query, "since", now),
        until=optional_time(query, "until", now),
        reason=text["reason"],
        channel=block_channel,
        account=text["account"],
        recipient=text["recipient"],
        limit=page_limit(query),
        before_id=None if cursor is None else BLOCK_CURSOR.decode(cursor),
    )


def wants_csv(request: web.Request) -> bool:
    """`format` wins over the Accept header; without either the answer is JSON."""
    chosen = single(request.query, "format")
    if chosen is None:
        return "text/csv" in request.headers.get("Accept", "")
    if chosen not in ("json", "csv"):
        raise ParameterError("format", "must be json or csv")
    return chosen == "csv"


@dataclass(frozen=True)
class PageCursor:
    """A list's paging cursor: opaque to clients, so the paging key can change without
    breaking them; the prefix keeps one list's cursor from being taken for another's."""

    prefix: str

    def encode(self, row_id: int | None) -> str:
        return base64.urlsafe_b64encode(f"{self.prefix}{row_id}".encode()).decode()

    def decode(self, cursor: str) -> int:
        try:
            text = base64.urlsafe_b64decode(cursor.encode("ascii")).decode("ascii")
        except (UnicodeError, binascii.Error, ValueError):
            text = ""
        row_id = text.removeprefix(self.prefix)
        if not text.startswith(self.prefix) or not row_id.isdigit() or len(row_id) > 18:
            raise ParameterError("cursor", "not a cursor this API gave out")
        return int(row_id)


BLOCK_CURSOR = PageCursor("b1:")
AUDIT_CURSOR = PageCursor("a1:")
AUDIT_PARAMETERS = frozenset(("actor", "action", "since", "until", "limit", "cursor"))
AUDIT_TEXT_LONGEST = 200


def audit_query(query: MultiMapping[str], now: datetime) -> AuditQuery:
    """GET /v1/audit's filters, which the console's audit page takes too."""
    only_parameters(query, AUDIT_PARAMETERS)
    text: dict[str, str | None] = {}
    for name in ("actor", "action"):
        value = single(query, name)
        if value is not None and not value.strip():
            raise ParameterError(name, "must not be empty")
        if len(value or "") > AUDIT_TEXT_LONGEST:
            raise ParameterError(name, f"at most {AUDIT_TEXT_LONGEST} characters")
        if not (value or "").isprintable():
            raise ParameterError(name, "must not contain control characters")
        text[name] = value
    since, until = time_window(query, now)
    cursor = single(query, "cursor")
    return AuditQuery(
        since=since,
        until=until,
        actor=text["actor"],
        action=text["action"],
        limit=page_limit(query),
        before_id=None if cursor is None else AUDIT_CURSOR.decode(cursor),
    )


async def audit_page(store: AuditLog, query: AuditQuery) -> tuple[list[AuditEvent], str | None]:
    """The page and the next one's cursor (None on the last): one entry past the page is
    read to know."""
    found = await store.query_audit(replace(query, limit=query.limit + 1))
    page = found[: query.limit]
    if len(found) > query.limit:
        return page, AUDIT_CURSOR.encode(page[-1].id)
    return page, None


async def json_object(
    request: web.Request, *, required: set[str], optional: frozenset[str] | set[str] = frozenset()
) -> dict[str, Any]:
    """The body as a JSON object holding every required field and no unknown one."""
    if (request.content_length or 0) > MAX_JSON_BYTES:
        raise BodyTooLarge
    try:
        body = read_json(await request.read())
    except ValueError:
        raise ParameterError("body", "not JSON") from None
    if not isinstance(body, dict):
        raise ParameterError("body", "must be a JSON object")
    unknown = sorted(set(body) - required - set(optional))
    if unknown:
        raise ParameterError(unknown[0], "unknown field")
    missing = sorted(required - set(body))
    if missing:
        raise ParameterError(missing[0], "required")
    return body


def address_key(name: str, address: object) -> str:
    if not isinstance(address, str):
        raise ParameterError(name, "addresses are strings")
    try:
        return validated_key(address)
    except InvalidAddress as exc:
        raise ParameterError(name, f"{address!r} is not a valid address or number: {exc}") from None


def rule_source(rules: RuleSet, rule_id: str) -> dict[str, str | None]:
    """Cited from the rules loaded now; the record's rules_version says which it was
    decided under. A rule the current rules no longer have gets nulls."""
    lookups: tuple[Callable[[str], Any], ...] = (rules.rule, rules.calling.rule)
    for lookup in lookups:
        try:
            rule = lookup(rule_id)
        except KeyError:
            continue
        return {"citation": rule.citation, "confidence": rule.confidence}
    return {"citation": None, "confidence": None}


def suppression_as_dict(entry: Suppression) -> dict[str, str]:
    return {
        "address": entry.address,
        "source": entry.source,
        "reason": entry.reason,
        "actor": entry.actor,
        "time": entry.time.isoformat(),
        "mailbox": entry.mailbox,
    }


def audit_as_dict(event: AuditEvent) -> dict[str, object]:
    return {
        "id": event.id,
        "time": event.time.isoformat(),
        "actor": event.actor,
        "action": event.action,
        "subject": event.subject,
        "details": event.details,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }


def consent_as_dict(consent: Consent) -> dict[str, str | None]:
    return {
        "subject": consent.subject,
        "channel": consent.channel.value,
        "kind": consent.kind.value,
        "obtained_at": consent.obtained_at.isoformat(),
        "expires_at": consent.expires_at.isoformat() if consent.expires_at else None,
        "source": consent.source,
        "evidence": consent.evidence,
    }


def check_request(body: object) -> CheckRequest:
    if not isinstance(body, dict):
        raise CheckError("the body must be a JSON object")
    unknown = set(body) - {"channel", "to", "from", "subject", "reply", "at", "purpose", "timezone"}
    if unknown:
        raise CheckError(f"unknown fields: {', '.join(sorted(unknown))}")
    try:
        channel = Channel(body.get("channel"))
    except ValueError:
        raise CheckError("channel must be one of email, sms, call") from None
    for key in ("to", "from", "subject", "at", "purpose", "timezone"):
        if key in body and not isinstance(body[key], str):
            raise CheckError(f"{key} must be a string")
    if not body.get("to"):
        raise CheckError("to is required")
    try:
        purpose = Purpose(body["purpose"]) if "purpose" in body else None
    except ValueError:
        raise CheckError("purpose must be marketing or transactional") from None
    return CheckRequest(
        channel=channel,
        to=body["to"],
        sender=body.get("from", ""),
        subject=body.get("subject", ""),
        is_reply=bool(body.get("reply", False)),
        at=parse_time(body["at"]) if body.get("at") else None,
        purpose=purpose,
        timezone=parse_timezone(body.get("timezone", "")),
    )
