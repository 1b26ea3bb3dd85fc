"""The server on port 49999 inside a code-interpreter sandbox: E2B's contract (wire doc §4) over Jupyter kernels.

    python3 -m sandhive.code_interpreter.server [--port 49999] [--cwd /home/user]

Each context is one kernel process driven through `jupyter_client` (ZeroMQ), started in its own working
directory: ipykernel for `python`, bash_kernel for `bash`, Deno's kernel for `javascript` (`js`) and `typescript`
(`ts`) (`LANGUAGES`; the template installs the specs). The default Python context starts before the server
listens, so `GET /health` answering means a warm kernel (the template's ready check, so a pool hit's first
`run_code` does not wait for one). Other languages' default contexts start on their first use.

- `POST /execute` streams NDJSON (`messages`), one line per IOPub message as it arrives (each write is
  flushed: HTTP/1.1 chunked, nothing buffered). Executions in one context run one at a time, in order.
  A client that disconnects (its `timeout`, a cancelled request) interrupts the kernel: the context keeps
  its state and takes the next execution.
- `env_vars` hold for that execution only: the kernel's environment is set before the code and put back after
  it, in the kernel's own language (`os.environ`, `export`/`unset`, `Deno.env`). The sandbox's own env vars
  (those given at create) come from envd's `/envs`, as E2B's do.
- `X-Access-Token` on `/execute` is checked against the sandbox's envd token (by envd, through `/envs`): 401.
- Errors are plain text: 404 for an unknown context, 400 for a bad request, as E2B's client expects.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import queue
import re
import shlex
import signal
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jupyter_client.manager import AsyncKernelManager
from tornado import httpserver, web
from tornado.iostream import StreamClosedError

from . import PORT
from .messages import END, ExecutionMapper, encode, error_line

log = logging.getLogger("sandhive.code_interpreter")
DEFAULT_CWD = "/home/user"
ENVD_ENVS = "http://127.0.0.1:49983/envs"
POLL = 0.5  # seconds between IOPub waits: how often a dead kernel or a gone client is noticed when idle
LATE_GRACE = 0.1  # seconds of IOPub quiet after `idle` that end an execution on a kernel whose output can trail it

# Run silently around an execution with `env_vars`: set them, then restore what was there.
ENV_SET = """\
import os as __sandhive_os
__sandhive_env_saved = {{k: __sandhive_os.environ.get(k) for k in {keys!r}}}
__sandhive_os.environ.update({values!r})
"""
ENV_RESTORE = """\
for __k, __v in __sandhive_env_saved.items():
    if __v is None:
        __sandhive_os.environ.pop(__k, None)
    else:
        __sandhive_os.environ[__k] = __v
del __sandhive_env_saved, __k, __v
"""


# Run silently in every new (or restarted) Python kernel: a DataFrame also displays as `e2b/data` (its columns as
# lists, as E2B's kernels give it; NaN and infinities, which JSON lacks, as null), registered by name so that
# pandas is imported only by code that uses it.
KERNEL_SETUP = """\
def __sandhive_setup():
    import math

    from IPython import get_ipython
    from IPython.core.formatters import BaseFormatter
    from traitlets import ObjectName, Unicode

    class DataFormatter(BaseFormatter):
        format_type = Unicode("e2b/data")
        print_method = ObjectName("_repr_e2b_data_")
        _return_type = (dict, str)

    shell = get_ipython()
    formatter = DataFormatter(parent=shell.display_formatter)
    def data(frame):
        def plain(value):
            return None if isinstance(value, float) and not math.isfinite(value) else value
        return {str(name): [plain(v) for v in column] for name, column in frame.to_dict(orient="list").items()}

    formatter.for_type_by_name("pandas.core.frame", "DataFrame", data)
    shell.display_formatter.formatters["e2b/data"] = formatter
