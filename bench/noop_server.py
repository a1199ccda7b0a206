"""The HTTP ceiling: an aiohttp handler that reads the body and replies, nothing else."""

from __future__ import annotations

import argparse

from aiohttp import web

REPLY = b'{"status":"ok"}'


async def post(request: web.Request) -> web.Response:
    """Read the whole body, then answer with a small JSON object."""
    await request.read()
    return web.Response(body=REPLY, content_type="application/json")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/decisions", post)
    loop = None
    if args.uvloop:
        import uvloop

        loop = uvloop.new_event_loop()
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None, loop=loop)


if __name__ == "__main__":
    main()
