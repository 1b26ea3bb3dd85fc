"""Sandhive's own SDK (`sandhive.CodeInterpreter`, `AsyncCodeInterpreter`) against the live server of this suite:
the same port-49999 server the released `e2b_code_interpreter` tests drive, through Sandhive's transport."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from sandhive import AsyncCodeInterpreter, CodeInterpreter, OutputMessage, Result, Sandbox
from sandhive.sdk.exceptions import NotFoundException, SandboxException, TimeoutException
from tests.api.rig import Server
from tests.code_interpreter.conftest import BUILD_TIMEOUT

pytestmark = [pytest.mark.timeout(1200), pytest.mark.one_backend]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def opts(live: tuple[Server, str]) -> dict[str, str]:
    server, key = live
    return {"api_key": key, "api_url": server.url}


@pytest.fixture(scope="module")
def ci(opts: dict[str, str]) -> Iterator[CodeInterpreter]:
    started = time.monotonic()
    sbx = CodeInterpreter.create(timeout=1800, envs={"FROM_CREATE": "yes"}, request_timeout=BUILD_TIMEOUT, **opts)
    print(f"CodeInterpreter.create: {time.monotonic() - started:.1f}s")
    try:
        yield sbx
    finally:
        sbx.kill()


def test_create_defaults_to_the_code_interpreter_template(ci: CodeInterpreter) -> None:
    assert ci.template_id == "code-interpreter-v1"
    assert ci.get_info().template_id == "code-interpreter-v1"


def test_text_logs_and_callbacks(ci: CodeInterpreter) -> None:
    assert ci.run_code("1+1").text == "2"
    seen: list[OutputMessage] = []
    execution = ci.run_code("import sys\nprint('a')\nprint('b', file=sys.stderr)\nprint('c')",
                            on_stdout=seen.append, on_stderr=seen.append)
    assert "".join(execution.logs.stdout) == "a\nc\n" and "".join(execution.logs.stderr) == "b\n"
    assert "".join(m.line for m in seen if not m.error) == "a\nc\n"
    assert [m.line for m in seen if m.error] == ["b\n"] and all(m.timestamp is not None for m in seen)


def test_output_streams_while_the_code_runs(ci: CodeInterpreter) -> None:
    started = time.monotonic()
    arrivals: list[float] = []
    ci.run_code("import time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(1)",
                on_stdout=lambda m: arrivals.append(time.monotonic() - started))
    assert len(arrivals) == 3
    assert arrivals[0] < arrivals[-1] - 1.5  # the first line came long before the loop ended


def test_an_error_is_the_executions_not_an_exception(ci: CodeInterpreter) -> None:
    errors = []
    execution = ci.run_code("1/0", on_error=errors.append)
    assert execution.error is not None and execution.error.name == "ZeroDivisionError"
    assert execution.error.value == "division by zero" and "ZeroDivisionError" in execution.error.traceback
    assert errors == [execution.error]


def test_a_plot_gives_a_png_and_a_chart_and_a_dataframe_its_html(ci: CodeInterpreter) -> None:
    results: list[Result] = []
    execution = ci.run_code("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.title('squares')\n"
                            "plt.show()", on_result=results.append)
    assert execution.error is None, execution.error
    plot = next(r for r in execution.results if r.png)
    assert results == execution.results
    assert (plot.png_bytes() or b"").startswith(PNG_MAGIC)
    assert plot.chart is not None and plot.chart["type"] == "line" and plot.chart["title"] == "squares"
    table = ci.run_code("import pandas as pd\npd.DataFrame({'a': [1, 2]})").results[0]
    assert table.is_main_result and table.html is not None and "<table" in table.html
    assert table.data == {"a": [1, 2]}


def test_contexts_keep_state_apart(ci: CodeInterpreter) -> None:
    ci.run_code("shared = 1")
    ctx = ci.create_code_context(cwd="/home/user/sdk-ctx")
    try:
        assert ctx.language == "python" and ctx.cwd == "/home/user/sdk-ctx"
        assert ci.run_code("import os; os.getcwd()", context=ctx).text == "/home/user/sdk-ctx"
        assert ci.run_code("shared", context=ctx).error is not None  # not the default context's state
        ci.run_code("mine = 5", context=ctx.id)
        assert ci.run_code("mine", context=ctx).text == "5"
        assert ctx.id in [c.id for c in ci.list_code_contexts()]
        ci.restart_code_context(ctx)
        assert ci.run_code("mine", context=ctx).error is not None  # the restart dropped it
    finally:
        ci.remove_code_context(ctx)
    assert ctx.id not in [c.id for c in ci.list_code_contexts()]
    with pytest.raises(NotFoundException):
        ci.run_code("1", context=ctx)


def test_envs_hold_for_one_execution(ci: CodeInterpreter) -> None:
    code = "import os; os.environ.get('PER_RUN', 'unset') + ' ' + os.environ.get('FROM_CREATE', 'unset')"
    assert ci.run_code(code, envs={"PER_RUN": "set"}).text == "set yes"
    assert ci.run_code(code).text == "unset yes"


def test_a_timeout_interrupts_the_loop_and_the_context_goes_on(ci: CodeInterpreter) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutException, match="longer than its timeout"):
        ci.run_code("while True:\n    pass", timeout=2)
    assert time.monotonic() - started < 10
    assert ci.run_code("40 + 2").text == "42"


def test_connect_gives_a_code_interpreter(ci: CodeInterpreter, opts: dict[str, str]) -> None:
    again = CodeInterpreter.connect(ci.sandbox_id, **opts)
    assert isinstance(again, CodeInterpreter) and again.run_code("6 * 7").text == "42"


def test_a_sandbox_without_the_server_says_so(opts: dict[str, str]) -> None:
    with Sandbox.create(timeout=120, **opts) as plain:
        not_ci = CodeInterpreter.connect(plain.sandbox_id, **opts)
        with pytest.raises(SandboxException, match="no code interpreter answers on port 49999"):
            not_ci.run_code("1")


async def test_the_async_face(ci: CodeInterpreter, opts: dict[str, str]) -> None:
    sbx = await AsyncCodeInterpreter.connect(ci.sandbox_id, **opts)
    lines: list[str] = []

    async def on_stdout(message: OutputMessage) -> None:
        lines.append(message.line)

    execution = await sbx.run_code("print('hi')\n3 * 3", on_stdout=on_stdout)
    assert execution.text == "9" and lines == ["hi\n"]
    ctx = await sbx.create_code_context()
    assert ctx.id in [c.id for c in await sbx.list_code_contexts()]
    await sbx.remove_code_context(ctx)
    with pytest.raises(TimeoutException):
        await sbx.run_code("import time; time.sleep(30)", timeout=1)
    assert (await sbx.run_code("1")).text == "1"
