"""The SCIM conformance checker proven on a reference server: scim2-server (python-scim's
in-memory SCIM server, the one scim2-tester is developed against), served over HTTP on
loopback by a thread, passes with no failure; the same server with a MUST broken, with a wrong
token or not running fails, with readable lines."""

from __future__ import annotations

import importlib.util
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest

from tests.scim.conformance import check, checker_missing, run_scim_conformance

TOKEN = "scim-token-0123456789"


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def _without_attribute_selection(app: Callable[..., Iterable[bytes]]) -> Callable[..., Any]:
    """The server made to ignore `attributes` and `excludedAttributes` in the query (RFC 7644
    3.4.2.5: a MUST)."""

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        query = [(k, v) for k, v in parse_qsl(environ.get("QUERY_STRING", ""))
                 if k not in ("attributes", "excludedAttributes")]
        environ["QUERY_STRING"] = urlencode(query)
        return app(environ, start_response)

    return wrapped


# What a server that keeps only these User attributes publishes (the gateway keeps a person's
# id, userName, name, display name, emails, active flag and groups): the checker fills and
# reads back every attribute a client may write in the published schemas, no others.
KEPT_USER_ATTRIBUTES = ("userName", "name", "displayName", "active", "emails", "groups")


def _serve(wrap: Callable[[Any], Any] | None = None, trimmed: bool = False) -> Iterator[str]:
    reason = checker_missing() or (
        None if importlib.util.find_spec("scim2_server") else
        "scim2-server is not installed (pip install -e '.[test]')")
    if reason:
        print(f"*** SCIM checker smoke test SKIPPED: {reason} ***")
        pytest.skip(f"SCIM checker smoke test skipped: {reason}")
    from scim2_models import ScimProvider
    from scim2_server.memory import InMemoryStorage
    from scim2_server.service import ScimService
    from scim2_server.testserver.application import BEARER_TOKEN_SCHEME, BearerTokenApplication
    from scim2_server.testserver.cli import ThreadingWSGIServer
    from scim2_server.utils import (
        load_default_resource_types,
        load_default_schemas,
        load_default_service_provider_config,
    )

    schemas = load_default_schemas()
    resource_types = load_default_resource_types()
    if trimmed:
        user = schemas["urn:ietf:params:scim:schemas:core:2.0:User"]
        user.attributes = [a for a in user.attributes or [] if a.name in KEPT_USER_ATTRIBUTES]
        del schemas["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]
        resource_types["User"].schema_extensions = None
    config = load_default_service_provider_config()
    config.authentication_schemes = [*(config.authentication_schemes or []),
                                     BEARER_TOKEN_SCHEME]
    provider = ScimProvider.from_discovery(schemas.values(), resource_types.values(),
                                           config=config)
    app = BearerTokenApplication(InMemoryStorage(), provider, service=ScimService(provider),
                                 bearer_tokens=[TOKEN])
    server = make_server("127.0.0.1", 0, wrap(app) if wrap else app,
                         server_class=ThreadingWSGIServer, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v2"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def scim_reference_server() -> Iterator[str]:
    """scim2-server's base URL (…/v2), accepting the bearer token TOKEN."""
    yield from _serve()


@pytest.fixture
def scim_server_with_fewer_attributes() -> Iterator[str]:
    yield from _serve(trimmed=True)


@pytest.fixture
def scim_server_ignoring_attributes() -> Iterator[str]:
    yield from _serve(_without_attribute_selection)


async def test_the_reference_server_passes_with_no_failure(scim_reference_server: str):
    assert await run_scim_conformance(scim_reference_server, TOKEN) == []


async def test_the_checker_covers_discovery_users_groups_and_patch(scim_reference_server: str):
    import asyncio

    results = await asyncio.to_thread(check, scim_reference_server, TOKEN)
    statuses = {result.status.name for result in results}
    assert statuses == {"SUCCESS"}, statuses
    assert {result.resource_type for result in results} >= {"User", "Group"}
    titles = {result.title for result in results}
    assert {"service_provider_config_endpoint", "query_all_resource_types", "query_all_schemas",
            "object_creation", "object_query", "object_replacement", "object_deletion",
            "check_add_attribute", "check_replace_attribute", "check_remove_attribute",
            "search_with_attributes", "random_url"} <= titles, titles
    assert len(results) > 100


async def test_a_server_publishing_only_the_attributes_it_keeps_passes(
        scim_server_with_fewer_attributes: str):
    import asyncio

    assert await run_scim_conformance(scim_server_with_fewer_attributes, TOKEN) == []
    results = await asyncio.to_thread(check, scim_server_with_fewer_attributes, TOKEN,
                                      resource_types=["User"])
    patched = " ".join(r.reason or "" for r in results if r.title == "check_add_attribute")
    assert "'emails'" in patched
    assert "'nickName'" not in patched


async def test_a_server_that_ignores_attribute_selection_fails(
        scim_server_ignoring_attributes: str):
    failures = await run_scim_conformance(scim_server_ignoring_attributes, TOKEN)
    assert failures
    assert all(line.startswith("ERROR ") for line in failures), failures
    assert any("object_query_with_attributes" in line for line in failures), failures
    # POST /.search carries them in its body, which the breakage does not reach
    assert not any("search_with_attributes" in line for line in failures), failures


async def test_a_wrong_token_fails(scim_reference_server: str):
    failures = await run_scim_conformance(scim_reference_server, "not-the-token")
    assert failures
    assert any("401" in line or "nauthorized" in line for line in failures), failures


async def test_a_server_not_running_fails_without_raising():
    reason = checker_missing()
    if reason:
        pytest.skip(f"SCIM checker smoke test skipped: {reason}")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    failures = await run_scim_conformance(f"http://127.0.0.1:{port}/v2", TOKEN, timeout=2)
    assert failures
    assert failures[-1] == "no check passed at all"
