"""`python -m sandhive.proxy --sandbox ID=ADDRESS ...`: the edge proxy alone, with a fixed sandbox table.

For development and benchmarks, where no control plane runs: the real server wraps the API app and
resolves ids from the store. Requests that are not sandbox traffic get a 404 JSON answer.
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from .access import Route
from .asgi import EdgeProxy


async def no_api(scope: Scope, receive: Receive, send: Send) -> None:
    """Stands in for the REST API."""
    if scope["type"] == "http":
        await JSONResponse({"code": 404, "message": "no API on this server"}, status_code=404)(scope, receive, send)
    elif scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
    elif scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].removeprefix("lifespan.")
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sandhive.proxy", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--domain", default=None, help="only route Host <port>-<id>.<domain> by Host")
    parser.add_argument("--sandbox", action="append", default=[], metavar="ID=ADDRESS",
                        help="a sandbox id and the address its ports are reachable at (repeatable)")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    table = dict(item.split("=", 1) for item in args.sandbox)

    async def resolve(sandbox_id: str) -> Route | None:
        address = table.get(sandbox_id)
        return Route(address) if address is not None else None

    uvicorn.run(EdgeProxy(no_api, resolve, args.domain), host=args.host, port=args.port, log_level=args.log_level,
                access_log=False, lifespan="on", server_header=False, date_header=False, timeout_keep_alive=75)


if __name__ == "__main__":
    main()
