"""The browser terminal: a WebSocket on the dashboard bridged to a PTY on the sandbox's envd.

The browser sends JSON text frames, `{"type": "input", "data": "..."}` and `{"type": "resize", "cols": C,
"rows": R}`; the terminal's output comes back as binary frames. The handshake must come from a page of this
server (its Origin is this host) and carry the session's CSRF token: a WebSocket is not bound by the same-origin
policy, so without these another site could open a shell with the viewer's cookie (cross-site WebSocket
hijacking). The shell is killed when the socket closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import TYPE_CHECKING

from fastapi import WebSocket, WebSocketDisconnect

from ...errors import UserError
from ...node.envd_client import EnvdError
from .access import LoginRequired, check_csrf, check_origin, viewer

if TYPE_CHECKING:
    from .routes import Dashboard

log = logging.getLogger(__name__)
MAX_SIZE = 1000  # columns or rows a resize may ask for
POLICY_VIOLATION = 1008


def _size(value: object, default: int) -> int:
    return max(1, min(MAX_SIZE, value)) if isinstance(value, int) else default


def _number(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() and len(text) < 6 else None


async def bridge(websocket: WebSocket, board: Dashboard, sandbox_id: str) -> None:
    try:
        check_origin(websocket, required=True)
        seen = await viewer(websocket, board.sessions)
        check_csrf(seen.session, websocket.query_params.get("csrf"))
        envd = await board.envd(seen, sandbox_id)
    except (LoginRequired, UserError):
        await websocket.close(code=POLICY_VIOLATION)
        return
    await websocket.accept()
    cols = _size(_number(websocket.query_params.get("cols")), 80)
    rows = _size(_number(websocket.query_params.get("rows")), 24)
    pid: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    opened = time.monotonic()

    async def output() -> None:
        async for kind, value in envd.pty(cols, rows):
            if kind == "start" and not pid.done():
                pid.set_result(int(value))
                board.service.audit.record(seen.team, "pty.start", sandbox_id=sandbox_id, target="terminal",
                                           detail={"pid": int(value), "via": "dashboard"})
            elif kind == "data":
                await websocket.send_bytes(value)  # type: ignore[arg-type]
            elif kind == "end":
                break

    pump = asyncio.create_task(output())
    try:
        while True:
            receive = asyncio.create_task(websocket.receive_text())
            done, _ = await asyncio.wait({receive, pump}, return_when=asyncio.FIRST_COMPLETED)
            if pump in done:
                receive.cancel()
                break
            message = json.loads(receive.result())
            if not isinstance(message, dict):
                continue
            shell = await asyncio.wait_for(asyncio.shield(pid), 30)
            if message.get("type") == "input" and isinstance(message.get("data"), str):
                await envd.pty_input(shell, message["data"].encode())
            elif message.get("type") == "resize":
                await envd.pty_resize(shell, _size(message.get("cols"), cols), _size(message.get("rows"), rows))
    except (WebSocketDisconnect, json.JSONDecodeError, EnvdError, TimeoutError, RuntimeError):
        pass
    finally:
        pump.cancel()
        with contextlib.suppress(BaseException):
            await pump
        if pid.done() and not pid.cancelled():
            board.service.audit.record(seen.team, "pty.end", sandbox_id=sandbox_id, target="terminal",
                                       detail={"pid": pid.result(), "via": "dashboard",
                                               "durationMs": round((time.monotonic() - opened) * 1000, 1)})
            with contextlib.suppress(Exception):
                await envd.kill(pid.result())
        with contextlib.suppress(Exception):
            await websocket.close()