__sandhive_setup()
del __sandhive_setup
"""


# Run silently in every new (or restarted) Python kernel after KERNEL_SETUP: a matplotlib Figure also displays as
# `e2b/chart` (`charts.figure_chart`: None, so no chart, for a figure it cannot read), next to its PNG in the same
# display_data. The formatter matches the class by name rather than registering it: matplotlib is imported only by
# code that uses it, and the inline backend, when pyplot loads, drops every formatter's registration for Figure.
CHART_SETUP = """\
def __sandhive_charts():
    from IPython import get_ipython
    from IPython.core.formatters import BaseFormatter
    from traitlets import ObjectName, Unicode

    class ChartFormatter(BaseFormatter):
        format_type = Unicode("e2b/chart")
        print_method = ObjectName("_repr_e2b_chart_")
        _return_type = (dict,)

        def __call__(self, obj):
            if not self.enabled:
                return None
            if not any(c.__name__ == "Figure" and c.__module__ == "matplotlib.figure" for c in type(obj).__mro__):
                return None
            try:
                from {module} import figure_chart
                return figure_chart(obj)
            except Exception:
                return None

    shell = get_ipython()
    shell.display_formatter.formatters["e2b/chart"] = ChartFormatter(parent=shell.display_formatter)
__sandhive_charts()
del __sandhive_charts
""".format(module=f"{__package__}.charts")


# Bash: each name saved (set or not, and its value) in a shell variable of ours, then exported; put back after.
BASH_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def bash_env_set(envs: dict[str, str]) -> str:
    return "\n".join(f'__sandhive_had_{k}="${{{k}+1}}"; __sandhive_old_{k}="${{{k}-}}"; export {k}={shlex.quote(v)}'
                     for k, v in envs.items())


def bash_env_restore(envs: dict[str, str]) -> str:
    return "\n".join(f'if [ -n "$__sandhive_had_{k}" ]; then export {k}="$__sandhive_old_{k}"; else unset {k}; fi; '
                     f"unset __sandhive_had_{k} __sandhive_old_{k}" for k in envs)


# Deno (JavaScript, TypeScript): `Deno.env` is the process's environment (`process.env` reads it, children inherit it).
def deno_env_set(envs: dict[str, str]) -> str:
    return (f"globalThis.__sandhiveEnv = Object.fromEntries({json.dumps(sorted(envs))}"
            f".map((k) => [k, Deno.env.get(k) ?? null]));\n"
            f"for (const [k, v] of Object.entries({json.dumps(envs)})) Deno.env.set(k, v);")


def deno_env_restore(envs: dict[str, str]) -> str:
    return ("for (const [k, v] of Object.entries(globalThis.__sandhiveEnv ?? {})) "
            "{ if (v === null) Deno.env.delete(k); else Deno.env.set(k, v); }\n"
            "delete globalThis.__sandhiveEnv;")


def python_env_set(envs: dict[str, str]) -> str:
    return ENV_SET.format(keys=sorted(envs), values=envs)


def python_env_restore(envs: dict[str, str]) -> str:
    return ENV_RESTORE


# Run silently in every new (or restarted) Deno kernel: `require` as Node.js code expects it, resolving from the
# context's cwd (`require("fs")`, or a package `npm install`ed there), next to Deno's own `import`.
DENO_SETUP = """\
globalThis.require = (await import("node:module")).createRequire(Deno.cwd() + "/");
"""


@dataclass(frozen=True)
class Language:
    """How one language's kernel is driven: its kernel spec, the code that sets and restores an execution's env vars
    (the names it can take), the code run silently at each (re)start, and whether its output can trail `idle`."""

    kernel: str
    env_set: Callable[[dict[str, str]], str]
    env_restore: Callable[[dict[str, str]], str]
    env_name: re.Pattern[str] = re.compile(r"^[^=\x00]+$")
    setup: tuple[str, ...] = ()
    late_output: bool = False  # Deno's kernel sometimes publishes a cell's last output just after its `idle`
    quotes: str = "'"  # the quotes of a string's text/plain, taken off as E2B's server does (`'abc'` → `abc`)


LANGUAGES = {
    "python": Language("python3", python_env_set, python_env_restore, setup=(KERNEL_SETUP, CHART_SETUP)),
    "bash": Language("bash", bash_env_set, bash_env_restore, env_name=BASH_NAME),
    "javascript": Language("deno-js", deno_env_set, deno_env_restore, setup=(DENO_SETUP,), late_output=True,
                           quotes="'\""),
    "typescript": Language("deno-ts", deno_env_set, deno_env_restore, setup=(DENO_SETUP,), late_output=True,
                           quotes="'\""),
}
ALIASES = {"python3": "python", "py": "python", "ipython": "python", "js": "javascript", "node": "javascript",
           "nodejs": "javascript", "ts": "typescript", "deno": "typescript", "sh": "bash", "shell": "bash"}


class RequestError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Context:
    id: str
    language: str
    cwd: str
    manager: AsyncKernelManager
    spec: Language
    client: Any = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # The kernel's environment as far as this server set it: the server's own at start, plus the sandbox's env
    # vars once the first execution has settled them (then no execution pays a round trip for them again).
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))

    def describe(self) -> dict[str, str]:
        return {"id": self.id, "language": self.language, "cwd": self.cwd}

    async def start(self) -> None:
        os.makedirs(self.cwd, exist_ok=True)
        await self.manager.start_kernel(cwd=self.cwd)
        await self._ready()

    async def _ready(self) -> None:
        self._connect()
        await self.client.wait_for_ready(timeout=60)
        for code in self.spec.setup:
            await self.run_silently(code)

    def _connect(self) -> None:
        if self.client is not None:
            self.client.stop_channels()
        self.client = self.manager.client()
        self.client.start_channels()

    async def restart(self) -> None:
        await self.manager.restart_kernel(now=True)
        self.env = dict(os.environ)
        await self._ready()

    async def shutdown(self) -> None:
        if self.client is not None:
            self.client.stop_channels()
        await self.manager.shutdown_kernel(now=True)

    async def run_silently(self, code: str) -> None:
        """Run `code` without a trace in the history or the output (kernel setup, env var setup and restore)."""
        msg_id = self.client.execute(code, silent=True, store_history=False, allow_stdin=False)
        while True:
            reply = await self.client.get_shell_msg(timeout=30)
            if reply.get("parent_header", {}).get("msg_id") == msg_id:
                return


class Contexts:
    """Every context of this server; the default one per language is made on first use (python at start)."""

    def __init__(self, default_cwd: str) -> None:
        self.default_cwd = default_cwd
        self.by_id: dict[str, Context] = {}
        self.defaults: dict[str, str] = {}  # language → id of its default context
        self._creating = asyncio.Lock()

    async def create(self, language: str | None, cwd: str | None) -> Context:
        language = normalize_language(language)
        spec = LANGUAGES.get(language)
        if spec is None:
            raise RequestError(400, f"language {language!r} is not supported by this code interpreter "
                                    f"(supported: {', '.join(sorted(LANGUAGES))})")
        context = Context(uuid.uuid4().hex, language, cwd or self.default_cwd,
                          AsyncKernelManager(kernel_name=spec.kernel), spec)
        await context.start()
        self.by_id[context.id] = context
        return context

    async def default(self, language: str | None) -> Context:
        language = normalize_language(language)
        async with self._creating:
            found = self.by_id.get(self.defaults.get(language, ""))
            if found is None:
                found = await self.create(language, None)
                self.defaults[language] = found.id
            return found

    def get(self, context_id: str) -> Context:
        try:
            return self.by_id[context_id]
        except KeyError:
            raise RequestError(404, f"context {context_id!r} not found") from None

    async def remove(self, context_id: str) -> None:
        context = self.get(context_id)
        del self.by_id[context_id]
        self.defaults = {lang: cid for lang, cid in self.defaults.items() if cid != context_id}
        await context.shutdown()

    async def close(self) -> None:
        for context in list(self.by_id.values()):
            await context.shutdown()


def normalize_language(language: str | None) -> str:
    name = (language or "python").strip().lower()
    return ALIASES.get(name, name)


def sandbox_envs(token: str | None) -> dict[str, str]:
    """The sandbox's env vars from envd (`GET /envs`), asked with the caller's `X-Access-Token`: envd's 401
    (a wrong or missing token of a sandbox that has one) is the caller's too. None if envd does not answer
    (a server run outside a sandbox)."""
    request = urllib.request.Request(ENVD_ENVS, headers={"X-Access-Token": token} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            data = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            raise RequestError(401, "unauthorized access, please provide a valid access token") from None
        return {}
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


class Handler(web.RequestHandler):
    contexts: Contexts

    def initialize(self, contexts: Contexts) -> None:
        self.contexts = contexts

    def check_xsrf_cookie(self) -> None:  # an API, not forms
        return

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(exc.message if isinstance(exc, RequestError) else self._reason)

    def json_body(self) -> dict[str, Any]:
        if not self.request.body:
            return {}
        try:
            body = json.loads(self.request.body)
        except ValueError:
            raise RequestError(400, "the request body is not JSON") from None
        if not isinstance(body, dict):
            raise RequestError(400, "the request body must be a JSON object")
        return body

    def send_json(self, value: Any) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(value))

    async def _guard(self, work: Any) -> None:
        try:
            await work
        except RequestError as exc:
            self.set_status(exc.status)
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.finish(exc.message)


class HealthHandler(Handler):
    def get(self) -> None:
        self.send_json("OK")


class ContextsHandler(Handler):
    async def get(self) -> None:
        self.send_json([c.describe() for c in self.contexts.by_id.values()])

    async def post(self) -> None:
        async def create() -> None:
            body = self.json_body()
            context = await self.contexts.create(body.get("language"), body.get("cwd"))
            self.send_json(context.describe())
        await self._guard(create())


class ContextHandler(Handler):
    async def delete(self, context_id: str) -> None:
        async def remove() -> None:
            await self.contexts.remove(context_id)
            self.set_status(204)
            self.finish()
        await self._guard(remove())


class RestartHandler(Handler):
    async def post(self, context_id: str) -> None:
        async def restart() -> None:
            context = self.contexts.get(context_id)
            async with context.lock:
                await context.restart()
            self.set_status(204)
            self.finish()
        await self._guard(restart())


class ExecuteHandler(Handler):
    """`POST /execute`: the NDJSON stream of one execution."""

    def initialize(self, contexts: Contexts) -> None:
        super().initialize(contexts)
        self.gone = asyncio.Event()

    def on_connection_close(self) -> None:
        self.gone.set()

    async def post(self) -> None:
        await self._guard(self._run())

    async def _run(self) -> None:
        body = self.json_body()
        code = body.get("code")
        if not isinstance(code, str):
            raise RequestError(400, "`code` (a string) is required")
        context_id, language = body.get("context_id"), body.get("language")
        if context_id and language:
            raise RequestError(400, "context_id and language are mutually exclusive")
        context = self.contexts.get(context_id) if context_id else await self.contexts.default(language)
        env_vars = body.get("env_vars") or {}
        if not isinstance(env_vars, dict):
            raise RequestError(400, "`env_vars` must be an object of strings")
        token = self.request.headers.get("X-Access-Token")
        sandbox = await asyncio.to_thread(sandbox_envs, token)
        self.set_header("Content-Type", "application/x-ndjson")
        self.set_header("Cache-Control", "no-cache")
        async with context.lock:
            if self.gone.is_set():
                return
            # A name the language cannot set is left out. The sandbox's own env vars are set once per kernel and
            # kept; the execution's are set for it alone and put back after it.
            settle = {k: v for k, v in sandbox.items() if context.env.get(k) != v and context.spec.env_name.match(k)}
            if settle:
                await context.run_silently(context.spec.env_set(settle))
                context.env.update(settle)
            envs = {k: v for k, v in ((str(k), str(v)) for k, v in env_vars.items())
                    if context.env.get(k) != v and context.spec.env_name.match(k)}
            if envs:
                await context.run_silently(context.spec.env_set(envs))
            try:
                await self._stream(context, code)
            finally:
                if envs:
                    await context.run_silently(context.spec.env_restore(envs))

    async def _send(self, line: dict[str, Any]) -> bool:
        if self.gone.is_set():
            return False
        try:
            self.write(encode(line))
            await self.flush()
        except StreamClosedError:
            self.gone.set()
            return False
        return True

    async def _stream(self, context: Context, code: str) -> None:
        client = context.client
        msg_id = client.execute(code, silent=False, store_history=True, allow_stdin=False)
        late = context.spec.late_output
        mapper = ExecutionMapper(msg_id, hold_end=late, quotes=context.spec.quotes)
        while not mapper.done:
            if self.gone.is_set():
                await self._interrupt(context, mapper)
                return
            try:
                message = await client.get_iopub_msg(timeout=POLL)
            except queue.Empty:
                if not await context.manager.is_alive():
                    await self._send(error_line("DeadKernelError", "the kernel died during the execution (out of "
                                                "memory, or the process exited); it was restarted", ""))
                    await context.restart()
                    await self._send(END)
                    return
                continue
            for line in mapper.feed(message):
                if not await self._send(line):
                    break
        if late:  # output that trails `idle`: taken until the kernel has been quiet for LATE_GRACE
            while not self.gone.is_set():
                try:
                    message = await client.get_iopub_msg(timeout=LATE_GRACE)
                except queue.Empty:
                    break
                for line in mapper.feed(message):
                    await self._send(line)
            await self._send(END)
        await drain_shell(client)
        self.finish()

    async def _interrupt(self, context: Context, mapper: ExecutionMapper) -> None:
        """The client went away mid-execution: interrupt the kernel and drain its messages of this execution,
        so that the next execution in the context starts clean."""
        log.info("client gone: interrupting execution %s", mapper.msg_id)
        await context.manager.interrupt_kernel()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not mapper.done and loop.time() < deadline:
            try:
                mapper.feed(await context.client.get_iopub_msg(timeout=POLL))
            except queue.Empty:
                if not await context.manager.is_alive():
                    await context.restart()
                    return
        if not mapper.done:  # the code ignored the interrupt (e.g. caught KeyboardInterrupt in a loop)
            log.warning("execution %s ignored the interrupt: restarting its kernel", mapper.msg_id)
            await context.restart()


async def drain_shell(client: Any) -> None:
    """Drop the shell channel's replies the execution left (IOPub carried everything the client gets), so they
    do not pile up over a context's life."""
    while True:
        try:
            await client.get_shell_msg(timeout=0)
        except queue.Empty:
            return


