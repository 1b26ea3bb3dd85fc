"""The few envd calls the node makes itself: `/init`, and running a command through `process.Process/Start`.

The node starts a template's start command and polls its ready command before a sandbox is handed out,
so it speaks envd's Connect protocol directly (JSON codec, server streaming over HTTP/1.1) with its own
httpx client rather than depending on an SDK: it needs four message shapes, not a client library.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx

from .errors import BackendError

START_PATH = "/process.Process/Start"
END_STREAM = 0x02
OUTPUT_TAIL = 2000  # characters of a command's output kept for error messages


class EnvdError(BackendError):
    """envd refused or broke a call; the message says which and why (internal: envd is ours, not the user's)."""


@dataclass(frozen=True)
class Command:
    """A shell command line run the way E2B runs commands: `/bin/bash -l -c LINE` as `user` in `cwd`."""

    line: str
    user: str
    cwd: str
    envs: dict[str, str]
    tag: str | None = None

    def request(self) -> dict:
        body: dict = {"process": {"cmd": "/bin/bash", "args": ["-l", "-c", self.line], "envs": self.envs,
                                  "cwd": self.cwd}, "stdin": False}
        if self.tag:
            body["tag"] = self.tag
        return body


TOKEN_HEADER = "X-Access-Token"


def _headers(user: str, token: str | None = None) -> dict[str, str]:
    auth = base64.b64encode(f"{user}:".encode()).decode()
    headers = {"Content-Type": "application/connect+json", "Connect-Protocol-Version": "1",
               "Authorization": f"Basic {auth}"}
    if token:
        headers[TOKEN_HEADER] = token
    return headers


def _envelope(message: dict) -> bytes:
    payload = json.dumps(message).encode()
    return struct.pack(">BI", 0, len(payload)) + payload


async def _messages(response: httpx.Response) -> AsyncIterator[dict]:
    """The stream's messages; raises `EnvdError` for an error in the end-of-stream frame."""
    buffer = b""
    async for chunk in response.aiter_bytes():
        buffer += chunk
        while len(buffer) >= 5:
            flags, size = struct.unpack(">BI", buffer[:5])
            if len(buffer) < 5 + size:
                break
            payload, buffer = buffer[5:5 + size], buffer[5 + size:]
            message = json.loads(payload) if payload else {}
            if flags & END_STREAM:
                error = message.get("error")
                if error:
                    raise EnvdError(f"envd: {error.get('code', 'unknown')}: {error.get('message', '')}")
                return
            yield message


class _Tail:
    """The last `OUTPUT_TAIL` characters of a command's output (a start command may print for hours)."""

    def __init__(self) -> None:
        self.text = ""

    def add(self, data: str) -> None:
        self.text = (self.text + data)[-OUTPUT_TAIL:]


async def run(http: httpx.AsyncClient, envd_url: str, command: Command, timeout: float | None,
              started: asyncio.Future[int] | None = None, token: str | None = None) -> tuple[int, str]:
    """Run `command` to its end: (exit code, the tail of its stdout+stderr); -1 when it was killed or timed out.
    `token`: envd's access token, once it has one.

    `started` gets the pid as soon as envd reports the start. Cancelling the call closes the stream and
    leaves the process running (envd keeps processes whose clients went away).
    """
    tail = _Tail()

    async def follow() -> int:
        async with http.stream("POST", envd_url + START_PATH, content=_envelope(command.request()),
                               headers=_headers(command.user, token),
                               timeout=httpx.Timeout(10.0, read=None)) as response:
            if response.status_code != 200:
                raise EnvdError(f"envd refused to run `{command.line}`: {response.status_code} "
                                f"{(await response.aread()).decode(errors='replace')[:500]}")
            async for message in _messages(response):
                event = message.get("event", {})
                if "start" in event and started is not None and not started.done():
                    started.set_result(int(event["start"].get("pid", 0)))
                data = event.get("data")
                if data:
                    for stream in ("stdout", "stderr", "pty"):
                        if stream in data:
                            tail.add(base64.b64decode(data[stream]).decode(errors="replace"))
                end = event.get("end")
                if end is not None:
                    return int(end.get("exitCode", 0)) if end.get("exited", True) else -1
        raise EnvdError(f"envd ended the stream of `{command.line}` without an exit status")

    try:
        code = await asyncio.wait_for(follow(), timeout)
    except TimeoutError:
        code = -1
        tail.add(f"\n(no exit within {timeout:g} s)")
    return code, tail.text


async def init(http: httpx.AsyncClient, envd_url: str, body: dict, attempts: int = 50,
               token: str | None = None) -> None:
    """POST /init. envd answers /health before it takes /init, so the first attempt normally succeeds;
    the retries cover a backend whose port forwarding lags its health check. `token`: the one envd already
    holds (a resumed or restored sandbox's), which it asks of any later /init."""
    last: Exception | None = None
    headers = {TOKEN_HEADER: token} if token else None
    for _ in range(attempts):
        try:
            r = await http.post(f"{envd_url}/init", json=body, headers=headers)
        except httpx.TransportError as exc:
            last = exc
            await asyncio.sleep(0.02)
            continue
        if r.status_code == 204:
            return
        raise EnvdError(f"envd refused /init: {r.status_code} {r.text}")
    raise EnvdError(f"envd did not answer /init: {last}")
