"""The baseline upstream: a minimal Postmark-shaped /email endpoint (what an agent calling
the provider directly would talk to), run as its own process: `python fake_postmark.py PORT`."""

from __future__ import annotations

import itertools
import sys

from aiohttp import web

counter = itertools.count(1)


async def email(request: web.Request) -> web.Response:
    body = await request.json()
    return web.json_response({
        "To": body.get("To"), "SubmittedAt": "2026-06-02T12:00:00Z",
        "MessageID": f"baseline-{next(counter)}", "ErrorCode": 0, "Message": "OK",
    })


if __name__ == "__main__":
    app = web.Application()
    app.router.add_post("/email", email)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
