"""`run_code` and code contexts with the released `e2b_code_interpreter` 2.11.5 (issue 15, first slice)."""

from __future__ import annotations

import base64
import time

import pytest
from e2b_code_interpreter import Sandbox

pytestmark = pytest.mark.timeout(1200)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_the_template_is_the_servers_built_in(sandbox: Sandbox) -> None:
    info = sandbox.get_info()
    assert info.template_id == "code-interpreter-v1"


def test_an_expression_gives_its_text(sandbox: Sandbox) -> None:
    execution = sandbox.run_code("1+1")
    assert execution.text == "2"
    assert execution.error is None
    assert execution.results[0].is_main_result


def test_stdout_and_stderr_arrive_in_logs_and_callbacks_in_order(sandbox: Sandbox) -> None:
    out: list[str] = []
    err: list[str] = []
    execution = sandbox.run_code("import sys\nprint('a')\nprint('b', file=sys.stderr)\nprint('c')",
                                 on_stdout=lambda m: out.append(m.line), on_stderr=lambda m: err.append(m.line))
    assert "".join(execution.logs.stdout) == "a\nc\n"
    assert "".join(execution.logs.stderr) == "b\n"
    assert "".join(out) == "a\nc\n" and "".join(err) == "b\n"


def test_output_streams_while_the_code_runs(sandbox: Sandbox) -> None:
    started = time.monotonic()
    arrivals: list[float] = []
    sandbox.run_code("import time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(1)",
                     on_stdout=lambda m: arrivals.append(time.monotonic() - started))
    assert len(arrivals) == 3
    assert arrivals[0] < arrivals[-1] - 1.5  # the first line came long before the loop ended


def test_an_exception_gives_an_error_with_name_value_and_traceback(sandbox: Sandbox) -> None:
    errors = []
    execution = sandbox.run_code("1/0", on_error=errors.append)
    assert execution.error is not None
    assert execution.error.name == "ZeroDivisionError"
    assert execution.error.value == "division by zero"
    assert "ZeroDivisionError" in execution.error.traceback
    assert errors and errors[0].name == "ZeroDivisionError"


def test_a_matplotlib_plot_gives_a_png(sandbox: Sandbox) -> None:
    execution = sandbox.run_code(
        "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.title('squares')\nplt.show()")
    assert execution.error is None, execution.error
    pngs = [r.png for r in execution.results if r.png]
    assert len(pngs) == 1
    assert base64.b64decode(pngs[0]).startswith(PNG_MAGIC)


def test_a_dataframe_gives_an_html_table_and_its_data(sandbox: Sandbox) -> None:
    execution = sandbox.run_code(
        "import pandas as pd\npd.DataFrame({'a': [1, 2], 'b': ['x', None], 'c': [float('nan'), 1.5]})")
    assert execution.error is None, execution.error
    result = execution.results[0]
    assert result.is_main_result
    assert result.html is not None and "<table" in result.html and "dataframe" in result.html
    assert result.text is not None and "a" in result.text
    assert result.data == {"a": [1, 2], "b": ["x", None], "c": [None, 1.5]}  # e2b/data: columns as lists
    assert execution.logs.stderr == []


def test_state_persists_between_calls(sandbox: Sandbox) -> None:
    sandbox.run_code("persisted = 41")
    assert sandbox.run_code("persisted + 1").text == "42"


def test_a_context_has_its_own_state_and_cwd(sandbox: Sandbox) -> None:
    sandbox.run_code("only_default = 1")
    context = sandbox.create_code_context(cwd="/home/user/project")
    try:
        assert context.cwd == "/home/user/project" and context.language == "python"
        assert sandbox.run_code("import os; os.getcwd()", context=context).text == "/home/user/project"
        missing = sandbox.run_code("only_default", context=context)
        assert missing.error is not None and missing.error.name == "NameError"
        sandbox.run_code("only_context = 2", context=context)
        assert sandbox.run_code("only_context", context=context).text == "2"
        assert sandbox.run_code("only_default").text == "1"
        assert sandbox.run_code("import os; os.getcwd()").text == "/home/user"
        assert context.id in [c.id for c in sandbox.list_code_contexts()]
        sandbox.restart_code_context(context)
        assert sandbox.run_code("only_context", context=context).error is not None  # a restart forgets
    finally:
        sandbox.remove_code_context(context)
    assert context.id not in [c.id for c in sandbox.list_code_contexts()]


def test_env_vars_hold_for_one_execution(sandbox: Sandbox) -> None:
    code = "import os; os.environ.get('SANDHIVE_CI_VAR', 'unset')"
    assert sandbox.run_code(code, envs={"SANDHIVE_CI_VAR": "set"}).text == "set"
    assert sandbox.run_code(code).text == "unset"


def test_a_timeout_interrupts_the_code_and_the_context_keeps_working(sandbox: Sandbox) -> None:
    from e2b import TimeoutException

    sandbox.run_code("kept = 'yes'")
    with pytest.raises(TimeoutException):
        sandbox.run_code("while True:\n    pass", timeout=2)
    deadline = time.monotonic() + 15
    while True:  # the interrupt reaches the kernel within a moment of the disconnect
        execution = sandbox.run_code("kept", timeout=20)
        if execution.text == "yes" or time.monotonic() > deadline:
            break
    assert execution.text == "yes"


def test_code_runs_as_user_and_sees_the_sandboxs_env_vars(sandbox: Sandbox) -> None:
    assert sandbox.run_code("import getpass; getpass.getuser()").text == "user"
    code = "import os; os.environ.get('SANDHIVE_CREATE_VAR', 'unset')"
    assert sandbox.run_code(code).text == "from-create"  # given at create: envd's /envs, as with E2B
    assert sandbox.run_code(code, envs={"SANDHIVE_CREATE_VAR": "overridden"}).text == "overridden"
    assert sandbox.run_code(code).text == "from-create"


def test_execute_needs_the_sandboxs_access_token(sandbox: Sandbox, live) -> None:
    import httpx

    server, _ = live
    assert sandbox._envd_access_token  # the SDK's sandboxes are secure by default
    headers = {"E2b-Sandbox-Id": sandbox.sandbox_id, "E2b-Sandbox-Port": "49999"}
    for token in (None, "wrong"):
        sent = {**headers, **({"X-Access-Token": token} if token else {})}
        answer = httpx.post(f"{server.url}/execute", json={"code": "1"}, headers=sent, timeout=30, trust_env=False)
        assert answer.status_code == 401, answer.text
    good = {**headers, "X-Access-Token": sandbox._envd_access_token}
    answer = httpx.post(f"{server.url}/execute", json={"code": "1"}, headers=good, timeout=30, trust_env=False)
    assert answer.status_code == 200 and '"text":"1"' in answer.text
