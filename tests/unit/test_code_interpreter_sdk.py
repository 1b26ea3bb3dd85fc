"""Sandhive's SDK code interpreter without a server: the NDJSON reader (lines split anywhere, callbacks in order,
results mapped), and both faces against `httpx.MockTransport` standing in for the proxy and the port-49999
server (what they send, that callbacks fire while the body still streams, timeouts and error answers)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from sandhive.sdk import AsyncCodeInterpreter, CodeInterpreter, Context, OutputMessage, Result
from sandhive.sdk.code_calls import ExecutionReader, Handlers, NdjsonLines
from sandhive.sdk.config import ConnectionConfig
from sandhive.sdk.exceptions import (
    InvalidArgumentException,
    NotFoundException,
    SandboxException,
    TimeoutException,
)
from sandhive.sdk.ref import SandboxRef
from sandhive.sdk.transport import AsyncTransport, SyncTransport

SID = "iabcdefghij0123456789"
TOKEN = "envd-token-123"
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()


def line(**fields: Any) -> bytes:
    return json.dumps(fields).encode() + b"\n"


STREAM = [
    line(type="number_of_executions", execution_count=3),
    line(type="stdout", text="hello\n", timestamp="2026-12-06T10:00:00.123456+00:00"),
    line(type="stderr", text="careful\n", timestamp="2026-12-06T10:00:01+00:00"),
    line(type="result", png=PNG, chart={"type": "line", "title": "t", "elements": []}, is_main_result=False),
    line(type="result", text="2", html="<b>2</b>", data={"a": [1]}, is_main_result=True,
         extra={"application/x-custom": {"k": 1}}, future_key="ignored"),
    line(type="error", name="ZeroDivisionError", value="division by zero", traceback="Traceback...\n1/0"),
    line(type="some_new_type", anything=1),
    line(type="end_of_execution"),
]


# ---- the reader ---------------------------------------------------------------------------------------------

def test_lines_split_anywhere_come_out_whole() -> None:
    body = b"".join(STREAM)
    for size in (1, 3, 7, 64, len(body)):
        lines, got = NdjsonLines(), []
        for i in range(0, len(body), size):
            got += lines.feed(body[i:i + size])
        assert got == [s.rstrip(b"\n") for s in STREAM] and lines.rest() == b""
    lines = NdjsonLines()
    assert lines.feed(b'\n\n{"a":1}\n{"b"') == [b'{"a":1}'] and lines.rest() == b'{"b"'


def test_the_reader_builds_the_execution_and_asks_for_callbacks_in_order() -> None:
    seen: list[tuple[str, Any]] = []
    handlers = Handlers(on_stdout=lambda m: seen.append(("out", m)), on_stderr=lambda m: seen.append(("err", m)),
                        on_result=lambda r: seen.append(("result", r)), on_error=lambda e: seen.append(("error", e)))
    reader = ExecutionReader(handlers, 300)
    for chunk in STREAM:
        for callback, arg in reader.feed(chunk):
            callback(arg)
    execution, last = reader.finish()
    assert last == []
    assert [kind for kind, _ in seen] == ["out", "err", "result", "result", "error"]
    out, err = seen[0][1], seen[1][1]
    assert isinstance(out, OutputMessage) and str(out) == "hello\n" and not out.error
    assert out.timestamp is not None and out.timestamp.microsecond == 123456 and err.error
    assert execution.execution_count == 3
    assert execution.logs.stdout == ["hello\n"] and execution.logs.stderr == ["careful\n"]
    assert execution.text == "2"
    plot, main = execution.results
    assert not plot.is_main_result and plot.formats() == ["png", "chart"] and plot.chart == {
        "type": "line", "title": "t", "elements": []}
    assert plot.png_bytes() == b"\x89PNG\r\n\x1a\nfake" and plot.binary("jpeg") is None
    assert main.is_main_result and main.html == "<b>2</b>" and main.data == {"a": [1]}
    assert main.extra == {"application/x-custom": {"k": 1}}
    assert main.formats() == ["text", "html", "data", "application/x-custom"]
    assert repr(main) == "Result(2)" and repr(plot) == "Result(Formats: png, chart)"
    assert execution.error is not None and execution.error.name == "ZeroDivisionError"
    assert "1/0" in execution.error.traceback
    assert json.loads(execution.to_json())["error"]["value"] == "division by zero"


def test_a_last_line_without_newline_still_counts() -> None:
    reader = ExecutionReader(Handlers(on_result=lambda r: None), None)
    reader.feed(line(type="stdout", text="x", timestamp=None) + b'{"type":"result","text":"1","is_main_result":true}\n'
                + b'{"type":"end_of_execution"}')
    execution, last = reader.finish()
    assert execution.text == "1" and last == [] and execution.logs.stdout == ["x"]


def test_a_body_that_ends_early_or_is_not_ndjson_is_an_error() -> None:
    reader = ExecutionReader(Handlers(), None)
    reader.feed(line(type="stdout", text="x", timestamp=None))
    with pytest.raises(SandboxException, match="ended before the execution did"):
        reader.finish()
    with pytest.raises(SandboxException, match="not an output message"):
        ExecutionReader(Handlers(), None).feed(b"<html>proxy page</html>\n")


def test_the_deadline_counts_the_whole_execution() -> None:
    now = [100.0]
    reader = ExecutionReader(Handlers(), 5, clock=lambda: now[0])
    reader.check_deadline()
    connect = TimeoutException("no answer")
    assert reader.timed_out(connect) is connect  # before the deadline: the connect's timeout, kept
    now[0] = 105.0
    with pytest.raises(TimeoutException, match=r"longer than its timeout \(5s\).*timeout="):
        reader.check_deadline()
    assert "longer than its timeout" in str(reader.timed_out(connect))
    ExecutionReader(Handlers(), None, clock=lambda: 1e9).check_deadline()  # no limit


def test_results_ignore_unknown_keys_and_keep_extra() -> None:
    result = Result.from_line({"type": "result", "text": "a", "is_main_result": True, "new": 1})
    assert result == Result(text="a", is_main_result=True) and result["text"] == "a"
    with pytest.raises(ValueError, match="not a binary format"):
        result.binary("html")


# ---- the faces against a fake server ----------------------------------------------------------------------------

class FakeServer:
    """The proxy and the code interpreter: `/execute` streams `body` (chunks, or a generator of them)."""

    def __init__(self, body: Any = None, status: int = 200, text: str = "") -> None:
        self.body, self.status, self.text = body if body is not None else STREAM, status, text
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.status != 200:
            return httpx.Response(self.status, text=self.text)
        path = request.url.path
        if path == "/execute" and isinstance(self.body, httpx.SyncByteStream):
            return httpx.Response(200, stream=self.body)
        if path == "/execute":
            return httpx.Response(200, content=self.body if not isinstance(self.body, list) else iter(self.body))
        if path == "/contexts" and request.method == "POST":
            sent = json.loads(request.content)
            return httpx.Response(200, json={"id": "c1", "language": sent.get("language", "python"),
                                             "cwd": sent.get("cwd", "/home/user")})
        if path == "/contexts":
            return httpx.Response(200, json=[{"id": "c1", "language": "python", "cwd": "/home/user"}])
        return httpx.Response(204)

    def config(self) -> ConnectionConfig:
        return ConnectionConfig.resolve(api_key="k", api_url="http://sandhive.test", env={},
                                        transport=httpx.MockTransport(self))


def ref(config: ConnectionConfig) -> SandboxRef:
    return SandboxRef(SID, "code-interpreter-v1", "0.2.0", TOKEN, None, config)


def sync_sandbox(server: FakeServer) -> CodeInterpreter:
    config = server.config()
    return CodeInterpreter._from_ref(ref(config), SyncTransport(config))


def async_sandbox(server: FakeServer) -> AsyncCodeInterpreter:
    config = server.config()
    return AsyncCodeInterpreter._from_ref(ref(config), AsyncTransport(config))


def test_run_code_sends_what_the_server_expects() -> None:
    server = FakeServer()
    execution = sync_sandbox(server).run_code("1+1", language="python", envs={"A": "1"})
    assert execution.text == "2" and execution.error is not None
    request = server.requests[0]
    assert (request.method, str(request.url)) == ("POST", "http://sandhive.test/execute")
    assert request.headers["E2b-Sandbox-Id"] == SID and request.headers["E2b-Sandbox-Port"] == "49999"
    assert request.headers["X-Access-Token"] == TOKEN
    assert json.loads(request.content) == {"code": "1+1", "context_id": None, "language": "python",
                                           "env_vars": {"A": "1"}}
    assert request.extensions["timeout"]["read"] == 300 and request.extensions["timeout"]["connect"] == 60
    sync_sandbox(server).run_code("x", context=Context("c9", "python", "/tmp"), timeout=0, request_timeout=5)
    assert json.loads(server.requests[1].content)["context_id"] == "c9"
    assert server.requests[1].extensions["timeout"]["read"] is None
    assert server.requests[1].extensions["timeout"]["connect"] == 5


def test_a_private_sandbox_sends_its_traffic_token() -> None:
    server = FakeServer()
    config = server.config()
    data = {"sandboxID": SID, "templateID": "code-interpreter-v1", "envdVersion": "0.2.0", "envdAccessToken": TOKEN,
            "trafficAccessToken": "traffic-1"}
    CodeInterpreter._from_ref(SandboxRef.from_json(data, config), SyncTransport(config)).list_code_contexts()
    assert server.requests[0].headers["E2B-Traffic-Access-Token"] == "traffic-1"
    sync_sandbox(server).list_code_contexts()
    assert "E2B-Traffic-Access-Token" not in server.requests[1].headers  # a public one has none


def test_callbacks_fire_while_the_body_still_streams() -> None:
    events: list[str] = []

    def body() -> Iterator[bytes]:
        for i in range(3):
            events.append(f"sent {i}")
            yield line(type="stdout", text=f"{i}\n", timestamp=None)
        yield line(type="end_of_execution")

    execution = sync_sandbox(FakeServer(body())).run_code("loop", on_stdout=lambda m: events.append(f"got {m}"))
    assert events == ["sent 0", "got 0\n", "sent 1", "got 1\n", "sent 2", "got 2\n"]
    assert execution.logs.stdout == ["0\n", "1\n", "2\n"]


class Forever(httpx.SyncByteStream):
    """A body that never ends (code printing forever); `close()` is what the client does to disconnect."""

    def __init__(self) -> None:
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        while not self.closed:
            time.sleep(0.01)
            yield line(type="stdout", text=".", timestamp=None)

    def close(self) -> None:
        self.closed = True


def test_a_timeout_stops_reading_code_that_prints_forever() -> None:
    body = Forever()
    server = FakeServer(body)
    started = time.monotonic()
    with pytest.raises(TimeoutException, match=r"longer than its timeout \(0.1s\)"):
        sync_sandbox(server).run_code("while True: print('.')", timeout=0.1)
    assert time.monotonic() - started < 2
    for _ in range(100):  # the SDK's reaper thread closes an abandoned body
        if body.closed:
            break
        time.sleep(0.01)
    assert body.closed, "the body was not closed (the server would not see the disconnect and interrupt the kernel)"


def test_language_and_context_together_are_refused_before_sending() -> None:
    server = FakeServer()
    with pytest.raises(InvalidArgumentException, match="not both"):
        sync_sandbox(server).run_code("1", language="python", context="c1")
    with pytest.raises(InvalidArgumentException, match="timeout"):
        sync_sandbox(server).run_code("1", timeout=-1)
    assert server.requests == []


@pytest.mark.parametrize(("status", "text", "exc", "words"), [
    (404, "context c9 not found", NotFoundException, "context c9 not found"),
    (400, "language 'cobol' is not supported", InvalidArgumentException, "cobol"),
    (502, '{"message": "The sandbox is running but port is not open", "port": 49999}', SandboxException,
     "no code interpreter answers on port 49999.*code-interpreter-v1"),
    (502, f'{{"message": "The sandbox {SID} was not found"}}', SandboxException, f"sandbox {SID} is not running"),
])
def test_error_answers(status: int, text: str, exc: type[Exception], words: str) -> None:
    with pytest.raises(exc, match=words):
        sync_sandbox(FakeServer(status=status, text=text)).run_code("1", context="c9")


def test_context_calls() -> None:
    server = FakeServer()
    sbx = sync_sandbox(server)
    ctx = sbx.create_code_context(cwd="/home/user/p", language="python")
    assert ctx == Context("c1", "python", "/home/user/p")
    assert sbx.list_code_contexts() == [Context("c1", "python", "/home/user")]
    sbx.restart_code_context(ctx)
    sbx.remove_code_context("c1")
    assert [(r.method, r.url.path) for r in server.requests] == [
        ("POST", "/contexts"), ("GET", "/contexts"), ("POST", "/contexts/c1/restart"), ("DELETE", "/contexts/c1")]
    assert all(r.headers["E2b-Sandbox-Port"] == "49999" for r in server.requests)


async def test_the_async_face_awaits_coroutine_callbacks_in_order() -> None:
    events: list[str] = []

    async def body() -> AsyncIterator[bytes]:
        for chunk in STREAM:
            events.append("chunk")
            yield chunk

    async def on_stdout(message: OutputMessage) -> None:
        await asyncio.sleep(0)
        events.append(f"out {message}")

    sbx = async_sandbox(FakeServer(body()))
    execution = await sbx.run_code("1+1", on_stdout=on_stdout, on_result=lambda r: events.append("result"))
    assert execution.text == "2" and execution.execution_count == 3
    assert events[:5] == ["chunk", "chunk", "out hello\n", "chunk", "chunk"]
    assert events.count("result") == 2
    assert [c.id for c in await sbx.list_code_contexts()] == ["c1"]


async def test_the_async_face_times_out_too() -> None:
    async def forever() -> AsyncIterator[bytes]:
        while True:
            await asyncio.sleep(0.01)
            yield line(type="stdout", text=".", timestamp=None)

    with pytest.raises(TimeoutException, match="longer than its timeout"):
        await async_sandbox(FakeServer(forever())).run_code("loop", timeout=0.1)


def test_code_interpreter_is_a_sandbox_of_its_template() -> None:
    from sandhive import AsyncSandbox, Sandbox

    assert issubclass(CodeInterpreter, Sandbox) and issubclass(AsyncCodeInterpreter, AsyncSandbox)
    assert CodeInterpreter.default_template == AsyncCodeInterpreter.default_template == "code-interpreter-v1"
    assert Sandbox.default_template == "base"
