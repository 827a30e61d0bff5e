"""SCIM 2.0 over HTTP at /scim/v2/ (RFC 7644): Users, Groups, ServiceProviderConfig,
ResourceTypes, Schemas and POST …/.search.

Every request needs `Authorization: Bearer <[scim] token>` (compared in constant time;
ServiceProviderConfig too). The routes exist only while a token is configured. Answers are
`application/scim+json`; failures are SCIM Error documents with a `scimType` where RFC 7644
§3.12 defines one, and a store that cannot answer gives 503 with Retry-After, never 500.
Logs name ids and statuses, never what a request carries (email addresses, names).
"""

from __future__ import annotations

import hmac
import json
import logging
from http import HTTPStatus

from aiohttp import web
from scim2_models import (
    Error,
    PayloadTooLargeException,
    SCIMException,
    UnauthorizedException,
)
from scim2_server.handler import AsyncScimHandler
from scim2_server.requests import ScimRequest
from scim2_server.responses import SCIM_MEDIA_TYPE, ScimResponse

from gateway.runtime.client_address import client_address
from gateway.runtime.logs import log_event
from gateway.store.base import StoreUnavailable

log = logging.getLogger("gateway.scim")

PREFIX = "/scim/v2"
# A request body past this is refused (413) unread: a PATCH adding a thousand members is
# about 60 kB.
MAX_BODY_BYTES = 1024 * 1024
# How long a client is asked to wait when the store cannot answer.
STORE_RETRY_AFTER_S = 30


class ScimRoutes:
    def __init__(self, handler: AsyncScimHandler, token: str, public_url: str) -> None:
        if not token:
            raise ValueError("SCIM needs its [scim] token")
        self.handler = handler
        self.token = token.encode()
        self.base_url = public_url.rstrip("/") + PREFIX

    def register(self, app: web.Application) -> None:
        app.router.add_route("*", PREFIX, self.serve)
        app.router.add_route("*", PREFIX + "/{path:.*}", self.serve)

    async def serve(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            log_event(log, "scim-refused", logging.WARNING, client=client_address(request),
                      reason="wrong or missing bearer token")
            return self._error(UnauthorizedException(detail="a valid bearer token is required"),
                               {"WWW-Authenticate": 'Bearer realm="SCIM"'})
        body = await _bounded_body(request)
        if body is None:
            return self._error(PayloadTooLargeException(
                detail=f"the request body is over {MAX_BODY_BYTES} bytes"))
        scim_request = ScimRequest(
            method=request.method,
            base_url=self.base_url,
            path="/" + request.match_info.get("path", ""),
            query=dict(request.query),
            headers=list(request.headers.items()),
            body=body,
        )
        try:
            response = await self.handler.handle(scim_request)
        except StoreUnavailable as exc:
            log_event(log, "scim-store-unavailable", logging.ERROR, method=request.method,
                      endpoint=_endpoint(request), error=str(exc))
            return _send(ScimResponse(
                HTTPStatus.SERVICE_UNAVAILABLE,
                Error(status=503, detail="the store cannot answer just now; retry").model_dump(),
                {"Retry-After": str(STORE_RETRY_AFTER_S)},
            ))
        except SCIMException as exc:
            response = self.handler.service.error_response(exc)
            if response.status == HTTPStatus.INTERNAL_SERVER_ERROR:
                log_event(log, "scim-failed", logging.ERROR, method=request.method,
                          endpoint=_endpoint(request), status=int(response.status))
        except Exception:  # a bug: logged with its traceback, answered as a SCIM error
            log.exception("scim-bug", extra={"fields": {"method": request.method,
                                                         "endpoint": _endpoint(request)}})
            response = ScimResponse(HTTPStatus.INTERNAL_SERVER_ERROR,
                                    Error(status=500, detail="internal error").model_dump())
        return _send(response)

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode("utf-8", "replace"), self.token
        )

    def _error(self, exc: SCIMException, headers: dict[str, str] | None = None) -> web.Response:
        response = self.handler.service.error_response(exc)
        response.headers.update(headers or {})
        return _send(response)


async def _bounded_body(request: web.Request) -> bytes | None:
    """The body, or None when it is longer than MAX_BODY_BYTES (not read past that)."""
    if (request.content_length or 0) > MAX_BODY_BYTES:
        return None
    body = bytearray()
    while chunk := await request.content.read(64 * 1024):
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return None
    return bytes(body)


def _endpoint(request: web.Request) -> str:
    """The resource type or discovery endpoint a request is for (never an id or query)."""
    return request.match_info.get("path", "").split("/", 1)[0]


def _send(response: ScimResponse) -> web.Response:
    headers = {**response.headers, "Cache-Control": "no-store"}
    if response.body is None:
        headers.pop("Content-Type", None)
        return web.Response(status=int(response.status), headers=headers)
    headers["Content-Type"] = SCIM_MEDIA_TYPE
    return web.Response(
        status=int(response.status), body=json.dumps(response.body).encode(), headers=headers
    )
