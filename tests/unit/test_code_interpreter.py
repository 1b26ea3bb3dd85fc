"""The code interpreter's pure parts (issue 15): Jupyter IOPub messages → E2B's NDJSON lines, checked against the
released `e2b_code_interpreter` 2.11.5 client's own parser, and the template's recipe. No kernel, no root."""

from __future__ import annotations

import ast
import json
from datetime import UTC, datetime
from pathlib import Path

from e2b_code_interpreter.models import Execution, parse_output

from sandhive.code_interpreter import messages, server
from sandhive.code_interpreter.messages import ExecutionMapper, encode, result_bundle
from sandhive.templates import catalog
from sandhive.templates import code_interpreter as template

MSG = "m-1"
DATE = datetime(2026, 12, 6, 12, 0, 0, tzinfo=UTC)


def msg(kind: str, content: dict, parent: str = MSG) -> dict:
    return {"header": {"msg_type": kind, "date": DATE}, "parent_header": {"msg_id": parent}, "msg_type": kind,
            "content": content}


def run(feed: list[dict]) -> tuple[list[dict], Execution, list]:
    """The lines a mapper makes of `feed`, and what the released client builds from them."""
    mapper = ExecutionMapper(MSG)
    lines = [line for m in feed for line in mapper.feed(m)]
    execution, seen = Execution(), []
    for line in lines:
        parse_output(execution, encode(line).decode().rstrip("\n"), on_stdout=seen.append, on_stderr=seen.append)
    return lines, execution, seen


def test_a_cell_with_output_and_a_result_reaches_the_client_as_execution() -> None:
    lines, execution, seen = run([
        msg("status", {"execution_state": "busy"}),
        msg("execute_input", {"code": "print(1); 1+1", "execution_count": 3}),
        msg("stream", {"name": "stdout", "text": "1\n"}),
        msg("stream", {"name": "stderr", "text": "warn\n"}),
        msg("execute_result", {"data": {"text/plain": "2"}, "execution_count": 3}),
        msg("status", {"execution_state": "idle"}),
    ])
    assert [line["type"] for line in lines] == ["number_of_executions", "stdout", "stderr", "result",
                                                "end_of_execution"]
    assert execution.text == "2" and execution.execution_count == 3
    assert execution.logs.stdout == ["1\n"] and execution.logs.stderr == ["warn\n"]
    assert [(m.line, m.error) for m in seen] == [("1\n", False), ("warn\n", True)]
    assert lines[1]["timestamp"] == DATE.isoformat()


def test_an_error_carries_name_value_and_the_traceback_as_one_string() -> None:
    _, execution, _ = run([
        msg("execute_input", {"execution_count": 1}),
        msg("error", {"ename": "ZeroDivisionError", "evalue": "division by zero",
                      "traceback": ["---", "ZeroDivisionError: division by zero"]}),
        msg("status", {"execution_state": "idle"}),
    ])
    assert execution.error is not None
    assert (execution.error.name, execution.error.value) == ("ZeroDivisionError", "division by zero")
    assert execution.error.traceback == "---\nZeroDivisionError: division by zero"


def test_mime_bundles_map_to_the_clients_result_keys() -> None:
    bundle = {"text/plain": "<Figure>", "text/html": "<table/>", "image/png": "iVBOR", "image/svg+xml": "<svg/>",
              "application/json": {"a": 1}, "text/markdown": "# t", "text/latex": "$x$", "image/jpeg": "/9j/",
              "application/pdf": "JVBER", "application/javascript": "1", "application/x-custom": "z"}
    line = result_bundle(bundle, False)
    assert line["png"] == "iVBOR" and line["html"] == "<table/>" and line["svg"] == "<svg/>"
    assert line["json"] == {"a": 1} and line["markdown"] == "# t" and line["latex"] == "$x$"
    assert line["jpeg"] == "/9j/" and line["pdf"] == "JVBER" and line["javascript"] == "1"
    assert line["extra"] == {"application/x-custom": "z"} and line["is_main_result"] is False
    execution = Execution()
    parse_output(execution, json.dumps(line))
    result = execution.results[0]
    assert result.png == "iVBOR" and result.html == "<table/>" and not result.is_main_result
    assert execution.text is None  # a display is not the cell's result


def test_a_repr_of_a_string_loses_its_quotes_as_with_e2b() -> None:
    assert result_bundle({"text/plain": "'abc'"}, True)["text"] == "abc"
    assert result_bundle({"text/plain": "2"}, True)["text"] == "2"
    assert result_bundle({"text/plain": '"abc"'}, True)["text"] == '"abc"'  # Python's repr never uses "
    assert result_bundle({"text/plain": '"abc"'}, True, quotes="'\"")["text"] == "abc"  # Deno's does
    assert result_bundle({"text/plain": "'abc\""}, True, quotes="'\"")["text"] == "'abc\""


def test_output_that_trails_idle_is_kept_when_the_end_is_held() -> None:
    """Deno's kernel can publish a cell's value just after its `idle`: with hold_end the mapper still maps it and
    leaves END to the caller."""
    mapper = ExecutionMapper(MSG, hold_end=True)
    assert mapper.feed(msg("execute_input", {"execution_count": 1}))[0]["type"] == "number_of_executions"
    assert mapper.feed(msg("status", {"execution_state": "idle"})) == []
    assert mapper.done
    late = mapper.feed(msg("execute_result", {"data": {"text/plain": "2"}}))
    assert late == [{"type": "result", "text": "2", "is_main_result": True}]
    assert mapper.feed(msg("status", {"execution_state": "idle"})) == []
    assert mapper.feed(msg("execute_input", {"execution_count": 1})) == []


