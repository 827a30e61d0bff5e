"""The baseline upstream for texts: a minimal Twilio `Messages.json` (what an agent calling
Twilio directly would talk to), run as its own process: `python fake_twilio.py PORT`.

`GET /stats` answers how many messages it has created, so the benchmark can check that the
gateway really forwarded what it answered 201 for.
"""

from __future__ import annotations

import itertools
import sys

from aiohttp import web

created = itertools.count(1)
stats = {"created": 0}


async def create(request: web.Request) -> web.Response:
    form = await request.post()
    if not request.headers.get("Authorization", "").startswith("Basic "):
        return web.json_response({"code": 20003, "message": "Authenticate", "status": 401},
                                 status=401)
    number = next(created)
    stats["created"] = number
    return web.json_response(
        {"sid": f"SM{number:032x}", "status": "queued", "to": form.get("To"),
         "from": form.get("From"), "body": form.get("Body"), "num_segments": "1"},
        status=201,
    )


async def count(request: web.Request) -> web.Response:
    return web.json_response(stats)


if __name__ == "__main__":
    app = web.Application()
    app.router.add_post("/2010-04-01/Accounts/{sid}/{resource}", create)
    app.router.add_get("/stats", count)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
