"""`CodeInterpreter` and `AsyncCodeInterpreter`: a sandbox from `code-interpreter-v1` that runs code in Jupyter
kernels, as E2B's `e2b_code_interpreter.Sandbox` does.

    from sandhive import CodeInterpreter

    with CodeInterpreter.create() as sbx:
        print(sbx.run_code("1+1").text)  # 2

They are `Sandbox` and `AsyncSandbox` (commands, files, lifecycle) with another default template and the
code calls. Requests and the NDJSON reader live in `code_calls` (shared); the two faces only send and read.
"""

from __future__ import annotations

import contextlib

from . import code_calls as calls
from . import readers
from .code_calls import Callback, Handlers
from .code_models import Context, Execution
from .exceptions import TimeoutException
from .sandbox import AsyncSandbox, Sandbox


class CodeInterpreter(Sandbox):
    """A code-interpreter sandbox (blocking): `CodeInterpreter.create()` starts one from `code-interpreter-v1`,
    `CodeInterpreter.connect(id)` attaches to a running one."""

    default_template = calls.TEMPLATE

    def run_code(self, code: str, language: str | None = None, context: Context | str | None = None,
                 on_stdout: Callback | None = None, on_stderr: Callback | None = None,
                 on_result: Callback | None = None, on_error: Callback | None = None,
                 envs: dict[str, str] | None = None, timeout: float | None = None,
                 request_timeout: float | None = None) -> Execution:
        """Run `code` in the default context of `language` (default Python) or in `context`, and wait for it.

        Callbacks fire as the output arrives: `on_stdout`/`on_stderr` get an `OutputMessage`, `on_result` a
        `Result`, `on_error` the `ExecutionError`. A failing cell is not an exception: its error is
        `execution.error`. `envs` hold for this execution only. `timeout` (seconds, default 300, 0 for none)
        bounds the execution: past it, the kernel is interrupted and `TimeoutException` raised;
        `request_timeout` bounds the connect.
        """
        call, reader = calls.execute(self._ref, code, language=language, context=context, envs=envs,
                                     timeout=timeout, request_timeout=request_timeout,
                                     handlers=Handlers(on_stdout, on_stderr, on_result, on_error))
        try:
            chunks = self._io.download(call)
            with contextlib.closing(chunks):  # leaving early (a timeout, a callback's error) disconnects
                for chunk in chunks:
                    for callback, arg in reader.feed(chunk):
                        callback(arg)
                    reader.check_deadline()
        except TimeoutException as exc:
            raise reader.timed_out(exc) from None
        execution, last = reader.finish()
        for callback, arg in last:
            callback(arg)
        return execution

    def create_code_context(self, cwd: str | None = None, language: str | None = None,
                            request_timeout: float | None = None) -> Context:
        """A new context (its own kernel) in `cwd` (default /home/user; made if missing) for `language`."""
        return self._io.call(calls.create_context(self._ref, cwd, language, timeout=self._t(request_timeout)))

    def list_code_contexts(self, request_timeout: float | None = None) -> list[Context]:
        return self._io.call(calls.list_contexts(self._ref, timeout=self._t(request_timeout)))

    def restart_code_context(self, context: Context | str, request_timeout: float | None = None) -> None:
        """Restart the context's kernel: its state is gone, its cwd and language stay."""
        self._io.call(calls.restart_context(self._ref, context, timeout=self._t(request_timeout)))

    def remove_code_context(self, context: Context | str, request_timeout: float | None = None) -> None:
        self._io.call(calls.remove_context(self._ref, context, timeout=self._t(request_timeout)))

    def _t(self, request_timeout: float | None) -> float | None:
        return self._ref.config.timeout(request_timeout)


class AsyncCodeInterpreter(AsyncSandbox):
    """A code-interpreter sandbox (asyncio): `await AsyncCodeInterpreter.create()`. Callbacks may be coroutine
    functions; they are awaited in order, as the output arrives."""

    default_template = calls.TEMPLATE

    async def run_code(self, code: str, language: str | None = None, context: Context | str | None = None,
                       on_stdout: Callback | None = None, on_stderr: Callback | None = None,
                       on_result: Callback | None = None, on_error: Callback | None = None,
                       envs: dict[str, str] | None = None, timeout: float | None = None,
                       request_timeout: float | None = None) -> Execution:
        """As `CodeInterpreter.run_code`. Cancelling the task disconnects, which interrupts the kernel."""
        call, reader = calls.execute(self._ref, code, language=language, context=context, envs=envs,
                                     timeout=timeout, request_timeout=request_timeout,
                                     handlers=Handlers(on_stdout, on_stderr, on_result, on_error))
        try:
            chunks = await self._io.download(call)
            async with contextlib.aclosing(chunks):
                async for chunk in chunks:
                    for callback, arg in reader.feed(chunk):
                        await readers.call(callback, arg)
                    reader.check_deadline()
        except TimeoutException as exc:
            raise reader.timed_out(exc) from None
        execution, last = reader.finish()
        for callback, arg in last:
            await readers.call(callback, arg)
        return execution

    async def create_code_context(self, cwd: str | None = None, language: str | None = None,
                                  request_timeout: float | None = None) -> Context:
        return await self._io.call(calls.create_context(self._ref, cwd, language, timeout=self._t(request_timeout)))

    async def list_code_contexts(self, request_timeout: float | None = None) -> list[Context]:
        return await self._io.call(calls.list_contexts(self._ref, timeout=self._t(request_timeout)))

    async def restart_code_context(self, context: Context | str, request_timeout: float | None = None) -> None:
        await self._io.call(calls.restart_context(self._ref, context, timeout=self._t(request_timeout)))

    async def remove_code_context(self, context: Context | str, request_timeout: float | None = None) -> None:
        await self._io.call(calls.remove_context(self._ref, context, timeout=self._t(request_timeout)))

    def _t(self, request_timeout: float | None) -> float | None:
        return self._ref.config.timeout(request_timeout)


__all__ = ["AsyncCodeInterpreter", "CodeInterpreter"]