def test_other_executions_and_idle_before_the_input_are_ignored() -> None:
    mapper = ExecutionMapper(MSG)
    assert mapper.feed(msg("stream", {"name": "stdout", "text": "x"}, parent="other")) == []
    assert mapper.feed(msg("status", {"execution_state": "idle"})) == []  # the idle of a previous request
    assert not mapper.done
    mapper.feed(msg("execute_input", {"execution_count": 1}))
    assert mapper.feed(msg("status", {"execution_state": "idle"})) == [messages.END]
    assert mapper.done and mapper.feed(msg("stream", {"name": "stdout", "text": "late"})) == []


def test_an_aborted_reply_becomes_an_error_once() -> None:
    mapper = ExecutionMapper(MSG)
    assert mapper.reply({"status": "aborted"})[0]["type"] == "error"
    assert mapper.reply({"status": "error", "ename": "E", "evalue": "v", "traceback": []}) == []


def test_the_server_package_stands_alone() -> None:
    """It is copied alone into the template: it may import nothing else of sandhive (only itself, relatively)."""
    for path in template.source_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert node.level == 1 or not (node.module or "").startswith("sandhive"), f"{path.name}: {node.module}"
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("sandhive") for a in node.names), path.name


def test_the_template_recipe_pins_its_packages_and_runs_the_server() -> None:
    text = template.dockerfile()
    assert text.startswith("FROM base\n")
    for package in ("jupyter_client==", "ipykernel==", "pandas==", "numpy==", "matplotlib==", "seaborn==",
                    "plotly==", "scipy==", "scikit-learn==", "bash_kernel==", "deno@"):
        assert package in text
    assert all(p.count("==") == 1 for p in template.PIP_PACKAGES) and all("@" in p for p in template.NPM_PACKAGES)
    for name, spec in template.KERNEL_SPECS.items():  # the specs the server's languages name
        assert f"{template.KERNEL_DIR}/{name}/kernel.json" in text and "{connection_file}" in spec["argv"]
    assert {spec.kernel for spec in server.LANGUAGES.values()} == {"python3", "bash", *template.KERNEL_SPECS}
    assert f"{template.PACKAGE}.server" in template.START_CMD and ":49999/health" in template.READY_CMD
    assert {p.name for p in template.source_files()} >= {"__init__.py", "messages.py", "server.py"}
    assert len(template.recipe_key()) == 16


def test_the_recipe_key_follows_the_server_sources(tmp_path: Path, monkeypatch) -> None:
    source = tmp_path / "code_interpreter"
    source.mkdir()
    (source / "server.py").write_text("one")
    monkeypatch.setattr(template, "SOURCE_DIR", source)
    first = template.recipe_key()
    (source / "server.py").write_text("two")
    assert template.recipe_key() != first


def test_its_names_are_reserved_for_the_server() -> None:
    assert {"code-interpreter-v1", "code-interpreter"} <= catalog.RESERVED_NAMES


def test_the_proxy_leaves_execute_streams_unbounded_and_others_as_they_were() -> None:
    import httpx

    from sandhive.proxy.http import read_timeout

    default = httpx.Timeout(connect=5, read=600, write=60, pool=10)
    unbounded = read_timeout(49999, "POST", "/execute", default)
    assert unbounded.read is None and unbounded.connect == 5 and unbounded.write == 60
    assert read_timeout(49999, "GET", "/contexts", default) is default
    assert read_timeout(49983, "POST", "/execute", default) is default


def test_languages_and_their_aliases() -> None:
    assert server.normalize_language(None) == "python"
    for alias, language in (("js", "javascript"), ("JS", "javascript"), ("ts", "typescript"), ("sh", "bash"),
                            ("python3", "python"), ("r", "r")):
        assert server.normalize_language(alias) == language
    assert set(server.LANGUAGES) == {"python", "bash", "javascript", "typescript"}


def test_bash_env_vars_are_set_and_put_back_in_a_real_bash() -> None:
    import subprocess

    envs = {"SANDHIVE_A": "it's $HOME `x` \"q\"", "SANDHIVE_B": "new"}
    bash = server.LANGUAGES["bash"]
    script = "\n".join(["export SANDHIVE_A=before", "unset SANDHIVE_B", bash.env_set(envs),
                        'printf "%s|%s\\n" "$SANDHIVE_A" "$SANDHIVE_B"', "sh -c 'echo \"$SANDHIVE_A\"'",
                        bash.env_restore(envs), 'printf "%s|%s\\n" "$SANDHIVE_A" "${SANDHIVE_B-unset}"',
                        "compgen -v | grep -c __sandhive_ || true"])
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == [f"{envs['SANDHIVE_A']}|new", envs["SANDHIVE_A"], "before|unset", "0"]
    assert not bash.env_name.match("A-B") and bash.env_name.match("_A1")


def test_deno_env_code_names_the_vars_as_json() -> None:
    code = server.LANGUAGES["javascript"].env_set({"K": "v'\""})
    assert '["K"]' in code and json.dumps({"K": "v'\""}) in code and "Deno.env.set" in code
    assert "Deno.env.delete" in server.LANGUAGES["typescript"].env_restore({"K": "v"})
