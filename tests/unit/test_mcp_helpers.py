"""The MCP server's pure helpers: where a request's API key is read from, `--http ADDR`, and output bounds."""

from __future__ import annotations

import pytest
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ImageContent

from sandhive.cli.mcp_cmd import parse_addr
from sandhive.mcp_server.access import Access, key_from_headers
from sandhive.mcp_server.results import CodeOutcome, plain, tail
from sandhive.sdk import Execution, ExecutionError, Logs, Result


def test_the_key_comes_from_a_bearer_token_else_x_api_key() -> None:
    assert key_from_headers({"authorization": "Bearer e2b_abc"}) == "e2b_abc"
    assert key_from_headers({"authorization": "bearer  e2b_abc "}) == "e2b_abc"
    assert key_from_headers({"x-api-key": "e2b_def"}) == "e2b_def"
    assert key_from_headers({"authorization": "Bearer e2b_abc", "x-api-key": "e2b_def"}) == "e2b_abc"
    assert key_from_headers({"authorization": "Basic dXNlcjpwYXNz", "x-api-key": "e2b_def"}) == "e2b_def"
    for none in ({}, {"authorization": "Bearer "}, {"authorization": "Basic x"}, {"x-api-key": "  "}):
        assert key_from_headers(none) is None


def test_http_addr_is_host_and_port() -> None:
    assert parse_addr("127.0.0.1:8765") == ("127.0.0.1", 8765)
    assert parse_addr("localhost:1") == ("localhost", 1)
    assert parse_addr(":8765") == ("127.0.0.1", 8765)
    assert parse_addr("[::1]:8765") == ("::1", 8765)
    for bad in ("8765", "host:", "host:0", "host:65536", "host:http", "::1:8765"):
        with pytest.raises(ValueError):
            parse_addr(bad)


def test_long_output_keeps_its_end_and_says_what_was_cut() -> None:
    assert tail("short", 10) == "short"
    assert tail("0123456789abc", 3) == "[... 10 earlier characters cut ...]\nabc"


def test_each_call_acts_with_the_servers_key_over_stdio_and_the_requests_over_http() -> None:
    stdio = Access("http://sandhive:3000", "e2b_own")
    assert stdio.options(None)["api_key"] == "e2b_own"
    assert stdio.options({"authorization": "Bearer e2b_other"})["api_key"] == "e2b_own"  # stdio has no headers
    assert stdio.options(None)["api_url"] == stdio.options(None)["sandbox_url"] == "http://sandhive:3000"
    with pytest.raises(ToolError, match="set SANDHIVE_API_KEY"):
        Access("http://sandhive:3000").options(None)
    http = Access("http://sandhive:3000", "e2b_ignored", per_request=True)
    assert http.options({"x-api-key": "e2b_theirs"})["api_key"] == "e2b_theirs"
    for headers in (None, {}):  # never the server's own key
        with pytest.raises(ToolError, match="Authorization: Bearer"):
            http.options(headers)


def test_a_cells_outcome_carries_its_plots_as_images_and_its_traceback_without_colours() -> None:
    assert plain("\x1b[31mZeroDivisionError\x1b[39m: x") == "ZeroDivisionError: x"
    execution = Execution(results=[Result(text="<Figure>", png="iVBORw0K"), Result(text="42", is_main_result=True)],
                          logs=Logs(stdout=["hi\n"], stderr=[]),
                          error=ExecutionError("ValueError", "bad", "\x1b[31mValueError\x1b[39m: bad"))
    outcome = CodeOutcome.of(execution)
    assert outcome.text == "42" and outcome.results == ["<Figure> [also as: png]", "42"]
    assert outcome.stdout == "hi\n" and outcome.error == "ValueError: bad\nValueError: bad"
    answer = outcome.to_result(execution)
    assert [block.type for block in answer.content] == ["text", "image"]
    image = answer.content[1]
    assert isinstance(image, ImageContent) and image.data == "iVBORw0K" and image.mime_type == "image/png"
    assert answer.structured_content == outcome.model_dump(mode="json")
