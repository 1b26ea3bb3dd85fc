"""Languages other than Python with the released `e2b_code_interpreter` 2.11.5: bash (bash_kernel), JavaScript and
TypeScript (Deno's kernel), each with its own default context, per-execution env vars and errors (issue 15)."""

from __future__ import annotations

import pytest
from e2b_code_interpreter import Sandbox

pytestmark = pytest.mark.timeout(1200)


def test_bash_runs_and_prints(sandbox: Sandbox) -> None:
    execution = sandbox.run_code("echo hi", language="bash")
    assert execution.error is None, execution.error
    assert "".join(execution.logs.stdout) == "hi\n"


def test_bash_keeps_its_state_and_cwd(sandbox: Sandbox) -> None:
    sandbox.run_code("SANDHIVE_KEPT=kept; cd /tmp", language="bash")
    assert "".join(sandbox.run_code("echo $SANDHIVE_KEPT $PWD", language="bash").logs.stdout) == "kept /tmp\n"
    context = sandbox.create_code_context(language="bash", cwd="/home/user/bashproject")
    try:
        assert context.language == "bash"
        assert "".join(sandbox.run_code("pwd", context=context).logs.stdout) == "/home/user/bashproject\n"
    finally:
        sandbox.remove_code_context(context)


def test_bash_env_vars_hold_for_one_execution(sandbox: Sandbox) -> None:
    code = 'echo "${SANDHIVE_CI_VAR-unset}"; sh -c \'echo "child ${SANDHIVE_CI_VAR-unset}"\''
    execution = sandbox.run_code(code, language="bash", envs={"SANDHIVE_CI_VAR": "it's set"})
    assert "".join(execution.logs.stdout) == "it's set\nchild it's set\n"
    assert "".join(sandbox.run_code(code, language="bash").logs.stdout) == "unset\nchild unset\n"


def test_js_expression_gives_its_text_and_console_log_its_stdout(sandbox: Sandbox) -> None:
    execution = sandbox.run_code("1+1", language="js")
    assert execution.error is None, execution.error
    assert execution.text == "2"
    execution = sandbox.run_code("console.log('hello'); console.error('oops')", language="javascript")
    assert "".join(execution.logs.stdout) == "hello\n"
    assert "".join(execution.logs.stderr) == "oops\n"
    assert sandbox.run_code("'a string'", language="js").text == "a string"  # as E2B's: no quotes


def test_js_keeps_state_in_its_own_context(sandbox: Sandbox) -> None:
    sandbox.run_code("globalThis.sandhiveKept = 41", language="js")
    assert sandbox.run_code("sandhiveKept + 1", language="js").text == "42"
    assert sandbox.run_code("require('fs').existsSync('/home/user')", language="js").text == "true"
    context = sandbox.create_code_context(language="js", cwd="/home/user/jsproject")
    try:
        assert context.language == "javascript"  # E2B's name for js
        assert sandbox.run_code("process.cwd()", context=context).text == "/home/user/jsproject"
        assert sandbox.run_code("typeof sandhiveKept", context=context).text == "undefined"
    finally:
        sandbox.remove_code_context(context)


def test_js_env_vars_hold_for_one_execution(sandbox: Sandbox) -> None:
    code = ("[process.env.SANDHIVE_CI_VAR ?? 'unset', "
            "require('child_process').execSync('echo -n ${SANDHIVE_CI_VAR-unset}').toString()].join(' ')")
    assert sandbox.run_code(code, language="js", envs={"SANDHIVE_CI_VAR": "set"}).text == "set set"
    assert sandbox.run_code(code, language="js").text == "unset unset"


def test_js_error_gives_an_error(sandbox: Sandbox) -> None:
    errors = []
    execution = sandbox.run_code("null.x", language="js", on_error=errors.append)
    assert execution.error is not None
    assert execution.error.name == "TypeError"
    assert "null" in execution.error.value
    assert "TypeError" in execution.error.traceback
    assert errors and errors[0].name == "TypeError"
    thrown = sandbox.run_code("throw new Error('boom')", language="js").error
    assert thrown is not None and (thrown.name, thrown.value) == ("Error", "boom")
    assert sandbox.run_code("2*3", language="js").text == "6"  # the context keeps working


def test_typescript_runs(sandbox: Sandbox) -> None:
    code = ("function twice(x: number): number { return 2 * x }\n"
            "interface P { n: number }\nconst p: P = { n: 21 }\ntwice(p.n)")
    execution = sandbox.run_code(code, language="typescript")
    assert execution.error is None, execution.error
    assert execution.text == "42"
    assert sandbox.run_code("const s: string = 'ts'; s", language="ts").text == "ts"
    context = sandbox.create_code_context(language="ts")
    try:
        assert context.language == "typescript"
    finally:
        sandbox.remove_code_context(context)


def test_an_unsupported_language_is_a_clear_400(sandbox: Sandbox) -> None:
    from e2b import SandboxException

    with pytest.raises(SandboxException) as raised:
        sandbox.run_code("x", language="cobol")
    assert "400" in str(raised.value) and "cobol" in str(raised.value) and "javascript" in str(raised.value)


def test_a_timeout_interrupts_js_and_its_context_keeps_its_state(sandbox: Sandbox) -> None:
    import time

    from e2b import TimeoutException

    sandbox.run_code("globalThis.sandhiveBeforeLoop = 'kept'", language="js")
    with pytest.raises(TimeoutException):
        sandbox.run_code("while (true) {}", language="js", timeout=2)
    deadline = time.monotonic() + 15
    while True:  # Deno gets an interrupt_request: the loop stops, the kernel and its globals stay
        execution = sandbox.run_code("sandhiveBeforeLoop", language="js", timeout=20)
        if execution.text == "kept" or time.monotonic() > deadline:
            break
    assert execution.text == "kept", execution.error
