"""What happens in a new sandbox before anyone gets it: defaults, CA bundle, start command, ready check.

Right after the runtime started it, the node gives envd a first `/init` without a token: the template's
defaults (user, workdir, env) and the host's CA bundle, which are the same for every sandbox of the
template. The owner's `/init` at hand-over then carries only what is theirs (id, token, env vars,
clock), so a pool hit is one small round trip.

The template's start command (e.g. a web server or a Jupyter kernel) runs in the background as the
template's default user, in its default workdir, with the template's environment; the sandbox is ready
once the ready command exits 0 (or, without one, once the start command has started). In a warm pool
this happens at fill time, so a pool hit hands out a sandbox whose start command already runs. All of
it happens while envd is still open to the host alone (the sandbox is in no routing table yet), so the
start command never sees the identity of the user who later gets the sandbox (their env vars, id or
token), exactly as with E2B, whose start command runs when the template is snapshotted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import httpx

from ..errors import NodeError
from . import envd_client
from .envd_client import Command
from .runtime import SandboxHandle, TemplateImage

START_TAG = "start_cmd"  # commands.list() shows the start command with this tag


@dataclass(frozen=True)
class ReadyPolicy:
    deadline: float = 60.0  # seconds from the start command's start until the ready command must pass
    first_interval: float = 0.1  # the first retries are quick (most servers bind within a second) ...
    max_interval: float = 0.5  # ... then back off to this
    check_timeout: float = 10.0  # one ready command may take this long


class StartCommandFailed(NodeError):
    """The template's start command failed or the sandbox never became ready. The template is the user's, so
    is the output the message carries (it comes from inside their sandbox): they fix the template."""

    def __init__(self, message: str) -> None:
        super().__init__(500, message + ": fix the template's start or ready command and build it again",
                         "template_start_failed")


def pre_init_body(sandbox_id: str, template: TemplateImage, ca_bundle: str | None) -> dict:
    """The first `/init`: the template's defaults and the CA bundle, no token and no user env vars."""
    body: dict = {"sandboxId": sandbox_id, "templateId": template.template_id, "envVars": dict(template.env),
                  "defaultUser": template.default_user, "defaultWorkdir": template.default_workdir}
    if ca_bundle:
        body["caBundle"] = ca_bundle
    return body


async def prepare(http: httpx.AsyncClient, handle: SandboxHandle, template: TemplateImage, ca_bundle: str | None,
                  policy: ReadyPolicy = ReadyPolicy(), warm_up: bool = False) -> None:
    """Everything a new sandbox needs before its owner's `/init`: the template's defaults and the host's CA
    bundle (a first `/init` without a token), the start command running and ready, and with `warm_up` one
    throw-away command, so that the owner's first command does not pay for cold caches (a pool fill)."""
    url = handle.envd_url
    await envd_client.init(http, url, pre_init_body(handle.sandbox_id, template, ca_bundle))
    if template.start_cmd:
        await run_start_command(http, handle, template, policy)
    if warm_up:
        await envd_client.run(http, url, Command("true", template.default_user, template.default_workdir,
                                                 dict(template.env)), policy.check_timeout)


async def run_start_command(http: httpx.AsyncClient, handle: SandboxHandle, template: TemplateImage,
                            policy: ReadyPolicy = ReadyPolicy()) -> None:
    """Start `template.start_cmd` and wait until `template.ready_cmd` passes. Raises StartCommandFailed."""
    if not template.start_cmd:
        return
    url = handle.envd_url

    def command(line: str, tag: str | None = None) -> Command:
        return Command(line, template.default_user, template.default_workdir, dict(template.env), tag)

    started: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    follower = asyncio.create_task(envd_client.run(http, url, command(template.start_cmd, START_TAG), None,
                                                   started=started))
    try:
        either: set[asyncio.Future[Any]] = {started, follower}
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if not started.done():
            code, output = follower.result()  # raises what broke the stream
            raise StartCommandFailed(f"template {template.template_id}: the start command `{template.start_cmd}` "
                                     f"did not start (exit {code}): {output.strip()}")
        if template.ready_cmd:
            await _wait_ready(http, url, template, command(template.ready_cmd), follower, policy)
    finally:
        follower.cancel()  # closes the stream; the start command keeps running
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await follower


async def _wait_ready(http: httpx.AsyncClient, url: str, template: TemplateImage, ready: Command,
                      follower: asyncio.Task[tuple[int, str]], policy: ReadyPolicy) -> None:
    deadline = time.monotonic() + policy.deadline
    interval = policy.first_interval
    code, output = -1, ""
    while True:
        if follower.done() and not follower.cancelled() and follower.exception() is None:
            start_code, start_output = follower.result()
            if start_code != 0:  # a start command that exits 0 may have daemonised: keep checking
                raise StartCommandFailed(
                    f"template {template.template_id}: the start command `{template.start_cmd}` exited with "
                    f"code {start_code} before the ready command `{template.ready_cmd}` passed: "
                    f"{start_output.strip()}")
        remaining = deadline - time.monotonic()
        code, output = await envd_client.run(http, url, ready, min(policy.check_timeout, max(remaining, 0.1)))
        if code == 0:
            return
        if time.monotonic() + interval > deadline:
            break
        await asyncio.sleep(interval)
        interval = min(policy.max_interval, interval * 1.5)
    raise StartCommandFailed(
        f"template {template.template_id}: the ready command `{template.ready_cmd}` did not pass within "
        f"{policy.deadline:g} s of the start command `{template.start_cmd}` (last exit {code}"
        + (f": {output.strip()}" if output.strip() else "") + ")")
