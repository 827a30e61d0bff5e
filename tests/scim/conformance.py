"""The SCIM 2.0 conformance check the suite runs against a live server: scim2-tester
(python-scim), through its own SCIM client over HTTP (httpx2).

What it checks (scim2-tester 0.5): the discovery endpoints (ServiceProviderConfig,
ResourceTypes, Schemas: listed, fetched by id, unknown ids answered 404, methods other than GET
refused), an unknown URL answered with a SCIM error, then for every resource type the server
publishes (Users, Groups): create, get by id, list, `attributes`/`excludedAttributes` on get,
list and POST /.search, replace (PUT), delete, and PATCH add / remove / replace on each
attribute the schema lets a client change (skipped when ServiceProviderConfig says PATCH is not
supported). It does not send `filter=` nor page (`startIndex`/`count`): the gateway's own tests
have to cover `userName eq` and paging.

The checker is synchronous; `run_scim_conformance` runs it in a thread, so a server on the
test's event loop (the gateway's) keeps answering while it runs.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Collection, Iterable
from typing import Any

# Statuses that count as a failure: a MUST broken (ERROR) or a security problem (CRITICAL).
# DEVIATION (a SHOULD not followed) is reported only when asked for.
FAILING = ("ERROR", "CRITICAL")


def checker_missing() -> str | None:
    """Why the checker cannot run here, or None."""
    for module, package in (("scim2_tester", "scim2-tester"), ("httpx2", "scim2-tester[httpx2]")):
        if importlib.util.find_spec(module) is None:
            return f"{package} is not installed (pip install -e '.[test]')"
    return None


def describe(result: Any) -> str:
    """One readable line for a scim2_tester.CheckResult."""
    where = f"[{result.resource_type}] " if result.resource_type else ""
    reason = result.reason or result.description or ""
    return f"{result.status.name} {where}{result.title}: {' '.join(str(reason).split())}"


def check(base_url: str, token: str, *, include_tags: set[str] | None = None,
          exclude_tags: set[str] | None = None, resource_types: list[str] | None = None,
          timeout: float = 10.0) -> list[Any]:
    """Every scim2_tester.CheckResult for the server at `base_url` (the SCIM root, e.g.
    http://127.0.0.1:8080/scim/v2), sending `Authorization: Bearer <token>`. Blocking."""
    import httpx2
    from scim2_client.engines.httpx2 import SyncSCIMClient
    from scim2_tester import check_server

    with httpx2.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"},
                       timeout=timeout, trust_env=False) as http:
        return check_server(SyncSCIMClient(http), raise_exceptions=False,
                            include_tags=include_tags, exclude_tags=exclude_tags,
                            resource_types=resource_types)


def failures(results: Iterable[Any], fail_on: Collection[str] = FAILING) -> list[str]:
    return [describe(result) for result in results if result.status.name in fail_on]


async def run_scim_conformance(base_url: str, token: str, *,
                               fail_on: Collection[str] = FAILING, **options: Any) -> list[str]:
    """The checker's failures against a live server, one readable line each (empty: it passes).
    `options` as for `check`; `fail_on` adds e.g. "DEVIATION" to be stricter."""
    results = await asyncio.to_thread(check, base_url, token, **options)
    if not any(result.status.name == "SUCCESS" for result in results):
        return [*failures(results, fail_on), "no check passed at all"]
    return failures(results, fail_on)
