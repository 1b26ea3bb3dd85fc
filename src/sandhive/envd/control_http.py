"""`/health`, `/init`, `/envs` and `/metrics`: envd's small HTTP routes besides `/files`."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import os
import time
from datetime import datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from . import ENVD_VERSION
from .auth import ACCESS_TOKEN_HEADER, UNAUTHORIZED_MESSAGE
from .entropy import reseed
from .metrics import CpuSampler, snapshot
from .state import SandboxState
from .users import UnknownUserError, lookup

RUN_DIR = "/run/e2b"  # where E2B's envd leaves the sandbox's identity for scripts to read
CA_BUNDLE_PATH = "/etc/ssl/certs/sandhive-ca-bundle.pem"
CLOCK_TOLERANCE = 1.0  # seconds of drift accepted before envd sets the clock


# `health` and `envs` do no I/O, so they are coroutines: Starlette runs a plain `def` endpoint in a worker
# thread through anyio, and the first such call imports anyio's asyncio backend and starts that thread
# (~12 ms on the host, ~40 ms under gVisor). `/health` is what the node polls while a sandbox starts, so
# that cost would sit on every pool miss.
async def health(_: Request) -> Response:
    return Response(status_code=204, headers={"X-Envd-Version": ENVD_VERSION})


async def envs(_: Request, state: SandboxState) -> Response:
    return JSONResponse(state.env_vars)


async def metrics(_: Request, sampler: CpuSampler) -> Response:
    return JSONResponse(await asyncio.to_thread(snapshot, sampler))


def _bad(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"code": status, "message": message}, status_code=status)


async def init(request: Request, state: SandboxState, set_clock: bool = False) -> Response:
    """Give this envd its sandbox's identity. Once a token is set, only its holder may re-init."""
    if not state.token_ok(request.headers.get(ACCESS_TOKEN_HEADER)):
        return _bad(UNAUTHORIZED_MESSAGE, 401)
    try:
        body = await request.json() if await request.body() else {}
    except ValueError:
        return _bad("the /init body must be JSON")
    if not isinstance(body, dict):
        return _bad("the /init body must be a JSON object")
    env_vars = body.get("envVars") or {}
    if not isinstance(env_vars, dict) or not all(isinstance(v, str) for v in env_vars.values()):
        return _bad("envVars must be an object of strings")
    user = body.get("defaultUser")
    if user:
        try:
            lookup(user)
        except UnknownUserError:
            return _bad(f"defaultUser '{user}' does not exist in the sandbox")
    state.env_vars = {str(k): v for k, v in env_vars.items()}
    if body.get("accessToken"):
        state.access_token = str(body["accessToken"])
    state.default_user = user or state.default_user
    state.default_workdir = body.get("defaultWorkdir") or state.default_workdir
    state.sandbox_id = body.get("sandboxId") or state.sandbox_id
    state.template_id = body.get("templateId") or state.template_id
    if body.get("caBundle") or body.get("entropy"):
        await asyncio.to_thread(_apply_host_facts, body, state, set_clock)
    else:  # a few bytes into /run/e2b: cheaper than a thread hop, which a warm-pool hand-over would wait for
        _apply_host_facts(body, state, set_clock)
    return Response(status_code=204)


def _apply_host_facts(body: dict, state: SandboxState, set_clock: bool) -> None:
    """Best-effort side effects of /init: clock, entropy, CA bundle and identity files.

    The clock is only set when envd owns it (`--set-clock`, in a microVM guest): in a container the
    realtime clock is the host's, and a sandbox must never move it.
    """
    stamp = body.get("timestamp")
    if set_clock and isinstance(stamp, str):
        with contextlib.suppress(ValueError, OSError, PermissionError):
            wanted = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
            if abs(wanted - time.time()) > CLOCK_TOLERANCE:
                time.clock_settime(time.CLOCK_REALTIME, wanted)
    entropy = body.get("entropy")
    if isinstance(entropy, str):
        with contextlib.suppress(binascii.Error, ValueError, OSError):
            reseed(base64.b64decode(entropy, validate=True))  # a cloned VM's RNG must not repeat its twin's
    bundle = body.get("caBundle")
    if isinstance(bundle, str) and bundle.strip():
        with contextlib.suppress(OSError):
            os.makedirs(os.path.dirname(CA_BUNDLE_PATH), exist_ok=True)
            with open(CA_BUNDLE_PATH, "w") as f:
                f.write(bundle)
            state.ca_bundle_path = CA_BUNDLE_PATH
    with contextlib.suppress(OSError):
        os.makedirs(RUN_DIR, exist_ok=True)
        for name, value in (("E2B_SANDBOX_ID", state.sandbox_id), ("E2B_TEMPLATE_ID", state.template_id),
                            ("E2B_SANDBOX", "true")):
            if value:
                with open(os.path.join(RUN_DIR, f".{name}"), "w") as f:
                    f.write(value)