def make_app(contexts: Contexts) -> web.Application:
    args = {"contexts": contexts}
    return web.Application([
        (r"/health", HealthHandler, args),
        (r"/execute", ExecuteHandler, args),
        (r"/contexts", ContextsHandler, args),
        (r"/contexts/([^/]+)/restart", RestartHandler, args),
        (r"/contexts/([^/]+)", ContextHandler, args),
    ])


async def serve(port: int, cwd: str) -> None:
    contexts = Contexts(cwd)
    await contexts.default("python")  # warm: /health answers once a kernel is ready
    server = httpserver.HTTPServer(make_app(contexts), idle_connection_timeout=640, body_timeout=640)
    server.listen(port, "0.0.0.0")
    log.info("code interpreter listening on :%d", port)
    # SIGTERM (a sandbox stop, a template's ready check giving up) must shut the kernels down too: without a
    # handler the process dies at once and its kernels live on, orphaned, holding memory and ports.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        server.stop()
        log.info("stopping: shutting down %d kernel(s)", len(contexts.by_id))
        await contexts.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python3 -m sandhive.code_interpreter.server")
    parser.add_argument("--port", type=int, default=PORT)
    parser.add_argument("--cwd", default=os.environ.get("HOME") or DEFAULT_CWD)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(serve(args.port, args.cwd))


if __name__ == "__main__":
    main()
