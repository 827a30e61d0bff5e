"""The admin API under /v1/: bearer-token access with the account's role deciding what.

`Authorization: Bearer <account secret>`; 401 without valid credentials, 403 for a role too
low for the endpoint.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gateway.checks import CheckError, CheckRequest, parse_time, parse_timezone, run_check
from gateway.credentials import account_with_secret, bearer_token
from gateway.model import Account, Channel, Purpose, Role
from gateway.pipeline import Pipeline, TemporaryFailure

Handler = Callable[[web.Request, Account], Awaitable[web.StreamResponse]]
MAX_JSON_BYTES = 64 * 1024


def json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message, "status": status}, status=status)


class AdminRoutes:
    def __init__(self, accounts: Callable[[], tuple[Account, ...]], pipeline: Pipeline) -> None:
        self.accounts = accounts
        self.pipeline = pipeline

    def register(self, app: web.Application) -> None:
        app.router.add_post("/v1/check", self.guarded(Role.REP, self.check))

    def bearer_account(self, request: web.Request) -> Account | None:
        token = bearer_token(request.headers.get("Authorization", ""))
        return account_with_secret(self.accounts(), token)

    def guarded(self, minimum: Role, handler: Handler) -> Callable[[web.Request], Awaitable[Any]]:
        async def guarded_handler(request: web.Request) -> web.StreamResponse:
            account = self.bearer_account(request)
            if account is None:
                response = json_error(401, "missing or invalid bearer token")
                response.headers["WWW-Authenticate"] = 'Bearer realm="compliance-gateway"'
                return response
            if account.role < minimum:
                return json_error(
                    403, f"role {account.role.name.lower()} may not do this "
                    f"(needs {minimum.name.lower()} or higher)"
                )
            return await handler(request, account)

        return guarded_handler

    async def check(self, request: web.Request, account: Account) -> web.Response:
        """The same decision the gateway would make right now, with nothing sent or recorded."""
        if (request.content_length or 0) > MAX_JSON_BYTES:
            return json_error(413, f"request body over {MAX_JSON_BYTES} bytes")
        try:
            body = json.loads(await request.read())
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


def check_request(body: object) -> CheckRequest:
    if not isinstance(body, dict):
        raise CheckError("the body must be a JSON object")
    unknown = set(body) - {"channel", "to", "from", "subject", "reply", "at", "purpose",
                           "timezone"}
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
